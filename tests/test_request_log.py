"""The request log line, request ids, CORS, and what must never be logged."""

from __future__ import annotations

import json
import logging
from typing import Any

from app import create_app
from billing.config import Config
from billing.json_logging import json_handler
from tests.helpers import FULL, TEST_ENV


def request_lines(caplog: Any) -> list[dict[str, Any]]:
    """Request lines, but for the sandbox's webhook deliveries (nested in tests)."""
    lines = [json.loads(json_handler().format(r)) for r in caplog.records if r.name == "billing.request"]
    return [line for line in lines if line["route"] != "/webhooks/stripe"]


def test_every_record_is_one_json_object_per_line(as_user: Any, caplog: Any) -> None:
    alice = as_user("alice")
    with caplog.at_level(logging.INFO):
        caplog.clear()
        response = alice.get("/workspaces")
        logging.getLogger("billing.test").warning("outside any request")
    handler = json_handler()
    lines = [handler.format(r) for r in caplog.records]
    assert lines and all("\n" not in line for line in lines)
    records = [json.loads(line) for line in lines]
    request_line = next(r for r in records if r["logger"] == "billing.request")
    assert request_line["level"] == "INFO" and request_line["message"] == "request"
    assert request_line["request_id"] == response.headers["X-Request-Id"] and request_line["status"] == 200
    assert request_line["time"] and request_line["route"] == "/workspaces"
    outside = next(r for r in records if r["logger"] == "billing.test")
    assert outside["level"] == "WARNING" and outside["request_id"] is None


def test_one_json_line_per_request(as_user: Any, caplog: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    with caplog.at_level(logging.INFO, logger="billing.request"):
        caplog.clear()
        response = alice.post(f"/workspaces/{ws}/billing-accounts", FULL)
    [line] = request_lines(caplog)
    assert line["method"] == "POST" and line["status"] == 201
    assert line["route"] == "/workspaces/<workspaceId>/billing-accounts"
    assert line["workspace_id"] == ws and line["user_id"] == "alice"
    assert line["request_id"] == response.headers["X-Request-Id"]
    assert line["duration_ms"] >= line["stripe_ms"] > 0
    assert line["stripe_calls"] == 1 and line["stripe_request_ids"][0].startswith("req_")
    assert "app;dur=" in response.headers["Server-Timing"]


def test_stripe_calls_are_counted(as_user: Any, caplog: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    with caplog.at_level(logging.INFO, logger="billing.request"):
        caplog.clear()
        alice.account(ws, name="A")
        alice.get(f"/workspaces/{ws}/billing-accounts")
    create, read = request_lines(caplog)
    assert create["stripe_calls"] == 1 and len(create["stripe_request_ids"]) == 1
    assert read["stripe_calls"] == 0 and read["stripe_request_ids"] == []  # reads come from the copy


def test_client_request_id_is_kept_and_bad_ones_replaced(client: Any) -> None:
    assert client.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"] == "abc-123"
    replaced = client.get("/healthz", headers={"X-Request-Id": "bad id; drop table"}).headers["X-Request-Id"]
    assert replaced.startswith("req_")
    body = client.get("/nope", headers={"X-Request-Id": "trace-9"}).json
    assert body["request_id"] == "trace-9"


def test_no_token_or_secret_in_logs(as_user: Any, caplog: Any) -> None:
    alice = as_user("alice")
    token = alice.headers["Authorization"].split()[1]
    with caplog.at_level(logging.DEBUG):
        ws = alice.workspace()
        alice.post(f"/workspaces/{ws}/billing-accounts", FULL)
        alice.client.get("/workspaces", headers={"Authorization": "Bearer forged.token.here"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in text and "forged.token.here" not in text
    assert TEST_ENV["JWT_SECRET"] not in text and "sk_test_sandbox" not in text


def test_cors_for_configured_origins(database_url: str) -> None:
    config = Config.from_env({**TEST_ENV, "DATABASE_URL": database_url, "CORS_ORIGINS": "https://app.example.com"})
    client = create_app(config).test_client()
    preflight = client.options(
        "/workspaces",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Idempotency-Key",
        },
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "idempotency-key" in preflight.headers["Access-Control-Allow-Headers"].lower()
    other = client.get("/healthz", headers={"Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in other.headers
    # A preflight to any route of the API is answered without a token (browsers send none).
    for path, method in (
        ("/workspaces/ws_x/billing-accounts", "POST"),
        ("/workspaces/ws_x/billing-accounts/cus_x/subscriptions/sub_x", "PATCH"),
        ("/workspaces/ws_x/billing-accounts/cus_x/payment-methods/pm_x", "DELETE"),
    ):
        answer = client.options(
            path,
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "Authorization, Content-Type, Idempotency-Key, X-Request-Id",
            },
        )
        assert answer.status_code in (200, 204), (path, answer.status_code)
        assert answer.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert method in answer.headers["Access-Control-Allow-Methods"]
        assert "Origin" in answer.headers.get("Vary", "")
    actual = client.get("/workspaces", headers={"Origin": "https://app.example.com"})  # no token: 401, with CORS
    assert actual.status_code == 401 and actual.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Origin" in actual.headers.get("Vary", "")
    exposed = {h.strip().lower() for h in actual.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"x-request-id", "idempotent-replayed", "retry-after"} <= exposed


def test_cors_origins_on_any_port(database_url: str) -> None:
    """`scheme://host:*` in CORS_ORIGINS: that host on any port, and nothing that merely starts like it."""
    config = Config.from_env({**TEST_ENV, "DATABASE_URL": database_url, "CORS_ORIGINS": "http://localhost:*"})
    client = create_app(config).test_client()

    def allowed(origin: str) -> str | None:
        return client.options(
            "/workspaces", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
        ).headers.get("Access-Control-Allow-Origin")

    for origin in ("http://localhost:5173", "http://localhost", "http://LOCALHOST:8080"):
        assert allowed(origin) == origin
    for origin in (
        "http://localhost.evil.test",
        "http://localhost:5173.evil.test",
        "https://localhost:5173",
        "http://127.0.0.1:5173",
        "http://localhost:",
    ):
        assert allowed(origin) is None, origin


def test_api_responses_are_never_sniffed_or_cached(client: Any) -> None:
    for response in (client.get("/healthz"), client.get("/workspaces"), client.get("/nope")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
