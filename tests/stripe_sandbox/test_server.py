"""`python -m stripe_sandbox`'s server: the library's HTTP transport gets the in-process client's
answers, events go to the webhook URL signed as Stripe signs them, hosted pages are served."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import stripe

from stripe_sandbox import SqlSessions
from stripe_sandbox.server import SandboxServer
from tests.db_proxy import bind_local

SECRET = "whsec_server_test"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[bytes, str]], threading.Event]]:
    """A webhook endpoint on loopback that keeps what it is sent (body, Stripe-Signature); it
    answers only while its gate (the third item) is open."""
    received: list[tuple[bytes, str]] = []
    gate = threading.Event()
    gate.set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            gate.wait(30)
            received.append((body, self.headers.get("Stripe-Signature", "")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    listener = bind_local()
    server = ThreadingHTTPServer(listener.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/webhooks/stripe", received, gate
    gate.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def served(database: SqlSessions, receiver: Any) -> Iterator[SandboxServer]:
    server = SandboxServer(database, bind_local(), webhook_url=receiver[0], webhook_secret=SECRET)
    server.start()
    yield server
    server.shutdown()


def test_the_library_over_http_gets_the_emulators_answers(served: SandboxServer, receiver: Any) -> None:
    client = stripe.StripeClient("sk_test_server", base_addresses={"api": served.url}, max_network_retries=0)
    customer = client.v1.customers.create({"name": "Over HTTP"}, {"idempotency_key": "server-1"})
    assert client.v1.customers.create({"name": "Over HTTP"}, {"idempotency_key": "server-1"}).id == customer.id
    assert client.v1.customers.retrieve(customer.id).name == "Over HTTP"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.customers.retrieve("cus_missing")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    # curl's `-u sk_test_...:` (Basic) is a key too; no key is Stripe's 401.
    assert (
        requests.get(f"{served.url}/v1/customers/{customer.id}", auth=("sk_test_x", ""), timeout=5).json()["id"]
        == customer.id
    )
    assert requests.get(f"{served.url}/v1/customers", timeout=5).status_code == 401
    # The event, signed with the secret, reaches the webhook URL.
    deadline = time.monotonic() + 10
    while not receiver[1] and time.monotonic() < deadline:
        time.sleep(0.05)
    payload, signature = receiver[1][0]
    event = stripe.Webhook.construct_event(payload, signature, SECRET)
    assert (event.type, event.data.object.id) == ("customer.created", customer.id)


def test_python_m_stripe_sandbox_serves_on_loopback_and_refuses_unsigned_webhooks() -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "stripe_sandbox", "--webhook-url", "http://127.0.0.1:1/x"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": ""},
    )
    assert refused.returncode == 2 and "--webhook-secret" in refused.stderr
    process = subprocess.Popen(
        [sys.executable, "-m", "stripe_sandbox", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split("serving on ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(f"{url}/v1/products", auth=("sk_test_x", ""), timeout=10).json()["data"] == []
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_the_servers_clock_advances_in_the_background_and_says_when_its_events_are_out(
    served: SandboxServer, receiver: Any
) -> None:
    """A service on STRIPE_API_BASE has no /sandbox routes of its own: the server's clock renews a
    subscription as the in-process clock does, and says `ready` only once its events are sent."""
    _, received, gate = receiver
    key = {"Authorization": "Bearer sk_test_clock"}

    def status() -> str:
        return str(requests.get(f"{served.url}/sandbox/clock", headers=key, timeout=5).json()["status"])

    try:
        client = stripe.StripeClient("sk_test_clock", base_addresses={"api": served.url}, max_network_retries=0)
        customer = client.v1.customers.create({"name": "Clocked"})
        card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
        price = client.v1.prices.create(
            {"currency": "usd", "unit_amount": 500, "recurring": {"interval": "month"}, "product_data": {"name": "S"}}
        )
        subscription = client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": price.id}], "default_payment_method": card.id}
        )
        deadline = time.monotonic() + 30
        while status() != "ready":  # the set-up's events out
            assert time.monotonic() < deadline
            time.sleep(0.05)
        before = requests.get(f"{served.url}/sandbox/clock", headers=key, timeout=5).json()
        gate.clear()  # the endpoint stops answering: the renewal's events stay in flight

        advanced = requests.post(f"{served.url}/sandbox/clock/advance", json={"days": 32}, headers=key, timeout=5)

        assert advanced.status_code == 200 and advanced.json()["status"] == "advancing"
        assert advanced.json()["now"] >= before["now"] + 32 * 86400
        while served.clock.reading().status != "ready":  # the renewal has run
            assert time.monotonic() < deadline
            time.sleep(0.05)
        renewed = client.v1.subscriptions.retrieve(subscription.id)
        assert renewed.items.data[0].current_period_start > subscription.items.data[0].current_period_start
        assert status() == "advancing"  # its events are not out yet
        gate.set()
        while status() != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sent = [json.loads(body)["type"] for body, _ in received]
        assert "invoice.created" in sent
    finally:
        gate.set()


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        ("get", "/sandbox/clock", None, {}, 401),  # no key: Stripe's 401
        ("post", "/sandbox/clock/advance", {"days": 1}, {"Authorization": "Bearer sk_live_x"}, 401),
        ("post", "/sandbox/clock/advance", {"days": 0}, {"Authorization": "Bearer sk_test_x"}, 400),
        ("post", "/sandbox/clock/advance", {"days": "soon"}, {"Authorization": "Bearer sk_test_x"}, 400),
        ("post", "/sandbox/clock/advance", [1], {"Authorization": "Bearer sk_test_x"}, 400),
    ],
)
def test_the_servers_clock_refuses_what_stripe_would(
    served: SandboxServer, method: str, path: str, body: Any, headers: dict[str, str], status: int
) -> None:
    before = served.clock.reading().now
    answer = requests.request(method, served.url + path, json=body, headers=headers, timeout=5)
    assert answer.status_code == status and answer.json()["error"]["type"] == "invalid_request_error"
    assert served.clock.reading().now - before <= 1  # unmoved
