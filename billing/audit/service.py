"""Reading the audit trail (owners and admins), and its retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, tuple_

from billing.access import Access
from billing.db import Database
from billing.errors import ApiError
from billing.models import AuditEvent, utcnow
from billing.state import BillingState

# Entries deleted by one sweep at most: a first sweep over a long backlog never holds a long transaction.
PRUNE_BATCH = 10_000


def list_events(state: BillingState, access: Access, query: dict[str, Any]) -> dict[str, Any]:
    """Newest first; keyset pages on (occurred_at, id) from a cursor entry of the
    workspace (`after`: older ones, `before`: newer ones), as the invoices list pages."""
    access.require_role("admin")
    workspace_id = access.workspace.id
    after, before = query.get("after"), query.get("before")
    e = AuditEvent
    statement = select(e).where(e.workspace_id == workspace_id)
    if "target_id" in query:
        statement = statement.where(e.target_id == query["target_id"])
    if "actor" in query:
        actor = query["actor"]
        statement = statement.where(e.actor_type == "stripe" if actor == "stripe" else e.actor_id == actor)
    if "action" in query:
        statement = statement.where(e.action.startswith(query["action"], autoescape=True))
    if "since" in query:
        statement = statement.where(e.occurred_at >= query["since"])
    if "until" in query:
        statement = statement.where(e.occurred_at < query["until"])
    key = (e.occurred_at, e.id)
    with state.db.read() as session:
        if after or before:
            cursor = session.execute(
                select(e.occurred_at, e.id).where(e.id == (after or before), e.workspace_id == workspace_id)
            ).first()
            if cursor is None:  # no paging through another workspace's entries
                raise ApiError(422, "validation_failed", "Unknown cursor.", errors={"cursor": ["No such audit event."]})
            at = tuple_(cursor.occurred_at, cursor.id)
            statement = statement.where(tuple_(*key) < at if after else tuple_(*key) > at)
        newest_first = before is None
        order = [k.desc() for k in key] if newest_first else [k.asc() for k in key]
        rows = list(session.scalars(statement.order_by(*order).limit(query["limit"] + 1)))
    more = len(rows) > query["limit"]
    rows = rows[: query["limit"]]
    if not newest_first:
        rows.reverse()
    first, last = (rows[0].id, rows[-1].id) if rows else (None, None)
    if before:
        next_cursor, previous_cursor = last, first if more else None
    else:
        next_cursor, previous_cursor = last if more else None, first if after else None
    return {"data": rows, "has_more": more, "next_cursor": next_cursor, "previous_cursor": previous_cursor}


def delete_expired(db: Database, retention_days: int) -> int:
    """Delete entries older than the retention (the periodic sweep), a batch at a time."""
    cutoff = utcnow() - timedelta(days=retention_days)
    expired = select(AuditEvent.id).where(AuditEvent.occurred_at < cutoff).limit(PRUNE_BATCH)
    with db.write() as session:
        result = session.execute(
            delete(AuditEvent).where(AuditEvent.id.in_(expired)).execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)
