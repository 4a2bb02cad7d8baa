"""The README, as a newcomer reads it: its first screen says what the service is before how its
tests run."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
FIRST_SCREEN = 24  # lines


def test_first_screen_says_what_the_service_is_first() -> None:
    lines = README.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    assert lines[first].startswith("A multi-tenant billing API"), lines[first]
    tests_at = next(i for i, line in enumerate(lines) if "dev.py test" in line or "tests/" in line)
    assert first < tests_at < FIRST_SCREEN
    opening = " ".join(lines[first:tests_at])
    assert "Stripe" in opening and "/openapi.json" in opening
