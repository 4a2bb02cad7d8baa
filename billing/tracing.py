"""OpenTelemetry traces: off unless the standard OTEL_* variables ask for them.

On when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`) or an OTLP
endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`);
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keeps them off. The SDK
reads the rest itself (`OTEL_SERVICE_NAME`, default `billing-api` here;
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, the exporter's endpoint,
headers and timeout). The exporter is OTLP over HTTP/protobuf (a `grpc` protocol
is not installed: it is sent over HTTP, with a warning).

Off, nothing of OpenTelemetry is imported and each hook below is one `is None`.
On, each process (web worker, queue worker) builds its own provider when it
builds its app (after gunicorn's fork: the exporter's thread lives in the worker):
- a span per request (opentelemetry-instrumentation-flask, named `METHOD /rule`),
- a span per Stripe call (`stripe POST /v1/customers/{id}`, billing.instrumentation),
  with, under it, one per HTTP attempt (opentelemetry-instrumentation-requests: the
  `stripe` library's RequestsClient is what sends them here),
- a span per SQL statement (opentelemetry-instrumentation-sqlalchemy, on the engine),
- a span per queue task (`huey apply_stripe_events`...): Huey has no kept
  instrumentation on PyPI, so its pre- and post-execute hooks open and close one.
The JSON log line carries the current trace and span ids (billing.json_logging).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

    from billing.db import Database

log = logging.getLogger("billing.tracing")

DEFAULT_SERVICE_NAME = "billing-api"
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

# The tracer of the process's provider; None: traces are off.
_tracer: Tracer | None = None


def wanted(env: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables ask for traces (see the module)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return any(env.get(name, "").strip() for name in _ENDPOINTS)


def provider_from_environment(env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """A provider exporting as the OTEL_* variables say, or None when they ask for no traces."""
    env = os.environ if env is None else env
    if not wanted(env):
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    # The SDK reads OTEL_RESOURCE_ATTRIBUTES itself; the attributes given here win over them.
    attributes: dict[str, str] = {}
    if env.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = env["OTEL_SERVICE_NAME"]
    elif "service.name=" not in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes[SERVICE_NAME] = DEFAULT_SERVICE_NAME
    resource = Resource.create(attributes)
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    exporters: list[SpanExporter] = []
    for name in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        name = name.strip().lower()
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
            if protocol and protocol != "http/protobuf":
                log.warning("OTEL_EXPORTER_OTLP_PROTOCOL %s is not installed: traces go over http/protobuf", protocol)
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name and name != "none":
            log.warning("OTEL_TRACES_EXPORTER %s is not installed (otlp, console): ignored", name)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def install(app: Flask, db: Database, queue: Any, provider: TracerProvider) -> None:
    """Trace this app's requests, its SQL, its Stripe calls and its queue's tasks with
    `provider`. Call it right after the app is made: the request's span begins in a
    before_request hook, which must come before any hook that reads the database."""
    global _tracer
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    # Probes and the scrape would be most of the traces, and say nothing.
    FlaskInstrumentor.instrument_app(  # type: ignore[no-untyped-call]
        app, tracer_provider=provider, excluded_urls="/healthz,/readyz,/metrics", enable_commenter=False
    )
    # Process-wide (requests' Session): one provider a process, the last app's (a process
    # serves one app; tests make several).
    uninstall()
    RequestsInstrumentor().instrument(tracer_provider=provider)
    _trace_sql(db, provider)
    _tracer = provider.get_tracer("billing")
    if queue is not None:
        _trace_tasks(queue.huey)


def uninstall() -> None:
    """Stop tracing in this process (tests)."""
    global _tracer
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    _tracer = None
    if RequestsInstrumentor().is_instrumented_by_opentelemetry:
        RequestsInstrumentor().uninstrument()
    EngineTracer.remove_all_event_listeners()  # type: ignore[no-untyped-call]


def _trace_sql(db: Database, provider: TracerProvider) -> None:
    """A span per statement on this app's engine: opentelemetry-instrumentation-sqlalchemy's
    engine tracer, attached to the engine alone. (Its instrumentor refuses SQLAlchemy 2.1, which
    its newest release, 0.66b2, still leaves out of its declared range, and with its check
    skipped it patches asyncio's engine, which needs greenlet; the engine events it listens to
    are 2.1's too: tests/test_tracing.py sees the statements.)"""
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__
    from opentelemetry.metrics import get_meter

    tracer = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", __version__)
    # Its connection-usage metric goes to OpenTelemetry's no-op meter: /metrics has the pool's.
    usage = get_meter("opentelemetry.instrumentation.sqlalchemy", __version__).create_up_down_counter(
        "db.client.connections.usage"
    )
    EngineTracer(tracer, db.engine, usage, False)  # type: ignore[no-untyped-call]


@contextmanager
def stripe_span(method: str, url: str) -> Iterator[Any]:
    """A span for one Stripe call (its attempts inside), or nothing when traces are off."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    from billing.budget import endpoint as endpoint_of

    endpoint = endpoint_of(method, url)
    with tracer.start_as_current_span(f"stripe {endpoint}", kind=SpanKind.CLIENT) as span:
        span.set_attribute("stripe.endpoint", endpoint)
        yield span


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for the log line; None when there is none."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


_open_tasks = threading.local()


def _trace_tasks(huey: Any) -> None:
    """A span around each task a worker runs (Huey's hooks run in the task's thread)."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    def begin(task: Any) -> None:
        tracer = _tracer
        if tracer is None:
            return
        span = tracer.start_span(f"huey {task.name}", kind=trace.SpanKind.CONSUMER)
        span.set_attribute("huey.task", str(task.name))
        token = otel_context.attach(trace.set_span_in_context(span))
        _open_tasks.__dict__.setdefault("spans", []).append((span, token))

    def end(task: Any, value: Any, error: BaseException | None) -> None:
        spans = _open_tasks.__dict__.get("spans")
        if not spans:
            return
        span, token = spans.pop()
        if error is not None:
            span.record_exception(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
        otel_context.detach(token)
        span.end()

    huey.pre_execute(name="billing_trace_begin")(begin)
    huey.post_execute(name="billing_trace_end")(end)
