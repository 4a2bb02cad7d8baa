"""A stateful emulator of the Stripe API, plugged into the `stripe` library as its HTTP client.

    install(sessions)  # creates the emulator's tables (idempotent)
    webhooks = WebhookSender(sessions, webhook_secret, transport, background=True)
    client = stripe.StripeClient("sk_test_sandbox", max_network_retries=2,
                                 http_client=SandboxHTTPClient(sessions, webhooks=webhooks))
    SandboxClock(sessions, webhooks=webhooks).advance_and_process(days=30)

`sessions` is any `SessionSource` (`read()` / `write()` session factories):
the host's own database object, or `SqlSessions(url)` standalone. State lives
in that database, in the emulator's own `sandbox_*` tables. `SandboxClock`
reads and advances sandbox time and runs what comes due (trial ends,
renewals, ...), at once or, like Stripe's test clocks, in the background
(`advance_in_background()`, then `reading().status`); every change records
a Stripe event, which `WebhookSender` delivers signed like Stripe's. Payment methods come from Stripe's test tokens
(`pm_card_visa`, `pm_card_chargeDeclined`, ...: `payment_methods.TEST_TOKENS`).
`SandboxAuthenticator(sessions, webhooks=webhooks).complete(client_secret, succeed)`
answers a 3-D Secure challenge as the customer would in Stripe.js.
`SandboxHTTPClient(..., rate_limits="live" | "test")` enforces Stripe's rate
limits, counted in the database so that processes share them (`rate_limits`).
"""

from stripe_sandbox.authentication import SandboxAuthenticator
from stripe_sandbox.clock import ClockAdvancing, ClockReading, SandboxClock
from stripe_sandbox.database import SessionSource, SqlSessions, install
from stripe_sandbox.http_client import SandboxHTTPClient
from stripe_sandbox.models import SANDBOX_TABLES, create_sandbox_tables, drop_sandbox_tables
from stripe_sandbox.payment_methods import TEST_TOKENS
from stripe_sandbox.webhooks import WebhookSender

__all__ = [
    "SANDBOX_TABLES",
    "ClockAdvancing",
    "ClockReading",
    "SandboxAuthenticator",
    "TEST_TOKENS",
    "SandboxClock",
    "SandboxHTTPClient",
    "SessionSource",
    "SqlSessions",
    "WebhookSender",
    "create_sandbox_tables",
    "drop_sandbox_tables",
    "install",
]
