"""A test's starting state made through the services, as the routes make it, without HTTP.

For tests that are not about the HTTP path of their set-up: each step loads its body with
the route's schema, resolves the caller's access, calls the route's service function and
dumps the answer with the route's response schema, so what it returns is what the API
would have answered. What it skips is the HTTP round trip: the token, the idempotency
claim, the request log, the JSON on both sides. The Stripe calls (the sandbox) and the
webhooks they send are the same as through the API.

Everything that knows a service's signature is in this module, so a change of those
signatures is adapted here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from flask import Flask, g

from billing.access import account_access, workspace_access
from billing.billing_accounts import service as billing_accounts
from billing.organizations import capacity
from billing.organizations import service as organizations
from billing.payment_methods import service as payment_methods
from billing.request_log import new_request_id
from billing.sandbox_routes import service as sandbox
from billing.state import BillingState
from billing.subscriptions import service as subscriptions
from billing.tax_ids import service as tax_ids
from billing.workspaces import service as workspaces
from schemas.billing_accounts import BillingAccountCreateSchema, BillingAccountSchema
from schemas.organizations import ChildCreateSchema, OrganizationCreateSchema, OrganizationSchema, UsageReportSchema
from schemas.payment_methods import PaymentMethodSchema, SetupIntentSchema
from schemas.subscriptions import SubscriptionCreateSchema, SubscriptionSchema
from schemas.tax_ids import TaxIdCreateSchema, TaxIdSchema
from schemas.workspaces import MemberCreateSchema, WorkspaceCreateSchema, WorkspaceSchema

T = TypeVar("T")


class Builder:
    """builder.as_("alice").workspace() -> the workspace's id; every step acts as one user."""

    def __init__(self, app: Flask, user_id: str = "alice") -> None:
        self.app = app
        self.user_id = user_id

    def as_(self, user_id: str) -> Builder:
        return Builder(self.app, user_id)

    @property
    def state(self) -> BillingState:
        return self.app.extensions["billing"]  # type: ignore[no-any-return]

    @contextmanager
    def _request(self) -> Iterator[None]:
        """What a request gives a service: an app and request context, the caller, a
        request id (the base of its Stripe idempotency keys), PostgreSQL's shared reads."""
        with self.app.test_request_context(method="POST"):  # a write, as every step is
            g.user_id = self.user_id
            g.request_id = new_request_id()
            self.state.db.begin_request()  # ended by the request context's teardown
            yield

    def _run(self, call: Callable[[], T]) -> T:
        with self._request():
            return call()

    def _answer(self, call: Callable[[], Any], schema: Any) -> dict[str, Any]:
        """The service's answer, dumped as the route answers it (in the request: a
        reshape may read the service's copy)."""
        with self._request():
            return dict(schema.dump(call()))

    @contextmanager
    def webhooks_at_the_end(self) -> Iterator[None]:
        """The sandbox's events of the steps inside, delivered (and applied) once, at the
        end, rather than after each Stripe call: Stripe may deliver them that late, and
        the events about one object are then applied with one read of it."""
        sender: Any = self.state.webhooks
        notify = sender.notify
        sender.notify = lambda: None  # recorded, pending, until delivered below
        try:
            yield
        finally:
            sender.notify = notify
        with self.app.app_context():
            sender.deliver_pending()

    # -- workspaces ----------------------------------------------------------------------

    def workspace(self, mode: str = "pooled", name: str = "Acme") -> str:
        data = WorkspaceCreateSchema().load({"name": name, "billing_mode": mode})
        return str(
            self._answer(lambda: workspaces.create_workspace(self.state, self.user_id, data), WorkspaceSchema())["id"]
        )

    def add_member(self, workspace_id: str, user_id: str, role: str) -> None:
        data = MemberCreateSchema().load({"user_id": user_id, "role": role})
        self._run(lambda: workspaces.add_member(self.state, workspace_access(workspace_id), data))

    # -- billing accounts, their cards and subscriptions -------------------------------------

    def account(self, workspace_id: str, **overrides: Any) -> dict[str, Any]:
        """As Api.account: ACME Corp Billing, billing@acme.com, in the US, unless overridden."""
        data = BillingAccountCreateSchema().load(
            {"name": "ACME Corp Billing", "email": "billing@acme.com", "address": {"country": "US"}, **overrides}
        )
        return self._answer(
            lambda: billing_accounts.create_billing_account(self.state, workspace_access(workspace_id), data),
            BillingAccountSchema(),
        )

    def card(self, workspace_id: str, account_id: str, token: str = "pm_card_visa") -> dict[str, Any]:
        """One of Stripe's test cards attached (POST /sandbox/.../payment-methods)."""
        return self._answer(
            lambda: sandbox.attach_test_payment_method(
                self.state, account_access(workspace_id, account_id), token, g.request_id
            ),
            PaymentMethodSchema(),
        )

    def setup_intent(self, workspace_id: str, account_id: str) -> dict[str, Any]:
        """POST .../payment-methods: a SetupIntent's {"client_secret", ...}."""
        return self._answer(
            lambda: payment_methods.create_setup_intent(
                self.state, account_access(workspace_id, account_id), g.request_id
            ),
            SetupIntentSchema(),
        )

    def tax_id(self, workspace_id: str, account_id: str, kind: str, value: str) -> dict[str, Any]:
        """POST .../tax-ids: the tax ID as the API shows it."""
        data = TaxIdCreateSchema().load({"type": kind, "value": value})
        return self._answer(
            lambda: tax_ids.create_tax_id(self.state, account_access(workspace_id, account_id), data, g.request_id),
            TaxIdSchema(),
        )

    def subscription(
        self, workspace_id: str, account_id: str, quantities: dict[str, int], **fields: Any
    ) -> dict[str, Any]:
        data = SubscriptionCreateSchema().load({"product_quantities": quantities, **fields})
        return self._answer(
            lambda: subscriptions.create_subscription(
                self.state, account_access(workspace_id, account_id), data, g.request_id
            ),
            SubscriptionSchema(),
        )

    # -- organizations ---------------------------------------------------------------------

    def organization(self, workspace_id: str, parent_id: str | None = None, **body: Any) -> dict[str, Any]:
        """A root (parent_id None) or a child, named Root or Child unless `name` says."""
        schema = OrganizationCreateSchema() if parent_id is None else ChildCreateSchema()
        data = schema.load({"name": "Root" if parent_id is None else "Child", **body})
        return self._answer(
            lambda: organizations.create_organization(
                self.state, workspace_access(workspace_id), data, parent_id=parent_id
            ),
            OrganizationSchema(),
        )

    def _report(self, workspace_id: str, org_id: str, product: str, delta: int) -> dict[str, Any]:
        return capacity.report_usage(self.state, workspace_id, org_id, product, delta)

    def usage(self, workspace_id: str, org_id: str, product: str, delta: int) -> dict[str, Any]:
        data = UsageReportSchema().load({"product": product, "delta": delta})
        return self._run(lambda: self._report(workspace_id, org_id, data["product"], data["delta"]))
