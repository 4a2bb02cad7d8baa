"""Persistence of emulated Stripe objects in `sandbox_objects`.

A `Store` wraps the session of one request. Handlers read rows by primary key,
write whole JSON documents back, and list through index-backed keyset pages.
What an object looks like on the wire is up to its `ObjectKind` (registered by
its resource module): some documents hold references that are rendered at read
time (a subscription item stores its price id, the response embeds the price).
"""

from __future__ import annotations

import copy
import secrets
import string
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, not_, select
from sqlalchemy.orm import Session

from stripe_sandbox.errors import resource_missing
from stripe_sandbox.models import SandboxObject

Document = dict[str, Any]

_ID_ALPHABET = string.ascii_letters + string.digits
# Sandbox-only bookkeeping kept inside a stored document (a payment method's
# test behaviour, whether trial_will_end was sent, ...); never shown on the wire.
INTERNAL = "_sandbox"
# Where the host serves what the emulator serves on its origin (hosted invoice pages), by default.
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


def random_token(length: int = 24) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class ObjectKind:
    object_type: str  # the `object` field: "customer", "price", ...
    id_prefix: str  # "cus", "price", ...
    noun: str  # as in Stripe's "No such customer: 'cus_x'"
    # Stored document -> API representation; identity when None.
    present: Callable[[Store, Document], Document] | None = None
    # Fields Stripe leaves out unless expanded (customer.subscriptions, ...).
    includable: Mapping[str, Callable[[Store, Document], Any]] = field(default_factory=dict)
    # What happens when sandbox time reaches the row's `due_at` (see clock.process_due).
    advance: Callable[[Store, SandboxObject], None] | None = None


class _Sequence:
    """Strictly increasing microsecond stamps for list ordering (see SandboxObject.seq)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self, now: float) -> int:
        with self._lock:
            self._last = max(int(now * 1_000_000), self._last + 1)
            return self._last


_sequence = _Sequence()


class Store:
    def __init__(
        self,
        session: Session,
        kinds: Mapping[str, ObjectKind],
        now: float,
        *,
        request_id: str | None = None,
        idempotency_key: str | None = None,
        recorded_at: float | None = None,
        public_url: str = DEFAULT_PUBLIC_URL,
    ) -> None:
        self.session = session
        self.kinds = kinds
        self.now = int(now)
        # The host's origin: hosted invoice URLs point there (hosted_invoices.py).
        self.public_url = public_url
        # List and delivery order follow when rows are written, even when the
        # clock dates them earlier (a renewal created at its period's end).
        self._recorded_at = now if recorded_at is None else recorded_at
        # The API request this store serves, for events' `request`; None for
        # changes the clock makes on its own (trial ends, renewals, ...).
        self.request_id = request_id
        self.idempotency_key = idempotency_key

    # -- ids and lookups ---------------------------------------------------

    def new_id(self, object_type: str) -> str:
        return f"{self.kinds[object_type].id_prefix}_{random_token()}"

    def get(
        self, object_type: str, object_id: str, *, for_update: bool = False, include_deleted: bool = False
    ) -> SandboxObject | None:
        """The row; `for_update` locks it and re-reads it, so what a caller rewrites is current.

        Without `populate_existing` the session would hand back a row it loaded
        earlier in the request, unlocked, as it was then: writing that back
        would undo a concurrent request's committed change (a lost update).
        """
        row = self.session.get(
            SandboxObject, object_id, with_for_update=for_update or None, populate_existing=for_update
        )
        if row is None or row.object_type != object_type or (row.deleted and not include_deleted):
            return None
        return row

    def require(
        self, object_type: str, object_id: str, *, param: str = "id", status: int = 404, for_update: bool = False
    ) -> SandboxObject:
        row = self.get(object_type, object_id, for_update=for_update)
        if row is None:
            raise resource_missing(self.kinds[object_type].noun, object_id, param=param, status=status)
        return row

    # -- writes --------------------------------------------------------------

    def insert(
        self, object_type: str, data: Document, *, customer: str | None = None, due_at: int | None = None
    ) -> SandboxObject:
        row = SandboxObject(
            id=data["id"],
            object_type=object_type,
            customer=customer,
            created=data.get("created", self.now),
            seq=_sequence.next(self._recorded_at),
            deleted=False,
            due_at=due_at,
            data=data,
        )
        self.session.add(row)
        self.session.flush()  # surface primary-key conflicts inside the request
        return row

    def update(self, row: SandboxObject, data: Document, *, due_at: int | None = None) -> None:
        # Assign a new dict: JSON columns only notice replacement, not mutation.
        row.data = data
        row.due_at = due_at

    def set_customer(self, row: SandboxObject, customer: str | None) -> None:
        """Re-file the row under another owner (a payment method being attached or detached)."""
        row.customer = customer

    def mark_deleted(self, row: SandboxObject, data: Document) -> None:
        row.deleted = True
        row.due_at = None
        row.data = data

    # -- reading -------------------------------------------------------------

    def present(self, row: SandboxObject) -> Document:
        return self.present_document(row.object_type, row.data, deleted=row.deleted)

    def present_document(self, object_type: str, data: Document, *, deleted: bool = False) -> Document:
        kind = self.kinds.get(object_type)
        document = {key: copy.deepcopy(value) for key, value in data.items() if key != INTERNAL}
        if deleted or kind is None or kind.present is None:
            return document
        return kind.present(self, document)

    def list_page(
        self,
        object_type: str,
        *,
        limit: int,
        starting_after: SandboxObject | None = None,
        ending_before: SandboxObject | None = None,
        customer: str | None = None,
        where: Iterable[ColumnElement[bool]] = (),
        predicate: Callable[[Document], bool] | None = None,
    ) -> tuple[list[SandboxObject], bool]:
        """One page, newest first, and whether more rows lie past it.

        Keyset pagination over (seq, id) walks the (type, deleted, seq, id) or
        (customer, type, seq, id) index; `where` adds SQL filters and
        `predicate` Python ones (checked in batches, for filters JSON can't say).
        """
        o = SandboxObject
        base = select(o).where(o.object_type == object_type, o.deleted.is_(False), *where)
        if customer is not None:
            base = base.where(o.customer == customer)
        newer_first = ending_before is None
        cursor = starting_after if newer_first else ending_before
        position = (cursor.seq, cursor.id) if cursor is not None else None
        batch = limit + 1 if predicate is None else max(limit + 1, 100)
        found: list[SandboxObject] = []
        while True:
            query = base
            if position is not None:
                seq, row_id = position
                if newer_first:
                    query = query.where(o.seq <= seq, not_(and_(o.seq == seq, o.id >= row_id)))
                else:
                    query = query.where(o.seq >= seq, not_(and_(o.seq == seq, o.id <= row_id)))
            order = (o.seq.desc(), o.id.desc()) if newer_first else (o.seq.asc(), o.id.asc())
            rows = list(self.session.scalars(query.order_by(*order).limit(batch)))
            for row in rows:
                if predicate is None or predicate(row.data):
                    found.append(row)
                    if len(found) > limit:
                        page = found[:limit]
                        return (page if newer_first else page[::-1]), True
            if len(rows) < batch:
                return (found if newer_first else found[::-1]), False
            position = (rows[-1].seq, rows[-1].id)
