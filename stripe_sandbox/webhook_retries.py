"""When Stripe retries a webhook delivery, and how long it waits for an answer.

Stripe's docs (docs.stripe.com/workbench/webhooks, "Retry sending an event"):
"In live mode, Stripe attempts to deliver a given event to your webhook
endpoint for up to 3 days with an exponential back off. [...] In test mode,
Stripe retries three times over a few hours." The sandbox is test mode. The
intervals themselves are not published, so the test-mode schedule here is an
exponential back off that fits "three times over a few hours": retries 30 min,
1 h and 2 h after each failed attempt (the last 3.5 h after the first).

Stripe does not publish its delivery timeout either; its CLI, which forwards
events the way Stripe delivers them, gives up after 30 seconds (stripe-cli
issue #710, answered by Stripe), and a receiver slower than that counts as a
failed attempt ("Timed out" in the Dashboard).
"""

from __future__ import annotations

from collections.abc import Sequence

TEST_MODE_RETRY_DELAYS: tuple[float, ...] = (30 * 60, 60 * 60, 2 * 60 * 60)

DELIVERY_TIMEOUT_SECONDS = 30.0


def next_attempt_at(failed_attempts: int, now: float, delays: Sequence[float] = TEST_MODE_RETRY_DELAYS) -> float | None:
    """Sandbox time of the retry after `failed_attempts` failures, the last at `now`; None: give up."""
    retries_made = failed_attempts - 1
    if retries_made >= len(delays):
        return None
    return now + delays[retries_made]
