"""OpenTelemetry traces (billing.tracing), exported to the SDK's in-memory exporter.

The service runs with an `sk_test_` key against a fake api.stripe.com answered by the
sandbox (as `stripe_world`), so its Stripe requests go through the `stripe` library's
RequestsClient, the transport it uses in production, and requests' instrumentation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import responses
import stripe
from flask import Flask
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import Integer, bindparam, literal_column, select
from sqlalchemy.exc import DBAPIError

from app import create_app
from billing import tracing
from billing.catalog import ensure_catalog
from billing.config import Config
from billing.json_logging import json_handler
from stripe_sandbox import SandboxHTTPClient
from tests.helpers import (
    FAULTS_API_KEY,
    STRIPE_URL,
    TEST_ENV,
    Api,
    FakeStripe,
    account_path,
    make_root,
    orgs,
    subscribe,
    wipe,
)


@pytest.fixture
def traced(session_app: Flask, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setattr(stripe.HTTPClient, "_sleep_time_seconds", lambda self, n: 0)
    brain = SandboxHTTPClient(session_app.extensions["billing"].db)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = Config.from_env({**TEST_ENV, "DATABASE_URL": database_url, "STRIPE_API_KEY": FAULTS_API_KEY})
    app = create_app(config, tracer_provider=provider)
    try:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            for method in ("GET", "POST", "DELETE"):
                mock.add_callback(method, STRIPE_URL, callback=FakeStripe(brain))
            ensure_catalog(app.extensions["billing"].gateway)
            exporter.clear()
            yield {"app": app, "exporter": exporter}
    finally:
        tracing.uninstall()
        provider.shutdown()
        wipe(session_app)
        app.extensions["billing"].db.dispose()


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    found = []
    parent = parent_of(span)
    while parent is not None and parent in by_id:
        found.append(by_id[parent])
        parent = parent_of(by_id[parent])
    return found


def test_a_request_that_writes_to_stripe_is_one_trace(traced: dict[str, Any], auth: Any) -> None:
    """One trace: the route's span at its root; under it a span per Stripe call (as many as
    the request's Server-Timing counts), each over its HTTP attempt (requests') and the
    budget's count of it; and the SQL."""
    app, exporter = traced["app"], traced["exporter"]
    alice = Api(app.test_client(), auth("alice"))
    workspace = alice.workspace()
    exporter.clear()
    response = alice.post(
        f"/workspaces/{workspace}/billing-accounts",
        {"name": "Acme", "email": "billing@acme.com", "address": {"country": "US"}},
    )
    assert response.status_code == 201
    stripe_calls = int(response.headers["Server-Timing"].rsplit('desc="', 1)[1].rstrip('"'))
    assert stripe_calls >= 1

    spans: list[ReadableSpan] = list(exporter.get_finished_spans())
    assert len({span.context.trace_id for span in spans}) == 1, [span.name for span in spans]
    by_id = {span.context.span_id: span for span in spans}
    [root] = [span for span in spans if span.parent is None]
    assert root.name == "POST /workspaces/<workspaceId>/billing-accounts" and root.kind == SpanKind.SERVER
    assert root.attributes is not None and root.attributes.get("http.response.status_code", 201) == 201

    calls = [span for span in spans if span.name.startswith("stripe ")]
    assert len(calls) == stripe_calls
    assert "stripe POST /v1/customers" in {span.name for span in calls}
    for call in calls:
        assert parent_of(call) == root.context.span_id and call.kind == SpanKind.CLIENT
        # Its attempt over HTTP; beside it, the budget's count of the attempt (SQL).
        under = [span for span in spans if parent_of(span) == call.context.span_id]
        attempts = [span for span in under if not (span.attributes or {}).get("db.system")]
        assert len(attempts) == 1 and attempts[0].kind == SpanKind.CLIENT, [span.name for span in under]
        assert attempts[0].attributes is not None
        assert "api.stripe.com" in str(attempts[0].attributes.get("url.full") or attempts[0].attributes)

    sql = [span for span in spans if span.attributes and span.attributes.get("db.system")]
    assert sql, [span.name for span in spans]
    assert all(root in ancestors(span, by_id) for span in sql)
    # No key, token or body in any span.
    text = json.dumps([dict(span.attributes or {}) for span in spans], default=str)
    assert FAULTS_API_KEY not in text and "Bearer" not in text and "billing@acme.com" not in text


def test_a_queue_task_is_a_span_over_its_work(traced: dict[str, Any]) -> None:
    """Huey has no kept instrumentation: the service's hooks make a span per task, its SQL under it."""
    app, exporter = traced["app"], traced["exporter"]
    state = app.extensions["billing"]
    state.queue.apply_later("customer:cus_NoSuchOne")
    with app.app_context():
        assert state.queue.run_queued() == 1
    spans: list[ReadableSpan] = list(exporter.get_finished_spans())
    [task] = [span for span in spans if span.name == "huey apply_stripe_events"]
    assert task.parent is None and task.kind == SpanKind.CONSUMER
    by_id = {span.context.span_id: span for span in spans}
    under = [span for span in spans if task in ancestors(span, by_id)]
    assert any(span.attributes and span.attributes.get("db.system") for span in under)


def test_the_log_line_carries_the_trace_id(traced: dict[str, Any]) -> None:
    record = logging.LogRecord("billing.request", logging.INFO, __file__, 1, "request", None, None)
    assert tracing._tracer is not None
    with tracing._tracer.start_as_current_span("work") as span:
        json_handler().filter(record)
        line = json.loads(json_handler().format(record))
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")
    outside = logging.LogRecord("billing.request", logging.INFO, __file__, 1, "request", None, None)
    json_handler().filter(outside)
    assert "trace_id" not in json.loads(json_handler().format(outside))


def test_traces_are_off_unless_the_otel_variables_ask() -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_SERVICE_NAME": "billing"})  # naming the service exports nothing
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})
    assert not tracing.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})
    assert tracing.provider_from_environment({}) is None
    provider = tracing.provider_from_environment({"OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None
    assert provider.resource.attributes["service.name"] == tracing.DEFAULT_SERVICE_NAME
    provider.shutdown()
    named = tracing.provider_from_environment(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SERVICE_NAME": "billing-eu"}
    )
    assert named is not None  # OTLP over HTTP: nothing is sent until a span ends
    assert named.resource.attributes["service.name"] == "billing-eu"
    named.shutdown()


def test_without_the_variables_the_app_is_not_traced(app: Flask) -> None:
    """The tests' app is made from the environment (no OTEL_* variables): nothing traced."""
    assert tracing._tracer is None
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)


def test_the_hot_paths_statements_are_spans_that_end(traced: dict[str, Any], auth: Any) -> None:
    """The statements run on the driver's cursor (billing.db's fast paths on PostgreSQL: the
    access checks, the invoices' page, a usage report's round trip) are spans like SQLAlchemy's
    own, each ended, under the request's span; the report answers as it does untraced."""
    app, exporter = traced["app"], traced["exporter"]
    alice = Api(app.test_client(), auth("alice"))
    ws = alice.workspace()
    acc = account_path(ws, alice.account(ws)["id"])
    assert subscribe(alice, acc, {"users": 4})["status"] == "trialing"
    org = make_root(alice, ws)["id"]
    for path, body in ((f"{orgs(ws)}/{org}/usage", {"product": "users", "delta": 1}), (f"{acc}/invoices", None)):
        exporter.clear()
        response = alice.post(path, body) if body else alice.get(path)
        assert response.status_code == 200, response.json
        spans: list[ReadableSpan] = list(exporter.get_finished_spans())
        by_id = {span.context.span_id: span for span in spans}
        [root] = [span for span in spans if span.parent is None]
        sql = [span for span in spans if span.attributes and span.attributes.get("db.system")]
        assert sql and all(root in ancestors(span, by_id) for span in sql), [span.name for span in spans]
    assert response.json is not None
    used = alice.get(f"{orgs(ws)}/{org}/limits").json["limits"]
    assert [entry["used"] for entry in used if entry["type"] == "users"] == [1]


def test_a_hot_paths_failed_statement_ends_its_span_with_the_error(traced: dict[str, Any]) -> None:
    """A statement that fails on the driver's cursor (PostgreSQL's fast paths) ends its span with
    the error, as SQLAlchemy's `handle_error` ends its own; a failed round trip ends each of its
    statements' spans (its transaction failed whole)."""
    state = traced["app"].extensions["billing"]
    if not state.db.has_round_trip_transactions:
        pytest.skip("PostgreSQL's fast paths")
    exporter = traced["exporter"]
    fine: Any = select(literal_column("1"))
    failing: Any = select(literal_column("1") / bindparam("zero", type_=Integer))
    with state.db.columns() as connection, pytest.raises(DBAPIError):
        state.db.fetch_columns(connection, failing, {"zero": 0})
    with pytest.raises(DBAPIError):
        state.db.in_one_round_trip([(fine, {}), (failing, {"zero": 0})])
    spans = list(exporter.get_finished_spans())
    assert [span.status.status_code for span in spans] == [StatusCode.ERROR] * 3, [span.name for span in spans]
    assert all("division by zero" in (span.status.description or "") for span in spans)
