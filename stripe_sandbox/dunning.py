"""When a failed automatic collection is retried, and what becomes of the subscription after the
last failed retry: the account's settings in Stripe's Dashboard (Billing > Revenue recovery >
Retries, https://docs.stripe.com/billing/revenue-recovery/smart-retries), read from the
environment as the sandbox's other settings are:

`SANDBOX_RETRY_SCHEDULE`
    `smart` (default): Smart Retries as Stripe recommends them, 8 tries within 2 weeks;
    `smart:<tries>:<days>`: Smart Retries, that many tries (2-8) within that many days (1-60).
    Stripe's machine learning picks the moments; the sandbox spreads the retries evenly
    over the window from the first failure, so tests can count on them.
    `<days>,<days>,...`: a custom schedule, up to three retries, each that many days after the
    previous attempt (e.g. `3,5,7`).
`SANDBOX_RETRY_END`
    `cancel` (default, "cancel the subscription"), `unpaid` ("mark the subscription as unpaid") or
    `past_due` ("leave the subscription past-due"): the subscription's status once every retry has
    failed.

Stripe does not retry a hard decline, whatever the schedule ("The issuer returned a hard decline
code", the same page's #non-retryable-decline-codes): the subscription goes straight to the end state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DAY = 86400
END_STATES = ("cancel", "unpaid", "past_due")
# The decline codes Stripe does not retry (smart-retries#non-retryable-decline-codes): the card
# is gone or the issuer said never.
HARD_DECLINES = frozenset(
    {
        "incorrect_number",
        "lost_card",
        "pickup_card",
        "stolen_card",
        "revocation_of_authorization",
        "revocation_of_all_authorizations",
        "authentication_required",
        "highest_risk_level",
        "transaction_not_allowed",
        "do_not_try_again",
        "fraudulent",
    }
)


class RetrySettingsError(ValueError):
    """A SANDBOX_RETRY_* value the sandbox can't use (the message says which and why)."""


@dataclass(frozen=True)
class RetrySettings:
    # Seconds after the first failure of each retry, in order.
    retries_after_first_failure: tuple[int, ...]
    end: str


def _smart(tries: int, days: int) -> tuple[int, ...]:
    window = days * DAY
    retries = tries - 1  # the first try is the one that failed
    return tuple(round(window * n / retries) for n in range(1, retries + 1))


def _schedule(raw: str) -> tuple[int, ...]:
    raw = raw.strip() or "smart"
    if raw == "smart":
        return _smart(8, 14)
    if raw.startswith("smart:"):
        try:
            tries, days = (int(part) for part in raw.split(":")[1:])
        except ValueError:
            raise RetrySettingsError(
                "SANDBOX_RETRY_SCHEDULE must be smart, smart:<tries>:<days> or days like 3,5,7"
            ) from None
        if not 2 <= tries <= 8 or not 1 <= days <= 60:
            raise RetrySettingsError("SANDBOX_RETRY_SCHEDULE smart:<tries>:<days>: 2-8 tries within 1-60 days")
        return _smart(tries, days)
    try:
        gaps = [int(part) for part in raw.split(",")]
    except ValueError:
        raise RetrySettingsError(
            "SANDBOX_RETRY_SCHEDULE must be smart, smart:<tries>:<days> or days like 3,5,7"
        ) from None
    if not 1 <= len(gaps) <= 3 or any(gap < 1 for gap in gaps):
        raise RetrySettingsError(
            "SANDBOX_RETRY_SCHEDULE: a custom schedule is 1 to 3 retries, each at least "
            "1 day after the previous attempt"
        )
    moments, total = [], 0
    for gap in gaps:
        total += gap * DAY
        moments.append(total)
    return tuple(moments)


def settings(env: Mapping[str, str] | None = None) -> RetrySettings:
    """The retry settings of `env` (default: the process environment); raises RetrySettingsError."""
    env = os.environ if env is None else env
    end = (env.get("SANDBOX_RETRY_END") or "cancel").strip()
    if end not in END_STATES:
        raise RetrySettingsError("SANDBOX_RETRY_END must be cancel, unpaid or past_due")
    return RetrySettings(_schedule(env.get("SANDBOX_RETRY_SCHEDULE") or ""), end)


def is_hard_decline(decline_code: object) -> bool:
    return decline_code in HARD_DECLINES
