"""A stateful emulator of the Stripe API, used when no Stripe key is configured.

    client = stripe.StripeClient("sk_test_sandbox", http_client=SandboxHTTPClient(database),
                                 max_network_retries=2)

State lives in the service's database (`sandbox_*` tables); `SandboxClock`
reads and advances sandbox time.
"""

from billing.sandbox.clock import SandboxClock
from billing.sandbox.http_client import SandboxHTTPClient
from billing.sandbox.models import SANDBOX_TABLES, create_sandbox_tables, drop_sandbox_tables

__all__ = [
    "SANDBOX_TABLES",
    "SandboxClock",
    "SandboxHTTPClient",
    "create_sandbox_tables",
    "drop_sandbox_tables",
]
