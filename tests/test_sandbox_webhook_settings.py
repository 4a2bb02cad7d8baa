"""The sandbox's webhook delivery settings (SANDBOX_WEBHOOK_CONCURRENCY, SANDBOX_WEBHOOK_ORDERED) and their wiring."""

from __future__ import annotations

from typing import Any

import pytest

from app import build_stripe, http_webhook_transport
from billing.config import Config, ConfigError
from billing.db import Database
from stripe_sandbox.webhook_retries import DELIVERY_TIMEOUT_SECONDS
from tests.helpers import TEST_ENV


def test_defaults_deliver_as_stripe() -> None:
    config = Config.from_env(TEST_ENV)
    assert (config.sandbox_webhook_concurrency, config.sandbox_webhook_ordered) == (32, False)


def test_settings_are_read() -> None:
    config = Config.from_env({**TEST_ENV, "SANDBOX_WEBHOOK_CONCURRENCY": "4", "SANDBOX_WEBHOOK_ORDERED": "1"})
    assert (config.sandbox_webhook_concurrency, config.sandbox_webhook_ordered) == (4, True)


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_concurrency_must_be_a_positive_number(value: str) -> None:
    with pytest.raises(ConfigError, match="SANDBOX_WEBHOOK_CONCURRENCY"):
        Config.from_env({**TEST_ENV, "SANDBOX_WEBHOOK_CONCURRENCY": value})


def test_the_sender_is_built_from_the_settings(database_url: str) -> None:
    config = Config.from_env(
        {**TEST_ENV, "DATABASE_URL": database_url, "SANDBOX_WEBHOOK_CONCURRENCY": "5", "SANDBOX_WEBHOOK_ORDERED": "1"}
    )
    db = Database(config.database_url)
    try:
        sender = build_stripe(config, db, webhook_transport=lambda payload, headers: 200)["webhooks"]
        assert (sender.concurrency, sender.ordered, sender.timeout_seconds) == (5, True, DELIVERY_TIMEOUT_SECONDS)
    finally:
        db.dispose()


def test_the_http_transport_gives_up_at_the_senders_timeout(monkeypatch: Any) -> None:
    import requests

    seen: dict[str, Any] = {}

    class Answer:
        status_code = 204

    def post(url: str, **kwargs: Any) -> Answer:
        seen.update(kwargs, url=url)
        return Answer()

    monkeypatch.setattr(requests, "post", post)
    assert http_webhook_transport("http://127.0.0.1:9/webhooks/stripe", 12.5)(b"{}", {"A": "b"}) == 204
    assert (seen["url"], seen["timeout"], seen["data"], seen["headers"]) == (
        "http://127.0.0.1:9/webhooks/stripe",
        12.5,
        b"{}",
        {"A": "b"},
    )
