#!/usr/bin/env python3
"""Fuzz the service's own /openapi.json with schemathesis, against gunicorn on
the sandbox: no 5xx, every response conforms to the document, and data the
document calls valid is accepted (positive_data_acceptance).

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

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "positive_data_acceptance",
    ]
)

# Valid data may still meet a business rule: schemathesis' defaults (2xx, 3xx,
# 401, 403, 404, 409, 429, 5xx) plus 402, a card decline (never a schema answer).
ACCEPTED = '"2xx", "3xx", "401", "402", "403", "404", "409", "429", "5xx"'
# Operations whose business rules (API.md) answer 422 to well-formed data, or
# whose rules span fields in ways OpenAPI 3.0 cannot state; everywhere else a
# 422 for schema-valid data is a mismatch between the document and the service.
RULES_422 = {
    "deleteBillingAccount": "active_subscriptions_exist",
    "detachPaymentMethod": "cannot_detach_only_payment_method / cannot_detach_default_with_subscriptions",
    "updateMember": "cannot_remove_last_owner",
    "removeMember": "cannot_remove_last_owner",
    "updateSubscription": "multiple_operations, cannot_remove_last_product, payment_method_required",
    "listInvoices": "a cursor that is not one of the account's invoices; after with before",
    "listAuditEvents": "a cursor that is not one of the workspace's audit events; after with before; "
    "a since/until whose UTC is past year 9999",
    "previewInvoice": "cancel_subscription without subscription_id; a product_type twice",
    "createTaxId": "tax_id_invalid: Stripe checks the value against its type's format (no OpenAPI pattern per type)",
    "createOrganization": "billing_account_id: required in single and assigned mode, an account of this workspace; "
    "picture: a data URI's image must decode as the format it claims, a URL's host be public",
    "updateOrganization": "billing_account_id: roots only, not in pooled mode, an account of this workspace; "
    "picture: as createOrganization",
    "createChildOrganization": "picture: as createOrganization",
}


def config_text(ws: str, account: str, sub: str, pm: str, org: str, tax_id: str) -> str:
    lines = [
        "[parameters]",
        f'"path.workspaceId" = "{ws}"',
        f'"path.billingAccountId" = "{account}"',
        f'"path.subscriptionId" = "{sub}"',
        f'"path.paymentMethodId" = "{pm}"',
        '"path.memberId" = "fuzzer"',
        f'"path.organizationId" = "{org}"',
        # A real one: a made-up id was generated outside the document's pattern in the stateful
        # phase (a control character), and the service's 422 counted as data refused.
        f'"path.taxId" = "{tax_id}"',
        "",
        "[checks.positive_data_acceptance]",
        f"expected-statuses = [{ACCEPTED}]",
    ]
    # The fuzzer cannot sign Stripe's events: every event it makes up is refused (400).
    lines += [
        "",
        "[[operations]]",
        'include-operation-id = "receiveStripeEvent"',
        f'checks.positive_data_acceptance.expected-statuses = [{ACCEPTED}, "400"]',
    ]
    for operation_id, rules in RULES_422.items():
        lines += [
            "",
            "[[operations]]",
            f'include-operation-id = "{operation_id}"',
            f"# {rules}",
            f'checks.positive_data_acceptance.expected-statuses = [{ACCEPTED}, "422"]',
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/fuzz.sqlite3"
        run_migrations(database_url)
        port = int(os.environ.get("FUZZ_PORT", "0")) or None
        with serve(database_url, workers=2, threads=4, port=port) as server:
            client = Client(server.base, "fuzzer")
            ws = client.call("POST", "/workspaces", json={"name": "Fuzz", "billing_mode": "single"})["id"]
            account = client.call(
                "POST",
                f"/workspaces/{ws}/billing-accounts",
                json={"name": "Fuzz", "email": "f@fuzz.test", "address": {"country": "US"}},
            )["id"]
            acc = f"/workspaces/{ws}/billing-accounts/{account}"
            sub = client.call("POST", f"{acc}/subscriptions", json={"product_quantities": {"users": 2}})["id"]
            pm = client.call("POST", f"/sandbox{acc}/payment-methods", json={"payment_method": "pm_card_visa"})["id"]
            config = Path(tmp) / "schemathesis.toml"
            org = client.call(
                "POST", f"/workspaces/{ws}/organizations", json={"name": "Fuzz", "billing_account_id": account}
            )["id"]
            tax_id = client.call("POST", f"{acc}/tax-ids", json={"type": "eu_vat", "value": "DE000000000"})["id"]
            config.write_text(config_text(ws, account, sub, pm, org, tax_id))
            token = client.session.headers["Authorization"]
            command = [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(config),
                "run",
                f"{server.base}/openapi.json",
                "--header",
                f"Authorization: {token}",
                "--checks",
                CHECKS,
                "--max-time",
                os.environ.get("FUZZ_MAX_TIME", "150"),
                "--max-examples",
                os.environ.get("FUZZ_MAX_EXAMPLES", "40"),
                "--workers",
                "2",
                "--request-timeout",
                "20",
                "--exclude-path-regex",
                "^/sandbox/clock",  # moving time is not what we fuzz
                "--suppress-health-check",
                "all",
                "--phases",
                os.environ.get("FUZZ_PHASES", "examples,coverage,fuzzing,stateful"),
                "--generation-codec",
                "ascii",
                "--seed",
                os.environ.get("FUZZ_SEED", "20261121"),
                "--no-color",
            ]
            env = {**os.environ, "SCHEMATHESIS_HOOKS": str(ROOT / ".ci" / "fuzz_hooks.py")}
            return subprocess.call(command, cwd=tmp, env=env)


if __name__ == "__main__":
    sys.exit(main())
