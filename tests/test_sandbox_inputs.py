"""The sandbox's clock routes answer what /openapi.json says they answer, and take
only what it says they take (strict integers)."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from tests.clock_runs import hold_runs
from tests.helpers import assert_error


@pytest.fixture(scope="module")
def spec(session_app: Any) -> dict[str, Any]:
    return dict(session_app.test_client().get("/openapi.json").json)


def assert_conforms(spec: dict[str, Any], path: str, method: str, response: Any) -> None:
    """The response's body is valid against the document's schema for its status."""
    documented = spec["paths"][path][method]["responses"][str(response.status_code)]
    schema = documented["content"]["application/json"]["schema"]
    validator = jsonschema_rs.Draft4Validator({**schema, "components": spec["components"]})
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(response.json)]
    assert errors == [], (response.json, errors)


def test_the_clock_answers_its_documented_shape(
    as_user: Any, spec: dict[str, Any], state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = as_user("alice")
    assert_conforms(spec, "/sandbox/clock", "get", alice.get("/sandbox/clock"))  # ready
    release = hold_runs(monkeypatch, state.sandbox_clock)
    advanced = alice.post("/sandbox/clock/advance", {"hours": 1})
    assert advanced.status_code == 202
    assert_conforms(spec, "/sandbox/clock/advance", "post", advanced)
    advancing = alice.get("/sandbox/clock")
    assert advancing.json["status"] == "advancing"
    assert_conforms(spec, "/sandbox/clock", "get", advancing)
    release.set()
    state.sandbox_clock.wait_for_runs(10)
    assert_conforms(spec, "/sandbox/clock", "get", alice.get("/sandbox/clock"))


def test_a_failed_clock_answers_its_documented_shape(
    as_user: Any, spec: dict[str, Any], state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> bool:
        raise RuntimeError("a transition failed")

    monkeypatch.setattr(state.sandbox_clock, "_process_next", broken)
    alice = as_user("alice")
    assert alice.post("/sandbox/clock/advance", {"days": 1}).status_code == 202
    state.sandbox_clock.wait_for_runs(10)
    failed = alice.get("/sandbox/clock")
    assert failed.json["status"] == "internal_failure"
    assert_conforms(spec, "/sandbox/clock", "get", failed)


@pytest.mark.parametrize(
    "amount", [{"seconds": 1.5}, {"days": 1.5}, {"seconds": "1"}, {"hours": True}, {"minutes": 1.0}, {"seconds": None}]
)
def test_advance_takes_whole_numbers_only(as_user: Any, amount: dict[str, Any]) -> None:
    alice = as_user("alice")
    before = alice.get("/sandbox/clock").json["now"]
    field = next(iter(amount))
    assert field in assert_error(alice.post("/sandbox/clock/advance", amount), 422, "validation_failed")["errors"]
    assert alice.get("/sandbox/clock").json["now"] < before + 60  # the clock did not move
