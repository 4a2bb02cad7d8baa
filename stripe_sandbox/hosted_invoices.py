"""Hosted invoice pages: what a finalized invoice's `hosted_invoice_url` and `invoice_pdf` serve.

Stripe serves them from its own hosts; the sandbox's are on the host's own origin (the Store's
`public_url`), under `invoice_engine.HOSTED_PATH`, which the host routes to `find()` and `html()` /
`pdf()`. As on Stripe, the URL is the key: no login, a random token per invoice (kept in the
invoice, compared in constant time). A voided invoice's page stays, and says so.
"""

from __future__ import annotations

import copy
import decimal
import hmac
from html import escape
from typing import Any

from stripe_sandbox.database import SessionSource
from stripe_sandbox.invoice_engine import HOSTED_TOKEN, INVOICE, format_date, format_money
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.pdf import Line, document
from stripe_sandbox.store import INTERNAL, Document


def find(database: SessionSource, invoice_id: str, token: str) -> Document | None:
    """The finalized invoice (all its lines) whose URL this is, or None."""
    with database.read() as session:
        row = session.get(SandboxObject, invoice_id)
        data = copy.deepcopy(row.data) if row is not None and row.object_type == INVOICE and not row.deleted else None
    expected = str((data or {}).get(INTERNAL, {}).get(HOSTED_TOKEN) or "")
    if data is None or not expected or not hmac.compare_digest(expected.encode(), token.encode()):
        return None
    data.pop(INTERNAL, None)
    return data


# -- what the pages say ---------------------------------------------------------------


def _money(amount: int, currency: str) -> str:
    return format_money(decimal.Decimal(amount), currency)


def _facts(invoice: Document) -> list[tuple[str, str]]:
    transitions = invoice["status_transitions"]
    facts = [
        ("Invoice number", str(invoice["number"])),
        ("Date of issue", format_date(transitions["finalized_at"] or invoice["created"])),
    ]
    if invoice["due_date"]:
        facts.append(("Date due", format_date(invoice["due_date"])))
    if transitions["paid_at"]:
        facts.append(("Paid on", format_date(transitions["paid_at"])))
    if transitions["voided_at"]:
        facts.append(("Voided on", format_date(transitions["voided_at"])))
    return facts


def _totals(invoice: Document) -> list[tuple[str, str]]:
    currency = invoice["currency"]
    rows = [("Subtotal", _money(invoice["subtotal"], currency))]
    discount = sum(d["amount"] for d in invoice["total_discount_amounts"] or [])
    if discount:
        rows.append(("Discount", "-" + _money(discount, currency)))
    for entry in invoice.get("total_taxes") or []:
        if entry["taxability_reason"] == "reverse_charge":  # what the invoice must say (Stripe's PDF says it too)
            rows.append(("Tax to be paid on reverse charge basis", _money(0, currency)))
        else:
            rows.append((f"Tax ({entry['taxability_reason'].replace('_', ' ')})", _money(entry["amount"], currency)))
    rows += [
        ("Total", _money(invoice["total"], currency)),
        ("Amount paid", _money(invoice["amount_paid"], currency)),
        ("Amount remaining", _money(invoice["amount_remaining"], currency)),
    ]
    return rows


def _lines(invoice: Document) -> list[dict[str, Any]]:
    return list(invoice["lines"]["data"])


def _billed_to(invoice: Document) -> list[str]:
    return [value for value in (invoice["customer_name"], invoice["customer_email"]) if value]


def html(invoice: Document) -> str:
    """The hosted invoice page: a complete HTML document, everything in it escaped."""
    currency = invoice["currency"]
    rows = "".join(
        f"<tr><td>{escape(line['description'] or '')}</td><td class=n>{line['quantity']}</td>"
        f"<td class=n>{escape(_money(line['amount'], currency))}</td></tr>"
        for line in _lines(invoice)
    )
    facts = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in _facts(invoice))
    totals = "".join(
        f"<tr><th colspan=2>{escape(k)}</th><td class=n>{escape(v)}</td></tr>" for k, v in _totals(invoice)
    )
    billed = "<br>".join(escape(value) for value in _billed_to(invoice))
    headline = {
        "open": f"{_money(invoice['amount_remaining'], currency)} due",
        "paid": f"{_money(invoice['amount_paid'], currency)} paid",
    }.get(invoice["status"], _money(invoice["total"], currency))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Invoice {escape(str(invoice["number"]))}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; color: #1a1f36; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; }}
.status {{ display: inline-block; padding: 0 .5rem; border-radius: .25rem; background: #e3e8ee; }}
dl {{ display: grid; grid-template-columns: max-content auto; gap: .25rem 1.5rem; }}
dt {{ color: #697386; }} dd {{ margin: 0; }}
table {{ width: 100%; border-collapse: collapse; margin: 1.5rem 0; }}
td, th {{ padding: .4rem 0; border-bottom: 1px solid #e3e8ee; text-align: left; font-weight: normal; }}
.n {{ text-align: right; }}
</style></head>
<body>
<p>{escape(invoice["account_name"] or "")} · Stripe sandbox (test mode)</p>
<h1>{escape(headline)}</h1>
<p class="status">{escape(invoice["status"])}</p>
<dl>{facts}</dl>
<p>Billed to<br>{billed}</p>
<table><thead><tr><th>Description</th><th class=n>Qty</th><th class=n>Amount</th></tr></thead>
<tbody>{rows}</tbody><tfoot>{totals}</tfoot></table>
<p><a href="{escape(invoice["invoice_pdf"] or "")}">Download invoice (PDF)</a></p>
</body></html>
"""


def pdf(invoice: Document) -> bytes:
    """The invoice as a PDF file."""
    currency = invoice["currency"]
    lines = [
        Line(((0, f"Invoice {invoice['number']}"),), size=18, bold=True),
        Line(((0, f"{invoice['account_name'] or ''} - Stripe sandbox (test mode)"),)),
        Line(((0, f"Status: {invoice['status']}"),)),
        Line(((0, ""),)),
    ]
    lines += [Line(((0, label), (140, value))) for label, value in _facts(invoice)]
    lines += [Line(((0, ""),)), Line(((0, "Billed to"),), bold=True)]
    lines += [Line(((0, value),)) for value in _billed_to(invoice)]
    lines += [Line(((0, ""),)), Line(((0, "Description"), (340, "Qty"), (400, "Amount")), bold=True)]
    lines += [
        Line(
            (
                (0, (line["description"] or "")[:70]),
                (340, str(line["quantity"])),
                (400, _money(line["amount"], currency)),
            )
        )
        for line in _lines(invoice)
    ]
    lines.append(Line(((0, ""),)))
    lines += [Line(((240, label), (400, value)), bold=label == "Amount remaining") for label, value in _totals(invoice)]
    return document(lines, title=f"Invoice {invoice['number']}")
