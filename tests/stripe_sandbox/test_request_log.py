"""SANDBOX_REQUEST_LOG's log: one line per request the emulator answers, by path template."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import stripe

from stripe_sandbox import SandboxHTTPClient, SqlSessions
from stripe_sandbox.request_log import read_requests


def test_each_request_is_one_line_with_its_template_and_status(database: SqlSessions, tmp_path: Path) -> None:
    client = stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(database, request_log=str(tmp_path)))
    customer = client.v1.customers.create(params={"name": "Ada"})
    client.v1.customers.retrieve(customer.id)
    client.v1.customers.update(customer.id, params={"name": "Ada L."})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.retrieve("cus_missing")

    assert read_requests(tmp_path) == Counter(
        {
            "POST /v1/customers 200": 1,
            "GET /v1/customers/{customer} 200": 1,
            "POST /v1/customers/{customer} 200": 1,
            "GET /v1/customers/{customer} 404": 1,
        }
    )
    # One file, named after the process that made the requests.
    assert [p.name for p in tmp_path.iterdir()] == [f"stripe-requests-{os.getpid()}.log"]


def test_nothing_is_written_without_a_directory(
    database: SqlSessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    client = stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(database))
    client.v1.customers.create(params={"name": "Ada"})
    assert list(tmp_path.iterdir()) == []
