"""Holding the sandbox clock's background advances, to look at them while they run."""

from __future__ import annotations

import threading

import pytest

from stripe_sandbox import SandboxClock


def hold_runs(monkeypatch: pytest.MonkeyPatch, clock: SandboxClock) -> threading.Event:
    """Background advances of `clock` run nothing until the returned event is set
    (at most 5 s: a run started synchronously would otherwise hang the test)."""
    release = threading.Event()
    process_due = clock.process_due

    def held(*args: object, **kwargs: object) -> int:
        release.wait(5)
        return process_due(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(clock, "process_due", held)
    return release
