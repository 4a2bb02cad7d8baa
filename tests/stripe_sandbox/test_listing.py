"""Pagination, and listing speed at 10,000 customers."""

from __future__ import annotations

import time
from typing import Any

import stripe
from sqlalchemy import event, insert, text

from stripe_sandbox import SqlSessions
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.store import random_token


def test_pagination(client: stripe.StripeClient) -> None:
    created = [client.v1.customers.create(params={"name": f"c{i}"}).id for i in range(25)]
    newest_first = created[::-1]

    page = client.v1.customers.list(params={"limit": 10})
    assert [c.id for c in page.data] == newest_first[:10] and page.has_more
    page2 = client.v1.customers.list(params={"limit": 10, "starting_after": page.data[-1].id})
    assert [c.id for c in page2.data] == newest_first[10:20] and page2.has_more
    page3 = page2.next_page()
    assert [c.id for c in page3.data] == newest_first[20:] and not page3.has_more

    back = client.v1.customers.list(params={"limit": 10, "ending_before": page3.data[0].id})
    assert [c.id for c in back.data] == newest_first[10:20] and back.has_more
    first = client.v1.customers.list(params={"limit": 10, "ending_before": newest_first[5]})
    assert [c.id for c in first.data] == newest_first[:5] and not first.has_more

    assert [c.id for c in client.v1.customers.list(params={"limit": 7}).auto_paging_iter()] == newest_first
    assert client.v1.customers.list().data[0].id == newest_first[0]  # default limit 10
    assert len(client.v1.customers.list().data) == 10


def test_missing_cursor(client: stripe.StripeClient) -> None:
    try:
        client.v1.customers.list(params={"starting_after": "cus_missing"})
    except stripe.InvalidRequestError as error:
        assert (error.http_status, error.code, error.param) == (400, "resource_missing", "starting_after")
    else:
        raise AssertionError("expected an error")


def _bulk_insert_customers(database: SqlSessions, count: int) -> None:
    now = int(time.time())
    rows = []
    for i in range(count):
        customer_id = f"cus_{random_token()}"
        rows.append(
            {
                "id": customer_id,
                "object_type": "customer",
                "customer": None,
                "created": now,
                "seq": now * 1_000_000 + i,
                "deleted": False,
                "due_at": None,
                "data": {
                    "id": customer_id,
                    "object": "customer",
                    "created": now,
                    "email": f"u{i}@example.com",
                    "metadata": {},
                    "livemode": False,
                },
            }
        )
    with database.write() as session:
        session.execute(insert(SandboxObject), rows)


def test_listing_10000_customers_is_index_backed(database: SqlSessions, client: stripe.StripeClient) -> None:
    _bulk_insert_customers(database, 10_000)
    if not database.is_sqlite:
        with database.engine.begin() as connection:
            connection.execute(text("ANALYZE sandbox_objects"))
    started = time.perf_counter()
    page = client.v1.customers.list(params={"limit": 100})
    deep = client.v1.customers.list(params={"limit": 100, "starting_after": page.data[-1].id})
    for _ in range(8):
        deep = client.v1.customers.list(params={"limit": 100, "starting_after": deep.data[-1].id})
    elapsed = time.perf_counter() - started
    assert page.data[0].email == "u9999@example.com" and deep.data[-1].email == "u9000@example.com"
    assert elapsed < 2.0, f"10 pages of 100 took {elapsed:.2f}s"

    # The page query the store really sends, explained by the database.
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if "FROM sandbox_objects" in statement and "ORDER BY" in statement:
            statements.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", capture)
    try:
        client.v1.customers.list(params={"limit": 100, "starting_after": deep.data[-1].id})
    finally:
        event.remove(database.engine, "before_cursor_execute", capture)
    ((statement, parameters),) = statements
    with database.engine.connect() as connection:
        prefix = "EXPLAIN QUERY PLAN " if database.is_sqlite else "EXPLAIN "
        plan = " ".join(str(row[-1]) for row in connection.exec_driver_sql(prefix + statement, parameters))
    assert "ix_sandbox_objects_type_seq" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
