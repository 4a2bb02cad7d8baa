"""/openapi.json says exactly what the service accepts (issue 12, point 5): the
document is walked for its promises, and each input it refuses is refused by
the service too (422 with the envelope, nothing changed)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.helpers import assert_error

PRODUCTS = {"locations", "users", "sso"}
WRITES = {"post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def spec(session_app: Any) -> dict[str, Any]:
    return dict(session_app.test_client().get("/openapi.json").json)


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
    ]


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        kind, name = node["$ref"].split("/")[-2:]
        node = spec["components"][kind][name]
    return node


def schema(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(spec["components"]["schemas"][name])


def body_schema(spec: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any]:
    return resolve(spec, operation["requestBody"]["content"]["application/json"]["schema"])


def matches(pattern: str, value: str) -> bool:
    return re.search(pattern, value) is not None


# -- the document ---------------------------------------------------------------


def test_every_error_status_answers_with_the_error_envelope(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        for status, response in operation["responses"].items():
            if status.startswith("2"):
                continue
            body = resolve(spec, resolve(spec, response)["content"]["application/json"]["schema"])
            wanted = "Readiness" if (path, status) == ("/readyz", "503") else "Error"
            assert body == schema(spec, wanted), (method, path, status)


def test_each_operation_declares_the_errors_it_can_answer(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        statuses = set(operation["responses"])
        authenticated = operation.get("security") != []
        assert ("401" in statuses) == authenticated, (method, path)
        assert {"422", "500"} <= statuses, (method, path)  # the input guard reads every URL
        if "{" in path:
            assert "404" in statuses, (method, path)
        if method in WRITES:
            assert {"400", "413", "415"} <= statuses, (method, path)
        if method in WRITES and path.startswith("/workspaces/"):
            assert "409" in statuses, (method, path)  # idempotency and business rules
            # Roles: a viewer can't write, but may preview an invoice (API.md: a read).
            assert ("403" in statuses) == (operation["operationId"] != "previewInvoice"), (method, path)
        if method == "get" and path.startswith("/workspaces"):
            assert not {"429", "502", "503"} & statuses, (method, path)  # reads never call Stripe
    paths = spec["paths"]
    account = "/workspaces/{workspaceId}/billing-accounts/{billingAccountId}"
    assert {"402", "429", "502", "503"} <= set(paths[account + "/subscriptions"]["post"]["responses"])
    assert {"429", "502", "503"} <= set(paths[account + "/invoices/preview"]["post"]["responses"])
    assert "402" not in paths[account]["patch"]["responses"]


def test_the_probes_need_no_token_and_say_what_they_check(spec: dict[str, Any]) -> None:
    for path in ("/healthz", "/readyz"):
        operation = spec["paths"][path]["get"]
        assert operation["security"] == [] and "401" not in operation["responses"]
    readiness = schema(spec, "Readiness")["properties"]
    assert set(readiness) == {"status", "stripe_mode", "stripe_endpoint", "database", "stripe", "catalog", "events"}
    assert readiness["status"]["enum"] == ["ready", "unavailable"]


def test_product_maps_list_the_products_and_nothing_else(spec: dict[str, Any]) -> None:
    create, update = schema(spec, "SubscriptionCreate"), schema(spec, "SubscriptionUpdate")
    for field in (
        create["properties"]["product_quantities"],
        update["properties"]["product_quantities"],
        update["properties"]["add_products"],
    ):
        assert set(field["properties"]) == PRODUCTS
        assert all(
            value == {"type": "integer", "minimum": 1, "maximum": 100_000} for value in field["properties"].values()
        )
        assert field["minProperties"] == 1 and field["additionalProperties"] is False
        assert "minLength" not in field
        assert field["example"] == {"users": 3, "locations": 1}
    assert set(update["properties"]["remove_products"]["items"]["enum"]) == PRODUCTS
    assert update["properties"]["remove_products"]["minItems"] == 1
    assert set(schema(spec, "PreviewItem")["properties"]["product_type"]["enum"]) == PRODUCTS
    shown = schema(spec, "Subscription")["properties"]["product_quantities"]
    assert set(shown["properties"]) == PRODUCTS and shown["additionalProperties"] is False
    assert set(shown["example"]) <= PRODUCTS


def test_request_bodies_refuse_unknown_fields_and_empty_updates(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        if "requestBody" in operation:
            assert body_schema(spec, operation)["additionalProperties"] is False, (method, path)
    assert schema(spec, "SubscriptionUpdate")["minProperties"] == 1
    assert schema(spec, "SubscriptionCreate")["required"] == ["product_quantities"]
    assert sorted(schema(spec, "BillingAccountCreate")["required"]) == ["address", "email", "name"]
    assert sorted(schema(spec, "WorkspaceCreate")["required"]) == ["billing_mode", "name"]


def test_permanent_fields_are_not_offered(spec: dict[str, Any]) -> None:
    workspace, account = schema(spec, "WorkspaceUpdate"), schema(spec, "BillingAccountUpdate")
    assert "billing_mode" not in workspace["properties"] and "permanent" in workspace["description"]
    assert "currency" not in account["properties"] and "permanent" in account["description"]


def test_blank_and_control_characters_are_refused_by_the_patterns(spec: dict[str, Any]) -> None:
    strict = [
        schema(spec, "WorkspaceCreate")["properties"]["name"],
        schema(spec, "MemberCreate")["properties"]["user_id"],
        schema(spec, "BillingAccountCreate")["properties"]["name"],
    ]
    for field in strict:
        pattern = field["pattern"]
        assert [matches(pattern, value) for value in ("", " ", "\t\n", "\x85", "a\x01b", "Acme", " a b ")] == [
            False,
            False,
            False,
            False,
            False,
            True,
            True,
        ]
    text = schema(spec, "BillingAccountCreate")["properties"]["description"]["pattern"]
    assert [matches(text, value) for value in ("", "two\nlines\tand a tab", "a\x00", "a\x1b")] == [
        True,
        True,
        False,
        False,
    ]


def test_countries_are_iso_codes(spec: dict[str, Any]) -> None:
    country = schema(spec, "AddressInput")["properties"]["country"]
    assert "US" in country["enum"] and "ZA" in country["enum"] and "" not in country["enum"]
    assert all(re.fullmatch("[A-Z]{2}", code) for code in country["enum"])
    assert schema(spec, "AddressInput")["required"] == ["country"]


def test_lengths_enums_and_metadata_limits(spec: dict[str, Any]) -> None:
    account = schema(spec, "BillingAccountCreate")["properties"]
    assert (
        account["name"]["maxLength"],
        account["email"]["maxLength"],
        account["phone"]["maxLength"],
        account["description"]["maxLength"],
    ) == (100, 150, 50, 200)
    assert account["currency"]["enum"] == ["usd", "zar", "eur", "gbp", "aud"]
    assert schema(spec, "WorkspaceCreate")["properties"]["billing_mode"]["enum"] == ["single", "pooled", "assigned"]
    assert schema(spec, "MemberCreate")["properties"]["role"]["enum"] == ["owner", "admin", "viewer"]
    for name in ("SubscriptionCreate", "SubscriptionUpdate"):
        metadata = schema(spec, name)["properties"]["metadata"]
        assert metadata["maxProperties"] == 10
        assert metadata["additionalProperties"]["maxLength"] == 500
        assert "1 to 40 characters" in metadata["description"]  # keys: OpenAPI 3.0 has no propertyNames


def test_headers_and_query_parameters(spec: dict[str, Any]) -> None:
    for _method, _path, operation in operations(spec):
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "Idempotency-Key":
                assert parameter["schema"]["maxLength"] == 255 and parameter["schema"]["minLength"] == 1
                assert not matches(parameter["schema"]["pattern"], "   ")
    invoices = spec["paths"]["/workspaces/{workspaceId}/billing-accounts/{billingAccountId}/invoices"]["get"]
    query = {parameter["name"]: parameter["schema"] for parameter in invoices["parameters"]}
    assert (query["limit"]["minimum"], query["limit"]["maximum"]) == (1, 200)
    assert query["after"]["minLength"] == 1 and query["before"]["minLength"] == 1
    for item in spec["paths"].values():
        for parameter in item.get("parameters", []):
            assert parameter["in"] == "path" and not matches(parameter["schema"]["pattern"], "a\x01")


# -- what the document refuses, the service refuses ----------------------------


@pytest.fixture
def world(as_user: Any, state: Any) -> dict[str, Any]:
    alice = as_user("alice")
    ws = alice.workspace("single")
    account = alice.account(ws)
    path = f"/workspaces/{ws}/billing-accounts/{account['id']}"
    sub = alice.post(f"{path}/subscriptions", {"product_quantities": {"users": 2}}).json
    return {"alice": alice, "ws": ws, "account": account, "path": path, "sub": sub}


def unchanged(world: dict[str, Any]) -> None:
    alice, path = world["alice"], world["path"]
    assert [w["id"] for w in alice.get("/workspaces").json["data"]] == [world["ws"]]
    assert alice.get(f"/workspaces/{world['ws']}/members").json["data"][0]["user_id"] == "alice"
    assert len(alice.get(f"/workspaces/{world['ws']}/members").json["data"]) == 1
    assert alice.get(path).json == world["account"]
    assert alice.get(f"{path}/subscriptions").json["data"] == [world["sub"]]


@pytest.mark.parametrize(
    "method, where, body",
    [
        ("post", "/workspaces", {"name": "", "billing_mode": "single"}),
        ("post", "/workspaces", {"name": "   ", "billing_mode": "single"}),
        ("post", "/workspaces", {"name": "Acme", "billing_mode": "solo"}),
        ("post", "/workspaces", {"name": "x" * 51, "billing_mode": "single"}),
        ("patch", "{ws}", {"name": " \t "}),
        ("patch", "{ws}", {"billing_mode": "pooled"}),
        ("post", "{ws}/members", {"user_id": "  ", "role": "admin"}),
        ("post", "{ws}/members", {"user_id": "bob", "role": "boss"}),
        ("post", "{ws}/billing-accounts", {"name": "B", "email": "b@b.test", "address": {"country": ""}}),
        ("post", "{ws}/billing-accounts", {"name": "B", "email": "b@b.test", "address": {"country": "XX"}}),
        ("post", "{ws}/billing-accounts", {"name": " ", "email": "b@b.test", "address": {"country": "US"}}),
        ("post", "{ws}/billing-accounts", {"name": "B", "email": "b@b.test", "address": {}}),
        ("patch", "{acc}", {"currency": "eur"}),
        ("patch", "{acc}", {"address": {"country": ""}}),
        ("patch", "{acc}", {"phone": "1" * 51}),
        ("post", "{acc}/subscriptions", {"product_quantities": {}}),
        ("post", "{acc}/subscriptions", {"product_quantities": {"widgets": 1}}),
        ("post", "{acc}/subscriptions", {"product_quantities": {"users": 0}}),
        ("post", "{acc}/subscriptions", {"product_quantities": {"users": "3"}}),
        ("post", "{acc}/subscriptions", {"product_quantities": {"users": 1}, "interval": "week"}),
        (
            "post",
            "{acc}/subscriptions",
            {"product_quantities": {"users": 1}, "metadata": {f"k{i}": "v" for i in range(11)}},
        ),
        ("post", "{acc}/subscriptions", {"product_quantities": {"users": 1}, "metadata": {"k" * 41: "v"}}),
        ("post", "{acc}/subscriptions", {"product_quantities": {"users": 1}, "metadata": {"": "v"}}),
        ("post", "{acc}/subscriptions", {"product_quantities": {"users": 1}, "metadata": {"k": "v" * 501}}),
        ("patch", "{sub}", {}),
        ("patch", "{sub}", {"add_products": {}}),
        ("patch", "{sub}", {"product_quantities": {}}),
        ("patch", "{sub}", {"remove_products": []}),
        ("patch", "{sub}", {"action": "explode"}),
        ("post", "{acc}/invoices/preview", {"items": [{"product_type": "users", "quantity": -1}]}),
        ("post", "{acc}/invoices/preview", {"items": [{"product_type": "widgets", "quantity": 1}]}),
    ],
)
def test_what_the_document_refuses_is_422_and_changes_nothing(
    world: dict[str, Any], method: str, where: str, body: dict[str, Any]
) -> None:
    path = where.format(
        ws=f"/workspaces/{world['ws']}", acc=world["path"], sub=f"{world['path']}/subscriptions/{world['sub']['id']}"
    )
    response = getattr(world["alice"], method)(path, body)
    assert_error(response, 422, "validation_failed")
    unchanged(world)


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=ten", "after=", "before="])
def test_refused_query_parameters_are_422(world: dict[str, Any], query: str) -> None:
    assert_error(world["alice"].get(f"{world['path']}/invoices?{query}"), 422, "validation_failed")


@pytest.mark.parametrize("key", ["k" * 256, "   "])
def test_refused_idempotency_keys_are_400_and_change_nothing(world: dict[str, Any], key: str) -> None:
    alice = world["alice"]
    response = alice.client.post(
        "/workspaces",
        json={"name": "Other", "billing_mode": "single"},
        headers={**alice.headers, "Idempotency-Key": key},
    )
    assert_error(response, 400, "invalid_idempotency_key")
    unchanged(world)


def test_what_the_document_accepts_the_service_accepts(world: dict[str, Any], spec: dict[str, Any]) -> None:
    """The blank-string pattern and the service agree on the edge cases."""
    pattern = schema(spec, "WorkspaceCreate")["properties"]["name"]["pattern"]
    for name in (" a", "a ", "tab\there", "line\nbreak", "é", "\u00a0x"):
        assert matches(pattern, name)
        response = world["alice"].post("/workspaces", {"name": name, "billing_mode": "pooled"})
        assert response.status_code == 201, (name, response.json)


def test_previewing_a_subscription_that_ends_is_a_conflict_not_a_stripe_failure(world: dict[str, Any]) -> None:
    """Stripe has no upcoming invoice for a subscription that ends at trial end
    (invoice_upcoming_none): a 409 in the envelope, not a 502."""
    alice, path, sub = world["alice"], world["path"], world["sub"]
    assert alice.delete(f"{path}/subscriptions/{sub['id']}").status_code == 200
    ending = alice.get(f"{path}/subscriptions/{sub['id']}").json
    response = alice.post(f"{path}/invoices/preview", {"subscription_id": sub["id"]})
    assert_error(response, 409, "invoice_upcoming_none")
    assert alice.get(f"{path}/subscriptions/{sub['id']}").json == ending


def _request_strings(spec: dict[str, Any], node: dict[str, Any], where: str) -> list[tuple[str, dict[str, Any]]]:
    node = resolve(spec, node)
    found = []
    if node.get("type") == "string":
        found.append((where, node))
    for name, child in (node.get("properties") or {}).items():
        found += _request_strings(spec, child, f"{where}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            found += _request_strings(spec, node[key], f"{where}[]")
    return found


def test_every_string_a_body_takes_says_what_it_refuses(spec: dict[str, Any]) -> None:
    """The input guard refuses control characters in any string: the document says so for each."""
    unsaid = []
    for _method, path, operation in operations(spec):
        if "requestBody" not in operation or path == "/webhooks/stripe":
            continue
        for where, field in _request_strings(spec, body_schema(spec, operation), operation["operationId"]):
            if not (field.get("enum") or field.get("pattern") or field.get("format") == "email"):
                unsaid.append(where)
    assert unsaid == []


def _referenced(spec: dict[str, Any], node: Any, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        if "$ref" in node and node["$ref"].startswith("#/components/schemas/"):
            name = node["$ref"].split("/")[-1]
            if name not in found:
                found.add(name)
                _referenced(spec, spec["components"]["schemas"][name], found)
        for value in node.values():
            _referenced(spec, value, found)
    elif isinstance(node, list):
        for value in node:
            _referenced(spec, value, found)
    return found


def test_every_response_shape_says_its_properties_are_always_there(spec: dict[str, Any]) -> None:
    """Generated clients type a response's fields as present only when the
    document requires them; every shape the API answers with is complete
    but for those named in billing/openapi.py."""
    requests: set[str] = set()
    responses: set[str] = set()
    for _, _, operation in operations(spec):
        _referenced(spec, operation.get("requestBody", {}), requests)
        _referenced(spec, operation.get("responses", {}), responses)
    answered = {name for name in responses - requests if "properties" in spec["components"]["schemas"][name]}
    complete = {
        name
        for name in answered
        if set(spec["components"]["schemas"][name].get("required", []))
        == set(spec["components"]["schemas"][name]["properties"])
    }
    assert answered - complete == {"Readiness"}  # (the error envelope is declared through components.responses)
    subscription = schema(spec, "Subscription")
    assert "pending_payment" in subscription["required"] and "trial_end" in subscription["required"]


# -- what the published document says (issue 20) ----------------------------------


def test_the_published_title_description_and_servers(spec: dict[str, Any]) -> None:
    assert spec["info"]["title"] == "Altostrat Workspaces API" and spec["info"]["version"] == "1.0.0"
    description = spec["info"]["description"]
    assert description.startswith(
        "The Altostrat Workspaces API is the microservice responsible for tenancy, "
        "billing, user identity, and organizational hierarchy.\nIt serves as"
    )
    assert "- **Members & Access:** The users and their specific roles (Owner, Admin, Viewer)" in description
    # The server serving the document first (the docs page calls it), then the published one.
    assert spec["servers"] == [
        {"url": "/", "description": "This server (the one serving this document)"},
        {"url": "https://v1.api.altostrat.io", "description": "Production API Server"},
    ]


def test_path_parameters_are_named_as_published(spec: dict[str, Any]) -> None:
    names = {parameter["name"] for item in spec["paths"].values() for parameter in item.get("parameters", [])}
    assert {
        "workspaceId",
        "billingAccountId",
        "subscriptionId",
        "paymentMethodId",
        "organizationId",
        "memberId",
    } <= names and not {"orgId", "userId"} & names
    assert "/workspaces/{workspaceId}/members/{memberId}" in spec["paths"]
    assert "/workspaces/{workspaceId}/organizations/{organizationId}/limits" in spec["paths"]
    [workspace, account] = spec["paths"]["/workspaces/{workspaceId}/billing-accounts/{billingAccountId}"]["parameters"]
    assert (workspace["description"], workspace["schema"]["example"]) == (
        "The ID of the workspace.",
        "ws_a1b2c3d4e5f6g7h8",
    )
    assert (
        account["description"]
        == ("The ID of the billing account, which corresponds to a Stripe Customer ID (cus_...).")
        and account["schema"]["example"] == "cus_a1b2c3d4e5f6g7h8"
    )


def test_enums_say_what_each_answer_can_hold(spec: dict[str, Any]) -> None:
    subscription = schema(spec, "Subscription")["properties"]
    assert subscription["status"]["enum"] == [
        "trialing",
        "active",
        "past_due",
        "unpaid",
        "canceled",
        "incomplete",
        "incomplete_expired",
        "paused",
    ]
    assert subscription["currency"]["enum"] == ["usd", "zar", "eur", "gbp", "aud"]
    invoice_status = schema(spec, "Invoice")["properties"]["status"]
    assert invoice_status["enum"] == ["draft", "open", "paid", "uncollectible", "void"]
    assert "nullable" not in invoice_status  # a nullable enum makes generated clients' types a union of copies
    assert schema(spec, "PendingPayment")["properties"]["reason"]["enum"] == [
        "authentication_required",
        "payment_failed",
    ]


def test_a_nullable_object_is_its_schema_or_null(spec: dict[str, Any]) -> None:
    """`pending_payment` is one nullable object: no anyOf with an empty object, which
    generated TypeScript types as `PendingPayment | Record<string, never> | null`."""
    pending = schema(spec, "Subscription")["properties"]["pending_payment"]
    assert pending["nullable"] is True and pending["allOf"] == [{"$ref": "#/components/schemas/PendingPayment"}]
    assert "anyOf" not in json.dumps(spec)


def test_the_403_says_which_role_a_write_needs(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    account = "/workspaces/{workspaceId}/billing-accounts/{billingAccountId}"
    forbidden = resolve(spec, paths[account + "/subscriptions"]["post"]["responses"]["403"])
    assert "A viewer can't write" in forbidden["description"]
    archive = resolve(spec, paths["/workspaces/{workspaceId}"]["delete"]["responses"]["403"])
    assert archive["description"].endswith("Only an owner archives a workspace.")
    assert "403" not in paths[account + "/invoices/preview"]["post"]["responses"]  # a viewer may preview
    assert "403" not in paths["/workspaces"]["post"]["responses"]


def test_the_published_examples(spec: dict[str, Any]) -> None:
    def examples(name: str) -> dict[str, Any]:
        return {key: field.get("example") for key, field in schema(spec, name)["properties"].items()}

    assert examples("BillingAccount") == {
        "id": "cus_a1b2c3d4e5f6g7h8",
        "workspace_id": "ws_a1b2c3d4e5f6g7h8",
        "name": "ACME Corp Billing",
        "email": "billing@acme.com",
        "phone": "+15551234567",
        "description": "For US-based operations",
        "currency": "usd",
        "address": None,
        "created_at": "2025-10-29T00:40:06.000000Z",
        "updated_at": "2025-10-29T00:40:06.000000Z",
    }
    assert examples("Address") == {
        "country": "US",
        "line1": "123 Main Street",
        "line2": "Suite 456",
        "city": "San Francisco",
        "state": "CA",
        "postal_code": "94105",
    }
    create = examples("BillingAccountCreate")
    assert {key: create[key] for key in ("name", "email", "phone", "description", "currency")} == {
        "name": "ACME Corp (EU)",
        "email": "billing-eu@acme.com",
        "phone": "+442071234567",
        "description": "For all European operations.",
        "currency": "eur",
    }
    subscription = examples("Subscription")
    assert (subscription["id"], subscription["status"], subscription["metadata"]) == (
        "sub_a1b2c3d4e5f6g7h8",
        "active",
        {"order_id": "6735"},
    )
    assert subscription["product_quantities"]["locations"] == {
        "price_id": "price_123abc",
        "quantity": 10,
        "interval": "month",
    }


# -- a route's facts, declared on the route (issue 21) -------------------------------

# Endpoints outside the API's document, so with no operation and no facts: the document and its
# page, Swagger UI's files, and what browsers load (an uploaded picture, the sandbox's hosted invoices).
UNDOCUMENTED = {
    "api-docs.openapi_json",
    "api-docs.openapi_swagger_ui",
    "docs_assets.static",
    "metrics.metrics",  # Prometheus' scrape, behind METRICS_TOKEN: operators', not the API's
    "pictures.picture",
    "sandbox_hosted_invoices.hosted_invoice_page",
    "sandbox_hosted_invoices.hosted_invoice_pdf",
}


def test_every_route_declares_its_facts_and_the_document_says_them(session_app: Any, spec: dict[str, Any]) -> None:
    """A new route can't forget its operationId, role or Stripe facts: each is on
    the view (@route_facts), and its operation in the document is what they say."""
    from billing.openapi import view_facts

    documented = {(method, path): operation for method, path, operation in operations(spec)}
    routes = set()
    for rule in session_app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            facts = view_facts(session_app.view_functions[rule.endpoint], method)
            assert facts is not None, f"{method} {rule.rule}: no @route_facts on its view"
            route = (method.lower(), re.sub(r"<(\w+)>", r"{\1}", rule.rule))
            operation, responses = documented[route], documented[route]["responses"]
            assert operation["operationId"] == facts.operation_id, route
            refusal = facts.refusal and {"$ref": f"#/components/responses/{facts.refusal}"}
            assert responses.get("403") == refusal, route
            assert ("502" in responses) == facts.calls_stripe, route  # (429 and 503 have other causes too)
            assert not facts.calls_stripe or {"429", "503"} <= set(responses), route
            assert ("402" in responses) == facts.charges, route
            routes.add(route)
    assert routes == set(documented)


def test_route_facts_refuse_what_cannot_be_true() -> None:
    from billing.openapi import route_facts

    with pytest.raises(ValueError, match="a charge is a Stripe call"):
        route_facts("chargeWithoutStripe", role="admin", charges=True)
    for role in (None, "viewer"):  # nobody is refused: no 403 to name
        with pytest.raises(ValueError, match="names no 403"):
            route_facts("readMembers", role=role, forbidden="FORBIDDEN_MEMBERS")
    with pytest.raises(ValueError, match="names no 403"):
        route_facts("addMember", role="admin", forbidden="FORBIDDEN_SOMETHING")
    route_facts("addMember", role="admin", forbidden="FORBIDDEN_MEMBERS")


def test_a_route_without_facts_cannot_be_documented() -> None:
    from flask import Flask
    from flask.views import MethodView
    from flask_smorest import Api, Blueprint

    from billing import openapi

    app = Flask("forgetful")
    app.config.update(API_TITLE="t", API_VERSION="1", OPENAPI_VERSION="3.0.3")
    api = Api(app)
    openapi.extend(api, app)
    blp = Blueprint("forgetful", __name__)

    @blp.route("/forgot")
    class Forgot(MethodView):
        @blp.response(200)
        def get(self) -> dict[str, Any]:
            return {}

    with pytest.raises(LookupError, match="GET /forgot: the view declares no @route_facts"):
        api.register_blueprint(blp)

    remembered = Blueprint("remembered", __name__)

    @remembered.route("/remembered")
    class Remembered(MethodView):
        @openapi.route_facts("readRemembered", role=None)
        @remembered.response(200)
        def get(self) -> dict[str, Any]:
            return {}

    api.register_blueprint(remembered)
    assert api.spec.to_dict()["paths"]["/remembered"]["get"]["operationId"] == "readRemembered"


def test_the_audit_trail_is_documented_with_examples(spec: dict[str, Any]) -> None:
    operation = spec["paths"]["/workspaces/{workspaceId}/audit-events"]["get"]
    assert operation["operationId"] == "listAuditEvents"
    assert resolve(spec, operation["responses"]["403"])["description"].endswith(
        "Only owners and admins read the audit trail."
    )
    query = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    assert query == {"limit", "after", "before", "target_id", "actor", "action", "since", "until"}
    event = schema(spec, "AuditEvent")
    assert set(event["required"]) == {
        "id",
        "occurred_at",
        "actor",
        "action",
        "target",
        "changes",
        "request_id",
        "idempotency_key",
        "stripe_event_id",
    }
    assert schema(spec, "AuditActor")["properties"]["type"]["enum"] == ["user", "service", "stripe"]
    listed = schema(spec, "AuditEventList")["properties"]["data"]["example"]
    assert [e["actor"]["type"] for e in listed] == ["user", "stripe"]
    assert listed[1]["changes"] == {"status": {"before": "active", "after": "past_due"}}
