"""Invoices and invoice items: building, finalizing and collecting them.

The routes are in `invoices.py`; subscriptions bill through the functions
here. An invoice document stores all its lines; responses embed the first 10
with `has_more`, like Stripe, and `/v1/invoices/{id}/lines` pages through the
rest. Amounts are integers in the currency's minor unit, prorations are
rounded half up per line; a subscription's discounts come off its invoices
(`coupons.py`); with automatic tax on (the subscription's, or a preview's
`automatic_tax`), Stripe Tax's taxes are added (`tax.py`), exclusive of the prices.

Finalizing an invoice that asks for money creates its PaymentIntent (shown
only when expanded: `confirmation_secret`, `payments`); each attempt to collect
it confirms that intent with the payment method of the moment. When invoices
are finalized and retried over time is the subscriptions' business
(`subscriptions.billing_cycle`): an invoice row is due at its
`automatically_finalizes_at` (a draft) or `next_payment_attempt` (open).
"""

from __future__ import annotations

import copy
import decimal
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from stripe_sandbox import coupons, events, payment_intents, payment_methods, tax
from stripe_sandbox.errors import SandboxError, no_payment_method
from stripe_sandbox.listing import list_object
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.store import INTERNAL, Document, ObjectKind, Store, random_token

INVOICE = "invoice"
ITEM = "invoiceitem"
# A finalized invoice's hosted page and PDF (`hosted_invoices.py`), on the Store's public_url.
HOSTED_PATH = "/sandbox/invoices/{invoice}/{token}"  # the PDF's: the same + "/pdf"
HOSTED_TOKEN = "hosted_token"  # the page's key, kept in the invoice (INTERNAL)
EMBEDDED_LINES = 10  # what an invoice object carries of its lines
DAY = 86400

_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "cad": "CA$", "aud": "A$", "jpy": "¥"}
_ZERO_DECIMAL = {
    "bif",
    "clp",
    "djf",
    "gnf",
    "jpy",
    "kmf",
    "krw",
    "mga",
    "pyg",
    "rwf",
    "ugx",
    "vnd",
    "vuv",
    "xaf",
    "xof",
    "xpf",
}


def _present_invoice(store: Store, data: Document) -> Document:
    lines = data["lines"]["data"]
    data["lines"] = {
        "object": "list",
        "data": lines[:EMBEDDED_LINES],
        "has_more": len(lines) > EMBEDDED_LINES,
        "total_count": len(lines),
        "url": f"/v1/invoices/{data['id']}/lines",
    }
    return data


def payment_intent_of(store: Store, invoice: Document, *, for_update: bool = False) -> SandboxObject | None:
    """The PaymentIntent finalizing the invoice created (None: nothing was asked for)."""
    intent_id = invoice.get(INTERNAL, {}).get("payment_intent")
    return store.get(payment_intents.OBJECT_TYPE, intent_id, for_update=for_update) if intent_id else None


def _confirmation_secret(store: Store, invoice: Document) -> Document | None:
    row = store.get(INVOICE, invoice["id"])
    intent = payment_intent_of(store, row.data) if row is not None else None
    return {"client_secret": intent.data["client_secret"], "type": "payment_intent"} if intent is not None else None


def _payments(store: Store, invoice: Document) -> Document:
    row = store.get(INVOICE, invoice["id"])
    payments = copy.deepcopy(row.data.get(INTERNAL, {}).get("payments", [])) if row is not None else []
    return list_object(f"/v1/invoice_payments?invoice={invoice['id']}", payments, False)


# Stripe shows an invoice's payment (and the secret to confirm it) only when expanded.
INVOICE_KIND = ObjectKind(
    object_type=INVOICE,
    id_prefix="in",
    noun="invoice",
    present=_present_invoice,
    includable={"confirmation_secret": _confirmation_secret, "payments": _payments},
)
ITEM_KIND = ObjectKind(object_type=ITEM, id_prefix="ii", noun="invoiceitem")


# -- money and wording ------------------------------------------------------------------


def to_decimal(value: Any) -> decimal.Decimal:
    return decimal.Decimal(str(value)) if value is not None else decimal.Decimal(0)


def decimal_string(value: decimal.Decimal) -> str:
    """Stripe's decimal strings: "1000", "333.333333333333" (at most 12 places)."""
    rounded = value.quantize(decimal.Decimal("1e-12"), rounding=decimal.ROUND_HALF_UP).normalize()
    return format(rounded, "f")


def round_amount(value: decimal.Decimal) -> int:
    return int(value.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))


def format_money(amount: decimal.Decimal, currency: str) -> str:
    if currency in _ZERO_DECIMAL:
        text = f"{amount:,.0f}"
    else:
        text = f"{amount / 100:,.2f}"
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


def format_date(timestamp: int) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return f"{moment.day} {moment.strftime('%b %Y')}"


def interval_text(interval: str, count: int) -> str:
    return interval if count == 1 else f"every {count} {interval}s"


def product_name(store: Store, product_id: str) -> str:
    row = store.get("product", product_id, include_deleted=True)
    return str(row.data.get("name") or product_id) if row is not None else product_id


# -- lines --------------------------------------------------------------------------------


def _pricing(price: Document | None, unit_amount_decimal: decimal.Decimal) -> Document:
    return {
        "price_details": {"price": price["id"], "product": price["product"]} if price is not None else None,
        "type": "price_details",
        "unit_amount_decimal": decimal_string(unit_amount_decimal),
    }


def _line(
    *,
    amount: int,
    currency: str,
    description: str | None,
    quantity: int,
    price: Document | None,
    unit_amount_decimal: decimal.Decimal,
    period: tuple[int, int],
    parent: Document,
    subscription_id: str | None,
    metadata: dict[str, str],
    discountable: bool = True,
) -> Document:
    return {
        "id": f"il_{random_token()}",
        "object": "line_item",
        "amount": amount,
        "currency": currency,
        "description": description,
        "discount_amounts": [],
        "discountable": discountable,
        "discounts": [],
        "invoice": None,  # set when the invoice is assembled
        "livemode": False,
        "metadata": metadata,
        "parent": parent,
        "period": {"end": period[1], "start": period[0]},
        "pretax_credit_amounts": [],
        "pricing": _pricing(price, unit_amount_decimal),
        "quantity": quantity,
        "quantity_decimal": str(quantity),
        "subscription": subscription_id,
        "subtotal": amount,
        "taxes": [],
    }


def subscription_line(
    store: Store,
    subscription: Document,
    item: Document,
    price: Document,
    period: tuple[int, int],
    *,
    trial: bool = False,
) -> Document:
    """The line billing one subscription item for `period` (in advance, as Stripe does)."""
    quantity = item["quantity"] or 0
    unit = to_decimal(price["unit_amount_decimal"])
    name = product_name(store, price["product"])
    recurring = price["recurring"] or {"interval": "month", "interval_count": 1}
    if trial:
        amount, description = 0, f"Trial period for {name}"
    else:
        amount = round_amount(unit * quantity)
        description = (
            f"{quantity} × {name} (at {format_money(unit, price['currency'])} / "
            f"{interval_text(recurring['interval'], recurring['interval_count'])})"
        )
    parent = {
        "invoice_item_details": None,
        "subscription_item_details": {
            "invoice_item": None,
            "proration": False,
            "proration_details": {"credited_items": None},
            "subscription": subscription["id"],
            "subscription_item": item["id"],
        },
        "type": "subscription_item_details",
    }
    return _line(
        amount=amount,
        currency=price["currency"],
        description=description,
        quantity=quantity,
        price=price,
        unit_amount_decimal=unit,
        period=period,
        parent=parent,
        subscription_id=subscription["id"],
        metadata=dict(subscription["metadata"]),
    )


def item_line(item: Document) -> Document:
    """The line an invoice item becomes on the invoice that collects it."""
    details = (item["parent"] or {}).get("subscription_details") or {}
    subscription_id, subscription_item = details.get("subscription"), details.get("subscription_item")
    common = {"invoice_item": item["id"], "proration": item["proration"], "proration_details": {"credited_items": None}}
    if subscription_item:
        parent = {
            "invoice_item_details": None,
            "subscription_item_details": {
                **common,
                "subscription": subscription_id,
                "subscription_item": subscription_item,
            },
            "type": "subscription_item_details",
        }
    else:
        parent = {
            "invoice_item_details": {**common, "subscription": subscription_id},
            "subscription_item_details": None,
            "type": "invoice_item_details",
        }
    price_details = item["pricing"]["price_details"] if item["pricing"] else None
    price = {"id": price_details["price"], "product": price_details["product"]} if price_details else None
    return _line(
        amount=item["amount"],
        currency=item["currency"],
        description=item["description"],
        quantity=item["quantity"],
        price=price,
        unit_amount_decimal=to_decimal(item["pricing"]["unit_amount_decimal"] if item["pricing"] else 0),
        period=(item["period"]["start"], item["period"]["end"]),
        parent=parent,
        subscription_id=subscription_id,
        metadata=dict(item["metadata"] or {}),
        discountable=item["discountable"],
    )


# -- invoice items ----------------------------------------------------------------------


def create_item(
    store: Store,
    *,
    customer_id: str,
    currency: str,
    quantity: int,
    unit_amount_decimal: decimal.Decimal,
    description: str | None,
    period: tuple[int, int],
    price: Document | None = None,
    amount: int | None = None,
    subscription_id: str | None = None,
    subscription_item_id: str | None = None,
    proration: bool = False,
    metadata: dict[str, str] | None = None,
    invoice_id: str | None = None,
    discountable: bool | None = None,
) -> SandboxObject:
    """A pending invoice item (or one on a draft invoice), recording invoiceitem.created."""
    if amount is None:
        amount = round_amount(unit_amount_decimal * quantity)
    data: Document = {
        "id": store.new_id(ITEM),
        "object": ITEM,
        "amount": amount,
        "currency": currency,
        "customer": customer_id,
        "customer_account": None,
        "date": store.now,
        "description": description,
        "discountable": (not proration) if discountable is None else discountable,
        "discounts": [],
        "frozen_fields": None,
        "invoice": invoice_id,
        "invoicing_rules": None,
        "livemode": False,
        "metadata": metadata or {},
        "net_amount": amount,
        "parent": {
            "subscription_details": {"subscription": subscription_id, "subscription_item": subscription_item_id},
            "type": "subscription_details",
        }
        if subscription_id
        else None,
        "period": {"end": period[1], "start": period[0]},
        "pricing": _pricing(price, unit_amount_decimal),
        "proration": proration,
        "proration_details": {"credited_items": None, "discount_amounts": []},
        "quantity": quantity,
        "quantity_decimal": str(quantity),
        "tax_rates": [],
        "test_clock": None,
    }
    row = store.insert(ITEM, data, customer=customer_id)
    events.created(store, row)
    return row


def item_subscription(item: Document) -> str | None:
    details = (item["parent"] or {}).get("subscription_details") or {}
    value = details.get("subscription")
    return str(value) if value else None


def pending_items(
    store: Store, customer_id: str, *, subscription_id: str | None, include_unattached: bool = True
) -> list[SandboxObject]:
    """The customer's uninvoiced items for an invoice of `subscription_id` (oldest first)."""
    o = SandboxObject
    rows = store.session.scalars(
        select(o)
        .where(
            o.customer == customer_id,
            o.object_type == ITEM,
            o.deleted.is_(False),
            o.data["invoice"].as_string().is_(None),
        )
        .order_by(o.seq, o.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )  # re-read under the lock (see Store.get)
    found = []
    for row in rows:
        owner = item_subscription(row.data)
        if (owner is not None and owner == subscription_id) or (owner is None and include_unattached):
            found.append(row)
    return found


# -- invoices ---------------------------------------------------------------------------


def _customer_fields(customer: Document) -> Document:
    return {
        "customer_address": copy.deepcopy(customer.get("address")),
        "customer_email": customer.get("email"),
        "customer_name": customer.get("name"),
        "customer_phone": customer.get("phone"),
        "customer_shipping": copy.deepcopy(customer.get("shipping")),
        "customer_tax_exempt": customer.get("tax_exempt", "none"),
        "customer_tax_ids": [],
    }


def _totals(data: Document, balance: int) -> None:
    subtotal = sum(line["amount"] for line in data["lines"]["data"])
    excluding_tax = subtotal - sum(discount["amount"] for discount in data["total_discount_amounts"])
    total = excluding_tax + tax.tax_amount(data)  # taxes are exclusive: added to the total
    data.update(subtotal=subtotal, subtotal_excluding_tax=subtotal, total=total, total_excluding_tax=excluding_tax)
    # A customer's credit (negative balance) or debt goes into what is due.
    data["starting_balance"] = balance
    data["amount_due"] = max(0, total + balance)
    data["amount_remaining"] = data["amount_due"] - data["amount_paid"]


def create_invoice(
    store: Store,
    *,
    customer: SandboxObject,
    subscription: Document | None,
    billing_reason: str,
    collection_method: str,
    days_until_due: int | None,
    currency: str,
    lines: list[Document],
    pending: Iterable[SandboxObject] = (),
    period: tuple[int, int] | None = None,
    invoice_id: str | None = None,
    description: str | None = None,
    metadata: dict[str, str] | None = None,
    auto_advance: bool = True,
    default_payment_method: str | None = None,
    proration_date: int | None = None,
    due_date: int | None = None,
    finalizes_at: int | None = None,
    discounts: list[str] | None = None,
    automatic_tax: bool | None = None,
) -> SandboxObject:
    """A draft invoice of `lines` plus the `pending` invoice items (which it takes), recording invoice.created.

    Lines are ordered as Stripe orders them: invoice items newest first, then
    subscription items newest first. `finalizes_at`: when the clock finalizes
    and collects it (a renewal's, an hour after it is created).
    """
    invoice_id = invoice_id or store.new_id(INVOICE)
    all_lines = _take_lines(store, invoice_id, lines, pending)
    start, end = period or (store.now, store.now)
    discounted = coupons.discount_amounts(all_lines, coupons.in_force(store, discounts or []), currency)
    data = copy.deepcopy(_NEW_INVOICE)
    data.update(
        {
            "id": invoice_id,
            "auto_advance": auto_advance,
            "automatically_finalizes_at": finalizes_at,
            "billing_reason": billing_reason,
            "collection_method": collection_method,
            "created": store.now,
            "currency": currency,
            "customer": customer.id,
            **_customer_fields(customer.data),
            "default_payment_method": default_payment_method,
            "description": description,
            "discounts": [discount["discount"] for discount in discounted],
            # send_invoice: due `days_until_due` days after creation.
            "due_date": (due_date or store.now + DAY * (days_until_due or 0))
            if collection_method == "send_invoice"
            else None,
            "lines": {"object": "list", "data": all_lines},
            "metadata": metadata or {},
            "next_payment_attempt": finalizes_at if collection_method == "charge_automatically" else None,
            "parent": _subscription_parent(subscription, proration_date) if subscription is not None else None,
            "period_end": end,
            "period_start": start,
            "total_discount_amounts": discounted,
            "webhooks_delivered_at": store.now,
        }
    )
    # Stripe Tax: the subscription's setting, unless the caller (a preview) says otherwise.
    if automatic_tax is None and subscription is not None:
        automatic_tax = bool((subscription.get("automatic_tax") or {}).get("enabled"))
    data["automatic_tax"]["enabled"] = bool(automatic_tax)
    tax.apply(store, data, customer.data)
    _totals(data, int(customer.data.get("balance") or 0))
    row = store.insert(INVOICE, data, customer=customer.id, due_at=due_at(data))
    events.created(store, row)
    return row


def _take_lines(
    store: Store, invoice_id: str, lines: list[Document], pending: Iterable[SandboxObject]
) -> list[Document]:
    """The invoice's lines, ordered as Stripe orders them; the pending invoice items become the invoice's."""
    taken = list(pending)
    all_lines = [item_line(row.data) for row in reversed(taken)] + list(reversed(lines))
    for line in all_lines:
        line["invoice"] = invoice_id
    for row in taken:
        store.update(row, {**copy.deepcopy(row.data), "invoice": invoice_id})
    return all_lines


def _subscription_parent(subscription: Document, proration_date: int | None) -> Document:
    return {
        "quote_details": None,
        "subscription_details": {
            "metadata": dict(subscription["metadata"]),
            "subscription": subscription["id"],
            "subscription_proration_date": proration_date,
        },
        "type": "subscription_details",
    }


# A new draft invoice: every field Stripe shows, in Stripe's order; what
# create_invoice sets is None here, the rest is what the sandbox never changes
# at creation (amounts are set by _totals).
_NEW_INVOICE: Document = {
    "id": None,
    "object": INVOICE,
    "account_country": "US",
    "account_name": "Stripe sandbox",
    "account_tax_ids": None,
    "amount_due": 0,
    "amount_overpaid": 0,
    "amount_paid": 0,
    "amount_paid_off_stripe": 0,
    "amount_remaining": 0,
    "amount_shipping": 0,
    "application": None,
    "attempt_count": 0,
    "attempted": False,
    "auto_advance": None,
    "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None, "status": None},
    "automatically_finalizes_at": None,
    "billing_reason": None,
    "collection_method": None,
    "created": None,
    "currency": None,
    "custom_fields": None,
    "customer": None,
    "customer_account": None,
    **dict.fromkeys(
        (
            "customer_address",
            "customer_email",
            "customer_name",
            "customer_phone",
            "customer_shipping",
            "customer_tax_exempt",
            "customer_tax_ids",
        )
    ),
    "default_payment_method": None,
    "default_source": None,
    "default_tax_rates": [],
    "description": None,
    "discounts": None,
    "due_date": None,
    "effective_at": None,
    "ending_balance": None,
    "footer": None,
    "from_invoice": None,
    "hosted_invoice_url": None,
    "invoice_pdf": None,
    "issuer": {"type": "self"},
    "last_finalization_error": None,
    "latest_revision": None,
    "lines": None,
    "livemode": False,
    "metadata": None,
    "next_payment_attempt": None,
    "number": None,
    "on_behalf_of": None,
    "parent": None,
    "payment_settings": {"default_mandate": None, "payment_method_options": None, "payment_method_types": None},
    "period_end": None,
    "period_start": None,
    "post_payment_credit_notes_amount": 0,
    "pre_payment_credit_notes_amount": 0,
    "receipt_number": None,
    "rendering": None,
    "shipping_cost": None,
    "shipping_details": None,
    "starting_balance": 0,
    "statement_descriptor": None,
    "status": "draft",
    "status_details": None,
    "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None, "voided_at": None},
    "subtotal": 0,
    "subtotal_excluding_tax": 0,
    "test_clock": None,
    "total": 0,
    "total_discount_amounts": None,
    "total_excluding_tax": 0,
    "total_pretax_credit_amounts": [],
    "total_taxes": [],
    "webhooks_delivered_at": None,
}


def due_at(data: Document) -> int | None:
    """When the invoice next changes by itself: finalized (a draft), or a payment retried (open)."""
    moment = {"draft": data["automatically_finalizes_at"], "open": data["next_payment_attempt"]}.get(data["status"])
    return int(moment) if moment is not None else None


def save(store: Store, row: SandboxObject, data: Document) -> None:
    store.update(row, data, due_at=due_at(data))


def add_lines(store: Store, row: SandboxObject, items: Iterable[SandboxObject]) -> None:
    """Items created on a draft invoice join it (after the lines it has, as Stripe orders them)."""
    data = copy.deepcopy(row.data)
    for item in items:
        line = item_line(item.data)
        line["invoice"] = row.id
        data["lines"]["data"].append(line)
    customer = store.get("customer", data["customer"], include_deleted=True)
    live = customer is not None and not customer.deleted
    tax.apply(store, data, customer.data if live and customer is not None else None)
    _totals(data, int(customer.data.get("balance") or 0) if live and customer is not None else 0)
    save(store, row, data)


def finalize(store: Store, row: SandboxObject) -> None:
    """draft -> open (or paid when nothing is due), recording invoice.finalized."""
    data = copy.deepcopy(row.data)
    assert data["status"] == "draft", data["status"]
    now = store.now
    customer = store.get("customer", data["customer"], for_update=True)
    balance = int(customer.data.get("balance") or 0) if customer is not None else 0
    tax.apply(store, data, customer.data if customer is not None else None)  # as at finalization
    _totals(data, balance)
    ending_balance = data["total"] + balance - data["amount_due"]
    token = random_token(40)
    page = store.public_url.rstrip("/") + HOSTED_PATH.format(invoice=data["id"], token=token)
    data.update(
        status="open",
        effective_at=now,
        ending_balance=ending_balance,
        hosted_invoice_url=page,
        invoice_pdf=page + "/pdf",
    )
    data[INTERNAL] = {**data.get(INTERNAL, {}), HOSTED_TOKEN: token}
    data["status_transitions"]["finalized_at"] = now
    # The clock's collection (billing_cycle) schedules any retry; finalizing waits no more.
    data.update(automatically_finalizes_at=None, next_payment_attempt=None)
    if data["amount_due"] > 0:
        intent = payment_intents.create_for_invoice(store, data)
        data[INTERNAL] = {
            **data.get(INTERNAL, {}),
            "payment_intent": intent.id,
            "payments": [
                {
                    "id": f"inpay_{random_token()}",
                    "object": "invoice_payment",
                    "amount_paid": None,
                    "amount_requested": data["amount_due"],
                    "created": now,
                    "currency": data["currency"],
                    "invoice": data["id"],
                    "is_default": True,
                    "livemode": False,
                    "payment": {"payment_intent": intent.id, "type": "payment_intent"},
                    "status": "open",
                    "status_transitions": {"canceled_at": None, "paid_at": None},
                }
            ],
        }
    if customer is not None:
        before = store.present(customer)
        customer_data = copy.deepcopy(customer.data)
        sequence = int(customer_data.get("next_invoice_sequence") or 1)
        data["number"] = f"{customer_data['invoice_prefix']}-{sequence:04d}"
        customer_data["next_invoice_sequence"] = sequence + 1
        customer_data["balance"] = ending_balance  # credit used up, or what remains of it
        store.update(customer, customer_data)
        if ending_balance != balance:
            events.updated(store, customer, before)
    save(store, row, data)
    events.record(store, "invoice.finalized", store.present(row))
    if data["amount_due"] == 0:
        _mark_paid(store, row)


def _settle_payment(data: Document, status: str, now: int) -> None:
    """The invoice's (default) payment follows its PaymentIntent: paid, or canceled with the invoice."""
    for payment in data.get(INTERNAL, {}).get("payments", []):
        if payment["status"] == "open":
            payment["status"] = status
            if status == "paid":
                payment["amount_paid"] = payment["amount_requested"]
            payment["status_transitions"][f"{status}_at"] = now


def _mark_paid(store: Store, row: SandboxObject, *, charged: bool = False, out_of_band: bool = False) -> None:
    data = copy.deepcopy(row.data)
    data.update(status="paid", amount_paid=data["amount_due"], amount_remaining=0, next_payment_attempt=None)
    if out_of_band:
        data["amount_paid_off_stripe"] = data["amount_due"]
    data["status_transitions"]["paid_at"] = store.now
    _settle_payment(data, "paid" if charged else "canceled", store.now)
    save(store, row, data)
    presented = store.present(row)
    events.record(store, "invoice.paid", presented)
    if charged:
        events.record(store, "invoice.payment_succeeded", presented)
    else:
        _cancel_intent(store, data, "automatic")


def _cancel_intent(store: Store, data: Document, reason: str) -> None:
    intent = payment_intent_of(store, data, for_update=True)
    if intent is not None:
        payment_intents.cancel(store, intent, reason)


def payment_method_for(store: Store, invoice: Document) -> SandboxObject | None:
    """The invoice's, else its subscription's, else its customer's default payment method, if still attached."""
    customer_id = invoice["customer"]
    candidates: list[str | None] = [invoice["default_payment_method"]]
    subscription_id = subscription_of(invoice)
    if subscription_id:
        subscription = store.get("subscription", subscription_id)
        if subscription is not None:
            candidates.append(subscription.data["default_payment_method"])
    customer = store.get("customer", customer_id)
    if customer is not None:
        candidates.append(customer.data["invoice_settings"]["default_payment_method"])
    for candidate in candidates:
        found = payment_methods.attached(store, customer_id, candidate)
        if found is not None:
            return found
    return None


def subscription_of(invoice: Document) -> str | None:
    details = (invoice["parent"] or {}).get("subscription_details") or {}
    value = details.get("subscription")
    return str(value) if value else None


def attempt_payment(
    store: Store, row: SandboxObject, payment_method: SandboxObject | None = None
) -> SandboxError | None:
    """Collect an open invoice off-session: confirm its PaymentIntent with `payment_method`, else
    the payment method charges use now. None when the invoice is now paid, else the error met:
    a card error, or `invoice_payment_intent_requires_action` when the card needs 3-D Secure.

    A failed attempt stays recorded on the invoice (attempted, attempt_count)
    with invoice.payment_failed (and invoice.payment_action_required).
    """
    assert row.data["status"] in ("open", "uncollectible"), row.data["status"]
    if row.data["amount_remaining"] == 0:
        _mark_paid(store, row)
        return None
    method = payment_method or payment_method_for(store, row.data)
    data = copy.deepcopy(row.data)
    data["attempted"] = True
    data["attempt_count"] += 1
    save(store, row, data)
    intent = payment_intent_of(store, data, for_update=True)
    if method is None:
        error: SandboxError | None = no_payment_method()
    elif intent is None:  # finalized before the sandbox made intents: charge the method directly
        error = payment_methods.charge_error(store, method)
    else:
        error = payment_intents.confirm(store, intent, method)
    if error is not None:
        if error.code == "invoice_payment_intent_requires_action":
            events.record(store, "invoice.payment_action_required", store.present(row))
        events.record(store, "invoice.payment_failed", store.present(row))
        return error
    _mark_paid(store, row, charged=True)
    return None


def paid_by_intent(store: Store, row: SandboxObject) -> None:
    """The customer completed the invoice's PaymentIntent (Stripe.js): the invoice is paid."""
    if row.data["status"] in ("open", "uncollectible"):
        data = copy.deepcopy(row.data)
        data["attempted"] = True
        data["attempt_count"] += 1
        save(store, row, data)
        _mark_paid(store, row, charged=True)


def mark_paid_out_of_band(store: Store, row: SandboxObject) -> None:
    _mark_paid(store, row, out_of_band=True)


def void(store: Store, row: SandboxObject) -> None:
    data = copy.deepcopy(row.data)
    data["status"] = "void"
    data["status_transitions"]["voided_at"] = store.now
    data["next_payment_attempt"] = None
    _settle_payment(data, "canceled", store.now)
    save(store, row, data)
    events.record(store, "invoice.voided", store.present(row))
    _cancel_intent(store, data, "void_invoice")


def mark_uncollectible(store: Store, row: SandboxObject) -> None:
    data = copy.deepcopy(row.data)
    data["status"] = "uncollectible"
    data["status_transitions"]["marked_uncollectible_at"] = store.now
    data["next_payment_attempt"] = None
    save(store, row, data)
    events.record(store, "invoice.marked_uncollectible", store.present(row))
