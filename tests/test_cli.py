"""Operator commands: migrate, mint-token, dev-setup, reconcile; the sandbox start-up line."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from app import create_app
from billing.config import Config
from tests.helpers import TEST_ENV


def test_mint_token_is_accepted(app: Any, client: Any) -> None:
    result = app.test_cli_runner().invoke(args=["mint-token", "carol", "--ttl", "60"])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert client.get("/workspaces", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_mint_token_with_the_usage_scope_reads_capacity_anywhere(app: Any, client: Any, as_user: Any) -> None:
    ws = as_user("alice").workspace("pooled")
    for scope, status in (("billing:usage", 200), (None, 404)):
        args = ["mint-token", "inventory-service"] + (["--scope", scope] if scope else [])
        result = app.test_cli_runner().invoke(args=args)
        assert result.exit_code == 0, result.output
        headers = {"Authorization": f"Bearer {result.output.strip()}"}
        assert client.get(f"/workspaces/{ws}/capacity", headers=headers).status_code == status


def test_dev_setup_prints_a_working_curl_line(app: Any, client: Any) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["dev-setup", "--user", "dev-user"])
    assert result.exit_code == 0, result.output
    match = re.search(r"curl -s -H 'Authorization: Bearer ([^']+)' http://127\.0\.0\.1:8000(\S+)", result.output)
    assert match, result.output
    token, path = match.groups()
    response = client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json == {"data": [], "has_more": False}
    # Running it again reuses the same workspace.
    again = runner.invoke(args=["dev-setup", "--user", "dev-user"])
    assert path in again.output


def test_reconcile_command_prints_a_report(app: Any) -> None:
    result = app.test_cli_runner().invoke(args=["reconcile"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["scanned"] == 0


def test_reconcile_with_a_failed_object_says_so_in_its_exit_status(
    app: Any, as_user: Any, state: Any, webhooks_lost: None
) -> None:
    """Went through, but an object waits for an operator: exit 3 (1 is for a run that
    could not happen), and the report lists it."""
    from billing.billing_accounts.service import REFERENCE_KEY

    ws = as_user("alice").workspace()
    metadata = {"workspace_id": ws, "currency": "usd", REFERENCE_KEY: "copied-reference"}
    for name in ("Copy 1", "Copy 2"):
        state.gateway.client.v1.customers.create({"name": name, "metadata": metadata})
    result = app.test_cli_runner().invoke(args=["reconcile"])
    assert result.exit_code == 3, result.output
    report = json.loads(result.output)
    assert len(report["restored"]) == 1 and [f["step"] for f in report["failed"]] == ["index"]


def test_migrate_is_idempotent(app: Any) -> None:
    result = app.test_cli_runner().invoke(args=["migrate"])
    assert result.exit_code == 0, result.output


def test_sandbox_mode_is_announced(database_url: str, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, logger="billing"):
        create_app(Config.from_env({**TEST_ENV, "DATABASE_URL": database_url}))
    assert any("SANDBOX" in record.getMessage() for record in caplog.records)


def test_migrate_on_a_new_database_starts_quietly(tmp_path: Any, caplog: Any) -> None:
    """`flask migrate` builds the app before the tables exist: it leaves the sandbox's catalog to
    the processes started after it (which load it), so nothing fails and no webhook goes out yet."""
    sent: list[bytes] = []
    config = Config.from_env({**TEST_ENV, "DATABASE_URL": f"sqlite:///{tmp_path}/new.sqlite3"})
    with caplog.at_level(logging.INFO):
        app = create_app(config, webhook_transport=lambda payload, headers: sent.append(payload) or 200)
        assert app.test_cli_runner().invoke(args=["migrate"]).exit_code == 0

    def warnings() -> list[str]:
        return [
            r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "SANDBOX" not in r.getMessage()
        ]

    assert warnings() == [] and sent == []
    with caplog.at_level(logging.WARNING):
        create_app(config, webhook_transport=lambda payload, headers: sent.append(payload) or 200)
    assert warnings() == []
    assert any(b'"type": "price.created"' in payload for payload in sent)  # loaded once migrated
