"""A client generated from /openapi.json, as front-end teams make theirs
(openapi-python-client), drives the main flow through its named methods:
workspace, billing account, subscription, invoices.

The client is generated at test time from the service's own document, so it
cannot go stale; it talks HTTP to the app through httpx's WSGI transport.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from flask import Flask

from billing.config import Config
from billing.tokens import mint_token

PACKAGE = "billing_api_client"


@pytest.fixture(scope="module")
def generated(session_app: Flask, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The client package, generated once for the module (about a second)."""
    root = tmp_path_factory.mktemp("generated_client")
    document = session_app.test_client().get("/openapi.json")
    assert document.status_code == 200
    (root / "openapi.json").write_text(json.dumps(document.json))
    # No post hooks: formatting the generated code (ruff) is not what we test.
    (root / "config.yaml").write_text(f"package_name_override: {PACKAGE}\npost_hooks: []\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            "openapi.json",
            "--config",
            "config.yaml",
            "--meta",
            "none",
            "--output-path",
            PACKAGE,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # The generator reports schemas it could not turn into code as warnings, and still succeeds.
    assert result.returncode == 0 and "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


def operation(tag: str, operation_id: str) -> Any:
    """A generated operation module (`api/<tag>/<operation>.py`), named from its operationId."""
    return module(f"api.{tag}.{operation_id}")


def model(name: str, cls: str) -> Any:
    return getattr(module(f"models.{name}"), cls)


@pytest.fixture
def api_client(generated: Path, app: Flask, config: Config) -> Any:
    client_module = module("client")
    return client_module.AuthenticatedClient(
        base_url="http://billing.test",
        token=mint_token(config, "frontend-dev"),
        httpx_args={"transport": httpx.WSGITransport(app=app)},
    )


def test_the_main_flow_through_the_generated_client(api_client: Any) -> None:
    create_workspace = operation("workspaces", "create_workspace")
    create_billing_account = operation("billing_accounts", "create_billing_account")
    create_subscription = operation("subscriptions", "create_subscription")
    list_invoices = operation("invoices", "list_invoices")
    list_subscriptions = operation("subscriptions", "list_subscriptions")

    workspace_body = model("workspace_create", "WorkspaceCreate")(
        name="Front end", billing_mode=model("workspace_create_billing_mode", "WorkspaceCreateBillingMode")("single")
    )
    created = create_workspace.sync_detailed(client=api_client, body=workspace_body, idempotency_key=str(uuid.uuid4()))
    assert created.status_code == 201, created.content
    workspace = created.parsed
    assert type(workspace).__name__ == "Workspace" and workspace.name == "Front end"
    assert workspace.billing_mode.value == "single"

    country = model("address_input_country", "AddressInputCountry")("ZA")  # the document lists the codes
    address = model("address_input", "AddressInput")(country=country, city="Cape Town")
    account_body = model("billing_account_create", "BillingAccountCreate")(
        name="Front end billing", email="billing@frontend.test", address=address
    )
    created = create_billing_account.sync_detailed(
        workspace.id, client=api_client, body=account_body, idempotency_key=str(uuid.uuid4())
    )
    assert created.status_code == 201, created.content
    account = created.parsed
    assert type(account).__name__ == "BillingAccount"
    assert account.id.startswith("cus_") and account.name == "Front end billing"
    assert account.email == "billing@frontend.test" and account.address.country == "ZA"

    # The document lists the products, so the map is a model with one field per product.
    quantities = model("subscription_create_product_quantities", "SubscriptionCreateProductQuantities")(users=3)
    subscription_body = model("subscription_create", "SubscriptionCreate")(product_quantities=quantities)
    created = create_subscription.sync_detailed(
        workspace.id, account.id, client=api_client, body=subscription_body, idempotency_key=str(uuid.uuid4())
    )
    assert created.status_code == 201, created.content
    subscription = created.parsed
    assert type(subscription).__name__ == "Subscription"
    assert subscription.id.startswith("sub_") and subscription.status == "trialing"  # the workspace's first
    users = subscription.product_quantities.users
    assert type(users).__name__ == "ProductQuantity" and (users.quantity, users.interval) == (3, "month")

    listed = list_subscriptions.sync_detailed(workspace.id, account.id, client=api_client)
    assert listed.status_code == 200
    assert [s.id for s in listed.parsed.data] == [subscription.id]

    invoices = list_invoices.sync_detailed(workspace.id, account.id, client=api_client)
    assert invoices.status_code == 200, invoices.content
    page = invoices.parsed
    assert type(page).__name__ == "InvoiceList" and page.has_more is False
    [invoice] = page.data  # the trial's opening invoice, for nothing
    assert invoice.customer_id == account.id and invoice.total == 0
    assert invoice.currency == account.currency.value
    assert [line.quantity for line in invoice.lines] == [3]


def test_errors_parse_as_the_error_envelope(api_client: Any) -> None:
    retrieve_workspace = operation("workspaces", "retrieve_workspace")
    missing = retrieve_workspace.sync_detailed("ws_nobody", client=api_client)
    assert missing.status_code == 404
    error = missing.parsed
    assert type(error).__name__ == "Error" and error.code == "not_found" and error.request_id.startswith("req_")


def test_nullable_objects_and_enums_are_typed_as_one_model(generated: Path) -> None:
    """`pending_payment` (and `trial_info`) is its model or None, not a third made-up model
    (the document's anyOf with an empty object made `PendingPayment | Record<string, never> |
    null` in TypeScript); an enum is one enum class."""
    assert model("subscription", "Subscription").__annotations__["pending_payment"] == "None | PendingPayment"
    assert model("trial_eligibility", "TrialEligibility").__annotations__["trial_info"] == "None | TrialInfo"
    assert model("invoice", "Invoice").__annotations__["status"] == "InvoiceStatus"
    assert model("subscription", "Subscription").__annotations__["status"] == "SubscriptionStatus"
    assert not [path.name for path in (generated / PACKAGE / "models").glob("*_type_*.py")]


def test_tax_ids_through_the_generated_client(api_client: Any) -> None:
    create_workspace = operation("workspaces", "create_workspace")
    create_billing_account = operation("billing_accounts", "create_billing_account")
    create_tax_id = operation("tax_ids", "create_tax_id")
    list_tax_ids = operation("tax_ids", "list_tax_ids")
    delete_tax_id = operation("tax_ids", "delete_tax_id")
    workspace = create_workspace.sync_detailed(
        client=api_client,
        body=model("workspace_create", "WorkspaceCreate")(
            name="Taxes", billing_mode=model("workspace_create_billing_mode", "WorkspaceCreateBillingMode")("single")
        ),
        idempotency_key=str(uuid.uuid4()),
    ).parsed
    address = model("address_input", "AddressInput")(
        country=model("address_input_country", "AddressInputCountry")("DE")
    )
    account = create_billing_account.sync_detailed(
        workspace.id,
        client=api_client,
        body=model("billing_account_create", "BillingAccountCreate")(
            name="GmbH", email="billing@gmbh.test", address=address
        ),
        idempotency_key=str(uuid.uuid4()),
    ).parsed

    kind = model("tax_id_create_type", "TaxIdCreateType")("eu_vat")
    body = model("tax_id_create", "TaxIdCreate")(type_=kind, value="DE123456789")
    created = create_tax_id.sync_detailed(
        workspace.id, account.id, client=api_client, body=body, idempotency_key=str(uuid.uuid4())
    )
    assert created.status_code == 201, created.content
    tax_id = created.parsed
    assert type(tax_id).__name__ == "TaxId" and (tax_id.type_, tax_id.value, tax_id.country) == (
        "eu_vat",
        "DE123456789",
        "DE",
    )
    assert tax_id.verification.status.value == "pending"
    listed = list_tax_ids.sync_detailed(workspace.id, account.id, client=api_client)
    assert [t.id for t in listed.parsed.data] == [tax_id.id]
    deleted = delete_tax_id.sync_detailed(
        workspace.id, account.id, tax_id.id, client=api_client, idempotency_key=str(uuid.uuid4())
    )
    assert deleted.status_code == 204
    assert list_tax_ids.sync_detailed(workspace.id, account.id, client=api_client).parsed.data == []
