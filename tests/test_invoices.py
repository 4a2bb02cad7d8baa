"""Invoices: paging both ways, every line of every invoice, previews that change nothing."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import delete, event, func, insert, select

from billing import replica
from billing.models import StripeCopy, now_stamp
from schemas import invoices as invoice_schemas
from stripe_sandbox.models import SandboxObject
from tests.builders import Builder
from tests.helpers import assert_error
from tests.pdf_reading import pdf_text

INVOICE_KEYS = {
    "id",
    "customer_id",
    "number",
    "status",
    "currency",
    "amount_due",
    "amount_paid",
    "subtotal",
    "total",
    "tax",
    "discount_amount",
    "discount_names",
    "lines",
    "due_date",
    "hosted_invoice_url",
    "invoice_pdf",
    "created_at",
}
LINE_KEYS = {"id", "description", "amount", "currency", "quantity", "price_id", "unit_amount", "product_name"}


@pytest.fixture
def billed(as_user: Any, state: Any) -> dict[str, Any]:
    """An account with 7 invoices of 12 lines each (newest first: #6 .. #0)."""
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account = alice.account(ws)
    client = state.gateway.client
    ids = []
    for n in range(7):
        for i in range(12):
            client.v1.invoice_items.create(
                {
                    "customer": account["id"],
                    "amount": 100 * n + i,
                    "currency": "usd",
                    "description": f"Invoice {n} item {i}",
                }
            )
        invoice = client.v1.invoices.create(
            {
                "customer": account["id"],
                "pending_invoice_items_behavior": "include",
                "collection_method": "send_invoice",
                "days_until_due": 30,
            }
        )
        client.v1.invoices.finalize_invoice(invoice.id)
        ids.append(invoice.id)
    return {
        "alice": alice,
        "acc": f"/workspaces/{ws}/billing-accounts/{account['id']}",
        "ids": ids[::-1],
        "account": account,
    }


def test_list_shape_and_all_lines(billed: dict[str, Any]) -> None:
    body = billed["alice"].get(f"{billed['acc']}/invoices").json
    assert body["has_more"] is False and body["next_cursor"] is None and body["previous_cursor"] is None
    assert [i["id"] for i in body["data"]] == billed["ids"]
    newest = body["data"][0]
    assert set(newest) == INVOICE_KEYS and newest["status"] == "open" and newest["due_date"]
    assert newest["customer_id"] == billed["account"]["id"] and newest["number"]
    assert len(newest["lines"]) == 12 and set(newest["lines"][0]) == LINE_KEYS  # past Stripe's first 10
    assert sorted(line["amount"] for line in newest["lines"]) == [600 + i for i in range(12)]
    assert newest["total"] == sum(600 + i for i in range(12)) and newest["tax"] is None


def test_paging_forward_and_back(billed: dict[str, Any]) -> None:
    alice, acc, ids = billed["alice"], billed["acc"], billed["ids"]
    first = alice.get(f"{acc}/invoices?limit=3").json
    assert [i["id"] for i in first["data"]] == ids[:3]
    assert first["has_more"] is True and first["next_cursor"] == ids[2] and first["previous_cursor"] is None
    second = alice.get(f"{acc}/invoices?limit=3&after={first['next_cursor']}").json
    assert [i["id"] for i in second["data"]] == ids[3:6]
    assert second["next_cursor"] == ids[5] and second["previous_cursor"] == ids[3]
    third = alice.get(f"{acc}/invoices?limit=3&after={second['next_cursor']}").json
    assert [i["id"] for i in third["data"]] == ids[6:] and third["has_more"] is False
    assert third["next_cursor"] is None and third["previous_cursor"] == ids[6]
    back = alice.get(f"{acc}/invoices?limit=3&before={third['previous_cursor']}").json
    assert [i["id"] for i in back["data"]] == ids[3:6]
    assert back["previous_cursor"] == ids[3] and back["next_cursor"] == ids[5]
    start = alice.get(f"{acc}/invoices?limit=3&before={back['previous_cursor']}").json
    assert [i["id"] for i in start["data"]] == ids[:3]
    assert start["previous_cursor"] is None and start["has_more"] is False
    assert all(len(i["lines"]) == 12 for page in (first, second, third, back, start) for i in page["data"])


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=x", "after=in_1&before=in_2", "after="])
def test_bad_queries(as_user: Any, query: str) -> None:
    alice = as_user("alice")
    ws = alice.workspace()
    account = alice.account(ws)
    assert_error(
        alice.get(f"/workspaces/{ws}/billing-accounts/{account['id']}/invoices?{query}"), 422, "validation_failed"
    )


def test_cursor_of_another_customer_is_refused(billed: dict[str, Any], as_user: Any, state: Any) -> None:
    bob = as_user("bob")
    ws = bob.workspace()
    other = bob.account(ws)
    state.gateway.client.v1.invoice_items.create({"customer": other["id"], "amount": 5, "currency": "usd"})
    theirs = state.gateway.client.v1.invoices.create(
        {"customer": other["id"], "pending_invoice_items_behavior": "include"}
    )
    assert_error(billed["alice"].get(f"{billed['acc']}/invoices?after={theirs.id}"), 422, "validation_failed")


def sandbox_counts(state: Any) -> dict[str, int]:
    with state.db.read() as session:
        return dict(
            session.execute(select(SandboxObject.object_type, func.count()).group_by(SandboxObject.object_type)).all()
        )


@pytest.fixture
def subscribed(as_user: Any, app: Flask) -> dict[str, Any]:
    """Through the services: a pooled workspace of two accounts (no trial), the first in
    GBP with a Visa and 4 users and 1 SSO; then five days on the sandbox's clock."""
    alice, build = as_user("alice"), Builder(app, "alice")
    with build.webhooks_at_the_end():
        ws = build.workspace("pooled")
        account, _ = build.account(ws, currency="gbp"), build.account(ws)
        build.card(ws, account["id"], "pm_card_visa")
        sub = build.subscription(ws, account["id"], {"users": 4, "sso": 1})
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    alice.advance_clock({"days": 5})
    return {"alice": alice, "acc": acc, "sub": sub}


def test_preview_new_subscription(subscribed: dict[str, Any], state: Any) -> None:
    alice, acc = subscribed["alice"], subscribed["acc"]
    before = sandbox_counts(state)
    response = alice.post(
        f"{acc}/invoices/preview", {"items": [{"product_type": "locations", "quantity": 3, "interval": "year"}]}
    )
    assert response.status_code == 200, response.json
    preview = response.json
    assert "id" not in preview and set(preview) == INVOICE_KEYS - {"id"}
    assert preview["currency"] == "gbp"
    [line] = preview["lines"]
    assert line["quantity"] == 3 and line["product_name"] == "Locations"
    assert preview["total"] == line["unit_amount"] * 3 > 0
    assert sandbox_counts(state) == before


def test_a_change_preview_cannot_switch_the_interval(subscribed: dict[str, Any], state: Any) -> None:
    """No PATCH switches a subscription's interval, so no preview pretends to."""
    alice, acc, sub = subscribed["alice"], subscribed["acc"], subscribed["sub"]
    before = sandbox_counts(state)
    error = assert_error(
        alice.post(
            f"{acc}/invoices/preview",
            {"subscription_id": sub["id"], "items": [{"product_type": "users", "quantity": 5, "interval": "year"}]},
        ),
        422,
        "validation_failed",
    )
    assert "month" in error["errors"]["items"][0]
    same = alice.post(
        f"{acc}/invoices/preview",
        {"subscription_id": sub["id"], "items": [{"product_type": "users", "quantity": 5, "interval": "month"}]},
    )
    assert same.status_code == 200, same.json
    assert sandbox_counts(state) == before


def test_preview_change_and_cancellation(subscribed: dict[str, Any], state: Any) -> None:
    alice, acc, sub = subscribed["alice"], subscribed["acc"], subscribed["sub"]
    before = sandbox_counts(state)
    change = alice.post(
        f"{acc}/invoices/preview",
        {
            "subscription_id": sub["id"],
            "items": [{"product_type": "users", "quantity": 6}, {"product_type": "sso", "quantity": 0}],
        },
    )
    assert change.status_code == 200, change.json
    assert 0 < change.json["total"]  # the prorated increase, charged now
    assert any(line["product_name"] == "Users" for line in change.json["lines"])
    cut = alice.post(
        f"{acc}/invoices/preview", {"subscription_id": sub["id"], "items": [{"product_type": "users", "quantity": 1}]}
    )
    assert cut.status_code == 200, cut.json
    users_line = next(line for line in cut.json["lines"] if line["product_name"] == "Users")
    assert users_line["quantity"] == 1 and users_line["amount"] > 0  # next period at the new quantity, no credit
    cancel = alice.post(f"{acc}/invoices/preview", {"subscription_id": sub["id"], "cancel_subscription": True})
    assert cancel.status_code == 200, cancel.json
    assert cancel.json["total"] == 0
    assert sandbox_counts(state) == before
    assert alice.get(f"{acc}/subscriptions/{sub['id']}").json == alice.get(f"{acc}/subscriptions/{sub['id']}").json
    current = alice.get(f"{acc}/subscriptions/{sub['id']}").json
    assert {p: v["quantity"] for p, v in current["product_quantities"].items()} == {"users": 4, "sso": 1}
    assert current["cancel_at_period_end"] is False


@pytest.mark.parametrize(
    "body,field",
    [
        ({}, "items"),
        ({"items": [{"product_type": "users", "quantity": 0}]}, "items"),
        ({"items": [{"product_type": "nope", "quantity": 1}]}, "items"),
        ({"items": [{"product_type": "users", "quantity": -1}]}, "items"),
        ({"items": [{"product_type": "users", "quantity": 1}, {"product_type": "users", "quantity": 2}]}, "items"),
        ({"cancel_subscription": True}, "cancel_subscription"),
    ],
)
def test_preview_validation(subscribed: dict[str, Any], body: dict[str, Any], field: str) -> None:
    error = assert_error(
        subscribed["alice"].post(f"{subscribed['acc']}/invoices/preview", body), 422, "validation_failed"
    )
    assert field in error["errors"]


def test_preview_of_another_accounts_subscription_is_404(subscribed: dict[str, Any], as_user: Any) -> None:
    bob = as_user("bob")
    ws = bob.workspace("pooled")
    account = bob.account(ws)
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    response = bob.post(
        f"{acc}/invoices/preview", {"subscription_id": subscribed["sub"]["id"], "cancel_subscription": True}
    )
    assert_error(response, 404, "not_found")


def test_preview_and_patch_share_one_change_plan(subscribed: dict[str, Any], state: Any) -> None:
    """Quantity 0 removes in the preview; removing every product is refused by
    both, with the same error (one plan serves PATCH and the preview)."""
    alice, acc, sub = subscribed["alice"], subscribed["acc"], subscribed["sub"]
    everything = alice.post(
        f"{acc}/invoices/preview",
        {
            "subscription_id": sub["id"],
            "items": [{"product_type": "users", "quantity": 0}, {"product_type": "sso", "quantity": 0}],
        },
    )
    patched = alice.patch(f"{acc}/subscriptions/{sub['id']}", {"remove_products": ["users", "sso"]})
    assert (
        assert_error(everything, 422, "cannot_remove_last_product")["message"]
        == assert_error(patched, 422, "cannot_remove_last_product")["message"]
    )
    drop_sso = alice.post(
        f"{acc}/invoices/preview", {"subscription_id": sub["id"], "items": [{"product_type": "sso", "quantity": 0}]}
    )
    assert drop_sso.status_code == 200, drop_sso.json
    assert {line["product_name"] for line in drop_sso.json["lines"]} == {"Users"}  # next period without sso


def test_discounts_are_shown_with_their_names(subscribed: dict[str, Any], state: Any) -> None:
    """A coupon put on the subscription in Stripe (the Dashboard): its invoices show the amount
    taken off and the coupon's name (Stripe gives the coupon as an id unless expanded)."""
    alice, acc, sub = subscribed["alice"], subscribed["acc"], subscribed["sub"]
    stripe_client = state.gateway.client.v1
    coupon = stripe_client.coupons.create({"percent_off": 20, "duration": "forever", "name": "Partner 20%"})
    stripe_client.subscriptions.update(sub["id"], {"discounts": [{"coupon": coupon.id}]})
    preview = alice.post(
        f"{acc}/invoices/preview", {"subscription_id": sub["id"], "items": [{"product_type": "users", "quantity": 3}]}
    ).json  # a decrease: the next period's invoice
    assert preview["discount_names"] == ["Partner 20%"]
    assert preview["discount_amount"] == preview["subtotal"] // 5 and preview["total"] == preview["subtotal"] * 4 // 5
    alice.advance_clock({"days": 27})
    renewal, first = alice.get(f"{acc}/invoices").json["data"][:2]
    assert (renewal["discount_names"], renewal["discount_amount"]) == (["Partner 20%"], renewal["subtotal"] // 5)
    assert renewal["total"] == renewal["amount_paid"] == renewal["subtotal"] - renewal["discount_amount"]
    assert (first["discount_names"], first["discount_amount"]) == ([], None)


def test_hosted_invoice_page_and_pdf_are_served_on_the_services_origin(as_user: Any, client: Any, config: Any) -> None:
    """The sandbox's hosted_invoice_url and invoice_pdf: a page and a PDF the service itself serves,
    without a token (as Stripe's: the URL is the key), and nothing for a URL that isn't one."""
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    account = alice.account(ws, name="Ada & <Co>")
    alice.account(ws, name="Second")  # no trial: the first invoice is paid now
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    assert alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"}).status_code == 201
    assert alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 3}}).status_code == 201
    [invoice] = alice.get(f"{acc}/invoices").json["data"]
    page_url, pdf_url = invoice["hosted_invoice_url"], invoice["invoice_pdf"]
    assert page_url.startswith(f"{config.sandbox_public_url}/sandbox/invoices/{invoice['id']}/")
    assert pdf_url == page_url + "/pdf"
    path = urlsplit(page_url).path
    total = f"${invoice['total'] / 100:,.2f}"

    page = client.get(path)
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert html.startswith("<!DOCTYPE html>") and invoice["number"] in html and f"{total} paid" in html
    assert "Ada &amp; &lt;Co&gt;" in html and "<Co>" not in html  # what the customer wrote is escaped
    assert "3 × Users" in html and f'href="{pdf_url}"' in html
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]

    pdf = client.get(urlsplit(pdf_url).path)
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    [text] = pdf_text(pdf.data)
    assert f"Invoice {invoice['number']}" in text and "Ada & <Co>" in text and total in text
    assert any(line.startswith("3 × Users") for line in text)

    wrong = path[:-1] + ("A" if path[-1] != "A" else "B")
    for bad in (wrong, wrong + "/pdf", f"/sandbox/invoices/in_nope/{path.rsplit('/', 1)[1]}"):
        assert_error(client.get(bad), 404, "not_found")


def test_the_lists_product_names_are_the_copys_including_a_product_without_one(
    subscribed: dict[str, Any], state: Any
) -> None:
    """The page's statement reads its products' names (JSON unnested per dialect): what
    `replica.product_names` answers, `str()` of a missing name included, and no name for a
    product the copy doesn't hold."""
    alice, acc = subscribed["alice"], subscribed["acc"]
    customer = acc.rsplit("/", 1)[-1]

    def listed() -> list[tuple[str | None, str | None]]:
        invoices = alice.get(f"{acc}/invoices").json["data"]
        return [(line["price_id"], line["product_name"]) for invoice in invoices for line in invoice["lines"]]

    def expected() -> list[tuple[str | None, str | None]]:
        documents, _ = replica.invoices_page(state.db, customer, 10)
        lines = [line for invoice in documents for line in invoice["lines"]["data"]]
        products = [line["pricing"]["price_details"]["product"] for line in lines]
        names = replica.product_names(state.db, set(products))
        return [
            (line["pricing"]["price_details"]["price"], names.get(p)) for line, p in zip(lines, products, strict=True)
        ]

    assert listed() == expected() and {name for _, name in listed()} == {"Users", "Single sign-on"}
    products = {name: id_ for id_, name in _product_ids(state).items()}
    kept = [products["Users"], products["Single sign-on"]]
    with state.db.read() as session:  # the catalog's copy outlives the test (tests.helpers.wipe): put it back
        originals = [
            {column.key: getattr(row, column.key) for column in StripeCopy.__table__.columns}
            for row in session.scalars(select(StripeCopy).where(StripeCopy.id.in_(kept)))
        ]
    try:
        with state.db.write() as session:
            row = session.get(StripeCopy, products["Users"])
            row.data = {k: v for k, v in row.data.items() if k != "name"}
            session.execute(delete(StripeCopy).where(StripeCopy.id == products["Single sign-on"]))
        assert listed() == expected() and {name for _, name in listed()} == {"None", None}
    finally:
        with state.db.write() as session:
            session.execute(delete(StripeCopy).where(StripeCopy.id.in_(kept)))
            session.execute(insert(StripeCopy), originals)


def _product_ids(state: Any) -> dict[str, str]:
    with state.db.read() as session:
        rows = session.execute(select(StripeCopy.id, StripeCopy.data).where(StripeCopy.object_type == "product"))
        return {id_: data.get("name") for id_, data in rows}


def test_a_listed_invoice_is_dumped_once_until_its_document_or_its_products_names_change(
    subscribed: dict[str, Any], state: Any, monkeypatch: Any
) -> None:
    """The list dumps each stored invoice once per process (schemas.invoices: keyed by its document's
    text and its products' names), exactly as the schema dumps the parsed document; a new view of
    the invoice, or a renamed product, is dumped anew."""
    alice, acc = subscribed["alice"], subscribed["acc"]
    customer = acc.rsplit("/", 1)[-1]
    dumped: list[Any] = []  # each invoice the schema reshapes (`_discount_names` is called once an invoice)
    discount_names = invoice_schemas._discount_names

    def counted(discounts: list[Any]) -> list[str]:
        dumped.append(discounts)
        return discount_names(discounts)

    monkeypatch.setattr(invoice_schemas, "_discount_names", counted)

    def reference() -> list[dict[str, Any]]:
        """The schema's dump of each parsed document, as a preview is dumped (no memo)."""
        documents, _ = replica.invoices_page(state.db, customer, 10)
        products = {line["pricing"]["price_details"]["product"] for d in documents for line in d["lines"]["data"]}
        names = replica.product_names(state.db, products)
        schema = invoice_schemas.InvoiceSchema()
        return [schema.dump({"invoice": d, "lines": d["lines"]["data"], "product_names": names}) for d in documents]

    first = alice.get(f"{acc}/invoices")
    assert first.status_code == 200 and first.json["data"] == reference()
    dumped.clear()
    again = alice.get(f"{acc}/invoices")
    assert again.get_data() == first.get_data() and dumped == []  # from the memo: nothing parsed or reshaped

    # A new view of the newest invoice (a later stamp): that invoice alone is dumped anew.
    [invoice, *older] = replica.invoices_page(state.db, customer, 10)[0]
    replica.Keeper(state.db).keep_data({**invoice, "number": "RENUMBERED-1"}, now_stamp())
    listed = alice.get(f"{acc}/invoices").json["data"]
    assert listed[0]["number"] == "RENUMBERED-1" and len(dumped) == 1 and listed == reference()

    # A product renamed in the copy: every invoice that names it is dumped anew.
    dumped.clear()
    users = next(id_ for id_, name in _product_ids(state).items() if name == "Users")
    with state.db.read() as session:  # the catalog's copy outlives the test (tests.helpers.wipe): put it back
        original = {
            column.key: getattr(session.get(StripeCopy, users), column.key) for column in StripeCopy.__table__.columns
        }
    try:
        with state.db.write() as session:
            row = session.get(StripeCopy, users)
            row.data = {**row.data, "name": "Seats"}
        listed = alice.get(f"{acc}/invoices").json["data"]
        assert len(dumped) == 1 + len(older) and "Seats" in {line["product_name"] for line in listed[0]["lines"]}
        assert listed == reference()
    finally:
        with state.db.write() as session:
            session.execute(delete(StripeCopy).where(StripeCopy.id == users))
            session.execute(insert(StripeCopy), [original])


def test_the_invoices_list_is_two_statements(subscribed: dict[str, Any], state: Any) -> None:
    """The access check and the page (its products' names in it), on both dialects."""
    alice, acc = subscribed["alice"], subscribed["acc"]
    assert alice.get(f"{acc}/invoices").status_code == 200
    seen: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        seen.append(sql)

    event.listen(state.db.engine, "before_cursor_execute", statement)
    try:
        assert alice.get(f"{acc}/invoices").status_code == 200
    finally:
        event.remove(state.db.engine, "before_cursor_execute", statement)
    assert len([sql for sql in seen if sql.lstrip().upper().startswith("SELECT")]) == 2, seen
