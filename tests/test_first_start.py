"""`python3 dev.py serve` as a newcomer runs it first: a fresh copy of the project (no instance/),
its virtualenv already installed. What it prints before the token is the start-up's own news, no
harmless-looking warning; front ends on a local port may call it (CORS), and it says so."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import dev
from bench.run import free_port

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_NOTICE = "running on the built-in SANDBOX emulator"
# What the environment of this test run may set that a newcomer's shell does not.
CLEARED = (
    "DATABASE_URL",
    "CORS_ORIGINS",
    "STRIPE_API_KEY",
    "STRIPE_SANDBOX",
    "STRIPE_WEBHOOK_SECRET",
    "LOG_LEVEL",
    "JWT_SECRET",
    "JWT_JWKS_URL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "PORT",
    "TEST_DATABASE_URL",
)


def fresh_copy(target: Path) -> Path:
    """The project as cloned, with a .venv that is this one (stamped as installed: no pip)."""
    shutil.copytree(
        ROOT,
        target,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "instance", "__pycache__", ".mypy_cache", ".pytest_cache", "*.pyc"
        ),
    )
    bin_dir = target / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    real = Path(sys.executable).parent
    for name in ("python", "gunicorn"):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{real / name}" "$@"\n')
        (bin_dir / name).chmod(0o755)
    wanted = b"".join((target / name).read_bytes() for name in ("requirements.txt", "requirements-dev.txt"))
    (target / ".venv" / ".requirements.sha256").write_text(hashlib.sha256(wanted).hexdigest())
    return target


def preflight(port: int, origin: str) -> str | None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/workspaces",
        method="OPTIONS",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers.get("Access-Control-Allow-Origin")  # type: ignore[no-any-return]


@pytest.mark.skipif(os.name == "nt", reason="the copy's .venv is made of shell scripts")
def test_first_start_prints_no_harmless_warnings_before_the_token(tmp_path: Path) -> None:
    project = fresh_copy(tmp_path / "project")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["PORT"] = str(port)
    process = subprocess.Popen(
        [sys.executable, "dev.py", "serve"],
        cwd=project,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []
    token = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Bearer token for"):
                token.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert token.wait(300), "\n".join(lines)
        before = lines[: next(i for i, line in enumerate(lines) if line.startswith("Bearer token for"))]
        noise = [line for line in before if "WARNING" in line.upper() and SANDBOX_NOTICE not in line]
        assert noise == [], "\n".join(before)
        assert any(SANDBOX_NOTICE in line for line in before)
        assert any("http://localhost and http://127.0.0.1 on any port" in line for line in before)
        assert preflight(port, "http://localhost:5173") == "http://localhost:5173"
        assert preflight(port, "http://127.0.0.1:3000") == "http://127.0.0.1:3000"
        assert preflight(port, "http://localhost.evil.test") is None
        assert preflight(port, "https://app.example.com") is None
    finally:
        stop(process)


def stop(process: subprocess.Popen[str]) -> None:
    """Ctrl-C, as a user stops it (dev.py then stops gunicorn and the worker); then whatever is left."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        pass
    time.sleep(0.5)
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: only what it started
    except ProcessLookupError:
        pass
    process.wait()


def test_serve_allows_local_origins_on_the_sandbox_unless_told(monkeypatch: Any) -> None:
    for name in ("CORS_ORIGINS", "STRIPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STRIPE_SANDBOX", "1")
    assert "any port" in dev.local_origins_by_default()
    assert os.environ["CORS_ORIGINS"] == "http://localhost:*,http://127.0.0.1:*"
    monkeypatch.setenv("CORS_ORIGINS", "https://app.example.com")
    assert dev.local_origins_by_default().endswith("https://app.example.com")
    assert os.environ["CORS_ORIGINS"] == "https://app.example.com"
    monkeypatch.delenv("CORS_ORIGINS")
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_x")  # not the sandbox: nothing by default
    assert dev.local_origins_by_default() == "" and "CORS_ORIGINS" not in os.environ
