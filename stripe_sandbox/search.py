"""Stripe's Search API on customers: `GET /v1/customers/search?query=...`.

Follows https://docs.stripe.com/api/customers/search and the search query
language (https://docs.stripe.com/search#search-query-language): clauses
`field:'value'` (exact), `field~'value'` (substring, at least 3 characters),
`-field:'value'` (negation), `metadata['key']:'value'`, `created>1700000000`
(`>`, `<`, `>=`, `<=`, `:`), joined by `AND` or by `OR` (not both in one
query, as Stripe requires). Customer fields: email, name, phone, metadata,
created. Results are newest first, pages cursored by `page`/`next_page`.
Stripe's index lags writes by up to a minute; the sandbox's does not.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from stripe_sandbox.errors import SandboxError
from stripe_sandbox.listing import page_limit
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.store import Document, Store

_CLAUSE = re.compile(
    r"""\s*(?P<neg>-)?(?P<field>[a-z_]+)(?:\[['"](?P<key>[^'"]+)['"]\])?\s*"""
    r"""(?P<op>>=|<=|:|~|>|<)\s*(?:['"](?P<text>[^'"]*)['"]|(?P<number>-?\d+))\s*"""
)


def _bad_query(query: str) -> SandboxError:
    return SandboxError(400, f"We were unable to parse your search query. Query: {query}", param="query")


Predicate = Callable[[Document], bool]


def _clause(match: re.Match[str], fields: set[str], query: str) -> Predicate:
    field, key, op = match["field"], match["key"], match["op"]
    text, number = match["text"], match["number"]
    if field not in fields or (key is not None) != (field == "metadata"):
        raise SandboxError(
            400, f"Field `{field}` is an unsupported search field for resource `customers`.", param="query"
        )
    if field == "created":
        if number is None:
            raise _bad_query(query)
        bound = int(number)
        compare = {":": int.__eq__, ">": int.__gt__, "<": int.__lt__, ">=": int.__ge__, "<=": int.__le__}[op]
        test: Predicate = lambda doc: compare(int(doc["created"]), bound)  # noqa: E731
    else:
        if text is None or op not in (":", "~") or (op == "~" and len(text) < 3):
            raise _bad_query(query)

        def value_of(doc: Document) -> Any:
            return (doc.get("metadata") or {}).get(key) if key is not None else doc.get(field)

        if op == ":":
            test = lambda doc: value_of(doc) == text  # noqa: E731
        else:
            test = lambda doc: isinstance(value_of(doc), str) and text.lower() in value_of(doc).lower()  # noqa: E731
    return (lambda doc: not test(doc)) if match["neg"] else test


def parse(query: str, fields: set[str]) -> Predicate:
    parts = re.split(r"\s+(AND|OR)\s+", query.strip())
    clauses, joins = parts[::2], set(parts[1::2])
    if len(joins) > 1:
        raise SandboxError(400, "Search queries cannot combine AND and OR.", param="query")
    tests = []
    for text in clauses:
        match = _CLAUSE.fullmatch(text)
        if match is None:
            raise _bad_query(query)
        tests.append(_clause(match, fields, query))
    if joins == {"OR"}:
        return lambda doc: any(test(doc) for test in tests)
    return lambda doc: all(test(doc) for test in tests)


def search(store: Store, params: Document, object_type: str, url: str, fields: set[str]) -> Document:
    """A `search_result`: `data` newest first, `has_more`, `next_page` (an opaque offset)."""
    limit = page_limit(params)
    matches = parse(str(params.get("query") or ""), fields)
    offset = 0
    if params.get("page"):
        try:
            offset = int(base64.urlsafe_b64decode(str(params["page"]).encode()).decode())
        except ValueError:
            raise SandboxError(400, "Invalid page token.", param="page") from None
    o = SandboxObject
    rows = store.session.scalars(
        select(o).where(o.object_type == object_type, o.deleted.is_(False)).order_by(o.seq.desc(), o.id.desc())
    )
    found = [row for row in rows if matches(row.data)]
    page = found[offset : offset + limit]
    has_more = len(found) > offset + limit
    return {
        "object": "search_result",
        "data": [store.present(row) for row in page],
        "has_more": has_more,
        "next_page": base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if has_more else None,
        "url": url,
    }
