"""Billing a subscription: its invoices, prorations, periods, and what time does to it.

Item changes prorate by the second, as pending invoice items or an invoice
charged at once. Changes over time (trial end, renewal, cancel_at, incomplete
expiry, pause_collection.resumes_at) run in `advance()` when the clock reaches
the row's `due_at` (see clock.py), one transition at its own moment.

Collection over time runs in `collect()`, the invoices' own `advance`: a renewal
(or trial-end) invoice is finalized and charged an hour after it is created, as on
Stripe; a failed automatic collection is retried on the account's schedule with the
payment method of that moment (Smart Retries by default; a hard decline is not retried),
and after the last failed retry the subscription ends as the account's setting says
(`dunning.py`: SANDBOX_RETRY_SCHEDULE, SANDBOX_RETRY_END).
"""

from __future__ import annotations

import copy
import decimal
from typing import Any

from stripe_sandbox import coupons, dunning, events, invoice_engine, metadata, prices
from stripe_sandbox.errors import SandboxError
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.periods import add_interval, period_containing
from stripe_sandbox.store import Document, Store
from stripe_sandbox.subscriptions.documents import (
    BILLED,
    INCOMPLETE_EXPIRES_AFTER,
    OBJECT_TYPE,
    TRIAL_WILL_END_BEFORE,
    cadence,
    changed,
    current_period,
    current_period_end,
    customer_of,
    internal_state,
    item_price_rows,
    mark_canceled,
    needs_payment_method,
    payment_method,
    save,
    set_periods,
)
from stripe_sandbox.subscriptions.documents import (
    ENDED as ENDED_STATUSES,
)

# -- invoices -----------------------------------------------------------------------


def item_lines(store: Store, data: Document, period: tuple[int, int], *, trial: bool = False) -> list[Document]:
    return [
        invoice_engine.subscription_line(store, data, item, store.present(price), period, trial=trial)
        for item, price in zip(data["items"]["data"], item_price_rows(store, data), strict=True)
    ]


def draft_invoice(
    store: Store,
    data: Document,
    customer: SandboxObject,
    billing_reason: str,
    lines: list[Document],
    *,
    period: tuple[int, int],
    invoice_id: str | None = None,
    proration_date: int | None = None,
    finalizes_at: int | None = None,
) -> SandboxObject:
    """A draft invoice of `lines` and the pending items this subscription's invoices collect."""
    pending = invoice_engine.pending_items(store, customer.id, subscription_id=data["id"])
    invoice = invoice_engine.create_invoice(
        store,
        customer=customer,
        subscription=data,
        billing_reason=billing_reason,
        collection_method=data["collection_method"],
        days_until_due=data["days_until_due"],
        currency=data["currency"],
        lines=lines,
        pending=pending,
        period=period,
        invoice_id=invoice_id,
        proration_date=proration_date,
        finalizes_at=finalizes_at,
        discounts=data["discounts"],
    )
    if invoice.data["total_discount_amounts"]:
        data["discounts"] = coupons.used_once(store, data["discounts"])
    return invoice


def bill(
    store: Store,
    data: Document,
    customer: SandboxObject,
    invoice: SandboxObject,
    *,
    attempt: bool = True,
    raise_on_failure: bool = False,
    preview: bool = False,
) -> str:
    """Finalize and collect a new invoice of this subscription.

    Returns "paid", "sent" (send_invoice: open until paid), "unattempted"
    (default_incomplete: open, no charge tried) or "failed" (declined, or no
    payment method). With `raise_on_failure` a failure raises its error, which
    rolls the whole request back (error_if_incomplete). A preview stops at the
    draft.
    """
    if preview:
        return "unattempted"
    invoice_engine.finalize(store, invoice)
    if invoice.data["status"] == "paid":
        return "paid"
    if data["collection_method"] == "send_invoice":
        return "sent"
    if not attempt:
        return "unattempted"
    error = invoice_engine.attempt_payment(store, invoice, payment_method(store, data, customer))
    if error is None:
        return "paid"
    if raise_on_failure:
        raise error
    return "failed"


def settle(
    store: Store,
    data: Document,
    customer: SandboxObject,
    invoice: SandboxObject,
    *,
    attempt: bool,
    raise_on_failure: bool,
    preview: bool,
) -> SandboxObject:
    """Bill an invoice a request made (update, resume): an unpaid one leaves the subscription past_due."""
    data["latest_invoice"] = invoice.id
    outcome = bill(store, data, customer, invoice, attempt=attempt, raise_on_failure=raise_on_failure, preview=preview)
    if outcome in ("failed", "unattempted") and data["status"] in BILLED:
        data["status"] = "past_due"
    elif outcome == "paid" and data["status"] == "past_due":
        data["status"] = "active"
    return invoice


def void_open_invoice(store: Store, data: Document) -> None:
    if data["latest_invoice"]:
        invoice = store.get(invoice_engine.INVOICE, data["latest_invoice"], for_update=True)
        if invoice is not None and invoice.data["status"] == "open":
            invoice_engine.void(store, invoice)


# -- pending updates (payment_behavior=pending_if_incomplete) ------------------------------


def apply_pending_update(store: Store, data: Document) -> None:
    """The latest invoice was paid: the changes it waited on apply now, and the pending update is cleared."""
    pending = data["pending_update"]
    data["items"]["data"] = pending["subscription_items"]
    data["items"]["total_count"] = len(data["items"]["data"])
    if pending["billing_cycle_anchor"] is not None:  # a new interval restarted the cycle when the update was made
        data["billing_cycle_anchor"] = pending["billing_cycle_anchor"]
    if "pending_metadata" in internal_state(data):  # merged, as an update's metadata is
        data["metadata"] = metadata.merged(data["metadata"], internal_state(data).pop("pending_metadata"))
    if data["cancel_at_period_end"]:
        data["cancel_at"] = current_period_end(data)
    data["pending_update"] = None
    events.record(store, "customer.subscription.pending_update_applied", store.present_document(OBJECT_TYPE, data))


def expire_pending_update(store: Store, data: Document) -> None:
    """Discard the pending update (its expiry came, or a later change replaces it) and void its invoice."""
    if not data.get("pending_update"):
        return
    void_open_invoice(store, data)
    internal_state(data).pop("pending_metadata", None)
    data["pending_update"] = None
    events.record(store, "customer.subscription.pending_update_expired", store.present_document(OBJECT_TYPE, data))


# -- prorations ------------------------------------------------------------------------


def _proration_item(
    store: Store,
    data: Document,
    customer_id: str,
    item: Document,
    at: int,
    end: int,
    fraction: decimal.Decimal,
    *,
    credit: bool,
) -> SandboxObject | None:
    quantity = item["quantity"] or 0
    if quantity == 0:
        return None
    price_row = store.get(prices.OBJECT_TYPE, item["price"])
    assert price_row is not None
    price = store.present(price_row)
    unit = invoice_engine.to_decimal(price["unit_amount_decimal"]) * fraction
    name = invoice_engine.product_name(store, price["product"])
    amount = invoice_engine.round_amount(unit * quantity)
    words = "Unused time" if credit else "Remaining time"
    return invoice_engine.create_item(
        store,
        customer_id=customer_id,
        currency=price["currency"],
        quantity=quantity,
        unit_amount_decimal=-unit if credit else unit,
        amount=-amount if credit else amount,
        description=f"{words} on {quantity} × {name} after {invoice_engine.format_date(at)}",
        period=(at, end),
        price=price,
        subscription_id=data["id"],
        subscription_item_id=item["id"],
        proration=True,
    )


def prorate(
    store: Store,
    data: Document,
    customer_id: str,
    old_items: list[Document],
    new_items: list[Document],
    at: int,
    period: tuple[int, int],
) -> list[SandboxObject]:
    """Pending invoice items for the rest of `period` from `at`: a credit for each changed or removed
    item's unused time, a charge for each changed or added item's remaining time (by the second)."""
    start, end = period
    if not start <= at < end:
        return []
    fraction = decimal.Decimal(end - at) / decimal.Decimal(end - start)
    old_by_id = {item["id"]: item for item in old_items}
    new_by_id = {item["id"]: item for item in new_items}

    def same(a: Document | None, b: Document | None) -> bool:
        return a is not None and b is not None and (a["price"], a["quantity"]) == (b["price"], b["quantity"])

    created = []
    for item in old_items:
        if not same(item, new_by_id.get(item["id"])):
            created.append(_proration_item(store, data, customer_id, item, at, end, fraction, credit=True))
    for item in new_items:
        if not same(old_by_id.get(item["id"]), item):
            created.append(_proration_item(store, data, customer_id, item, at, end, fraction, credit=False))
    return [row for row in created if row is not None]


def proration_date(params: dict[str, Any], period: tuple[int, int], now: int) -> int:
    if "proration_date" not in params:
        return now
    value = int(params["proration_date"])
    if not period[0] <= value <= period[1]:
        raise SandboxError(
            400,
            "The proration_date must be within the current billing period of the subscription.",
            param="proration_date",
        )
    return value


# -- periods ---------------------------------------------------------------------------


def next_period(store: Store, data: Document, after: int) -> tuple[int, int]:
    """The billing period that starts at `after` (a period end), per the cycle anchor."""
    _, interval, interval_count = cadence(item_price_rows(store, data))
    _, end = period_containing(data["billing_cycle_anchor"], interval, interval_count, after)
    return after, end


def fresh_period(store: Store, data: Document, start: int) -> tuple[int, int]:
    """A new cycle anchored at `start` (trial end, interval change, resume with anchor=now)."""
    _, interval, interval_count = cadence(item_price_rows(store, data))
    data["billing_cycle_anchor"] = start
    period = (start, add_interval(start, interval, interval_count))
    set_periods(data, *period)
    return period


# -- transitions -----------------------------------------------------------------------


def end_trial(
    store: Store,
    data: Document,
    customer: SandboxObject,
    at: int,
    *,
    billing_reason: str,
    attempt: bool = True,
    raise_on_failure: bool = False,
    preview: bool = False,
) -> SandboxObject | None:
    """The trial ends at `at`: a new cycle starts, invoiced (charged an hour later when the clock
    ended it, at once when a request did).

    Without a payment method, `trial_settings.end_behavior.missing_payment_method`
    decides: cancel, pause (Stripe's `paused` status, no invoice), or
    create_invoice (an open invoice, status past_due).
    """
    trial_period = current_period(data)
    data["trial_end"] = at
    period = fresh_period(store, data, at)
    if data["cancel_at_period_end"]:
        data["cancel_at"] = period[1]
    if not preview and needs_payment_method(store, data) and payment_method(store, data, customer) is None:
        behavior = data["trial_settings"]["end_behavior"]["missing_payment_method"]
        if behavior == "cancel":
            mark_canceled(data, at)
            return None
        if behavior == "pause":
            data["status"] = "paused"
            return None
    if billing_reason == "subscription_cycle":
        # The trial ran out (the clock): a renewal like any other. Stripe leaves the invoice a draft
        # and "waits one hour after creation to finalize the invoice" (the Invoice object's docs,
        # https://docs.stripe.com/api/invoices; billing/subscriptions/overview#invoice-lifecycle);
        # `collect()` finalizes and charges it then. The subscription is active meanwhile.
        pause = data["pause_collection"]
        invoice = draft_invoice(
            store,
            data,
            customer,
            billing_reason,
            item_lines(store, data, period),
            period=(trial_period[0], at),
            finalizes_at=None if pause is not None else store.now + FINALIZES_AFTER,
        )
        data["latest_invoice"] = invoice.id
        data["status"] = "active"
        if pause is not None:
            _collect_paused(store, invoice, pause["behavior"])
        return invoice
    # Ended by a request (trial_end=now): invoiced and charged within it.
    invoice = draft_invoice(
        store, data, customer, billing_reason, item_lines(store, data, period), period=(trial_period[0], at)
    )
    data["latest_invoice"] = invoice.id
    outcome = bill(store, data, customer, invoice, attempt=attempt, raise_on_failure=raise_on_failure, preview=preview)
    data["status"] = "active" if outcome in ("paid", "sent") else "past_due"
    return invoice


def _collect_paused(store: Store, invoice: SandboxObject, behavior: str) -> None:
    """Collection paused: the invoice stays a draft, or is finalized and voided / written off."""
    if behavior != "keep_as_draft":
        invoice_engine.finalize(store, invoice)
        if invoice.data["status"] == "open":
            if behavior == "void":
                invoice_engine.void(store, invoice)
            else:
                invoice_engine.mark_uncollectible(store, invoice)


def renew(store: Store, data: Document, customer: SandboxObject) -> None:
    """The current period ended: the next one starts, invoiced in advance; `collect()`
    finalizes and charges the invoice an hour later."""
    old = current_period(data)
    period = next_period(store, data, old[1])
    set_periods(data, *period)
    pause = data["pause_collection"]
    # An unpaid subscription's invoices stay drafts ("Stripe continues to generate invoices ... but
    # they remain in draft status", billing/subscriptions/overview#unpaid-subscriptions).
    waits = pause is not None or data["status"] == "unpaid"
    invoice = draft_invoice(
        store,
        data,
        customer,
        "subscription_cycle",
        item_lines(store, data, period),
        period=old,
        finalizes_at=None if waits else store.now + FINALIZES_AFTER,
    )
    data["latest_invoice"] = invoice.id
    if pause is not None:
        _collect_paused(store, invoice, pause["behavior"])


def trial_will_end(store: Store, data: Document) -> None:
    internal = internal_state(data)
    if not internal.get("trial_will_end_sent"):
        internal["trial_will_end_sent"] = True
        events.record(store, "customer.subscription.trial_will_end", store.present_document(OBJECT_TYPE, data))


def advance(store: Store, row: SandboxObject) -> None:
    """What is due at `store.now` (the row's due_at), run by the clock."""
    at = store.now
    before = store.present(row)
    data = copy.deepcopy(row.data)
    customer = customer_of(store, data)
    if data.get("pending_update") and at >= data["pending_update"]["expires_at"]:
        expire_pending_update(store, data)  # by the period's end at the latest: before its renewal
    if data["status"] == "incomplete" and at >= data["created"] + INCOMPLETE_EXPIRES_AFTER:
        data.update(status="incomplete_expired", ended_at=at)
        void_open_invoice(store, data)
    elif data["cancel_at"] is not None and at >= data["cancel_at"]:
        mark_canceled(data, data["cancel_at"], scheduled=True)
    else:
        pause = data["pause_collection"]
        if pause and pause["resumes_at"] and at >= pause["resumes_at"]:
            data["pause_collection"] = None
        if data["status"] == "trialing":
            if at >= data["trial_end"] - TRIAL_WILL_END_BEFORE:
                trial_will_end(store, data)
            if at >= data["trial_end"]:
                end_trial(store, data, customer, data["trial_end"], billing_reason="subscription_cycle")
        elif data["status"] in BILLED and at >= current_period_end(data):
            renew(store, data, customer)
    save(store, row, data)
    changed(store, row, before)


FINALIZES_AFTER = 3600  # Stripe finalizes a renewal invoice about an hour after creating it


def schedule_retry(store: Store, invoice: SandboxObject, error: SandboxError | None = None) -> bool:
    """After a failed automatic attempt: the next retry, by the account's schedule (`dunning`);
    False when none is left, or when the issuer's decline is one Stripe never retries."""
    data = copy.deepcopy(invoice.data)
    state = internal_state(data).setdefault("dunning", {"first_failure": store.now, "failures": 0})
    state["failures"] += 1
    schedule = dunning.settings().retries_after_first_failure
    hard = error is not None and dunning.is_hard_decline(error.extra.get("decline_code"))
    left: bool = not hard and state["failures"] <= len(schedule)
    data["next_payment_attempt"] = state["first_failure"] + schedule[state["failures"] - 1] if left else None
    invoice_engine.save(store, invoice, data)
    return left


def _retries_exhausted(sub: Document, now: int) -> None:
    """The subscription's status once every retry failed: the account's SANDBOX_RETRY_END."""
    end = dunning.settings().end
    if end == "cancel":
        mark_canceled(sub, now, reason="payment_failed")
    else:
        sub["status"] = end  # unpaid, or left past_due


def collect(store: Store, invoice: SandboxObject) -> None:
    """An invoice's own transition (its due_at): finalize a draft and charge it, or retry a failed one."""
    data = invoice.data
    if data["status"] == "draft":
        invoice_engine.finalize(store, invoice)
        if invoice.data["status"] == "paid" or invoice.data["collection_method"] == "send_invoice":
            _settled(store, invoice)
            return
    elif data["status"] != "open":
        invoice_engine.save(store, invoice, copy.deepcopy(data))  # nothing left to do: no longer due
        return
    subscription = store.get(OBJECT_TYPE, invoice_engine.subscription_of(invoice.data) or "", for_update=True)
    if subscription is not None and subscription.data["pause_collection"] is not None:
        invoice_engine.save(store, invoice, {**copy.deepcopy(invoice.data), "next_payment_attempt": None})
        return  # collection paused: no more attempts
    error = invoice_engine.attempt_payment(store, invoice)
    if error is None:
        _settled(store, invoice)
        return
    retried = schedule_retry(store, invoice, error)
    if subscription is None or subscription.data["latest_invoice"] != invoice.id:
        return
    before = store.present(subscription)
    sub = copy.deepcopy(subscription.data)
    if not retried and sub["status"] not in ENDED_STATUSES:
        _retries_exhausted(sub, store.now)
    elif sub["status"] in BILLED:
        sub["status"] = "past_due"
    save(store, subscription, sub)
    changed(store, subscription, before)


def _settled(store: Store, invoice: SandboxObject) -> None:
    if invoice.data["status"] == "paid":
        invoice_paid(store, invoice.data)


def invoice_paid(store: Store, invoice: Document) -> None:
    """An invoice was paid by request: the subscription waiting on it (incomplete, past_due) becomes
    active, or the pending update waiting on it applies."""
    subscription_id = invoice_engine.subscription_of(invoice)
    row = store.get(OBJECT_TYPE, subscription_id, for_update=True) if subscription_id else None
    if row is None or row.data["latest_invoice"] != invoice["id"]:
        return
    if row.data.get("pending_update"):
        before = store.present(row)
        data = copy.deepcopy(row.data)
        apply_pending_update(store, data)
        save(store, row, data)
        changed(store, row, before)
        return
    if row.data["status"] not in ("incomplete", "past_due", "unpaid"):
        return
    before = store.present(row)
    save(store, row, {**copy.deepcopy(row.data), "status": "active"})
    changed(store, row, before)
