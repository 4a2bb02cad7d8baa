"""Stripe Tax in the emulator: locations, rates, registrations, reverse charge, tax IDs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import pycountry
import pytest
import stripe
from stripe.params import CustomerCreateParams

from stripe_sandbox import SandboxClock
from stripe_sandbox.tax import RATES_FILE

REGISTERED = "GB,DE,ZA,AU"


@pytest.fixture(autouse=True)
def registrations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_TAX_REGISTRATIONS", REGISTERED)


def _customer(client: stripe.StripeClient, address: dict[str, str], **params: Any) -> stripe.Customer:
    return client.v1.customers.create(
        params=cast(
            CustomerCreateParams,
            {
                "email": "buyer@example.com",
                "address": address,
                "payment_method": "pm_card_visa",
                "invoice_settings": {"default_payment_method": "pm_card_visa"},
                **params,
            },
        )
    )


def _subscribe(client: stripe.StripeClient, customer: stripe.Customer, price: stripe.Price) -> stripe.Invoice:
    subscription = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id, "quantity": 3}],
            "automatic_tax": {"enabled": True},
        }
    )
    return client.v1.invoices.retrieve(str(subscription.latest_invoice))


def test_the_rates_file_cites_its_source_and_names_only_real_countries() -> None:
    table = json.loads(RATES_FILE.read_text())
    assert "https://" in table["source"]
    assert all(pycountry.countries.get(alpha_2=code) for code in table["rates"])
    assert {code: table["rates"][code] for code in ("GB", "DE", "ZA", "AU")} == {"GB": 20, "DE": 19, "ZA": 15, "AU": 10}
    assert "US" not in table["rates"]  # no VAT: no row


@pytest.mark.parametrize(
    "country,currency,rate_tax",
    [("ZA", "zar", 450), ("AU", "aud", 300), ("GB", "gbp", 600)],  # 3 x 10.00 = 30.00 at 15 %, 10 %, 20 %
)
def test_a_registered_country_is_taxed_at_its_standard_rate(
    client: stripe.StripeClient, make_price: Callable[..., stripe.Price], country: str, currency: str, rate_tax: int
) -> None:
    invoice = _subscribe(client, _customer(client, {"country": country}), make_price(currency=currency))
    assert (invoice.subtotal, invoice.total_excluding_tax) == (3000, 3000)
    assert [(t.amount, t.taxability_reason, t.taxable_amount) for t in invoice.total_taxes or []] == [
        (rate_tax, "standard_rated", 3000)
    ]
    assert invoice.total == invoice.amount_paid == 3000 + rate_tax
    assert [t.amount for t in invoice.lines.data[0].taxes or []] == [rate_tax]
    assert invoice.automatic_tax.enabled and invoice.automatic_tax.status == "complete"
    assert invoice.account_country == "GB"
    rate = client.v1.tax_rates.retrieve(invoice.total_taxes[0].tax_rate_details.tax_rate)
    assert (rate.country, rate.percentage, rate.inclusive) == (country, {"ZA": 15, "AU": 10, "GB": 20}[country], False)


def test_an_unregistered_country_is_not_collected(
    client: stripe.StripeClient, make_price: Callable[..., stripe.Price], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOX_TAX_REGISTRATIONS", "GB")
    invoice = _subscribe(client, _customer(client, {"country": "DE"}), make_price(currency="eur"))
    assert [(t.amount, t.taxability_reason) for t in invoice.total_taxes or []] == [(0, "not_collecting")]
    assert invoice.total == 3000


def test_an_eu_business_with_a_verified_vat_number_is_reverse_charged(
    client: stripe.StripeClient, make_price: Callable[..., stripe.Price], clock: SandboxClock
) -> None:
    """A German company buying from a GB platform registered in DE: reverse charge once its number is verified."""
    customer = _customer(client, {"country": "DE"})
    price = make_price(currency="eur")
    tax_id = client.v1.customers.tax_ids.create(customer.id, {"type": "eu_vat", "value": "DE000000000"})
    assert (tax_id.country, tax_id.verification.status) == ("DE", "pending")
    pending = _subscribe(client, customer, price)  # not yet verified: German VAT
    assert [(t.amount, t.taxability_reason) for t in pending.total_taxes or []] == [(570, "standard_rated")]
    clock.advance_and_process(seconds=10)
    settled = client.v1.customers.tax_ids.retrieve(customer.id, tax_id.id)
    assert settled.verification.status == "verified"
    events = [e for e in client.v1.events.list({"limit": 100}).data if e.type.startswith("customer.tax_id.")]
    assert [e.type for e in events][:2] == ["customer.tax_id.updated", "customer.tax_id.created"]
    reversed_ = _subscribe(client, customer, price)
    assert [(t.amount, t.taxability_reason) for t in reversed_.total_taxes or []] == [(0, "reverse_charge")]
    assert reversed_.total == 3000
    assert [t.to_dict() for t in reversed_.customer_tax_ids or []] == [{"type": "eu_vat", "value": "DE000000000"}]


@pytest.mark.parametrize("value,status", [("DE111111111", "unverified"), ("DE222222222", "pending")])
def test_stripes_test_numbers_fail_or_stay_pending(
    client: stripe.StripeClient, customer: stripe.Customer, clock: SandboxClock, value: str, status: str
) -> None:
    tax_id = client.v1.customers.tax_ids.create(customer.id, {"type": "eu_vat", "value": value})
    clock.advance_and_process(minutes=5)
    assert client.v1.tax_ids.retrieve(tax_id.id).verification.status == status


def test_a_bad_value_is_tax_id_invalid(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.tax_ids.create(customer.id, {"type": "eu_vat", "value": "DE12"})
    assert (caught.value.code, caught.value.param) == ("tax_id_invalid", "value")
    assert client.v1.customers.tax_ids.list(customer.id).data == []


def test_a_type_stripe_does_not_verify_is_unavailable(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    tax_id = client.v1.customers.tax_ids.create(customer.id, {"type": "za_vat", "value": "4123456789"})
    assert (tax_id.country, tax_id.verification.status) == ("ZA", "unavailable")


def test_at_most_five_tax_ids_and_delete(client: stripe.StripeClient, customer: stripe.Customer) -> None:
    made = [
        client.v1.customers.tax_ids.create(customer.id, {"type": "au_abn", "value": f"1234567890{i}"}) for i in range(5)
    ]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.tax_ids.create(customer.id, {"type": "au_abn", "value": "12345678999"})
    deleted = client.v1.customers.tax_ids.delete(customer.id, made[0].id)
    assert deleted.deleted is True
    assert len(client.v1.customers.tax_ids.list(customer.id).data) == 4


@pytest.mark.parametrize(
    "address,param",
    [({"country": "US"}, "address[postal_code]"), ({"country": "XX"}, "address[country]"), ({}, "address")],
)
def test_an_address_stripe_tax_cant_place_is_refused_before_anything_is_made(
    client: stripe.StripeClient, make_price: Callable[..., stripe.Price], address: dict[str, str], param: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.create(
            params=cast(CustomerCreateParams, {"address": address, "tax": {"validate_location": "immediately"}})
        )
    assert (caught.value.code, caught.value.param) == ("customer_tax_location_invalid", param)
    customer = _customer(client, address) if address else client.v1.customers.create()
    before = len(client.v1.subscriptions.list({"customer": customer.id}).data)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        _subscribe(client, customer, make_price())
    assert caught.value.code == "customer_tax_location_invalid"
    assert len(client.v1.subscriptions.list({"customer": customer.id}).data) == before == 0


def test_a_preview_with_automatic_tax_equals_the_invoice(
    client: stripe.StripeClient, make_price: Callable[..., stripe.Price]
) -> None:
    customer = _customer(client, {"country": "ZA"})
    price = make_price(currency="zar", unit_amount=1999)
    preview = client.v1.invoices.create_preview(
        {
            "customer": customer.id,
            "automatic_tax": {"enabled": True},
            "subscription_details": {"items": [{"price": price.id, "quantity": 3}]},
        }
    )
    invoice = _subscribe(client, customer, price)
    assert (preview.subtotal, preview.total, [t.amount for t in preview.total_taxes or []]) == (5997, 6897, [900])
    assert (invoice.subtotal, invoice.total, [t.amount for t in invoice.total_taxes or []]) == (5997, 6897, [900])


def test_the_customers_tax_hash_says_where_it_is(client: stripe.StripeClient) -> None:
    customer = _customer(client, {"country": "US", "postal_code": "94107", "state": "CA"})
    found = client.v1.customers.retrieve(customer.id, {"expand": ["tax"]}).tax
    assert (found.automatic_tax, found.location.country) == ("not_collecting", "US")


def test_a_renewal_is_taxed_as_at_its_finalization(
    client: stripe.StripeClient, make_price: Callable[..., stripe.Price], clock: SandboxClock
) -> None:
    """A renewal's draft shows German VAT; the number verified in the hour before it is finalized
    makes the finalized invoice reverse charged (Stripe Tax computes tax when it finalizes)."""
    customer = _customer(client, {"country": "DE"})
    first = _subscribe(client, customer, make_price(currency="eur"))
    subscription_id = str(first.parent.subscription_details.subscription)
    end = client.v1.subscriptions.retrieve(subscription_id)["items"].data[0].current_period_end
    clock.advance_and_process(seconds=end - clock.now() + 1)
    [draft] = client.v1.invoices.list({"customer": customer.id, "status": "draft"}).data
    assert [(t.amount, t.taxability_reason) for t in draft.total_taxes or []] == [(570, "standard_rated")]
    client.v1.customers.tax_ids.create(customer.id, {"type": "eu_vat", "value": "DE000000000"})
    clock.advance_and_process(hours=2)
    renewed = client.v1.invoices.retrieve(str(draft.id))
    assert renewed.status == "paid"
    assert [(t.amount, t.taxability_reason) for t in renewed.total_taxes or []] == [(0, "reverse_charge")]
    assert renewed.total == 3000


def test_a_preview_of_pending_items_needs_a_tax_location(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create()
    client.v1.invoice_items.create(params={"customer": customer.id, "amount": 300, "currency": "usd"})
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoices.create_preview({"customer": customer.id, "automatic_tax": {"enabled": True}})
    assert (caught.value.code, caught.value.param) == ("customer_tax_location_invalid", "address")
