"""The invoice preview tells the truth, including when: for generated changes, making the change
and letting the preview's `created_at` come produces exactly the previewed invoice.

A seeded generator (each seed one case, reproducible by its id) draws a subscription (trialing or
mid-period, monthly or yearly, one to three products) and a change (increase, decrease, add,
remove, replace). Sandbox time is frozen for the test (it moves only when advanced), so the
preview and the change prorate from the same second, as two requests in the same second would.
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from typing import Any

import pytest

from billing.catalog import PRODUCTS

CASES = 14
LINE_FIELDS = ("description", "amount", "currency", "quantity", "price_id", "unit_amount", "product_name")
TOTALS = ("currency", "amount_due", "subtotal", "total", "created_at")


def _seconds(timestamp: str) -> int:
    return int(datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp() - time.timezone)


def _change(rng: random.Random, current: dict[str, int]) -> tuple[str, dict[str, int]]:
    """A change of kind increase, decrease, add, remove or replace (the first that applies)."""
    desired = dict(current)
    absent = [p for p in PRODUCTS if p not in current]
    kinds = ["increase", "decrease", "add", "remove", "replace"]
    rng.shuffle(kinds)
    for kind in kinds:
        if kind == "increase":
            product = rng.choice(sorted(current))
            desired[product] += rng.randint(1, 4)
        elif kind == "decrease" and any(q > 1 for q in current.values()):
            product = rng.choice(sorted(p for p, q in current.items() if q > 1))
            desired[product] = rng.randint(1, current[product] - 1)
        elif kind == "add" and absent:
            desired[rng.choice(absent)] = rng.randint(1, 3)
        elif kind == "remove" and len(current) > 1:
            del desired[rng.choice(sorted(current))]
        elif kind == "replace" and absent:
            del desired[rng.choice(sorted(current))]
            desired[rng.choice(absent)] = rng.randint(1, 3)
        else:
            continue
        return kind, desired
    raise AssertionError("no change applies")


def _comparable(invoice: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: invoice[k] for k in TOTALS},
        "lines": sorted(tuple(line[f] for f in LINE_FIELDS) for line in invoice["lines"]),
    }


@pytest.mark.parametrize("seed", range(CASES))
def test_preview_is_the_invoice_the_change_makes(
    seed: int, as_user: Any, state: Any, frozen_sandbox_time: None
) -> None:
    rng = random.Random(seed)
    trial, interval = rng.random() < 0.4, rng.choice(["month", "year"])
    alice = as_user("alice")
    ws = alice.workspace("single" if trial else "pooled")
    account = alice.account(ws)
    if not trial:
        alice.account(ws)  # two accounts: no trial
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"})
    start = {p: rng.randint(1, 5) for p in rng.sample(PRODUCTS, rng.randint(1, 3))}
    created = alice.post(f"{acc}/subscriptions", {"product_quantities": start, "interval": interval})
    assert created.status_code == 201, created.json
    sub = created.json
    assert sub["status"] == ("trialing" if trial else "active")
    days = rng.randint(0, 12) if trial else rng.randint(1, 25 if interval == "month" else 300)
    hours = rng.randint(0, 23)
    if days or hours:  # the clock only moves by a positive amount
        alice.advance_clock({"days": days, "hours": hours})

    kind, desired = _change(rng, start)
    items = [{"product_type": p, "quantity": desired.get(p, 0), "interval": interval} for p in {*start, *desired}]
    preview = alice.post(f"{acc}/invoices/preview", {"subscription_id": sub["id"], "items": items})
    assert preview.status_code == 200, preview.json
    changed = alice.patch(f"{acc}/subscriptions/{sub['id']}", {"product_quantities": desired})
    assert changed.status_code == 200, changed.json

    due = _seconds(preview.json["created_at"])
    now = state.sandbox_clock.now()
    assert due >= now
    if due > now:
        alice.advance_clock({"seconds": due - now})
    invoices = [i for i in alice.get(f"{acc}/invoices").json["data"] if i["created_at"] == preview.json["created_at"]]
    assert len(invoices) == 1, (kind, trial, interval, [i["created_at"] for i in invoices])
    assert _comparable(invoices[0]) == _comparable(preview.json), (kind, trial, interval, start, desired)


def test_raise_during_a_trial_falls_due_at_trial_end(as_user: Any, frozen_sandbox_time: None) -> None:
    """The issue's case: not charged now, but on the trial-end invoice, and the preview says when."""
    alice = as_user("alice")
    ws = alice.workspace("single")
    account = alice.account(ws)
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"})
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": {"users": 3}}).json
    preview = alice.post(
        f"{acc}/invoices/preview", {"subscription_id": sub["id"], "items": [{"product_type": "users", "quantity": 5}]}
    ).json
    assert preview["created_at"] == sub["trial_end"]
    [line] = preview["lines"]
    assert line["quantity"] == 5 and preview["amount_due"] == 5 * line["unit_amount"]


def test_a_new_subscription_on_a_trial_account_previews_the_trial_end_invoice(
    as_user: Any, state: Any, monkeypatch: pytest.MonkeyPatch, frozen_sandbox_time: None
) -> None:
    """The account the trial applies to: the create charges nothing now and the
    full period when the trial ends; the preview says that invoice, and when."""
    monkeypatch.setattr(state.gateway, "clock", state.sandbox_clock.now)  # Stripe's clock, frozen too
    alice = as_user("alice")
    ws = alice.workspace("single")
    account = alice.account(ws)
    acc = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    alice.post(f"/sandbox{acc}/payment-methods", {"payment_method": "pm_card_visa"})
    assert alice.get(f"{acc}/trial-eligibility").json["trial_eligible"] is True
    quantities = {"users": 3, "sso": 1}
    preview = alice.post(
        f"{acc}/invoices/preview",
        {"items": [{"product_type": product, "quantity": quantity} for product, quantity in quantities.items()]},
    )
    assert preview.status_code == 200, preview.json
    sub = alice.post(f"{acc}/subscriptions", {"product_quantities": quantities}).json
    assert sub["status"] == "trialing"
    assert preview.json["created_at"] == sub["trial_end"]
    assert preview.json["amount_due"] > 0
    alice.advance_clock({"days": 14})
    invoices = [i for i in alice.get(f"{acc}/invoices").json["data"] if i["created_at"] == sub["trial_end"]]
    assert len(invoices) == 1, [i["created_at"] for i in alice.get(f"{acc}/invoices").json["data"]]
    assert _comparable(invoices[0]) == _comparable(preview.json)
