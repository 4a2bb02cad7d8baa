"""The README, as a newcomer reads it: it starts with its two commands (set-up, run, test),
and its first screen then says what the service is before anything about how its tests run."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
FIRST_SCREEN = 24  # lines


def test_first_screen_says_what_the_service_is_first() -> None:
    lines = README.read_text().splitlines()
    content = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
    assert lines[content[0]].strip().startswith("python3 dev.py serve")
    assert lines[content[1]].strip().startswith("python3 dev.py test")
    first = content[2]
    assert lines[first].startswith("A multi-tenant billing API"), lines[first]
    tests_at = next(i for i, line in enumerate(lines) if i > first and ("tests" in line or "pytest" in line))
    assert first < min(tests_at, FIRST_SCREEN)
    opening = " ".join(lines[first:tests_at])
    assert "Stripe" in opening and "/openapi.json" in opening
