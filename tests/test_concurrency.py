"""Concurrent creates: the billing-mode limit holds, and Stripe and the index agree."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.test_billing_accounts import FULL, index_rows


def _create_concurrently(app: Any, headers: dict[str, str], ws: str, n: int) -> list[Any]:
    def create(i: int) -> Any:
        with app.test_client() as client:
            return client.post(f"/workspaces/{ws}/billing-accounts", json={**FULL, "name": f"Racer {i}"},
                               headers=headers)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(create, range(n)))


@pytest.mark.parametrize("mode,limit", [("single", 1), ("pooled", 10)])
def test_concurrent_creates_respect_the_limit(app: Any, as_user: Any, auth: Any, state: Any,
                                              mode: str, limit: int) -> None:
    ws = as_user("alice").workspace(mode)
    responses = _create_concurrently(app, auth("alice"), ws, 20)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * limit + [409] * (20 - limit), [r.get_json() for r in responses]
    assert all(r.get_json()["code"] == "billing_account_limit_reached" for r in responses if r.status_code == 409)
    created = {r.get_json()["id"] for r in responses if r.status_code == 201}
    rows = index_rows(state, ws)
    assert {r.customer_id for r in rows} == created and all(r.state == "active" for r in rows)
    # Every Stripe customer of this workspace has exactly one index row: none orphaned, none twice.
    in_stripe = [c.id for c in state.gateway.iter_customers() if c.metadata.to_dict().get("workspace_id") == ws]
    assert sorted(in_stripe) == sorted(created)
