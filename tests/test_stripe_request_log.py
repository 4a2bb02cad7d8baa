"""SANDBOX_REQUEST_LOG: the service's Stripe requests, counted per process (the storm benchmark)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import create_app
from billing.config import Config
from stripe_sandbox.request_log import read_requests
from tests.helpers import TEST_ENV, Api, synchronous_webhooks, wipe


@pytest.fixture
def logged_app(app: Flask, database_url: str, tmp_path: Path) -> Iterator[Flask]:
    holder: dict[str, Flask] = {}
    config = Config.from_env({**TEST_ENV, "DATABASE_URL": database_url, "SANDBOX_REQUEST_LOG": str(tmp_path)})
    logged = create_app(config, webhook_transport=synchronous_webhooks(holder))
    holder["app"] = logged
    logged.config["TESTING"] = False
    yield logged
    wipe(logged)


def test_the_service_s_stripe_requests_are_logged(logged_app: Flask, tmp_path: Path, auth: Any) -> None:
    alice = Api(logged_app.test_client(), auth("alice"))
    workspace = alice.workspace()
    before = read_requests(tmp_path)
    account = alice.account(workspace)
    created = read_requests(tmp_path) - before
    # The create; the rest are reads (the webhook's re-read of the customer, the catalog's products).
    assert created["POST /v1/customers 200"] == 1
    assert all(line.startswith("GET ") for line in created - Counter({"POST /v1/customers 200": 1}))

    before = read_requests(tmp_path)
    assert alice.get(f"/workspaces/{workspace}/billing-accounts/{account['id']}").status_code == 200
    assert read_requests(tmp_path) - before == Counter()  # reads come from the copy: no request


def test_the_setting_is_sandbox_only() -> None:
    assert Config.from_env({**TEST_ENV, "SANDBOX_REQUEST_LOG": "/tmp/x"}).sandbox_request_log == "/tmp/x"
    env = {**TEST_ENV, "STRIPE_API_KEY": "sk_test_real", "SANDBOX_REQUEST_LOG": "/tmp/x"}
    assert Config.from_env(env).sandbox_request_log == ""
