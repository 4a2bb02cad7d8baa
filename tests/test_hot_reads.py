"""What every hot read is spared (issue 23): work done once per process, not per request."""

from __future__ import annotations

import inspect
from typing import Any

from flask import Flask

from billing import replica
from billing.models import Workspace
from billing.organizations import capacity
from billing.subscriptions.active import PROVIDING
from schemas.invoices import InvoiceListQuerySchema
from tests.helpers import subscribe_with_card


def test_a_query_schema_is_made_once_not_per_request(as_user: Any, monkeypatch: Any) -> None:
    """webargs makes an instance of a schema class on every request it parses (every field
    bound anew); the blueprints hand it one instance, made when the route is declared."""
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    acc = f"/workspaces/{ws}/billing-accounts/{alice.account(ws)['id']}"
    made: list[Any] = []
    init = InvoiceListQuerySchema.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(InvoiceListQuerySchema, "__init__", counted)
    assert alice.get(f"{acc}/invoices?limit=2").status_code == 200
    assert alice.get(f"{acc}/invoices?limit=500").status_code == 422  # still validated
    assert made == []


def test_a_get_s_body_limit_is_the_apps_without_a_route_lookup(session_app: Flask, monkeypatch: Any) -> None:
    """The web worker asks each request's body limit: only a method some route takes more
    for (an organization's picture) is looked up, and in the app's URL map only when one of
    those routes takes the path (tests/test_http_worker.py: the limits themselves)."""
    limit_for = session_app.config["BODY_LIMIT_FOR"]
    default = session_app.config["MAX_CONTENT_LENGTH"]

    def no_lookup(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the URL map was matched")

    monkeypatch.setattr(session_app.url_map, "bind", no_lookup)
    assert limit_for("GET", "/workspaces/ws_1/organizations") == default
    assert limit_for("DELETE", "/workspaces/ws_1/organizations/org_1") == default
    assert limit_for("POST", "/workspaces/ws_1/organizations/org_1/usage") == default
    assert limit_for("POST", "/workspaces/ws_1/billing-accounts") == default
    monkeypatch.undo()
    assert limit_for("POST", "/workspaces/ws_1/organizations") > default


def test_the_capacity_read_finds_the_subscriptions_a_session_finds(as_user: Any, state: Any) -> None:
    """The capacity read's subscriptions, read on the driver's cursor: the same rows as in a
    session (its statuses' expanding IN is expanded once a shape: tests/test_db.py)."""
    alice = as_user("alice")
    ws = alice.workspace("pooled")
    subscribe_with_card(alice, ws, alice.account(ws)["id"], {"users": 3})
    with state.db.read() as session:
        expected = replica.workspace_subscriptions(session, ws, PROVIDING)
    with state.db.columns() as connection:
        read = replica.workspace_subscriptions_read(state.db, connection, ws, PROVIDING)
    assert read == expected and len(read) == 1
    assert capacity.capacity(state, _workspace(state, ws))["pools"][0]["products"]["users"]["capacity"] == 3


def _workspace(state: Any, workspace_id: str) -> Workspace:
    with state.db.read() as session:
        found: Workspace | None = session.get(Workspace, workspace_id)
    assert found is not None
    return found


def _coroutines(app: Flask) -> list[str]:
    """Each view, hook and error handler of `app` that is an `async def`."""
    found: list[Any] = []
    for view in app.view_functions.values():
        found.append(view)
        view_class = getattr(view, "view_class", None)  # a MethodView's methods
        found += [getattr(view_class, method.lower()) for method in getattr(view_class, "methods", None) or ()]
    for registry in (
        app.before_request_funcs,
        app.after_request_funcs,
        app.teardown_request_funcs,
        app.url_value_preprocessors,
        app.url_default_functions,
        app.template_context_processors,
    ):
        found += [func for funcs in registry.values() for func in funcs]
    found += app.teardown_appcontext_funcs
    found += [
        handler
        for by_code in app.error_handler_spec.values()
        for handlers in by_code.values()
        for handler in handlers.values()
    ]
    return [getattr(func, "__qualname__", repr(func)) for func in found if inspect.iscoroutinefunction(func)]


def test_no_view_or_hook_is_async_so_the_app_runs_each_as_it_is(session_app: Flask) -> None:
    """`SyncFlask.ensure_sync` hands Flask each view and hook as it is (Flask's own inspects each
    one, every request): that holds only while none is an `async def`."""
    assert _coroutines(session_app) == []
    assert session_app.ensure_sync(_coroutines) is _coroutines
    probe = Flask(__name__)

    @probe.before_request
    async def _async_hook() -> None:  # what the check must see
        return None

    @probe.get("/probe")
    async def _async_view() -> str:
        return ""

    assert sorted(_coroutines(probe)) == sorted(
        f"test_no_view_or_hook_is_async_so_the_app_runs_each_as_it_is.<locals>.{name}"
        for name in ("_async_hook", "_async_view")
    )
