"""What requests do to a subscription: create, update, resume, cancel.

Each function changes the stored document (and bills what the change bills);
the HTTP handlers around them record the events. `create` and `update` also
serve previews (`preview=True`): the same code path stops short of charging,
and the caller rolls everything back.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import select

from stripe_sandbox import coupons, events, invoice_engine, metadata, payment_methods, tax
from stripe_sandbox.errors import (
    SandboxError,
    no_payment_method,
    not_supported,
    parameter_missing,
    parameters_exclusive,
    resource_missing,
)
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.periods import add_interval, period_containing
from stripe_sandbox.store import Document, Store
from stripe_sandbox.subscriptions.billing_cycle import (
    bill,
    draft_invoice,
    end_trial,
    expire_pending_update,
    fresh_period,
    item_lines,
    prorate,
    proration_date,
    settle,
    trial_will_end,
    void_open_invoice,
)
from stripe_sandbox.subscriptions.documents import (
    BILLED,
    ENDED,
    MAX_TRIAL_SECONDS,
    OBJECT_TYPE,
    PENDING_UPDATE_EXPIRES_AFTER,
    apply_collection,
    automatic_tax,
    cadence,
    changed,
    current_period,
    current_period_end,
    customer_of,
    due_at,
    internal_state,
    invoice_settings,
    item_price_rows,
    mark_canceled,
    needs_payment_method,
    new_document,
    pause_collection,
    payment_method,
    payment_settings,
    pending_invoice_item_interval,
    reject,
    require_customer,
    save,
    set_periods,
    trial_settings,
)
from stripe_sandbox.subscriptions.invoice_limits import count_quantity_update, refuse_another_invoice
from stripe_sandbox.subscriptions.items import apply_item_changes, check_distinct_prices, new_item

# Known to Stripe, not emulated: each would change amounts, periods or
# ownership in ways a response would have to show.
UNSUPPORTED_CREATE = (
    "add_invoice_items",
    "application_fee_percent",
    "backdate_start_date",
    "billing_cycle_anchor",
    "billing_cycle_anchor_config",
    "billing_schedules",
    "billing_thresholds",
    "customer_account",
    "default_source",
    "default_tax_rates",
    "on_behalf_of",
    "transfer_data",
)
UNSUPPORTED_UPDATE = (
    "add_invoice_items",
    "application_fee_percent",
    "billing_cycle_anchor",
    "billing_schedules",
    "billing_thresholds",
    "default_source",
    "default_tax_rates",
    "on_behalf_of",
    "transfer_data",
    "trial_from_plan",
)
# What an update with payment_behavior=pending_if_incomplete may send (Stripe's pending updates
# reference, "Supported attributes", with what later API versions added: metadata and discounts
# (2026-05-27.dahlia), item discounts (2026-07-29.dahlia), cancel_at_period_end (2026-09-30.endive)).
PENDING_UPDATE_PARAMS = frozenset(
    {
        "add_invoice_items",
        "billing_cycle_anchor",
        "cancel_at_period_end",
        "discounts",
        "expand",
        "items",
        "metadata",
        "payment_behavior",
        "proration_behavior",
        "proration_date",
        "trial_end",
        "trial_from_plan",
    }
)
PENDING_UPDATE_ITEM_PARAMS = frozenset({"id", "price", "quantity", "discounts"})
# Of those, what the sandbox does not do as a pending update (beyond UNSUPPORTED_UPDATE).
PENDING_UPDATE_NOT_EMULATED = ("cancel_at_period_end", "discounts", "trial_end")


# -- shared by create and update -------------------------------------------------------


def schedule_cancel(data: Document, params: dict[str, Any], now: int) -> None:
    """`cancel_at` / `cancel_at_period_end`, shared by create and update."""
    if "cancel_at" in params and params.get("cancel_at_period_end"):
        raise parameters_exclusive("cancel_at", "cancel_at_period_end")
    if "cancel_at_period_end" in params:
        data["cancel_at_period_end"] = params["cancel_at_period_end"]
        data["cancel_at"] = current_period_end(data) if params["cancel_at_period_end"] else None
    if "cancel_at" in params:
        cancel_at = params["cancel_at"]
        data["cancel_at_period_end"] = False
        if cancel_at == "":
            data["cancel_at"] = None
        elif isinstance(cancel_at, str):  # min_period_end / max_period_end / max_billed_until
            data["cancel_at"] = current_period_end(data)
        elif cancel_at <= now:
            raise SandboxError(
                400, "Invalid timestamp: must be an integer Unix timestamp in the future.", param="cancel_at"
            )
        else:
            data["cancel_at"] = cancel_at
    scheduled = data["cancel_at"] is not None
    data["cancellation_details"]["reason"] = "cancellation_requested" if scheduled else None
    # Stripe's canceled_at: when the (still pending) cancellation was last requested.
    data["canceled_at"] = (
        (now if "cancel_at" in params or "cancel_at_period_end" in params else data["canceled_at"])
        if scheduled
        else None
    )


def future_trial_end(value: int, now: int) -> int:
    if value <= now:
        raise SandboxError(
            400, "Invalid timestamp: must be an integer Unix timestamp in the future.", param="trial_end"
        )
    if value > now + MAX_TRIAL_SECONDS:
        raise SandboxError(400, "Invalid timestamp: can be no more than two years in the future.", param="trial_end")
    return value


# -- create ------------------------------------------------------------------------------


def _check_create(store: Store, params: dict[str, Any]) -> tuple[SandboxObject, str]:
    """The customer and payment_behavior of a create, or the error Stripe gives first."""
    reject(params, UNSUPPORTED_CREATE)
    if "customer" not in params:
        raise parameter_missing("customer")
    customer = require_customer(store, params["customer"])
    if not params.get("items"):
        raise parameter_missing("items")
    if (params.get("automatic_tax") or {}).get("enabled"):
        tax.require_location(customer.data)  # before anything is made
    behavior = params.get("payment_behavior", "allow_incomplete")
    if behavior == "pending_if_incomplete":
        raise SandboxError(
            400,
            "`payment_behavior=pending_if_incomplete` can only be used when updating a subscription.",
            param="payment_behavior",
        )
    return customer, behavior


def _trial_end_at_creation(params: dict[str, Any], price_rows: list[SandboxObject], now: int) -> int | None:
    if "trial_end" in params and "trial_period_days" in params:
        raise parameters_exclusive("trial_end", "trial_period_days")
    if "trial_end" in params:
        return None if params["trial_end"] == "now" else future_trial_end(params["trial_end"], now)
    if "trial_period_days" in params:
        days = params["trial_period_days"]
        if not 0 <= days <= 730:
            raise SandboxError(400, "Invalid trial_period_days: must be between 0 and 730.", param="trial_period_days")
        return now + days * 86400 if days else None
    if params.get("trial_from_plan"):
        days = max((row.data["recurring"]["trial_period_days"] or 0) for row in price_rows)
        return now + days * 86400 if days else None
    return None


def _start_trial(store: Store, data: Document, trial_end: int) -> list[Document]:
    """A new subscription starts trialing: its first invoice bills the trial (0)."""
    now = store.now
    data.update(status="trialing", trial_start=now, trial_end=trial_end, billing_cycle_anchor=trial_end)
    set_periods(data, now, trial_end)
    return item_lines(store, data, (now, trial_end), trial=True)


def _start_first_period(
    store: Store, data: Document, customer: SandboxObject, interval: tuple[str, int], *, behavior: str, preview: bool
) -> list[Document]:
    """A new subscription starts its first paid period: the lines its first invoice bills."""
    now = store.now
    period = (now, add_interval(now, *interval))
    set_periods(data, *period)
    lines = item_lines(store, data, period)
    needs_payment = needs_payment_method(store, data)
    if (
        needs_payment
        and behavior != "default_incomplete"
        and not preview
        and payment_method(store, data, customer) is None
    ):
        raise no_payment_method()
    # default_incomplete leaves the first invoice open for the customer to pay; otherwise a
    # failing charge raises (error_if_incomplete) or makes it incomplete (allow_incomplete) in `create`.
    data["status"] = "incomplete" if needs_payment and behavior == "default_incomplete" else "active"
    return lines


def create(store: Store, params: dict[str, Any], *, preview: bool = False) -> tuple[SandboxObject, SandboxObject]:
    """Insert the subscription and bill its first invoice; returns both (a preview keeps the draft)."""
    now = store.now
    customer, behavior = _check_create(store, params)
    subscription_id = store.new_id(OBJECT_TYPE)
    items = [new_item(store, subscription_id, spec, f"items[{i}]") for i, spec in enumerate(params["items"])]
    check_distinct_prices(items)
    default_payment_method = None
    if params.get("default_payment_method"):
        default_payment_method = payment_methods.require_attached(
            store, customer.id, params["default_payment_method"], param="default_payment_method"
        ).id
    data = new_document(subscription_id, customer.id, items, default_payment_method, params, now)
    data["discounts"] = coupons.apply(
        store, params.get("discounts") or [], customer_id=customer.id, subscription_id=subscription_id
    )
    apply_collection(data, params)
    price_rows = item_price_rows(store, data)
    currency, interval, interval_count = cadence(price_rows)
    if params.get("currency", currency).lower() != currency:
        raise not_supported("currency")
    data["currency"] = currency
    if params.get("pending_invoice_item_interval"):
        data["pending_invoice_item_interval"] = pending_invoice_item_interval(params["pending_invoice_item_interval"])

    trial_end = _trial_end_at_creation(params, price_rows, now)
    if trial_end is not None:
        lines = _start_trial(store, data, trial_end)
    else:
        lines = _start_first_period(
            store, data, customer, (interval, interval_count), behavior=behavior, preview=preview
        )
    schedule_cancel(data, params, now)
    invoice_id = store.new_id(invoice_engine.INVOICE)
    data["latest_invoice"] = invoice_id
    # A copy: `data` goes on changing while billing (an in-place change to the stored
    # document would make the final save compare equal to it and write nothing).
    row = store.insert(OBJECT_TYPE, copy.deepcopy(data), customer=customer.id, due_at=due_at(data))
    invoice = draft_invoice(
        store, data, customer, "subscription_create", lines, period=(now, now), invoice_id=invoice_id
    )
    outcome = bill(
        store,
        data,
        customer,
        invoice,
        attempt=behavior != "default_incomplete",
        raise_on_failure=behavior == "error_if_incomplete",
        preview=preview,
    )
    if outcome == "failed":
        data["status"] = "incomplete"
    save(store, row, copy.deepcopy(data))  # what billing changed (a `once` discount used up)
    # The first payment is attempted within the create request, so Stripe's
    # customer.subscription.created already carries its outcome: `incomplete` when it failed
    # ("If the initial payment attempt fails, the subscription is created in an incomplete
    # status", https://docs.stripe.com/billing/subscriptions/overview#payment-status).
    events.created(store, row)
    return row, invoice


# -- update ------------------------------------------------------------------------------


def _check_update(data: Document, params: dict[str, Any]) -> str:
    """The payment_behavior of an update, or the error Stripe gives first."""
    if data["status"] in ENDED and set(params) - {"metadata", "cancellation_details", "expand"}:
        raise SandboxError(400, "A canceled subscription can only update its cancellation_details and metadata.")
    reject(params, UNSUPPORTED_UPDATE)
    behavior: str = params.get("payment_behavior", "allow_incomplete")
    if behavior == "pending_if_incomplete":
        _check_pending_update(data, params)
    return behavior


def _not_pending(param: str) -> SandboxError:
    # Stripe refuses these; its exact wording is not published.
    return SandboxError(
        400,
        f"`{param}` cannot be used with `payment_behavior=pending_if_incomplete`: a pending update supports "
        "only the parameters listed in https://docs.stripe.com/billing/subscriptions/pending-updates-reference.",
        param=param,
    )


def _check_pending_update(data: Document, params: dict[str, Any]) -> None:
    for name in params:
        if name not in PENDING_UPDATE_PARAMS:
            raise _not_pending(name)
    for index, spec in enumerate(params.get("items") or []):
        for name in spec:
            if name not in PENDING_UPDATE_ITEM_PARAMS:
                raise _not_pending(f"items[{index}][{name}]")
    reject(params, PENDING_UPDATE_NOT_EMULATED)
    if data["collection_method"] != "charge_automatically":
        raise SandboxError(
            400,
            "Pending updates are not supported on subscriptions with `collection_method=send_invoice`.",
            param="payment_behavior",
        )


def _update_descriptive(store: Store, data: Document, customer: SandboxObject, params: dict[str, Any]) -> None:
    """The fields an update may change even on an ended subscription (and default_payment_method)."""
    if "metadata" in params:
        data["metadata"] = metadata.merged(data["metadata"], params["metadata"])
    if "description" in params:
        data["description"] = params["description"] or None
    if "default_payment_method" in params:
        value = params["default_payment_method"]
        if value:
            value = payment_methods.require_attached(store, customer.id, value, param="default_payment_method").id
        data["default_payment_method"] = value or None
    if "discounts" in params:  # replaces them all ("" removes them)
        data["discounts"] = coupons.apply(
            store, params["discounts"] or [], customer_id=customer.id, subscription_id=data["id"]
        )
    if "cancellation_details" in params:
        details = params["cancellation_details"]
        for field in ("comment", "feedback"):
            if field in details:
                data["cancellation_details"][field] = details[field] or None


def _update_settings(data: Document, params: dict[str, Any], now: int) -> None:
    """Settings that change nothing billed by themselves."""
    apply_collection(data, params)
    if "pause_collection" in params:
        data["pause_collection"] = pause_collection(params["pause_collection"], now)
    if "payment_settings" in params:
        data["payment_settings"] = payment_settings(params["payment_settings"])
    if "automatic_tax" in params:
        data["automatic_tax"] = automatic_tax(params["automatic_tax"])
    if "invoice_settings" in params:
        data["invoice_settings"] = invoice_settings(data["invoice_settings"], params["invoice_settings"])
    if "trial_settings" in params:
        data["trial_settings"] = trial_settings(params["trial_settings"])
    if "pending_invoice_item_interval" in params:
        data["pending_invoice_item_interval"] = pending_invoice_item_interval(params["pending_invoice_item_interval"])


def change_items(
    store: Store,
    data: Document,
    customer: SandboxObject,
    params: dict[str, Any],
    *,
    attempt: bool,
    raise_on_failure: bool,
    preview: bool,
) -> SandboxObject | None:
    """Apply `items` changes with their prorations; returns the invoice billed now, if any."""
    now = store.now
    old_items = copy.deepcopy(data["items"]["data"])
    old_cadence = cadence(item_price_rows(store, data))[1:]
    period = current_period(data)
    apply_item_changes(store, data, params["items"])
    currency, interval, interval_count = cadence(item_price_rows(store, data))
    if currency != data["currency"]:
        raise SandboxError(
            400,
            "Currency and interval fields must match across all plans on this "
            "subscription. Found mismatch in currency field.",
            param="items",
        )
    data["items"]["total_count"] = len(data["items"]["data"])
    behavior = params.get("proration_behavior", "create_prorations")
    at = proration_date(params, period, now)
    billed = data["status"] in BILLED
    billing = {"attempt": attempt, "raise_on_failure": raise_on_failure, "preview": preview}
    if (interval, interval_count) != old_cadence and data["status"] != "trialing":
        # A new billing interval restarts the cycle now (Stripe resets the anchor)
        # and invoices the new period at once, with a credit for the old one.
        if billed and behavior != "none":
            prorate(store, data, customer.id, old_items, [], at, period)
        new_period = fresh_period(store, data, now)
        if not billed:
            return None
        if not preview:
            refuse_another_invoice(store, data)
        invoice = draft_invoice(
            store, data, customer, "subscription_update", item_lines(store, data, new_period), period=(now, now)
        )
        return settle(store, data, customer, invoice, **billing)
    set_periods(data, *period)  # new items join the current period
    if not billed or behavior == "none":
        return None  # `none`: the new amounts apply from the next period
    prorations = prorate(store, data, customer.id, old_items, data["items"]["data"], at, period)
    if behavior != "always_invoice" or not prorations:
        return None  # create_prorations: the next invoice collects them
    if not preview:
        refuse_another_invoice(store, data)
    invoice = draft_invoice(
        store,
        data,
        customer,
        "subscription_update",
        [],
        period=(now, now),
        proration_date=at if "proration_date" in params else None,
    )
    return settle(store, data, customer, invoice, **billing)


def update_trial_end(
    store: Store,
    data: Document,
    value: Any,
    customer: SandboxObject,
    *,
    attempt: bool,
    raise_on_failure: bool,
    preview: bool,
) -> SandboxObject | None:
    now = store.now
    if value == "now":
        if data["status"] != "trialing":
            return None
        trial_will_end(store, data)  # Stripe sends it when a trial is ended early too
        return end_trial(
            store,
            data,
            customer,
            now,
            billing_reason="subscription_update",
            attempt=attempt,
            raise_on_failure=raise_on_failure,
            preview=preview,
        )
    trial_end = future_trial_end(value, now)
    if data["status"] != "trialing":
        data["trial_start"] = now
        start = now
    else:
        start = current_period(data)[0]
    data.update(status="trialing", trial_end=trial_end, billing_cycle_anchor=trial_end)
    internal_state(data)["trial_will_end_sent"] = False
    set_periods(data, start, trial_end)
    return None


def _update_billing(
    store: Store, data: Document, customer: SandboxObject, params: dict[str, Any], *, behavior: str, preview: bool
) -> SandboxObject | None:
    """Items, trial end and scheduled cancellation: what an update may bill at once."""
    # error_if_incomplete: a failed charge fails the request, which then changes nothing.
    billing = {
        "attempt": behavior != "default_incomplete",
        "raise_on_failure": behavior == "error_if_incomplete",
        "preview": preview,
    }
    invoice = None
    if "items" in params:
        invoice = change_items(store, data, customer, params, **billing)
    if "trial_end" in params:
        invoice = update_trial_end(store, data, params["trial_end"], customer, **billing) or invoice
    if "cancel_at" in params or "cancel_at_period_end" in params:
        schedule_cancel(data, params, store.now)
    elif data["cancel_at_period_end"]:
        data["cancel_at"] = current_period_end(data)  # the period may have moved
    return invoice


def update(store: Store, row: SandboxObject, params: dict[str, Any], *, preview: bool = False) -> SandboxObject | None:
    """Apply an update to the row; returns the invoice it billed at once, if any."""
    data = copy.deepcopy(row.data)
    behavior = _check_update(data, params)
    customer = customer_of(store, data)
    if (params.get("automatic_tax") or {}).get("enabled"):
        tax.require_location(customer.data)  # before anything changes
    if not preview:
        count_quantity_update(store, data, params.get("items") or [])
    if not preview and data.get("pending_update") and ("items" in params or "trial_end" in params):
        expire_pending_update(store, data)  # what it would change is being changed again: it no longer applies
    if behavior == "pending_if_incomplete" and not preview:
        return _update_pending_if_incomplete(store, row, data, customer, params)
    _update_descriptive(store, data, customer, params)
    if data["status"] in ENDED:
        save(store, row, data)
        return None
    _update_settings(data, params, store.now)
    invoice = _update_billing(store, data, customer, params, behavior=behavior, preview=preview)
    save(store, row, data)
    return invoice


def _update_pending_if_incomplete(
    store: Store, row: SandboxObject, data: Document, customer: SandboxObject, params: dict[str, Any]
) -> SandboxObject | None:
    """payment_behavior=pending_if_incomplete: the change applies only if the invoice it makes is paid.

    Paid at once (or nothing billed now), it applies as any update. Otherwise the subscription
    keeps its items and status; its latest invoice is the new one, open, and `pending_update`
    holds what applies once that invoice is paid (`billing_cycle.invoice_paid`), until it
    expires (`billing_cycle.advance`): the invoice is then voided and the change discarded.
    """
    changed_data = copy.deepcopy(data)
    if "metadata" in params:
        changed_data["metadata"] = metadata.merged(data["metadata"], params["metadata"])
    invoice = _update_billing(store, changed_data, customer, params, behavior="allow_incomplete", preview=False)
    if invoice is None or invoice.data["status"] == "paid":
        save(store, row, changed_data)
        return invoice
    now = store.now
    ends = [now + PENDING_UPDATE_EXPIRES_AFTER, current_period_end(data)]
    if data["status"] == "trialing" and data["trial_end"] is not None:
        ends.append(data["trial_end"])
    data["latest_invoice"] = invoice.id
    data["discounts"] = changed_data["discounts"]  # what the invoice used up (a `once` coupon) is used
    new_anchor = (
        changed_data["billing_cycle_anchor"]
        if changed_data["billing_cycle_anchor"] != data["billing_cycle_anchor"]
        else None
    )
    data["pending_update"] = {
        "billing_cycle_anchor": new_anchor,
        "cancel_at_period_end": None,
        "discount": None,
        "discounts": None,
        "expires_at": min(ends),
        "metadata": (params["metadata"] or {}) if "metadata" in params else None,
        "subscription_items": changed_data["items"]["data"],
        "trial_end": None,
        "trial_from_plan": None,
    }
    if "metadata" in params:  # as sent: "" clears all when it applies
        internal_state(data)["pending_metadata"] = params["metadata"]
    save(store, row, data)
    return invoice


# -- resume ------------------------------------------------------------------------------


def check_resumable(row: SandboxObject) -> None:
    if row.data["status"] != "paused":
        raise SandboxError(
            400,
            f"Subscription {row.id} cannot be resumed because its status is "
            f"{row.data['status']}; only `paused` subscriptions can be resumed.",
        )


def _resume_with_new_cycle(store: Store, data: Document, customer: SandboxObject, *, raise_on_failure: bool) -> None:
    """billing_cycle_anchor=now: a new period from now, invoiced and charged at once."""
    now = store.now
    period = fresh_period(store, data, now)
    invoice = draft_invoice(
        store, data, customer, "subscription_update", item_lines(store, data, period), period=(now, now)
    )
    settle(store, data, customer, invoice, attempt=True, raise_on_failure=raise_on_failure, preview=False)


def _resume_in_current_cycle(
    store: Store, data: Document, customer: SandboxObject, params: dict[str, Any], *, raise_on_failure: bool
) -> None:
    """billing_cycle_anchor=unchanged: back in the period of the old anchor, prorated from now."""
    now = store.now
    _, interval, interval_count = cadence(item_price_rows(store, data))
    period = period_containing(data["billing_cycle_anchor"], interval, interval_count, now)
    set_periods(data, *period)
    behavior = params.get("proration_behavior", "create_prorations")
    if behavior == "none":
        return
    at = proration_date(params, period, now)
    prorations = prorate(store, data, customer.id, [], data["items"]["data"], at, period)
    if behavior == "always_invoice" and prorations:
        invoice = draft_invoice(store, data, customer, "subscription_update", [], period=(now, now))
        settle(store, data, customer, invoice, attempt=True, raise_on_failure=raise_on_failure, preview=False)


def resume(store: Store, row: SandboxObject, params: dict[str, Any]) -> None:
    """Resume a `paused` subscription (a trial that ended without a payment method)."""
    data = copy.deepcopy(row.data)
    customer = customer_of(store, data)
    if needs_payment_method(store, data) and payment_method(store, data, customer) is None:
        raise no_payment_method()
    # resume_on_payment_success: a failed charge fails the request and the subscription stays paused.
    raise_on_failure = params.get("payment_behavior") == "resume_on_payment_success"
    data["status"] = "active"
    if params.get("billing_cycle_anchor", {}).get("type", "now") == "now":
        _resume_with_new_cycle(store, data, customer, raise_on_failure=raise_on_failure)
    else:
        _resume_in_current_cycle(store, data, customer, params, raise_on_failure=raise_on_failure)
    if data["cancel_at_period_end"]:
        data["cancel_at"] = current_period_end(data)
    save(store, row, data)


# -- cancel ------------------------------------------------------------------------------


def check_cancelable(row: SandboxObject) -> None:
    if row.data["status"] in ENDED:
        # Stripe no longer finds a subscription to cancel once it has ended.
        raise resource_missing("subscription", row.id)


def _final_invoice(store: Store, data: Document, customer: SandboxObject) -> None:
    """`invoice_now`: a final invoice of what is pending for this subscription (prorations)."""
    pending = invoice_engine.pending_items(store, customer.id, subscription_id=data["id"], include_unattached=False)
    if pending:
        invoice = invoice_of_pending(store, data, customer, pending)
        data["latest_invoice"] = invoice.id
        bill(store, data, customer, invoice)


def invoice_of_pending(
    store: Store, data: Document, customer: SandboxObject, pending: list[SandboxObject]
) -> SandboxObject:
    """An invoice of the subscription's pending items (prorations) alone, made now."""
    return invoice_engine.create_invoice(
        store,
        customer=customer,
        subscription=data,
        billing_reason="subscription_update",
        collection_method=data["collection_method"],
        days_until_due=data["days_until_due"],
        currency=data["currency"],
        lines=[],
        pending=pending,
    )


def cancel(store: Store, row: SandboxObject, params: dict[str, Any]) -> None:
    data = copy.deepcopy(row.data)
    customer = customer_of(store, data)
    if params.get("prorate") and data["status"] in BILLED:
        prorate(store, data, customer.id, data["items"]["data"], [], store.now, current_period(data))
    if data["status"] == "incomplete":
        void_open_invoice(store, data)  # as Stripe does: nothing is left to pay
    expire_pending_update(store, data)  # a change of a canceled subscription can't apply
    mark_canceled(data, store.now, params.get("cancellation_details"))
    if params.get("invoice_now") and not customer.deleted:
        _final_invoice(store, data, customer)
    save(store, row, data)


def cancel_all_for_customer(store: Store, customer_id: str) -> None:
    """Deleting a customer cancels its subscriptions immediately."""
    rows = store.session.scalars(
        select(SandboxObject)
        .where(SandboxObject.customer == customer_id, SandboxObject.object_type == OBJECT_TYPE)
        .order_by(SandboxObject.seq)
        .with_for_update()
        .execution_options(populate_existing=True)
    )  # re-read under the lock (see Store.get)
    for row in rows:
        if row.data["status"] not in ENDED:
            before = store.present(row)
            data = copy.deepcopy(row.data)
            mark_canceled(data, store.now)
            save(store, row, data)
            changed(store, row, before)
