#!/usr/bin/env python3
"""Fuzz the service's own /openapi.json with schemathesis, against gunicorn on
the sandbox: no 5xx, and every response conforms to the document.

Path parameters point at real objects of the caller's workspace (a billing
account with a trial subscription and a card), so the fuzzer reaches past 404s.
Bounded by FUZZ_MAX_TIME seconds (default 150).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import Client, serve  # noqa: E402
from billing.cli import run_migrations  # noqa: E402

CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_schema_conformance", "response_headers_conformance",
])


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/fuzz.sqlite3"
        run_migrations(database_url)
        with serve(database_url, workers=2, threads=4) as server:
            client = Client(server.base, "fuzzer")
            ws = client.call("POST", "/workspaces", json={"name": "Fuzz", "billing_mode": "single"})["id"]
            account = client.call("POST", f"/workspaces/{ws}/billing-accounts",
                                  json={"name": "Fuzz", "email": "f@fuzz.test", "address": {"country": "US"}})["id"]
            acc = f"/workspaces/{ws}/billing-accounts/{account}"
            sub = client.call("POST", f"{acc}/subscriptions", json={"product_quantities": {"users": 2}})["id"]
            pm = client.call("POST", f"/sandbox{acc}/payment-methods", json={"payment_method": "pm_card_visa"})["id"]
            config = Path(tmp) / "schemathesis.toml"
            config.write_text(
                "[parameters]\n"
                f'"path.workspaceId" = "{ws}"\n'
                f'"path.billingAccountId" = "{account}"\n'
                f'"path.subscriptionId" = "{sub}"\n'
                f'"path.paymentMethodId" = "{pm}"\n'
                '"path.userId" = "fuzzer"\n'
            )
            token = client.session.headers["Authorization"]
            command = [
                sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
                f"{server.base}/openapi.json",
                "--header", f"Authorization: {token}",
                "--checks", CHECKS,
                "--max-time", os.environ.get("FUZZ_MAX_TIME", "150"),
                "--max-examples", os.environ.get("FUZZ_MAX_EXAMPLES", "40"),
                "--workers", "2",
                "--request-timeout", "20",
                "--exclude-path-regex", "^/sandbox/clock",  # moving time is not what we fuzz
                "--suppress-health-check", "all",
                # The coverage phase crashes inside the tool (a hypothesis AST error), not on our API.
                "--phases", "examples,fuzzing,stateful",
                "--generation-codec", "ascii",
                "--seed", os.environ.get("FUZZ_SEED", "20261121"),
                "--no-color",
            ]
            return subprocess.call(command, cwd=tmp)


if __name__ == "__main__":
    sys.exit(main())
