"""Leases (billing.leases): one holder at a time, across processes; on
PostgreSQL a holder that dies lets go at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from billing import leases
from tests.helpers import assert_error

ROOT = Path(__file__).resolve().parent.parent

# Another process (a gunicorn worker, say) holds a lease until it is killed.
HOLDER = """
import sys, time
from billing.db import Database
from billing.leases import lease
with lease(Database(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_killed_holders_lease_is_taken_over_at_once(as_user: Any, state: Any, monkeypatch: Any) -> None:
    """A worker killed mid-change leaves no lock behind: PostgreSQL releases the
    lease with the dead process's connection, so the next change proceeds (with
    the 120 s lease of old it waited 15 s, then was refused)."""
    if state.db.is_sqlite:
        pytest.skip("SQLite (one process, in development) keeps the row lease that expires")
    paying = as_user("alice").account_without_trial()
    alice, acc = paying["alice"], paying["acc"]
    assert alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"}).status_code == 201
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 2}}).json
    path = f"{acc}/subscriptions/{sub['id']}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, state.db.url, leases.subscription_lease_name(sub["id"])],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with monkeypatch.context() as short:  # while the holder lives, a change waits for it, then is refused
            short.setattr(leases, "WAIT_SECONDS", 0.2)
            assert_error(alice.patch(path, {"add_products": {"users": 1}}), 409, "operation_in_progress")
    finally:
        holder.kill()
        holder.wait(10)
    killed = time.monotonic()
    response = alice.patch(path, {"add_products": {"users": 1}})
    print(f"the change after the kill answered in {time.monotonic() - killed:.3f} s")
    assert response.status_code == 200, response.json
    assert response.json["product_quantities"]["users"]["quantity"] == 3


def test_one_holder_per_name(state: Any, monkeypatch: Any) -> None:
    """Two holders of one name wait for each other (the second is refused when
    its wait runs out); other names are independent; a released lease is free."""
    monkeypatch.setattr(leases, "WAIT_SECONDS", 0.05)
    with leases.lease(state.db, "a"):
        from concurrent.futures import ThreadPoolExecutor

        def take(name: str) -> str:
            try:
                with leases.lease(state.db, name):
                    return "held"
            except Exception as error:  # the refusal
                return getattr(error, "code", repr(error))

        with ThreadPoolExecutor(max_workers=2) as pool:
            assert list(pool.map(take, ["a", "b"])) == ["operation_in_progress", "held"]
    with leases.lease(state.db, "a"):
        pass


def advisory_locks(state: Any) -> int:
    with state.db.read() as session:
        return int(
            session.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            )
            or 0
        )


def advisory_locks_once_settled(state: Any) -> int:
    """`advisory_locks` once a discarded connection's backend has ended: PostgreSQL frees its
    locks when the backend exits, a moment after the client closed it (a read sent at once,
    without the pool's ping that used to come first, could still see them)."""
    deadline = time.monotonic() + 5
    while (held := advisory_locks(state)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return held


def test_a_lock_left_held_goes_with_its_connection(state: Any) -> None:
    """A scope (a request) that ends still holding an advisory lock (its holder
    failed before letting go) discards its connection: the lock is not handed
    to the pool's next user."""
    if state.db.is_sqlite:
        pytest.skip("PostgreSQL's advisory locks")
    with state.db.lock_scope():
        assert state.db.try_lock("forgotten") and advisory_locks(state) == 1
    assert advisory_locks_once_settled(state) == 0
    with state.db.lock_scope():  # and it is free
        assert state.db.try_lock("forgotten")
        state.db.unlock("forgotten")
    assert advisory_locks(state) == 0
