#!/usr/bin/env python3
"""Set-up and run with nothing but python3: `python3 dev.py serve` / `python3 dev.py test`.

Creates .venv, installs the pinned requirements when they change, then runs.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
FAST_TESTS = Path("tests", "unit")


def ensure_venv() -> None:
    if not PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    wanted = b"".join((ROOT / name).read_bytes() for name in ("requirements.txt", "requirements-dev.txt"))
    digest = hashlib.sha256(wanted).hexdigest()
    stamp = VENV / ".requirements.sha256"
    if stamp.exists() and stamp.read_text() == digest:
        return
    subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements-dev.txt")], check=True)
    stamp.write_text(digest)


def flask(*args: str) -> None:
    subprocess.run([str(PYTHON), "-m", "flask", "--app", "app", *args], check=True, cwd=ROOT)


def sandbox_by_default() -> None:
    """`serve` runs on the built-in Stripe sandbox unless a real key is set."""
    if not os.environ.get("STRIPE_API_KEY"):
        os.environ.setdefault("STRIPE_SANDBOX", "1")


LOCAL_ORIGINS = "http://localhost:*,http://127.0.0.1:*"


def local_origins_by_default() -> str:
    """On the sandbox, a front end served from any local port may call the service (CORS),
    unless CORS_ORIGINS says which origins may. Returns the line that says so."""
    if os.environ.get("STRIPE_API_KEY") or os.environ.get("STRIPE_SANDBOX") != "1":
        return ""
    if os.environ.get("CORS_ORIGINS"):
        return f"Browsers may call it from CORS_ORIGINS: {os.environ['CORS_ORIGINS']}"
    os.environ["CORS_ORIGINS"] = LOCAL_ORIGINS
    return (
        "Browsers may call it from http://localhost and http://127.0.0.1 on any port (the sandbox's "
        "default; set CORS_ORIGINS to choose the origins)."
    )


def serve(port: str) -> int:
    """Migrate, start gunicorn and a queue worker beside it (the Procfile's web
    and worker), and once the web answers print the token and the curl line
    last (the request log stays quiet unless LOG_LEVEL says otherwise)."""
    sandbox_by_default()
    cors = local_origins_by_default()
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # One metrics directory for the web's workers and the queue worker: /metrics shows both
    # (a new one under the temporary directory unless PROMETHEUS_MULTIPROC_DIR names one).
    from billing import metrics_dir

    metrics_dir.prepare()
    flask("migrate")
    # The rest of gunicorn's settings (the Procfile's too) come from gunicorn.conf.py.
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "app:app", "--bind", f"127.0.0.1:{port}", "--log-level", "warning"], cwd=ROOT
    )
    processes = [server]

    def start_worker() -> None:
        # Applies Stripe's events (the webhook route only stores them), sweeps, reconciles. Started
        # once the web answers: its start loads the sandbox's catalog, whose webhooks go to the web.
        processes.append(subprocess.Popen([str(PYTHON), "-m", "flask", "--app", "app", "worker"], cwd=ROOT))

    try:
        return _serve_until_stopped(server, port, cors, once_up=start_worker)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        metrics_dir.remove_temporary()


def _serve_until_stopped(server: subprocess.Popen[bytes], port: str, cors: str, once_up: Callable[[], None]) -> int:
    try:
        for _ in range(300):
            if server.poll() is not None:
                return server.returncode
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        once_up()
        if cors:
            print(f"\n{cors}", flush=True)
        flask("dev-setup", "--base-url", f"http://127.0.0.1:{port}")
        return server.wait()
    except KeyboardInterrupt:
        return 0


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "serve"
    ensure_venv()
    if command == "serve":
        return serve(os.environ.get("PORT", "8000"))
    if command == "test":
        args = sys.argv[2:]
        if "--fast" in args:  # the rules that need no app, database or HTTP (tests/unit): seconds
            args = [*(arg for arg in args if arg != "--fast"), str(FAST_TESTS)]
        return subprocess.call([str(PYTHON), "-m", "pytest", *args], cwd=ROOT)
    if command == "flask":  # operator commands, with the project's own flask: `dev.py flask reconcile`
        sandbox_by_default()
        return subprocess.call([str(PYTHON), "-m", "flask", "--app", "app", *sys.argv[2:]], cwd=ROOT)
    if command == "bench":
        return subprocess.call([str(PYTHON), "-m", "bench.run"], cwd=ROOT)
    if command == "mypy":
        # Strict everywhere (mypy.ini): the gateway, the services and the emulator;
        # Stripe parameters are built as the library's own TypedDicts. The tests, the
        # benchmark and this file too, with what tests do on purpose allowed (mypy.ini).
        return subprocess.call(
            [str(PYTHON), "-m", "mypy", "app.py", "billing", "schemas", "stripe_sandbox", "tests", "bench", "dev.py"],
            cwd=ROOT,
        )
    if command == "lint":
        # One tool for lint and format (pyproject.toml); `lint --fix` applies both.
        fix = sys.argv[2:] == ["--fix"]
        ruff = str(BIN / "ruff")
        checked = subprocess.call([ruff, "check", *(["--fix"] if fix else []), "."], cwd=ROOT)
        formatted = subprocess.call([ruff, "format", *([] if fix else ["--check"]), "."], cwd=ROOT)
        return checked or formatted
    print(
        f"usage: python3 dev.py [serve|test [--fast] [pytest args]|flask ...|mypy|lint [--fix]|bench] "
        f"(got {command!r})",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
