"""The database goes down (PostgreSQL, behind a proxy the test cuts): reads and writes
answer 503 `database_unavailable` with Retry-After in the contract's envelope, every log
line stays one JSON object without a traceback, and the service recovers when it is back."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import make_url

from app import create_app
from billing.config import Config
from billing.json_logging import json_handler
from billing.organizations import capacity
from billing.tokens import mint_token
from billing.workspaces import service as workspace_service
from tests.db_proxy import DatabaseProxy
from tests.helpers import (
    Api,
    assert_error,
    deliver,
    event,
    make_root,
    orgs,
    subscribe_with_card,
    synchronous_webhooks,
    wipe,
)


@pytest.fixture
def proxy(database_url: str) -> Iterator[DatabaseProxy]:
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        pytest.skip("an outage of a database server: PostgreSQL (TEST_DATABASE_URL)")
    with DatabaseProxy(url.host or "127.0.0.1", url.port or 5432) as cuttable:
        yield cuttable


@pytest.fixture
def outage_app(proxy: DatabaseProxy, config: Config, database_url: str, session_app: Flask) -> Iterator[Flask]:
    """The service (and its sandbox's Stripe, which shares its database) through the proxy."""
    through = make_url(database_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    holder: dict[str, Flask] = {}
    app = create_app(dataclasses.replace(config, database_url=through), webhook_transport=synchronous_webhooks(holder))
    holder["app"] = app
    yield app
    app.extensions["billing"].db.dispose()
    wipe(session_app)  # the same database, on connections that never went through the proxy


def assert_unavailable(response: Any) -> None:
    assert_error(response, 503, "database_unavailable")
    assert response.json["type"] == "api_error"
    assert int(response.headers["Retry-After"]) > 0


def assert_json_lines(records: list[logging.LogRecord]) -> None:
    handler = json_handler()
    for record in records:
        line = handler.format(record)
        assert "\n" not in line and "Traceback" not in line, line
        assert isinstance(json.loads(line), dict)


def test_reads_and_writes_answer_503_while_the_database_is_down(
    outage_app: Flask, proxy: DatabaseProxy, auth: Any, caplog: Any
) -> None:
    alice = Api(outage_app.test_client(), auth("alice"))
    ws = alice.workspace()
    account = alice.account(ws)
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    keyed = {**alice.headers, "Idempotency-Key": "outage-1"}
    new_account = {"name": "Second", "email": "b@acme.com", "address": {"country": "US"}}

    proxy.cut()
    with caplog.at_level(logging.INFO):
        for read in ("/workspaces", f"/workspaces/{ws}", f"{acc}", f"{acc}/subscriptions", f"{acc}/invoices"):
            assert_unavailable(alice.get(read))
        assert_unavailable(alice.patch(f"/workspaces/{ws}", {"name": "Renamed"}))
        assert_unavailable(alice.post("/workspaces", {"name": "Beta", "billing_mode": "pooled"}))
        # A write that calls Stripe (the sandbox's Stripe shares the database), with a key.
        assert_unavailable(alice.client.post(f"/workspaces/{ws}/billing-accounts", json=new_account, headers=keyed))
        assert_unavailable(
            deliver(alice.client, event("customer.updated", {"id": account["id"], "object": "customer"}, "evt_outage"))
        )
    assert_json_lines(caplog.records)

    proxy.restore()
    assert alice.get(f"/workspaces/{ws}").json["name"] == "Acme"  # nothing was written
    # The keyed write was not an outcome: its retry applies.
    created = alice.client.post(f"/workspaces/{ws}/billing-accounts", json=new_account, headers=keyed)
    assert created.status_code == 201 and "Idempotent-Replayed" not in created.headers


def test_a_database_lost_in_the_middle_of_a_request_is_503(
    outage_app: Flask, proxy: DatabaseProxy, auth: Any, monkeypatch: Any
) -> None:
    alice = Api(outage_app.test_client(), auth("alice"))
    ws = alice.workspace()
    update = workspace_service.update_workspace

    def cut_then_update(*args: Any, **kwargs: Any) -> Any:
        proxy.cut()  # after the request's reads (its token's membership) succeeded
        return update(*args, **kwargs)

    monkeypatch.setattr(workspace_service, "update_workspace", cut_then_update)
    assert_unavailable(alice.patch(f"/workspaces/{ws}", {"name": "Renamed"}))
    proxy.restore()
    assert alice.get(f"/workspaces/{ws}").json["name"] == "Acme"


def test_a_database_lost_before_a_usage_reports_round_trip_is_503(
    outage_app: Flask, proxy: DatabaseProxy, auth: Any, config: Config, monkeypatch: Any
) -> None:
    """The report's one round trip (psycopg's pipeline) on a connection the outage cut: 503, the
    connection is not handed back, and once the database is back the next report counts."""
    alice = Api(outage_app.test_client(), auth("alice"))
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 5})
    org = make_root(alice, ws)["id"]
    service = Api(
        outage_app.test_client(), {"Authorization": f"Bearer {mint_token(config, 'svc', scope='billing:usage')}"}
    )
    report = f"{orgs(ws)}/{org}/usage"
    assert service.post(report, {"product": "users", "delta": 1}).status_code == 200  # its target known now
    round_trip = capacity._report_in_one_round_trip

    def cut_then_report(*args: Any, **kwargs: Any) -> Any:
        proxy.cut()
        return round_trip(*args, **kwargs)

    monkeypatch.setattr(capacity, "_report_in_one_round_trip", cut_then_report)
    assert_unavailable(service.post(report, {"product": "users", "delta": 1}))
    monkeypatch.setattr(capacity, "_report_in_one_round_trip", round_trip)
    proxy.restore()
    assert service.post(report, {"product": "users", "delta": 1}).json["used"] == 2
    assert alice.get(f"{orgs(ws)}/{org}").json["usage"]["usage"]["users"] == 2


def test_the_sandboxs_webhook_sender_logs_one_json_line_in_an_outage(
    outage_app: Flask, proxy: DatabaseProxy, auth: Any, caplog: Any, monkeypatch: Any
) -> None:
    state = outage_app.extensions["billing"]
    monkeypatch.setattr(state.webhooks, "_transport", lambda payload, headers: 503)  # events stay pending
    alice = Api(outage_app.test_client(), auth("alice"))
    alice.account(alice.workspace())
    proxy.cut()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        state.webhooks.notify()  # a delivery run (as after every write): it can't claim its events
    failed = [r for r in caplog.records if r.exc_info]
    assert {r.name for r in failed} == {"stripe_sandbox.webhooks"}
    assert_json_lines(caplog.records)
    for record in failed:
        line = json.loads(json_handler().format(record))
        assert line["error"]["type"].endswith("OperationalError"), line
