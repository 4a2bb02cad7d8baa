"""The database layer under requests: on PostgreSQL a request's reads share one
pooled connection, and every connection a request took is back in the pool when
it ends (a webhook delivered in-process, a request inside a request, included)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, event

from tests.helpers import assert_error, make_child, make_root, orgs, subscribe_with_card


@pytest.fixture
def checkouts(state: Any) -> Iterator[list[Connection]]:
    """Every connection taken from the pool. Holding them here keeps the
    garbage collector from handing back one that was never closed."""
    taken: list[Connection] = []

    def on_connect(connection: Connection) -> None:
        taken.append(connection)

    event.listen(state.db.engine, "engine_connect", on_connect)
    yield taken
    event.remove(state.db.engine, "engine_connect", on_connect)


def all_back(state: Any, taken: list[Connection]) -> bool:
    return all(connection.closed for connection in taken) and state.db.engine.pool.checkedout() == 0


def test_a_limits_read_takes_one_connection_on_postgresql(
    as_user: Any, state: Any, checkouts: list[Connection]
) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 4})
    child = make_child(alice, ws, make_root(alice, ws)["id"])
    checkouts.clear()
    assert alice.get(f"{orgs(ws)}/{child['id']}/limits").status_code == 200
    if state.db.is_sqlite:
        assert len(checkouts) > 1  # SQLite's reads each take their own (a shared one would pin a snapshot)
    else:
        assert len(checkouts) == 1
    assert all_back(state, checkouts)


def test_every_connection_a_request_takes_goes_back(as_user: Any, state: Any, checkouts: list[Connection]) -> None:
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    # Creating an account and subscribing deliver webhooks in-process: requests inside requests.
    account = alice.account(ws)["id"]
    subscribe_with_card(alice, ws, account, {"users": 4})
    assert checkouts and all_back(state, checkouts)
    assert alice.get(f"/workspaces/{ws}/billing-accounts/{account}/subscriptions").status_code == 200
    assert_error(alice.get(f"{orgs(ws)}/org_doesnotexist00000/limits"), 404, "not_found")
    assert_error(as_user("mallory").get(f"/workspaces/{ws}"), 404, "not_found")
    assert all_back(state, checkouts)
