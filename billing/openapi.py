"""What the OpenAPI document says beyond what apispec reads from the schemas:
the Idempotency-Key header on every write, a stable operationId for every
operation (generated clients name their methods after it), the error envelope
on every error status an operation can answer, and the object rules apispec
leaves out (a Dict's enum keys, minProperties).

A route's own facts (its operationId, the role it needs, whether it calls
Stripe or can charge a card) are declared on the view with `@route_facts`,
beside flask-smorest's decorators, and read from the app's views here."""

from __future__ import annotations

import http
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from apispec import BasePlugin
from apispec.ext.marshmallow.common import resolve_schema_instance
from flask import Blueprint, Flask
from flask_smorest import Api
from marshmallow import EXCLUDE, INCLUDE, fields, validate
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from billing.access import Role
from billing.input_guard import CONTROL_IN_URL
from schemas.common import NonEmptySchema, Permanent

PATH_PARAMETER_PATTERN = f"^[^{CONTROL_IN_URL}/]+$"

# Swagger UI's files, from the pinned swagger-ui-bundle package (nothing loaded from another host).
docs_assets = Blueprint("docs_assets", __name__, static_folder=str(swagger_ui_path), static_url_path="/docs/assets")

# The published document's title, description and server (seeds/000: the OpenAPI fragment); the
# first server is the one serving this document, so the docs page and tools call it, not production.
TITLE = "Altostrat Workspaces API"
DESCRIPTION = "\n".join(
    [
        "The Altostrat Workspaces API is the microservice responsible for tenancy, billing, user identity, and "
        "organizational hierarchy.",
        "It serves as the foundational layer for all multi-tenancy and subscription logic within the Altostrat SDX "
        "platform, enabling the secure separation of customer data and resources for SD-WAN, network automation, and "
        "agentic AI features.",
        "This API allows you to programmatically manage:",
        "- **Workspaces:** The top-level containers for all tenant resources, users, and billing configurations.",
        "- **Organizations:** Hierarchical entities used to model customer tenants or business units, track resource "
        "usage, and apply limits.",
        "- **Billing & Subscriptions:** The financial accounts and Stripe-powered subscriptions that govern access to "
        "Altostrat SDX features and resources.",
        "- **Members & Access:** The users and their specific roles (Owner, Admin, Viewer) within a workspace.",
        "Developers use this API to build the structural foundation and manage the billing lifecycle upon which all "
        "other Altostrat SDX automation and AI features operate.",
    ]
)
SERVERS = [
    {"url": "/", "description": "This server (the one serving this document)"},
    {"url": "https://v1.api.altostrat.io", "description": "Production API Server"},
]

# Path parameters: description and example (the first two as published, seeds/000 and 001).
PATH_PARAMETERS = {
    "workspaceId": ("The ID of the workspace.", "ws_a1b2c3d4e5f6g7h8"),
    "billingAccountId": (
        "The ID of the billing account, which corresponds to a Stripe Customer ID (cus_...).",
        "cus_a1b2c3d4e5f6g7h8",
    ),
    "subscriptionId": ("The ID of the subscription, a Stripe Subscription ID (sub_...).", "sub_a1b2c3d4e5f6g7h8"),
    "paymentMethodId": ("The ID of the payment method, a Stripe PaymentMethod ID (pm_...).", "pm_a1b2c3d4e5f6g7h8"),
    "organizationId": ("The ID of the organization.", "org_a1b2c3d4e5f6g7h8"),
    "memberId": ("The member's user ID (the `sub` of their tokens).", "auth0|a1b2c3d4e5f6g7h8"),
}

# The 403 of a route that needs a role says which (API.md: a viewer reads, admin and owner write).
FORBIDDEN = {
    "FORBIDDEN_VIEWER": "A viewer can't write: it needs the admin or owner role in the workspace.",
    "FORBIDDEN_NOT_OWNER": "Only an owner archives a workspace.",
    "FORBIDDEN_MEMBERS": "Managing members needs admin or owner (a viewer may only remove themself); only an "
    "owner grants, changes or removes the owner role.",
    "FORBIDDEN_AUDIT": "Only owners and admins read the audit trail.",
}
FORBIDDEN_BY_ROLE: dict[Role, str] = {"admin": "FORBIDDEN_VIEWER", "owner": "FORBIDDEN_NOT_OWNER"}


@dataclass(frozen=True)
class RouteFacts:
    """What one operation is, beside its schemas: its operationId; the role it
    needs in the workspace (None: no workspace role, any caller its security
    lets in; "viewer": any member); whether it calls Stripe (Stripe's rate limit
    is 429, Stripe failing or unreachable 502/503; every GET answers from the
    copy) and whether a card can be declined (402: a charge, or a card attached);
    and, when the role is not the whole rule, the 403 response that says it."""

    operation_id: str
    role: Role | None
    calls_stripe: bool = False
    charges: bool = False
    forbidden: str | None = None

    @property
    def refusal(self) -> str | None:
        """The 403 response of a route that refuses some members (None: a viewer passes)."""
        if self.role is None or self.role not in FORBIDDEN_BY_ROLE:
            return None
        return self.forbidden or FORBIDDEN_BY_ROLE[self.role]


View = TypeVar("View", bound=Callable[..., Any])
FACTS = "route_facts"  # the attribute a view's facts are kept in


def route_facts(
    operation_id: str,
    *,
    role: Role | None,
    calls_stripe: bool = False,
    charges: bool = False,
    forbidden: str | None = None,
) -> Callable[[View], View]:
    """Declares a view's facts where the route is defined (the document reads
    them from the app's views; a route without them cannot be documented)."""
    facts = RouteFacts(operation_id, role, calls_stripe, charges, forbidden)
    if charges and not calls_stripe:
        raise ValueError(f"{operation_id}: a charge is a Stripe call")
    if forbidden is not None and (forbidden not in FORBIDDEN or facts.refusal != forbidden):
        raise ValueError(f"{operation_id}: {forbidden} names no 403 of a route that needs a role")

    def record(view: View) -> View:
        setattr(view, FACTS, facts)
        return view

    return record


def view_facts(view: Callable[..., Any], method: str) -> RouteFacts | None:
    """The facts of a registered view (`app.view_functions[...]`) for one HTTP
    method: a MethodView's are on its method's function."""
    view_class = getattr(view, "view_class", None)
    handler = getattr(view_class, method.lower(), None) if view_class is not None else view
    facts = getattr(handler, FACTS, None)
    return facts if isinstance(facts, RouteFacts) else None


class RouteFactsReader(BasePlugin):
    """Reads an operation's facts from the view of the rule flask-smorest documents."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def facts(self, rule: Any, method: str, path: str | None) -> RouteFacts:
        facts = view_facts(self.app.view_functions[rule.endpoint], method) if rule is not None else None
        if facts is None:
            raise LookupError(f"{method.upper()} {path}: the view declares no @route_facts")
        return facts


class IdempotencyKeyDocs(BasePlugin):
    """Documents the optional Idempotency-Key header on every write of the API."""

    PARAMETER = {
        "in": "header",
        "name": "Idempotency-Key",
        "required": False,
        "description": "Retry safely: the same key with the same request within 24 h replays the first "
        "response (Idempotent-Replayed: true).",
        # Not blank: a whitespace-only key is refused (400 invalid_idempotency_key).
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "\\S"},
    }

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not operations or (path or "").startswith("/webhooks"):
            return
        for method in ("post", "put", "patch", "delete"):
            if method in operations:
                operations[method].setdefault("parameters", []).append(dict(self.PARAMETER))


class OperationIds(RouteFactsReader):
    """Names every operation from its view's facts."""

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        for method, operation in (operations or {}).items():
            operation["operationId"] = self.facts(kwargs.get("rule"), method, path).operation_id


WRITES = ("post", "put", "patch", "delete")


def error_statuses(method: str, path: str, operation: dict[str, Any], facts: RouteFacts) -> set[int]:
    """The error statuses an operation can answer, each with the error envelope."""
    statuses = {422, 500}  # the input guard reads every path and query; anything can fail
    if operation.get("security") != []:
        statuses.add(401)
    if "{" in path:
        statuses.add(404)  # another tenant's object, or none
    if method in WRITES:
        statuses |= {400, 413, 415}  # a body that is not JSON, too large, or of another type
        if facts.operation_id != "receiveStripeEvent":
            statuses.add(409)  # Idempotency-Key reused or in use; business rules; archived workspace
    if facts.refusal:
        statuses.add(403)
    if facts.calls_stripe:
        statuses |= {429, 502, 503}
    if facts.charges:
        statuses.add(402)
    return statuses


class ErrorResponses(RouteFactsReader):
    """Declares the error envelope on every error status an operation can answer."""

    def init_spec(self, spec: Any) -> None:
        super().init_spec(spec)
        for name, needed in FORBIDDEN.items():
            spec.components.response(
                name,
                {
                    "description": f"Forbidden (`permission_error`): {needed}",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            )

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        for method, operation in (operations or {}).items():
            facts = self.facts(kwargs.get("rule"), method, path)
            responses = operation.setdefault("responses", {})
            declared = {str(status) for status in responses}
            for status in sorted(error_statuses(method, path or "", operation, facts)):
                if str(status) in declared:
                    continue
                if status == 403:
                    responses["403"] = facts.refusal
                    continue
                # A name of flask-smorest's lazily registered responses (ERROR_SCHEMA).
                responses[str(status)] = http.HTTPStatus(status).name


# Response shapes that always carry every property (null where one does not
# apply): the document says so, so generated clients type them as present. Not
# LimitsMap (also a request body's partial map), Readiness (a check is left out
# when Stripe is down) nor the error envelope (`errors` on validation only).
COMPLETE_RESPONSES = frozenset(
    {
        "Address",
        "AdvancedClock",
        "AuditActor",
        "AuditEvent",
        "AuditEventList",
        "AuditTarget",
        "AuthenticationResult",
        "BillingAccount",
        "BillingAccountList",
        "Branding",
        "BrandingColors",
        "Capacity",
        "Clock",
        "Descendants",
        "Health",
        "Invoice",
        "InvoiceLine",
        "InvoiceList",
        "InvoicePreview",
        "LimitContext",
        "LimitEntry",
        "Member",
        "MemberList",
        "Message",
        "Organization",
        "OrganizationLimits",
        "OrganizationList",
        "PaymentMethod",
        "PaymentMethodList",
        "PendingPayment",
        "Pool",
        "PoolProduct",
        "PoolProducts",
        "PublicBranding",
        "ProductCounts",
        "ProductQuantity",
        "SetupIntent",
        "SetupIntentResult",
        "Subscription",
        "SubscriptionList",
        "TaxId",
        "TaxIdList",
        "TaxIdVerification",
        "TaxStatus",
        "TrialEligibility",
        "TrialInfo",
        "Usage",
        "Workspace",
        "WorkspaceList",
    }
)


class ObjectRules(BasePlugin):
    """Bodies that must not be empty say so (minProperties: 1); a permanent
    field is not accepted, so it is no property (the schema's description says
    why); a schema with a Meta.description still refuses unknown fields (apispec
    then omits additionalProperties); path parameters hold no control character
    (the input guard) and no slash."""

    def schema_helper(self, name: str, definition: dict[str, Any], **kwargs: Any) -> dict[str, Any] | None:
        schema = kwargs.get("schema")
        if schema is None:
            return None
        extra: dict[str, Any] = {}
        instance = resolve_schema_instance(schema)
        if "additionalProperties" not in definition and instance.unknown != EXCLUDE:
            extra["additionalProperties"] = instance.unknown == INCLUDE
        if isinstance(instance, NonEmptySchema):
            extra["minProperties"] = 1
        if name in COMPLETE_RESPONSES and definition.get("properties"):
            extra["required"] = list(definition["properties"])
        permanent = [field for field in instance.fields.values() if isinstance(field, Permanent)]
        for field in permanent:
            definition.get("properties", {}).pop(field.data_key or field.name, None)
        if permanent:
            notes = " ".join(field.message for field in permanent)
            extra["description"] = f"{definition['description']} {notes}" if definition.get("description") else notes
        return extra

    def path_helper(
        self,
        path: str | None = None,
        operations: dict[str, Any] | None = None,
        parameters: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        for parameter in parameters or []:
            if parameter.get("in") == "path":
                schema = parameter.setdefault("schema", {"type": "string"})
                schema["pattern"] = PATH_PARAMETER_PATTERN
                if parameter["name"] in PATH_PARAMETERS:  # unless the route says otherwise
                    description, example = PATH_PARAMETERS[parameter["name"]]
                    parameter.setdefault("description", description)
                    schema.setdefault("example", example)


def object_keywords(self: Any, field: fields.Field[Any], ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """An apispec attribute function for object fields (a Dict, one Nested object):
    a Length counts properties (apispec writes minLength/minItems), and a Dict
    whose keys are an enum lists them as its only properties."""
    if not isinstance(field, fields.Dict) and not (isinstance(field, fields.Nested) and not field.many):
        return {}
    for wrong, right in (
        ("minLength", "minProperties"),
        ("maxLength", "maxProperties"),
        ("minItems", "minProperties"),
        ("maxItems", "maxProperties"),
    ):
        if wrong in ret:
            ret[right] = ret.pop(wrong)
    if isinstance(field, fields.Dict) and field.key_field is not None:
        enums = [v.choices for v in field.key_field.validators if isinstance(v, validate.OneOf)]
        if enums:
            value = ret.get("additionalProperties") or {}
            ret["properties"] = {str(key): dict(value) for key in enums[0]}
            ret["additionalProperties"] = False
    return {}


def nullable_object(self: Any, field: fields.Field[Any], ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """A nullable nested object is its schema or null: `nullable` beside `allOf: [$ref]` (OpenAPI 3.0),
    not apispec's `anyOf` with an empty nullable object, which generated clients type as a third
    kind of value (TypeScript: `PendingPayment | Record<string, never> | null`)."""
    choices = ret.get("anyOf")
    if isinstance(choices, list) and len(choices) == 2 and {"type": "object", "nullable": True} in choices:
        [reference] = [choice for choice in choices if choice != {"type": "object", "nullable": True}]
        del ret["anyOf"]
        ret.update(nullable=True, allOf=[reference])
    return {}


# A 429 of this service's own rate limit (the public routes): the envelope, and when to come back.
RATE_LIMITED = "RATE_LIMITED"
_RATE_LIMITED_RESPONSE = {
    "description": "Too many requests from this client address.",
    "headers": {
        "Retry-After": {
            "description": "Seconds to wait before the next request from this address.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    },
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def extend(api: Api, app: Flask) -> None:
    """Adds this module's plugins and field rules to the API's document (the
    app's views hold the routes' facts)."""
    api.spec.components.response(RATE_LIMITED, _RATE_LIMITED_RESPONSE)
    api.ma_plugin.converter.add_attribute_function(object_keywords)
    api.ma_plugin.converter.add_attribute_function(nullable_object)
    for plugin in (IdempotencyKeyDocs(), OperationIds(app), ErrorResponses(app), ObjectRules()):
        plugin.init_spec(api.spec)
        api.spec.plugins.append(plugin)
