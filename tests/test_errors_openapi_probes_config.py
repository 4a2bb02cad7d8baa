"""What every route shares, tested without a resource in mind: the error envelope on every
path, the OpenAPI document and /docs, the probes (/healthz, /readyz), the configuration
and the start-up checks."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from billing.config import Config, ConfigError
from billing.db import normalize_database_url
from billing.gateway import STRIPE_API_VERSION, StripeGateway
from billing.workspaces import service as workspace_service
from tests.helpers import BILLING_ACCOUNT_KEYS, assert_error


def test_unknown_route_is_404_envelope(client: Any) -> None:
    body = assert_error(client.get("/nope"), 404, "not_found")
    assert body["type"] == "not_found_error"


def test_wrong_method_is_405_envelope(client: Any, auth: Any) -> None:
    response = client.put("/workspaces", headers=auth("alice"))
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_unexpected_error_is_500_without_trace(client: Any, auth: Any, monkeypatch: Any, caplog: Any) -> None:
    def explode(*_: Any) -> None:
        raise RuntimeError("secret internals sk_live_123")

    monkeypatch.setattr(workspace_service, "list_workspaces", explode)
    response = client.get("/workspaces", headers=auth("alice"))
    body = assert_error(response, 500, "internal_error")
    assert body["type"] == "api_error"
    assert "sk_live_123" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError" in logged and "sk_live_123" not in logged and "Traceback" not in logged


def test_oversized_body_is_413(client: Any, auth: Any) -> None:
    response = client.post(
        "/workspaces", data="x" * (1100 * 1024), headers={**auth("alice"), "Content-Type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")


def test_request_id_header_matches_body(client: Any) -> None:
    response = client.get("/nope")
    assert response.headers["X-Request-Id"] == response.json["request_id"]


def test_openapi_document_lists_every_route(client: Any) -> None:
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in (
        "/workspaces",
        "/workspaces/{workspaceId}",
        "/workspaces/{workspaceId}/members",
        "/workspaces/{workspaceId}/members/{memberId}",
        "/workspaces/{workspaceId}/billing-accounts",
        "/workspaces/{workspaceId}/billing-accounts/{billingAccountId}",
        "/workspaces/{workspaceId}/billing-accounts/{billingAccountId}/subscriptions",
        "/healthz",
        "/readyz",
    ):
        assert path in paths, path
    account = spec["components"]["schemas"]["BillingAccount"]["properties"]
    assert set(account) == BILLING_ACCOUNT_KEYS
    assert account["currency"]["enum"] == ["usd", "zar", "eur", "gbp", "aud"]
    assert client.get("/docs").status_code == 200


def test_health_and_readiness(client: Any) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    body = client.get("/readyz").json
    assert body == {
        "status": "ready",
        "database": "ok",
        "stripe": "ok",
        "catalog": "ok",
        "stripe_mode": "sandbox",
        "stripe_endpoint": "in-process",
        "events": {"pending": 0, "oldest_pending_seconds": 0.0, "parked": 0},
    }


def test_readiness_reports_stripe_down(client: Any, state: Any, monkeypatch: Any) -> None:

    def down(keys: Any) -> None:
        raise stripe.APIConnectionError("unreachable")

    monkeypatch.setattr(state.readiness, "checked_at", 0.0)
    monkeypatch.setattr(state.gateway, "prices_by_lookup_key", down)
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["stripe"] == "unavailable"


def test_readiness_reports_a_missing_catalog(client: Any, state: Any, monkeypatch: Any) -> None:
    """With a real key and no sync-catalog yet, every subscription create would be a 422: say so."""

    monkeypatch.setattr(state.readiness, "checked_at", 0.0)
    monkeypatch.setattr(state.readiness, "missing_prices", [])
    monkeypatch.setattr(state.gateway, "prices_by_lookup_key", lambda keys: {})
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["status"] == "unavailable"
    assert response.json["catalog"].startswith("missing 30 prices (run sync-catalog)")


def test_api_version_is_pinned_to_the_librarys() -> None:
    from stripe._api_version import _ApiVersion

    assert STRIPE_API_VERSION == _ApiVersion.CURRENT


def test_gateway_client_settings(state: Any) -> None:
    assert isinstance(state.gateway, StripeGateway)
    options = state.gateway.client._requestor._options
    assert options.max_network_retries == 2
    assert options.stripe_version == STRIPE_API_VERSION


def test_database_url_normalisation() -> None:
    assert normalize_database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_production_fails_closed_without_a_key_or_the_sandbox_opt_in() -> None:
    for env in ({}, {"JWT_SECRET": "s"}, {"JWT_SECRET": "s", "STRIPE_SANDBOX": "0"}, {"STRIPE_SANDBOX": "yes"}):
        with pytest.raises(ConfigError, match="STRIPE_SANDBOX=1"):
            Config.from_env(env)
    assert Config.from_env({"STRIPE_SANDBOX": "1"}).sandbox
    live = Config.from_env({"STRIPE_SANDBOX": "1", "STRIPE_API_KEY": "sk_live_x", "JWT_SECRET": "s"})
    assert not live.sandbox  # a real key always wins


def test_web_process_refuses_to_start_in_one_line(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "JWT_"))}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path}/x.sqlite3"
    result = subprocess.run(
        [sys.executable, "-c", "import app; app.app"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "billing: cannot start: STRIPE_API_KEY is not set; set it, or set STRIPE_SANDBOX=1 to run on "
        "the built-in Stripe sandbox"
    ], result.stderr


def test_the_procfiles_web_refuses_to_start_in_one_line_and_exits(tmp_path: Any) -> None:
    """`web: gunicorn app:app` with neither STRIPE_API_KEY nor STRIPE_SANDBOX: one
    line that says why and a non-zero exit, before the port is bound or a worker
    booted (a worker that exits is only booted again by gunicorn, forever)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.db_proxy import bind_local

    listener = bind_local()  # a free port of LOCAL_PORT_RANGE
    port = listener.getsockname()[1]
    listener.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "JWT_"))}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/x.sqlite3", PORT=str(port), WEB_CONCURRENCY="1")
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "app:app"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    why = (
        "billing: cannot start: STRIPE_API_KEY is not set; set it, or set STRIPE_SANDBOX=1 to run on "
        "the built-in Stripe sandbox"
    )
    assert lines.count(why) == 1, result.stderr
    # Besides it, at most gunicorn's own start line (a JSON log line): nothing listened, nothing booted.
    others = [line for line in lines if line != why]
    assert all(line.startswith("{") and "Starting gunicorn" in line for line in others), result.stderr


def test_config_rules() -> None:
    with pytest.raises(ConfigError):
        Config.from_env({"STRIPE_API_KEY": "sk_test_x"})  # real Stripe needs real auth config
    with pytest.raises(ConfigError):
        Config.from_env({"JWT_SECRET": "s", "DEFAULT_CURRENCY": "jpy", "STRIPE_SANDBOX": "1"})
    config = Config.from_env(
        {"JWT_SECRET": "s", "DEFAULT_CURRENCY": "EUR", "STRIPE_WEBHOOK_SECRET": "a, b", "STRIPE_SANDBOX": "1"}
    )
    assert config.default_currency == "eur" and config.sandbox
    assert config.stripe_webhook_secrets == ("a", "b")
    sandbox = {"JWT_SECRET": "s", "STRIPE_SANDBOX": "1"}
    with pytest.raises(ConfigError, match="SANDBOX_RETRY_END"):
        Config.from_env({**sandbox, "SANDBOX_RETRY_END": "forever"})
    with pytest.raises(ConfigError, match="SANDBOX_RETRY_SCHEDULE"):
        Config.from_env({**sandbox, "SANDBOX_RETRY_SCHEDULE": "smart:99:1"})
    assert Config.from_env({**sandbox, "SANDBOX_RETRY_SCHEDULE": "3,5,7", "SANDBOX_RETRY_END": "unpaid"}).sandbox
    with pytest.raises(ConfigError, match="SANDBOX_TAX_REGISTRATIONS: XX is no ISO"):
        Config.from_env({**sandbox, "SANDBOX_TAX_REGISTRATIONS": "GB,xx"})
    assert Config.from_env({**sandbox, "SANDBOX_TAX_REGISTRATIONS": "gb, de"}).sandbox
    assert Config.from_env({**sandbox, "STRIPE_TAX": "1"}).stripe_tax is True
    assert Config.from_env(sandbox).worker_nice == 10
    assert Config.from_env({**sandbox, "WORKER_NICE": "0"}).worker_nice == 0
    for nice in ("20", "-5", "low"):
        with pytest.raises(ConfigError, match="WORKER_NICE"):
            Config.from_env({**sandbox, "WORKER_NICE": nice})


def test_openapi_documents_idempotency_key_on_writes(client: Any) -> None:
    paths = client.get("/openapi.json").json["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            if method == "parameters":  # path-level parameters
                continue
            names = [p.get("name") for p in operation.get("parameters", [])]
            wanted = method in ("post", "put", "patch", "delete") and not path.startswith("/webhooks")
            assert ("Idempotency-Key" in names) == wanted, (method, path)


def test_readiness_does_not_ping_stripe_on_every_probe(client: Any, state: Any, monkeypatch: Any) -> None:

    pings: list[int] = []
    monkeypatch.setattr(state.readiness, "checked_at", 0.0)
    real = state.gateway.prices_by_lookup_key
    monkeypatch.setattr(state.gateway, "prices_by_lookup_key", lambda keys: (pings.append(1), real(keys))[1])
    for _ in range(5):
        assert client.get("/readyz").status_code == 200
    assert pings == [1]


def test_every_operation_has_a_stable_unique_operation_id(client: Any) -> None:
    """Generated clients (openapi-typescript, orval, openapi-python-client) name methods after them."""
    paths = client.get("/openapi.json").json["paths"]
    ids = [
        (operation.get("operationId"), method, path)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if method != "parameters"
    ]
    assert [entry for entry in ids if not entry[0]] == []
    assert len({entry[0] for entry in ids}) == len(ids)
    named = {(method, path): name for name, method, path in ids}
    assert named[("get", "/workspaces/{workspaceId}/billing-accounts")] == "listBillingAccounts"
    assert named[("get", "/workspaces/{workspaceId}/billing-accounts/{billingAccountId}")] == "retrieveBillingAccount"
    assert (
        named[("post", "/workspaces/{workspaceId}/billing-accounts/{billingAccountId}/subscriptions")]
        == "createSubscription"
    )


def test_the_docs_page_loads_nothing_from_another_host(client: Any) -> None:
    import re

    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(url.startswith("/") for url in urls), urls  # same host only
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.get_data()) > 1000, url


def test_probes_are_documented_as_needing_no_token(client: Any) -> None:
    paths = client.get("/openapi.json").json["paths"]
    assert paths["/healthz"]["get"]["security"] == [] and paths["/readyz"]["get"]["security"] == []
    assert "security" not in paths["/workspaces"]["get"]  # the document's default: the bearer token


def test_error_doc_url_is_the_setting_followed_by_the_code(database_url: str, session_app: Any) -> None:
    from app import create_app
    from tests.helpers import LIVE_API_KEY, TEST_ENV

    env = {**TEST_ENV, "DATABASE_URL": database_url, "STRIPE_API_KEY": LIVE_API_KEY}
    app = create_app(Config.from_env({**env, "ERRORS_DOC_URL": "https://errors.example.test/billing/"}))
    assert app.test_client().get("/nope").json["doc_url"] == "https://errors.example.test/billing/not_found"
    with pytest.raises(ConfigError, match="ERRORS_DOC_URL"):
        Config.from_env({**env, "ERRORS_DOC_URL": "docs.example.test"})


def test_readiness_says_the_keys_mode(live_app: Any, mocked: Any) -> None:
    """An sk_test_ key is test mode, not live (the conftest's key is one)."""
    from tests.helpers import TEST_ENV

    assert live_app.test_client().get("/readyz").json["stripe_mode"] == "test"
    modes = {
        key: Config.from_env({**TEST_ENV, "DATABASE_URL": "sqlite://", "STRIPE_API_KEY": key}).stripe_mode
        for key in ("sk_live_1", "rk_live_1", "sk_test_1", "rk_test_1")
    }
    assert modes == {"sk_live_1": "live", "rk_live_1": "live", "sk_test_1": "test", "rk_test_1": "test"}


@pytest.mark.parametrize(
    "path",
    [
        "/workspaces/{ws}/billing-accounts//trial-eligibility",
        "//workspaces",
        "/workspaces//{ws}",
        "/workspaces/{ws}/members//",
        "/static//x",
        "/docs/assets//index.css",
    ],
)
def test_empty_path_segments_answer_the_json_404(as_user: Any, path: str) -> None:
    """No HTML redirect (werkzeug merges `//` with a 308 that bypasses the error
    handlers): an empty segment names nothing, so it is the envelope's 404."""
    alice = as_user("alice")
    response = alice.get(path.format(ws=alice.workspace()))
    assert response.mimetype == "application/json" and "Location" not in response.headers
    assert_error(response, 404, "not_found")


def test_a_trailing_slash_is_the_same_resource_not_a_redirect(as_user: Any) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    for path in ("/healthz", "/workspaces", f"/workspaces/{ws}/members"):
        response = alice.get(path + "/")
        assert response.status_code == 200 and response.json == alice.get(path).json, path
