"""The emulator's objects can't drift from Stripe's: every object type it returns is checked
against the pinned `stripe` library's own annotations of that type (recursively).

Every field the library declares on an API object (a hash with `object`: a customer, an
invoice, a subscription's price, an event's `data.object`, ...) must be there, null allowed:
Stripe's object reference lists every attribute and Stripe sends the nullable ones as null, so
a client reading one the emulator dropped would meet an AttributeError only in production. The
exceptions are the fields Stripe itself sends only sometimes (`ONLY_SOMETIMES`, each with why).
Inside an object's plain hashes (automatic_tax, payment_method_options.card, ...) the library's
Optional means either nullable or present-only-when-set, which it does not tell apart, so there
only the fields it declares required (not Optional) must be there. None may be there that the
type does not declare; each value must have the declared type (Literal enums by their values,
even where the library also admits any string for forward compatibility).
"""

from __future__ import annotations

import ast
import decimal
import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

import pytest
import stripe
from stripe._list_object import ListObject
from stripe._stripe_object import StripeObject, UntypedStripeObject

from stripe_sandbox import SandboxAuthenticator, SandboxClock, SqlSessions, authentication

NONE = type(None)


@functools.cache
def _namespace(module_name: str) -> dict[str, Any]:
    """The module's globals plus what it imports only for type checking (its annotations' names)."""
    module = sys.modules[module_name]
    namespace = dict(vars(module))
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            exec(compile(ast.Module(body=node.body, type_ignores=[]), module_name, "exec"), namespace)
    return namespace


@functools.cache
def fields_of(cls: type) -> dict[str, Any]:
    """The declared fields of a stripe object class (its own annotations, resolved)."""
    hints = typing.get_type_hints(cls, _namespace(cls.__module__), dict(vars(cls)))
    return {
        name: hint
        for name, hint in hints.items()
        if not name.startswith("_") and not name.isupper() and typing.get_origin(hint) is not typing.ClassVar
    }


def _optional(hint: Any) -> bool:
    return (
        hint is Any
        or hint is NONE
        or (typing.get_origin(hint) in (typing.Union, types.UnionType) and NONE in typing.get_args(hint))
    )


def drift(value: Any, hint: Any, path: str) -> list[str]:
    """What about `value` disagrees with the annotation `hint` (empty: nothing)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return []
    if value is None:
        return [] if _optional(hint) else [f"{path}: null, declared {hint}"]
    if origin in (typing.Union, types.UnionType):
        literals = {v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)}
        if literals and isinstance(value, str) and value not in literals:  # `| str` is forward compatibility
            return [f"{path}: {value!r} is none of {sorted(literals)}"]
        found = [drift(value, member, path) for member in args if member is not NONE]
        return [] if any(not problems for problems in found) else min(found, key=len)
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} is none of {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__}, declared a list"]
        return [p for i, item in enumerate(value) for p in drift(item, args[0], f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, declared a hash"]
        return [p for k, item in value.items() for p in drift(item, args[1], f"{path}.{k}")]
    if origin is not None and isinstance(origin, type) and issubclass(origin, ListObject):
        if not isinstance(value, dict) or value.get("object") != "list":
            return [f"{path}: not a list object"]
        problems = [
            f"{path}.{k}: invented" for k in value if k not in ("object", "data", "has_more", "url", "total_count")
        ]
        return problems + [p for i, item in enumerate(value["data"]) for p in drift(item, args[0], f"{path}[{i}]")]
    if origin is not None and isinstance(origin, type) and issubclass(origin, UntypedStripeObject):
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, declared a hash"]
        return [p for k, item in value.items() for p in drift(item, args[0] if args else Any, f"{path}.{k}")]
    if isinstance(hint, type) and issubclass(hint, StripeObject):
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, declared {hint.__qualname__}"]
        return shape_drift(value, hint, path)
    if hint is bool:
        return [] if isinstance(value, bool) else [f"{path}: {value!r} is not a boolean"]
    if hint is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path}: {value!r} is not an int"]
    if hint is float:
        return [] if isinstance(value, (int, float)) and not isinstance(value, bool) else [f"{path}: not a number"]
    if hint is str:
        return [] if isinstance(value, str) else [f"{path}: {value!r} is not a string"]
    if hint is decimal.Decimal:  # the library parses Stripe's decimal strings
        return [] if isinstance(value, decimal.Decimal) else [f"{path}: {value!r} is not a decimal"]
    raise AssertionError(f"{path}: no check for {hint!r}")


# Fields of API objects that Stripe sends only in some states, as its API reference says.
_INCLUDABLE = "not included by default: only when expanded"
ONLY_SOMETIMES: dict[str, dict[str, str]] = {
    "*": {"deleted": 'only on a deleted object\'s stub ("Always true for a deleted object")'},
    "event": {
        "account": "Connect only: the connected account that originates the event",
        "context": "only for events of another authentication context (Connect, organizations)",
    },
    "customer": dict.fromkeys(
        ("cash_balance", "invoice_credit_balance", "sources", "subscriptions", "tax", "tax_ids"), _INCLUDABLE
    ),
    "invoice": {
        "confirmation_secret": _INCLUDABLE,
        "payments": _INCLUDABLE,
        "threshold_reason": "only when billing_reason is subscription_threshold",
    },
    "price": {"currency_options": _INCLUDABLE, "tiers": _INCLUDABLE},
    "plan": {"tiers": _INCLUDABLE},
    "coupon": {"currency_options": _INCLUDABLE},
}


def _only_sometimes(document: dict[str, Any], cls: type) -> set[str]:
    names = set(ONLY_SOMETIMES["*"]) | set(ONLY_SOMETIMES.get(str(document.get("object")), {}))
    if cls is stripe.PaymentMethod:
        # One hash per payment method type, only the method's own (`card` on a card, ...).
        names |= {t for t in typing.get_args(fields_of(cls)["type"]) if isinstance(t, str)} - {document.get("type")}
        names |= {
            a for arg in typing.get_args(fields_of(cls)["type"]) for a in typing.get_args(arg) if isinstance(a, str)
        } - {document.get("type")}
    return names


def shape_drift(document: dict[str, Any], cls: type, path: str) -> list[str]:
    declared = fields_of(cls)
    if isinstance(document.get("object"), str):  # an API object: every declared field, null allowed
        exempt = _only_sometimes(document, cls)
        problems = [f"{path}.{name}: missing" for name in declared if name not in document and name not in exempt]
    else:  # a plain hash inside one: what the library declares required
        problems = [
            f"{path}.{name}: missing" for name, hint in declared.items() if name not in document and not _optional(hint)
        ]
    problems += [f"{path}.{name}: invented" for name in document if name not in declared]
    for name, value in document.items():
        if name in declared:
            problems += drift(value, declared[name], f"{path}.{name}")
    return problems


# -- the objects -------------------------------------------------------------------------

EXPAND_INVOICE = ["confirmation_secret", "payments"]


@pytest.fixture
def objects(
    client: stripe.StripeClient,
    database: SqlSessions,
    make_price: Callable[..., stripe.Price],
    monkeypatch: pytest.MonkeyPatch,
) -> list[tuple[str, dict[str, Any], type]]:
    """One of each object type the emulator returns, in each of the states the service meets."""
    raw = client.v1.customers
    price = make_price()
    found: list[tuple[str, dict[str, Any], type]] = []

    def add(name: str, obj: Any, cls: type) -> None:
        found.append((name, obj.to_dict(), cls))

    paying = client.v1.customers.create(
        params={
            "email": "a@example.com",
            "address": {"country": "US"},
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    add("customer", raw.retrieve(paying.id), stripe.Customer)
    add("customer expanded", raw.retrieve(paying.id, {"expand": ["subscriptions"]}), stripe.Customer)
    add("product", client.v1.products.retrieve(str(price.product)), stripe.Product)
    add("price", price, stripe.Price)
    active = client.v1.subscriptions.create(params={"customer": paying.id, "items": [{"price": price.id}]})
    add("subscription", active, stripe.Subscription)
    add("subscription item", client.v1.subscriptions.retrieve(active.id)["items"].data[0], stripe.SubscriptionItem)
    paid = client.v1.invoices.retrieve(str(active.latest_invoice), {"expand": EXPAND_INVOICE})
    add("invoice (paid)", paid, stripe.Invoice)
    add("invoice payment", paid.payments.data[0], stripe.InvoicePayment)
    add("invoice line", paid.lines.data[0], stripe.InvoiceLineItem)
    add(
        "payment intent (succeeded)",
        client.v1.payment_intents.retrieve(str(paid.payments.data[0].payment.payment_intent)),
        stripe.PaymentIntent,
    )
    add(
        "trial subscription",
        client.v1.subscriptions.create(
            params={"customer": paying.id, "items": [{"price": price.id}], "trial_period_days": 3}
        ),
        stripe.Subscription,
    )
    coupon = client.v1.coupons.create({"percent_off": 20, "duration": "forever", "name": "Twenty"})
    add("coupon", coupon, stripe.Coupon)
    discounted = client.v1.subscriptions.create(
        params={"customer": paying.id, "items": [{"price": price.id}], "discounts": [{"coupon": coupon.id}]}
    )
    add("subscription (discounted)", discounted, stripe.Subscription)
    with_discount = client.v1.invoices.retrieve(str(discounted.latest_invoice), {"expand": ["discounts"]})
    add("invoice (discounted)", with_discount, stripe.Invoice)
    add("discount", with_discount.discounts[0], stripe.Discount)
    client.v1.invoice_items.create(params={"customer": paying.id, "amount": 300, "currency": "usd"})
    add("invoice item", client.v1.invoice_items.list({"customer": paying.id}).data[0], stripe.InvoiceItem)

    strong = client.v1.customers.create(
        params={
            "payment_method": "pm_card_authenticationRequired",
            "invoice_settings": {"default_payment_method": "pm_card_authenticationRequired"},
        }
    )
    waiting = client.v1.subscriptions.create(
        params={"customer": strong.id, "items": [{"price": price.id}], "expand": ["latest_invoice.confirmation_secret"]}
    )
    add("subscription (incomplete)", waiting, stripe.Subscription)
    secret = waiting.latest_invoice.confirmation_secret.client_secret
    add(
        "invoice (open)",
        client.v1.invoices.retrieve(waiting.latest_invoice.id, {"expand": EXPAND_INVOICE}),
        stripe.Invoice,
    )
    add(
        "payment intent (requires_action)",
        client.v1.payment_intents.retrieve(authentication.intent_id(secret)),
        stripe.PaymentIntent,
    )
    SandboxAuthenticator(database).complete(secret, succeed=False)
    add(
        "payment intent (failed authentication)",
        client.v1.payment_intents.retrieve(authentication.intent_id(secret)),
        stripe.PaymentIntent,
    )

    upgrading = client.v1.customers.create(
        params={"payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    upgraded = client.v1.subscriptions.create(params={"customer": upgrading.id, "items": [{"price": price.id}]})
    needs_3ds = client.v1.payment_methods.attach("pm_card_authenticationRequired", {"customer": upgrading.id})
    client.v1.customers.update(upgrading.id, {"invoice_settings": {"default_payment_method": needs_3ds.id}})
    add(
        "subscription (pending update)",
        client.v1.subscriptions.update(
            upgraded.id,
            params={
                "items": [{"id": upgraded["items"].data[0].id, "quantity": 2}],
                "proration_behavior": "always_invoice",
                "payment_behavior": "pending_if_incomplete",
                "metadata": {"seats": "2"},
            },
        ),
        stripe.Subscription,
    )

    failing = client.v1.customers.create(
        params={
            "payment_method": "pm_card_chargeCustomerFail",
            "invoice_settings": {"default_payment_method": "pm_card_chargeCustomerFail"},
        }
    )
    declined = client.v1.subscriptions.create(params={"customer": failing.id, "items": [{"price": price.id}]})
    intent_id = (
        client.v1.invoices.retrieve(str(declined.latest_invoice), {"expand": ["payments"]})
        .payments.data[0]
        .payment.payment_intent
    )
    add("payment intent (declined)", client.v1.payment_intents.retrieve(str(intent_id)), stripe.PaymentIntent)
    client.v1.subscriptions.cancel(declined.id)
    add("payment intent (canceled)", client.v1.payment_intents.retrieve(str(intent_id)), stripe.PaymentIntent)
    add(
        "invoice (void)",
        client.v1.invoices.retrieve(str(declined.latest_invoice), {"expand": EXPAND_INVOICE}),
        stripe.Invoice,
    )
    add("subscription (canceled)", client.v1.subscriptions.retrieve(declined.id), stripe.Subscription)

    setup = client.v1.setup_intents.create(params={"customer": failing.id})
    add("setup intent (new)", setup, stripe.SetupIntent)
    add(
        "setup intent (requires_action)",
        client.v1.setup_intents.confirm(setup.id, {"payment_method": "pm_card_authenticationRequired"}),
        stripe.SetupIntent,
    )
    SandboxAuthenticator(database).complete(str(setup.client_secret), succeed=True)
    add("setup intent (succeeded)", client.v1.setup_intents.retrieve(setup.id), stripe.SetupIntent)
    refused = client.v1.setup_intents.create(params={"customer": failing.id})
    with pytest.raises(stripe.CardError):
        client.v1.setup_intents.confirm(refused.id, {"payment_method": "pm_card_chargeDeclinedExpiredCard"})
    add("setup intent (declined)", client.v1.setup_intents.retrieve(refused.id), stripe.SetupIntent)
    add(
        "payment method (card)",
        client.v1.payment_methods.retrieve(str(paying.invoice_settings.default_payment_method)),
        stripe.PaymentMethod,
    )
    add(
        "payment method (bank)",
        client.v1.payment_methods.attach("pm_usBankAccount", {"customer": paying.id}),
        stripe.PaymentMethod,
    )

    # Stripe Tax: a taxed invoice, a reverse-charged one, tax IDs in each verification state, a tax rate.
    monkeypatch.setenv("SANDBOX_TAX_REGISTRATIONS", "GB,DE,ZA")
    taxed = client.v1.customers.create(
        params={
            "address": {"country": "DE"},
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
            "tax": {"validate_location": "immediately"},
        }
    )
    vat = client.v1.customers.tax_ids.create(taxed.id, {"type": "eu_vat", "value": "DE000000000"})
    add("tax id (pending)", vat, stripe.TaxId)
    add(
        "tax id (unavailable)",
        client.v1.customers.tax_ids.create(taxed.id, {"type": "za_vat", "value": "4123456789"}),
        stripe.TaxId,
    )
    failing_vat = client.v1.customers.tax_ids.create(taxed.id, {"type": "eu_vat", "value": "DE111111111"})
    euro = make_price(currency="eur")
    with_vat = client.v1.subscriptions.create(
        params={"customer": taxed.id, "items": [{"price": euro.id}], "automatic_tax": {"enabled": True}}
    )
    add("subscription (automatic tax)", with_vat, stripe.Subscription)
    vat_invoice = client.v1.invoices.retrieve(str(with_vat.latest_invoice))
    add("invoice (taxed)", vat_invoice, stripe.Invoice)
    add("invoice line (taxed)", vat_invoice.lines.data[0], stripe.InvoiceLineItem)
    add("tax rate", client.v1.tax_rates.retrieve(vat_invoice.total_taxes[0].tax_rate_details.tax_rate), stripe.TaxRate)
    SandboxClock(database).advance_and_process(seconds=10)
    add("tax id (verified)", client.v1.tax_ids.retrieve(vat.id), stripe.TaxId)
    add("tax id (unverified)", client.v1.customers.tax_ids.retrieve(taxed.id, failing_vat.id), stripe.TaxId)
    add("customer (tax expanded)", raw.retrieve(taxed.id, {"expand": ["tax", "tax_ids"]}), stripe.Customer)
    reversed_ = client.v1.subscriptions.create(
        params={"customer": taxed.id, "items": [{"price": euro.id}], "automatic_tax": {"enabled": True}}
    )
    add("invoice (reverse charge)", client.v1.invoices.retrieve(str(reversed_.latest_invoice)), stripe.Invoice)
    client.v1.customers.tax_ids.delete(taxed.id, failing_vat.id)  # its event carries the last view

    SandboxClock(database).advance_and_process(days=40)
    renewed = client.v1.invoices.list({"customer": paying.id, "expand": ["data.confirmation_secret"]}).data
    for invoice in renewed:
        add(f"invoice {invoice.billing_reason} ({invoice.status})", invoice, stripe.Invoice)
    for event in client.v1.events.list({"limit": 100}).auto_paging_iter():
        add(f"event {event.type}", event, stripe.Event)
    return found


def test_every_object_matches_the_librarys_annotations(objects: list[tuple[str, dict[str, Any], type]]) -> None:
    problems = [f"{name}: {problem}" for name, document, cls in objects for problem in shape_drift(document, cls, "")]
    assert problems == []


def test_events_carry_objects_that_match_too(objects: list[tuple[str, dict[str, Any], type]]) -> None:
    classes = {
        "customer": stripe.Customer,
        "subscription": stripe.Subscription,
        "invoice": stripe.Invoice,
        "payment_intent": stripe.PaymentIntent,
        "setup_intent": stripe.SetupIntent,
        "payment_method": stripe.PaymentMethod,
        "invoiceitem": stripe.InvoiceItem,
        "product": stripe.Product,
        "price": stripe.Price,
        "coupon": stripe.Coupon,
        "tax_id": stripe.TaxId,
    }
    problems, seen = [], set()
    for name, document, cls in objects:
        if cls is stripe.Event:
            obj = document["data"]["object"]
            seen.add(obj["object"])
            problems += [f"{name}: {p}" for p in shape_drift(obj, classes[obj["object"]], ".data.object")]
    assert problems == []
    assert {"customer", "subscription", "invoice", "payment_intent", "setup_intent", "payment_method", "tax_id"} <= seen


def test_the_checker_catches_drift() -> None:
    """The checker itself: a missing required field, an invented one, a wrong type and enum value."""
    good = {"id": "pi_1", "object": "payment_intent"}
    assert "object: 'pi' is none of" in " ".join(drift("pi", fields_of(stripe.PaymentIntent)["object"], "object"))
    problems = shape_drift({**good, "amount": "12", "invented": 1, "status": "done"}, stripe.PaymentIntent, "")
    assert ".amount: '12' is not an int" in problems and ".invented: invented" in problems
    assert any(p.startswith(".status: 'done' is none of") for p in problems)
    assert ".currency: missing" in problems
    # On an API object a nullable field must be there too (as null); in a plain hash only a required one.
    assert ".latest_charge: missing" in problems and ".managed_payments: missing" in problems
    assert ".deleted: missing" not in problems  # Stripe sends it on deleted objects only
    assert shape_drift({"enabled": False}, stripe.Invoice.AutomaticTax, "") == []
    assert shape_drift({}, stripe.Invoice.AutomaticTax, "") == [".enabled: missing"]
