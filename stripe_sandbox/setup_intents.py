"""SetupIntents: /v1/setup_intents, saving a payment method for later charges.

Confirming with a test token (or a payment method id) answers as Stripe's test
cards do: a card its issuer refuses fails the setup (402, `last_setup_error`,
setup_intent.setup_failed); a card needing 3-D Secure leaves the intent
`requires_action` until the customer authenticates (`authentication.py`, in
place of Stripe.js); any other succeeds at once (no bank verification). As on
Stripe, the saved payment method is attached to the intent's customer once the
setup succeeds, but not made its default: that is the integration's job.
"""

from __future__ import annotations

import copy
from typing import Any

from stripe.params import (
    SetupIntentCancelParams,
    SetupIntentConfirmParams,
    SetupIntentCreateParams,
    SetupIntentListParams,
    SetupIntentRetrieveParams,
)

from stripe_sandbox import events, metadata, payment_methods
from stripe_sandbox.errors import SandboxError, not_supported
from stripe_sandbox.listing import list_endpoint
from stripe_sandbox.models import SandboxObject
from stripe_sandbox.router import Request, Router
from stripe_sandbox.store import Document, ObjectKind, Store, random_token

OBJECT_TYPE = "setup_intent"
URL = "/v1/setup_intents"
# With automatic payment methods, the types the sandbox's test tokens cover.
AUTOMATIC_TYPES = ["card", "us_bank_account"]
_CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")

KIND = ObjectKind(object_type=OBJECT_TYPE, id_prefix="seti", noun="setupintent")

# Known to Stripe, not emulated: each changes what confirming means.
_UNSUPPORTED_CREATE = (
    "attach_to_self",
    "confirmation_token",
    "customer_account",
    "excluded_payment_method_types",
    "flow_directions",
    "mandate_data",
    "on_behalf_of",
    "payment_method_configuration",
    "payment_method_data",
    "payment_method_options",
    "single_use",
)
_UNSUPPORTED_CONFIRM = ("confirmation_token", "mandate_data", "payment_method_data", "payment_method_options")


def _reject(params: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if name in params:
            raise not_supported(name)


def _unexpected_state(data: Document, action: str) -> SandboxError:
    allowed = ", ".join(_CONFIRMABLE)
    return SandboxError(
        400,
        f"You cannot {action} this SetupIntent because it has a status of {data['status']}. Only a SetupIntent "
        f"with one of the following statuses may be {'canceled' if action == 'cancel' else 'confirmed'}: {allowed}.",
        code="setup_intent_unexpected_state",
    )


def _payment_method_options(types: list[str]) -> Document | None:
    options: Document = {}
    if "card" in types:
        options["card"] = {"mandate_options": None, "network": None, "request_three_d_secure": "automatic"}
    if "us_bank_account" in types:
        options["us_bank_account"] = {"mandate_options": {}, "verification_method": "automatic"}
    return options or None


def _confirm(store: Store, row: SandboxObject, payment_method: str | None) -> None:
    data = copy.deepcopy(row.data)
    if data["status"] not in _CONFIRMABLE:
        raise _unexpected_state(data, "confirm")
    value = payment_method or data["payment_method"]
    if not value:
        raise SandboxError(
            400,
            "You cannot confirm this SetupIntent because it's missing a payment method. You can either update "
            "the SetupIntent with a payment method and then confirm it again, or confirm it again directly with a "
            "payment method.",
            code="setup_intent_unexpected_state",
            param="payment_method",
        )
    method = payment_methods.resolve(store, value, param="payment_method", for_update=True)
    if method.data["type"] not in data["payment_method_types"]:
        raise SandboxError(
            400,
            f"The provided PaymentMethod's type ({method.data['type']}) is not allowed for this SetupIntent. "
            f"Allowed types: {', '.join(data['payment_method_types'])}.",
            param="payment_method",
        )
    if data["customer"] is None and method.data["customer"] is not None:
        raise SandboxError(
            400,
            "The provided PaymentMethod was previously attached to a Customer; pass that customer to use it.",
            param="payment_method",
        )
    refused = payment_methods.check_with_issuer(store, method)
    if refused is not None:
        data.update(
            status="requires_payment_method", payment_method=None, next_action=None, last_setup_error=refused.hash()
        )
        store.update(row, data)
        events.record(store, "setup_intent.setup_failed", store.present(row))
        refused.extra["setup_intent"] = store.present(row)
        refused.keep_changes = True  # the failed attempt is part of the intent's history
        raise refused
    if payment_methods.setup_needs_authentication(method):
        data.update(
            status="requires_action",
            payment_method=method.id,
            last_setup_error=None,
            next_action={
                "type": "use_stripe_sdk",
                "use_stripe_sdk": {
                    "type": "three_d_secure_redirect",
                    "stripe_js": "https://hooks.stripe.com/3d_secure_2/"
                    f"hosted?merchant=acct_sandbox&setup_intent={data['id']}",
                    "source": None,
                },
            },
        )
        store.update(row, data)
        events.record(store, "setup_intent.requires_action", store.present(row))
        return
    succeed(store, row, data, method)


def succeed(store: Store, row: SandboxObject, data: Document, method: SandboxObject) -> None:
    """The setup went through: the method is attached to the intent's customer."""
    if data["customer"] is not None:
        payment_methods.attach(store, method, data["customer"])
    data.update(status="succeeded", payment_method=method.id, last_setup_error=None, next_action=None)
    store.update(row, data)
    events.record(store, "setup_intent.succeeded", store.present(row))


def authenticate(store: Store, row: SandboxObject, succeeded: bool) -> None:
    """The customer answers the 3-D Secure challenge of a `requires_action` setup (as in Stripe.js)."""
    data = copy.deepcopy(row.data)
    method = store.require(payment_methods.OBJECT_TYPE, data["payment_method"], for_update=True)
    if not succeeded:
        data.update(
            status="requires_payment_method",
            payment_method=None,
            next_action=None,
            last_setup_error={
                "code": "setup_intent_authentication_failure",
                "doc_url": "https://stripe.com/docs/error-codes/setup-intent-authentication-failure",
                "message": "We are unable to authenticate your payment method. Please choose a different payment "
                "method and try again.",
                "payment_method": store.present(method),
                "type": "invalid_request_error",
            },
        )
        store.update(row, data)
        events.record(store, "setup_intent.setup_failed", store.present(row))
        return
    payment_methods.mark_set_up(store, method)
    succeed(store, row, data, method)


def _allowed(params: dict[str, Any]) -> list[str] | None:
    """`allowed_payment_method_types` (this API version's way to restrict them), if given."""
    allowed = params.get("allowed_payment_method_types")
    if allowed is None:
        return None
    for index, name in enumerate(allowed):
        if name not in AUTOMATIC_TYPES:
            raise not_supported(f"allowed_payment_method_types[{index}]")
    return list(allowed)


def create(req: Request) -> Document:
    params, store = req.params, req.store
    _reject(params, _UNSUPPORTED_CREATE)
    customer = None
    if params.get("customer"):
        customer = store.require("customer", params["customer"], param="customer", status=400).id
    # Automatic payment methods are on unless turned off, as in current API versions.
    wanted = params.get("automatic_payment_methods", {"enabled": True})
    automatic = (
        {"allow_redirects": wanted.get("allow_redirects", "always"), "enabled": True} if wanted["enabled"] else None
    )
    allowed = _allowed(params)
    types = allowed or (list(AUTOMATIC_TYPES) if automatic else ["card"])
    setup_intent_id = store.new_id(OBJECT_TYPE)
    data: Document = {
        "id": setup_intent_id,
        "object": OBJECT_TYPE,
        "allowed_payment_method_types": allowed,
        "application": None,
        "attach_to_self": None,
        "automatic_payment_methods": automatic,
        "cancellation_reason": None,
        "client_secret": f"{setup_intent_id}_secret_{random_token(24)}",
        "created": store.now,
        "customer": customer,
        "customer_account": None,
        "description": params.get("description") or None,
        "excluded_payment_method_types": None,
        "flow_directions": None,
        "last_setup_error": None,
        "latest_attempt": None,
        "livemode": False,
        "managed_payments": None,
        "mandate": None,
        "metadata": metadata.initial(params.get("metadata")),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": _payment_method_options(types),
        "payment_method_types": types,
        "single_use_mandate": None,
        "status": "requires_payment_method",
        "usage": params.get("usage", "off_session"),
    }
    row = store.insert(OBJECT_TYPE, data, customer=customer)
    if params.get("payment_method"):
        method = payment_methods.resolve(store, params["payment_method"], param="payment_method")
        store.update(row, {**row.data, "payment_method": method.id, "status": "requires_confirmation"})
    events.created(store, row)
    if params.get("confirm"):
        _confirm(store, row, None)
    return store.present(row)


def retrieve(req: Request) -> Document:
    return req.store.present(req.store.require(OBJECT_TYPE, req.path_params["intent"]))


def confirm(req: Request) -> Document:
    _reject(req.params, _UNSUPPORTED_CONFIRM)
    row = req.store.require(OBJECT_TYPE, req.path_params["intent"], for_update=True)
    allowed = _allowed(req.params)
    if allowed is not None:
        req.store.update(
            row,
            {
                **row.data,
                "allowed_payment_method_types": allowed,
                "payment_method_types": allowed,
                "payment_method_options": _payment_method_options(allowed),
            },
        )
    _confirm(req.store, row, req.params.get("payment_method"))
    return req.store.present(row)


def cancel(req: Request) -> Document:
    store = req.store
    row = store.require(OBJECT_TYPE, req.path_params["intent"], for_update=True)
    if row.data["status"] not in _CONFIRMABLE:
        raise _unexpected_state(row.data, "cancel")
    data = {
        **copy.deepcopy(row.data),
        "status": "canceled",
        "cancellation_reason": req.params.get("cancellation_reason") or None,
    }
    store.update(row, data)
    events.record(store, "setup_intent.canceled", store.present(row))
    return store.present(row)


def list_(req: Request) -> Document:
    params = req.params
    _reject(params, ("attach_to_self", "customer_account"))
    where = []
    if "payment_method" in params:
        where.append(SandboxObject.data["payment_method"].as_string() == params["payment_method"])
    return list_endpoint(req.store, params, OBJECT_TYPE, URL, customer=params.get("customer"), where=where)


def register(router: Router) -> None:
    router.add_kind(KIND)
    router.add("POST", URL, create, SetupIntentCreateParams)
    router.add("GET", URL, list_, SetupIntentListParams)
    router.add("GET", URL + "/{intent}", retrieve, SetupIntentRetrieveParams)
    router.add("POST", URL + "/{intent}/confirm", confirm, SetupIntentConfirmParams)
    router.add("POST", URL + "/{intent}/cancel", cancel, SetupIntentCancelParams)
