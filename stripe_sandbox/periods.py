"""Billing-period arithmetic, as Stripe does it.

Period boundaries are derived from the billing cycle anchor alone: boundary k
is the anchor shifted by k intervals, with the day of month clamped to the
target month (an anchor on Jan 31 gives Feb 28/29, then Mar 31). Deriving
them instead of chaining period ends keeps a subscription's state computable
at any sandbox time, which is what advancing the clock needs.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

_DAY = 86400
_APPROX_SECONDS = {"day": _DAY, "week": 7 * _DAY, "month": 30 * _DAY, "year": 365 * _DAY}


def _add_months(moment: datetime, months: int) -> datetime:
    total = moment.month - 1 + months
    year, month = moment.year + total // 12, total % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def boundary(anchor: int, interval: str, interval_count: int, k: int) -> int:
    """The anchor shifted by k periods of `interval_count` `interval`s (k may be negative)."""
    steps = k * interval_count
    if interval == "day":
        return anchor + steps * _DAY
    if interval == "week":
        return anchor + steps * 7 * _DAY
    months = steps if interval == "month" else 12 * steps
    moment = datetime.fromtimestamp(anchor, tz=UTC)
    return int(_add_months(moment, months).timestamp())


def add_interval(start: int, interval: str, interval_count: int) -> int:
    return boundary(start, interval, interval_count, 1)


def period_containing(anchor: int, interval: str, interval_count: int, at: int) -> tuple[int, int]:
    """(start, end) of the period of the cycle anchored at `anchor` with start <= at < end."""
    k = (at - anchor) // (_APPROX_SECONDS[interval] * interval_count)
    while boundary(anchor, interval, interval_count, k) > at:
        k -= 1
    while boundary(anchor, interval, interval_count, k + 1) <= at:
        k += 1
    return boundary(anchor, interval, interval_count, k), boundary(anchor, interval, interval_count, k + 1)
