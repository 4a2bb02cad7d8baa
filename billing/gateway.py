"""Every Stripe call the service makes, typed against the `stripe` library.

Parameters are the library's own generated TypedDicts and results its object
types, so `mypy --strict` on this module proves each parameter we send exists
in the pinned API version. Errors are not caught here: `billing.errors` maps
them, once, for every route.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from typing import TypeVar

import stripe
from stripe.params import (
    CustomerCreateParams,
    CustomerTaxIdCreateParams,
    CustomerUpdateParams,
    InvoiceCreatePreviewParams,
    InvoiceListParams,
    PriceCreateParams,
    PriceUpdateParams,
    ProductCreateParams,
    ProductUpdateParams,
    SetupIntentCreateParams,
    SubscriptionCreateParams,
    SubscriptionResumeParams,
    SubscriptionUpdateParams,
)

from billing.audit import trail
from billing.budget import StripeBudget
from billing.instrumentation import InstrumentedHTTPClient
from billing.models import now_stamp

A = TypeVar("A")
S = TypeVar("S", bound=stripe.StripeObject)
# Receives every object Stripe returns, with the time (microseconds) its request
# started: the service keeps its copy of Stripe with it (billing.replica).
Keeper = Callable[[stripe.StripeObject, int], None]

# The one place the API version is pinned. It must equal the version the
# installed library was generated for (a test checks), since the typed
# parameters and objects below describe exactly that version.
STRIPE_API_VERSION = "2026-10-28.endive"
MAX_NETWORK_RETRIES = 2
# What Stripe shows of an invoice only when expanded, and the copy needs: its
# confirmation secret (what Stripe.js pays it with) and its discounts' coupons
# (their names). Every invoice the copy keeps is fetched with them.
INVOICE_EXPANSIONS = ["confirmation_secret", "discounts.source.coupon"]
LATEST_INVOICE_EXPANSIONS = [f"latest_invoice.{path}" for path in INVOICE_EXPANSIONS]


def _unless_missing(call: Callable[[], A]) -> A | None:
    """The object, or None when Stripe answers `resource_missing`."""
    try:
        return call()
    except stripe.InvalidRequestError as error:
        if error.code == "resource_missing":
            return None
        raise


def build_client(
    api_key: str,
    *,
    http_client: stripe.HTTPClient | None = None,
    timeout: float = 20.0,
    latency: float = 0.0,
    budget: StripeBudget | None = None,
    api_base: str | None = None,
) -> stripe.StripeClient:
    """`budget`: every attempt is counted in this Stripe request budget first (billing.budget).
    `api_base`: where the API is (STRIPE_API_BASE), if not api.stripe.com; the library's own setting."""
    return stripe.StripeClient(
        api_key,
        stripe_version=STRIPE_API_VERSION,
        base_addresses={"api": api_base} if api_base else {},
        max_network_retries=MAX_NETWORK_RETRIES,
        http_client=InstrumentedHTTPClient(
            http_client or stripe.RequestsClient(timeout=(5.0, timeout)), latency=latency, budget=budget
        ),
    )


def _discard(obj: stripe.StripeObject, stamp: int) -> None:
    pass


class StripeGateway:
    def __init__(
        self, client: stripe.StripeClient, keep: Keeper = _discard, clock: Callable[[], float] = time.time
    ) -> None:
        self.client = client
        self.keep = keep
        # Stripe's clock (unix seconds), the one events' `created` is on: ours in
        # production, the sandbox's (moved by its clock) on the emulator.
        self.clock = clock

    def _kept(self, call: Callable[[], S], *, written: bool = False) -> S:
        """Make the call; hand its result to the keeper, stamped with when it started.
        `written`: the call is a write; what it changes is the request's doing (the
        audit trail names the request's caller for it, whether its answer or a webhook
        applied meanwhile in this context, such as the sandbox's synchronous delivery,
        brings the change to the copy first).

        Stamps are on our clock, not Stripe's: they order views (and are compared
        with when an event reached us), and a sandbox advance dates its events in the past."""
        stamp = now_stamp()
        with trail.written() if written else nullcontext():
            result = call()
            self.keep(result, stamp)
        return result

    def _kept_list(self, call: Callable[[], Iterable[S]]) -> list[S]:
        stamp = now_stamp()
        results = list(call())
        for result in results:
            self.keep(result, stamp)
        return results

    # -- customers ---------------------------------------------------------

    def create_customer(self, params: CustomerCreateParams, *, idempotency_key: str) -> stripe.Customer:
        return self._kept(
            lambda: self.client.v1.customers.create(params, {"idempotency_key": idempotency_key}), written=True
        )

    def retrieve_customer(self, customer_id: str) -> stripe.Customer | None:
        """The customer, or None when Stripe says it is deleted or unknown (kept as deleted)."""
        stamp = now_stamp()
        customer = _unless_missing(lambda: self.client.v1.customers.retrieve(customer_id))
        if customer is None:
            customer = stripe.Customer.construct_from({"id": customer_id, "object": "customer", "deleted": True}, None)
        self.keep(customer, stamp)
        return None if getattr(customer, "deleted", None) else customer

    def update_customer(
        self, customer_id: str, params: CustomerUpdateParams, *, idempotency_key: str
    ) -> stripe.Customer:
        return self._kept(
            lambda: self.client.v1.customers.update(customer_id, params, {"idempotency_key": idempotency_key}),
            written=True,
        )

    def delete_customer(self, customer_id: str, *, idempotency_key: str) -> None:
        try:
            self._kept(
                lambda: self.client.v1.customers.delete(customer_id, None, {"idempotency_key": idempotency_key}),
                written=True,
            )
        except stripe.InvalidRequestError as error:
            if error.code != "resource_missing":  # already gone is what we wanted
                raise

    def iter_customers(self) -> Iterator[stripe.Customer]:
        """Every customer of the Stripe account (for `reconcile` only)."""
        stamp = now_stamp()  # before the first page: a stamp may be early, never late
        for customer in self.client.v1.customers.list({"limit": 100}).auto_paging_iter():
            self.keep(customer, stamp)
            yield customer

    # -- tax IDs -----------------------------------------------------------

    def list_tax_ids(self, customer_id: str) -> list[stripe.TaxId]:
        return self._kept_list(
            lambda: self.client.v1.customers.tax_ids.list(customer_id, {"limit": 100}).auto_paging_iter()
        )

    def create_tax_id(
        self, customer_id: str, params: CustomerTaxIdCreateParams, *, idempotency_key: str
    ) -> stripe.TaxId:
        return self._kept(
            lambda: self.client.v1.customers.tax_ids.create(customer_id, params, {"idempotency_key": idempotency_key}),
            written=True,
        )

    def retrieve_tax_id(self, tax_id: str) -> stripe.TaxId | None:
        """The tax ID, or None when Stripe has none (nothing kept: a read that races the
        create's commit must not mark a new one deleted; `replica.forget_tax_id` does, when
        Stripe's event says it was deleted)."""
        return _unless_missing(lambda: self._kept(lambda: self.client.v1.tax_ids.retrieve(tax_id)))

    def delete_tax_id(self, customer_id: str, tax_id: str, *, idempotency_key: str) -> None:
        try:
            self._kept(
                lambda: self.client.v1.customers.tax_ids.delete(
                    customer_id, tax_id, None, {"idempotency_key": idempotency_key}
                ),
                written=True,
            )
        except stripe.InvalidRequestError as error:
            if error.code != "resource_missing":  # already gone is what we wanted
                raise

    # -- subscriptions -----------------------------------------------------

    def list_subscriptions(self, customer_id: str) -> list[stripe.Subscription]:
        """All of a customer's subscriptions, canceled ones included."""
        return self._kept_list(
            lambda: self.client.v1.subscriptions.list(
                {"customer": customer_id, "status": "all", "limit": 100}
            ).auto_paging_iter()
        )

    def create_subscription(self, params: SubscriptionCreateParams, *, idempotency_key: str) -> stripe.Subscription:
        return self._kept(
            lambda: self.client.v1.subscriptions.create(params, {"idempotency_key": idempotency_key}), written=True
        )

    def retrieve_subscription(self, subscription_id: str) -> stripe.Subscription | None:
        """With its latest invoice, which the copy keeps too: a renewal's subscription
        and new invoice cost one read."""
        return _unless_missing(
            lambda: self._kept(
                lambda: self.client.v1.subscriptions.retrieve(subscription_id, {"expand": LATEST_INVOICE_EXPANSIONS})
            )
        )

    def update_subscription(
        self, subscription_id: str, params: SubscriptionUpdateParams, *, idempotency_key: str
    ) -> stripe.Subscription:
        return self._kept(
            lambda: self.client.v1.subscriptions.update(subscription_id, params, {"idempotency_key": idempotency_key}),
            written=True,
        )

    def resume_subscription(
        self, subscription_id: str, params: SubscriptionResumeParams, *, idempotency_key: str
    ) -> stripe.Subscription:
        """Resume a subscription whose status is `paused` (a trial that ended without a card)."""
        return self._kept(
            lambda: self.client.v1.subscriptions.resume(subscription_id, params, {"idempotency_key": idempotency_key}),
            written=True,
        )

    # -- payment methods ---------------------------------------------------

    def list_payment_methods(self, customer_id: str) -> list[stripe.PaymentMethod]:
        """All of a customer's payment methods, of every type."""
        return self._kept_list(
            lambda: self.client.v1.customers.payment_methods.list(customer_id, {"limit": 100}).auto_paging_iter()
        )

    def retrieve_payment_method(self, payment_method_id: str) -> stripe.PaymentMethod | None:
        return _unless_missing(lambda: self._kept(lambda: self.client.v1.payment_methods.retrieve(payment_method_id)))

    def set_default_payment_method(
        self, customer_id: str, payment_method_id: str, *, idempotency_key: str
    ) -> stripe.Customer:
        return self._kept(
            lambda: self.client.v1.customers.update(
                customer_id,
                {"invoice_settings": {"default_payment_method": payment_method_id}},
                {"idempotency_key": idempotency_key},
            ),
            written=True,
        )

    def attach_payment_method(
        self, payment_method: str, customer_id: str, *, idempotency_key: str
    ) -> stripe.PaymentMethod:
        return self._kept(
            lambda: self.client.v1.payment_methods.attach(
                payment_method, {"customer": customer_id}, {"idempotency_key": idempotency_key}
            ),
            written=True,
        )

    def detach_payment_method(self, payment_method_id: str, *, idempotency_key: str) -> stripe.PaymentMethod:
        return self._kept(
            lambda: self.client.v1.payment_methods.detach(
                payment_method_id, None, {"idempotency_key": idempotency_key}
            ),
            written=True,
        )

    def retrieve_payment_intent(self, payment_intent_id: str) -> stripe.PaymentIntent | None:
        return _unless_missing(lambda: self._kept(lambda: self.client.v1.payment_intents.retrieve(payment_intent_id)))

    def create_setup_intent(self, params: SetupIntentCreateParams, *, idempotency_key: str) -> stripe.SetupIntent:
        return self.client.v1.setup_intents.create(params, {"idempotency_key": idempotency_key})

    def retrieve_setup_intent(self, setup_intent_id: str) -> stripe.SetupIntent:
        return self.client.v1.setup_intents.retrieve(setup_intent_id)

    def confirm_setup_intent(
        self, setup_intent_id: str, payment_method: str, *, idempotency_key: str
    ) -> stripe.SetupIntent:
        return self.client.v1.setup_intents.confirm(
            setup_intent_id, {"payment_method": payment_method}, {"idempotency_key": idempotency_key}
        )

    # -- invoices ----------------------------------------------------------

    def iter_invoices(self, customer_id: str | None = None) -> Iterator[stripe.Invoice]:
        """Every invoice of the Stripe account (or of one customer) with all its lines, kept."""
        stamp = now_stamp()
        params: InvoiceListParams = {"limit": 100, "expand": [f"data.{path}" for path in INVOICE_EXPANSIONS]}
        if customer_id:
            params["customer"] = customer_id
        for invoice in self.client.v1.invoices.list(params).auto_paging_iter():
            yield self._keep_invoice(invoice, stamp)

    def retrieve_invoice(self, invoice_id: str) -> stripe.Invoice | None:
        """The invoice with every line, kept; None when Stripe has no such invoice."""
        stamp = now_stamp()
        invoice = _unless_missing(lambda: self.client.v1.invoices.retrieve(invoice_id, {"expand": INVOICE_EXPANSIONS}))
        return None if invoice is None else self._keep_invoice(invoice, stamp)

    def _keep_invoice(self, invoice: stripe.Invoice, stamp: int) -> stripe.Invoice:
        if getattr(invoice, "deleted", None):
            self.keep(invoice, stamp)
            return invoice
        data = invoice.to_dict()
        data["lines"] = {
            "object": "list",
            "data": [line.to_dict() for line in self.invoice_lines(invoice)],
            "has_more": False,
            "url": f"/v1/invoices/{invoice.id}/lines",
        }
        complete = stripe.Invoice.construct_from(data, None)
        self.keep(complete, stamp)
        return complete

    def invoice_lines(self, invoice: stripe.Invoice) -> list[stripe.InvoiceLineItem]:
        """Every line of an invoice: the embedded first page, then Stripe's pages."""
        lines = list(invoice.lines.data)
        has_more = invoice.lines.has_more
        while has_more and invoice.id:
            page = self.client.v1.invoices.line_items.list(invoice.id, {"limit": 100, "starting_after": lines[-1].id})
            lines.extend(page.data)
            has_more = page.has_more
        return lines

    def preview_invoice(self, params: InvoiceCreatePreviewParams) -> stripe.Invoice:
        return self.client.v1.invoices.create_preview({**params, "expand": ["discounts.source.coupon"]})

    # -- catalog -----------------------------------------------------------

    def create_product(self, params: ProductCreateParams, *, idempotency_key: str) -> stripe.Product:
        return self._kept(lambda: self.client.v1.products.create(params, {"idempotency_key": idempotency_key}))

    def create_price(self, params: PriceCreateParams, *, idempotency_key: str) -> stripe.Price:
        return self.client.v1.prices.create(params, {"idempotency_key": idempotency_key})

    def iter_products(self) -> Iterator[stripe.Product]:
        return iter(self._kept_list(lambda: self.client.v1.products.list({"limit": 100}).auto_paging_iter()))

    def retrieve_product(self, product_id: str) -> stripe.Product | None:
        return _unless_missing(lambda: self._kept(lambda: self.client.v1.products.retrieve(product_id)))

    def update_product(self, product_id: str, params: ProductUpdateParams, *, idempotency_key: str) -> stripe.Product:
        return self._kept(
            lambda: self.client.v1.products.update(product_id, params, {"idempotency_key": idempotency_key})
        )

    def update_price(self, price_id: str, params: PriceUpdateParams, *, idempotency_key: str) -> stripe.Price:
        return self.client.v1.prices.update(price_id, params, {"idempotency_key": idempotency_key})

    def prices_by_lookup_key(self, lookup_keys: list[str]) -> dict[str, stripe.Price]:
        found: dict[str, stripe.Price] = {}
        for start in range(0, len(lookup_keys), 10):  # Stripe takes 10 keys a call
            page = self.client.v1.prices.list(
                {"lookup_keys": lookup_keys[start : start + 10], "active": True, "limit": 100}
            )
            for price in page.auto_paging_iter():
                if price.lookup_key:
                    found[price.lookup_key] = price
        return found

    # -- events ------------------------------------------------------------

    def iter_events(self, created_gte: int) -> Iterator[stripe.Event]:
        """Stripe's events created at or after this time, newest first, a page at a time."""
        return iter(self.client.v1.events.list({"created": {"gte": created_gte}, "limit": 100}).auto_paging_iter())
