"""The database layer under requests: on PostgreSQL a request's reads share one
pooled connection, and every connection a request took is back in the pool when
it ends (a webhook delivered in-process, a request inside a request, included)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from psycopg import pq
from sqlalchemy import (
    Connection,
    DateTime,
    Integer,
    String,
    bindparam,
    cast,
    event,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import DataError, DBAPIError

from billing import access, replica
from billing import db as db_module
from billing.models import Workspace
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


def test_a_usage_report_commits_without_waiting_for_the_disk_and_only_it(as_user: Any, state: Any) -> None:
    """Reports of a workspace queue on its lock: theirs is the one transaction whose commit
    doesn't wait for the disk (README: a usage report's 200); the setting ends with it."""
    if state.db.is_sqlite:
        pytest.skip("PostgreSQL's synchronous_commit")
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 4})
    org = make_root(alice, ws)["id"]
    seen: list[str] = []

    def statements(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(state.db.engine, "before_cursor_execute", statements)
    try:
        assert alice.post(f"{orgs(ws)}/{org}/usage", {"product": "users", "delta": 1}).status_code == 200
        reported = list(seen)
        seen.clear()
        assert alice.patch(f"/workspaces/{ws}", {"name": "Renamed"}).status_code == 200
    finally:
        event.remove(state.db.engine, "before_cursor_execute", statements)
    assert "SELECT set_config('synchronous_commit', 'off', true)" in reported
    assert not any("synchronous_commit" in statement for statement in seen)
    with state.db.write(wait_for_disk=False) as session:
        assert session.execute(text("SHOW synchronous_commit")).scalar() == "off"
    with state.db.write() as session:
        assert session.execute(text("SHOW synchronous_commit")).scalar() == "on"


def test_a_round_trip_is_one_transaction_and_its_setting_ends_with_it(state: Any) -> None:
    """`in_one_round_trip` sends no BEGIN or COMMIT: its statements are the pipeline's one
    implicit transaction (one transaction id, a setting for the transaction alone holds to its
    last statement), and `wait_for_disk=False` is that transaction's alone."""
    if not state.db.has_round_trip_transactions:
        pytest.skip("PostgreSQL's pipeline")
    setting = select(func.current_setting("synchronous_commit"), func.txid_current())
    state.db.begin_request()
    try:
        for wait, expected in ((False, "off"), (True, "on")):
            answers = state.db.in_one_round_trip([(setting, {}), (setting, {})], wait_for_disk=wait)
            (first, transaction), (last, same) = answers[0][0][0], answers[1][0][0]
            assert (first, last, same) == (expected, expected, transaction)
            with state.db.columns() as connection:
                assert connection.execute(text("SHOW synchronous_commit")).scalar() == "on"
                assert connection.execute(select(func.txid_current())).scalar() != transaction
    finally:
        state.db.end_request()


def test_a_pooled_connection_idle_for_a_while_is_pinged_before_use(state: Any) -> None:
    """Pinged only when it sat in the pool for PING_IDLE_SECONDS or more (a restart may have
    dropped it unseen); one reused at once is not (under load, a ping a request was a round trip)."""
    if state.db.is_sqlite:
        pytest.skip("PostgreSQL's pool")
    pings: list[str] = []

    def statements(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        pings.append(statement)

    dialect = state.db.engine.dialect
    ping = dialect.do_ping
    dialect.do_ping = lambda connection: pings.append("ping") or ping(connection)
    try:
        with state.db.read() as session:
            session.execute(text("SELECT 1"))
        with state.db.read() as session:  # back in the pool a moment ago
            session.execute(text("SELECT 1"))
        assert "ping" not in pings
        for record in state.db.engine.pool._pool.queue:  # as if idle for a while
            record.info["idle_since"] -= db_module.PING_IDLE_SECONDS
        with state.db.read() as session:
            session.execute(text("SELECT 1"))
        assert "ping" in pings
    finally:
        del dialect.do_ping


def test_statements_in_one_round_trip_answer_as_sqlalchemy_would(state: Any) -> None:
    """`in_one_round_trip` compiles a statement once and expands it once a shape (the lengths of
    its IN lists): lists of other lengths, a parameter used twice and typed values are answered
    as SQLAlchemy's own execution answers them."""
    if not state.db.has_round_trip_transactions:
        pytest.skip("PostgreSQL's pipeline")
    numbers: Any = (
        select(literal_column("n"))
        .select_from(text("generate_series(1, 9) AS n"))
        .where(
            literal_column("n").in_(bindparam("wanted", expanding=True)),
            literal_column("n") >= bindparam("least", type_=Integer),
            literal_column("n") != bindparam("least", type_=Integer) + 1,
        )
        .order_by(literal_column("n"))
    )
    tagged = select(
        bindparam("tag", type_=String) + "-" + bindparam("tag", type_=String), bindparam("at", type_=DateTime)
    )
    at = datetime(2026, 1, 2, 3, 4, 5)
    for wanted, least in (([1, 2, 3], 1), ([7], 1), ([2, 3, 4, 5, 6], 3), ([1, 2, 3], 2)):
        params = {"wanted": wanted, "least": least, "tag": "x", "at": at}
        with state.db.read() as session:
            expected = [tuple(row) for row in session.execute(numbers, params)]
        (rows, count), (tags, _) = state.db.in_one_round_trip([(numbers, params), (tagged, params)])
        assert (rows, count) == (expected, len(expected)), wanted
        assert tags == [("x-x", at)]


def test_a_failed_round_trip_changes_nothing_and_leaves_its_connection_as_it_found_it(as_user: Any, state: Any) -> None:
    """A statement refused in the pipeline, by the server or by psycopg before it is sent: the
    transaction is rolled back (an earlier statement's change with it) and the request's
    connection (its reads share it) is idle again, autocommitting as they expect."""
    if not state.db.has_round_trip_transactions:
        pytest.skip("PostgreSQL's pipeline")
    ws = as_user("alice").workspace("pooled")
    rename = update(Workspace).where(Workspace.id == ws).values(name="Renamed")
    failing = select(literal_column("1") / bindparam("zero", type_=Integer))
    unsendable: Any = select(bindparam("value"))  # psycopg refuses the value before sending it
    state.db.begin_request()
    try:
        with pytest.raises(DBAPIError):
            state.db.in_one_round_trip([(rename, {}), (failing, {"zero": 0})])
        with pytest.raises(DBAPIError):
            state.db.in_one_round_trip([(rename, {}), (unsendable, {"value": object()})])
        with state.db.columns() as connection:
            driver = connection.connection.driver_connection
            assert driver.autocommit and driver.info.transaction_status == pq.TransactionStatus.IDLE
            assert connection.execute(select(Workspace.name).where(Workspace.id == ws)).scalar() == "Acme"
    finally:
        state.db.end_request()
    assert state.db.engine.pool.checkedout() == 0


def test_a_hot_read_on_the_drivers_cursor_answers_as_sqlalchemy_and_is_seen_as_one_statement(
    as_user: Any, state: Any, monkeypatch: Any
) -> None:
    """`Database.fetch_columns` (the access checks, the invoices' page, the capacity read): on
    PostgreSQL the driver's cursor, not SQLAlchemy's execute, with the same rows (parameters and
    column types processed: aware datetimes, JSON), the statement announced once before and once
    after to the engine's listeners, and a driver's error raised as SQLAlchemy raises it."""
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    customer = alice.account(ws)["id"]
    params = {"workspace_id": ws, "user_id": "alice", "customer_id": customer}
    statement = access._MEMBERSHIP_AND_ACCOUNT
    subscriptions = (replica._SUBSCRIPTIONS[False], replica.subscriptions_params(ws, ["active", "trialing"], None))
    with state.db.columns() as connection:
        expected = [tuple(row) for row in connection.execute(statement, params)]
        expected_subscriptions = [tuple(row) for row in connection.execute(*subscriptions)]
    created_at = [c.name for c in statement.selected_columns].index("created_at")
    assert expected and expected[0][created_at].tzinfo is not None  # the workspace's, as UTCDateTime answers it
    seen: list[tuple[str, Any]] = []

    def before(_conn: Any, _cursor: Any, sql: str, _params: Any, context: Any, _many: bool) -> None:
        if sql.lstrip().startswith("SELECT"):  # not SQLite's BEGIN
            seen.append(("before", context))

    def after(_conn: Any, _cursor: Any, sql: str, _params: Any, context: Any, _many: bool) -> None:
        if sql.lstrip().startswith("SELECT"):
            seen.append(("after", context))

    if not state.db.is_sqlite:

        def not_sqlalchemys(*_args: Any, **_kwargs: Any) -> Any:
            raise AssertionError("a hot read went through SQLAlchemy's execute")

        monkeypatch.setattr(Connection, "_execute_clauseelement", not_sqlalchemys)
    event.listen(state.db.engine, "before_cursor_execute", before)
    event.listen(state.db.engine, "after_cursor_execute", after)
    try:
        with state.db.columns() as connection:
            rows = [tuple(row) for row in state.db.fetch_columns(connection, statement, params)]
            with_json = [tuple(row) for row in state.db.fetch_columns(connection, *subscriptions)]
    finally:
        event.remove(state.db.engine, "before_cursor_execute", before)
        event.remove(state.db.engine, "after_cursor_execute", after)
        monkeypatch.undo()
    assert rows == expected and with_json == expected_subscriptions
    assert [when for when, _ in seen] == ["before", "after", "before", "after"]
    assert seen[0][1] is seen[1][1] and seen[0][1] is not None  # a listener keeps its state between the two
    if state.db.is_sqlite:
        return
    with state.db.columns() as connection:
        with pytest.raises(DataError):
            state.db.fetch_columns(connection, select(cast(bindparam("n"), Integer)), {"n": "not a number"})
        assert state.db.fetch_columns(connection, select(cast(bindparam("n"), Integer)), {"n": "7"}) == [(7,)]
