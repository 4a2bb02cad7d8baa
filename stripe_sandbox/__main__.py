"""`python -m stripe_sandbox`: serve the emulator over HTTP (see server.py), for STRIPE_API_BASE.

    python -m stripe_sandbox --port 12111 --database sqlite:///stripe.sqlite3 \
        --webhook-url http://127.0.0.1:8000/webhooks/stripe --webhook-secret whsec_...

Prints `stripe_sandbox: serving on http://HOST:PORT` once it answers. Each option has an
environment variable; the defaults: loopback, port 12111 (stripe-mock's), a database that lasts as
long as the process (a SQLite file in a temporary directory), no webhooks.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from types import FrameType

from stripe_sandbox.database import SqlSessions
from stripe_sandbox.server import SandboxServer, bind

DEFAULT_PORT = 12111


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m stripe_sandbox", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--host",
        default=env.get("STRIPE_SANDBOX_HOST") or "127.0.0.1",
        help="address to listen on (STRIPE_SANDBOX_HOST; default 127.0.0.1: loopback only)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(env.get("STRIPE_SANDBOX_PORT") or DEFAULT_PORT),
        help=f"port (STRIPE_SANDBOX_PORT; default {DEFAULT_PORT}); 0: a free one, in LOCAL_PORT_RANGE when set",
    )
    parser.add_argument(
        "--database",
        default=env.get("STRIPE_SANDBOX_DATABASE_URL") or "",
        help="SQLAlchemy URL of the emulator's state (STRIPE_SANDBOX_DATABASE_URL; SQLite or "
        "PostgreSQL); default: a temporary SQLite file, gone when the server stops",
    )
    parser.add_argument(
        "--webhook-url",
        default=env.get("SANDBOX_WEBHOOK_URL") or "",
        help="where to post the events, signed (SANDBOX_WEBHOOK_URL); default: none sent",
    )
    parser.add_argument(
        "--webhook-secret",
        default=env.get("STRIPE_WEBHOOK_SECRET") or "",
        help="the secret events are signed with (STRIPE_WEBHOOK_SECRET)",
    )
    parser.add_argument(
        "--webhooks-before-answer",
        action="store_true",
        default=env.get("SANDBOX_WEBHOOKS_BEFORE_ANSWER") == "1",
        help="deliver a write's events before answering it (SANDBOX_WEBHOOKS_BEFORE_ANSWER=1; tests), "
        "not in the background as Stripe does",
    )
    parser.add_argument(
        "--rate-limits",
        choices=("", "live", "test"),
        default=env.get("SANDBOX_RATE_LIMITS") or "",
        help="answer 429 past Stripe's limits of that mode (SANDBOX_RATE_LIMITS); default none",
    )
    parser.add_argument(
        "--request-log",
        default=env.get("SANDBOX_REQUEST_LOG") or "",
        help="a directory where each API request's method, route and status is counted (SANDBOX_REQUEST_LOG; "
        "stripe_sandbox.request_log.read_requests sums it); default none",
    )
    args = parser.parse_args(argv)
    if args.webhook_url and not args.webhook_secret:
        parser.error("--webhook-url needs --webhook-secret (or STRIPE_WEBHOOK_SECRET): Stripe signs its events")
    logging.basicConfig(level=env.get("LOG_LEVEL", "WARNING").upper(), format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="stripe-sandbox-") as scratch:
        database = SqlSessions(args.database or f"sqlite:///{scratch}/stripe.sqlite3")
        try:
            listener = bind(args.host, args.port, env.get("LOCAL_PORT_RANGE", "") if args.port == 0 else "")
        except OSError as error:
            sys.stderr.write(f"stripe_sandbox: cannot listen: {error}\n")
            return 1
        server = SandboxServer(
            database,
            listener,
            webhook_url=args.webhook_url,
            webhook_secret=args.webhook_secret,
            webhooks_before_answer=args.webhooks_before_answer,
            rate_limits=args.rate_limits,
            request_log=args.request_log,
        )

        def stop(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        print(f"stripe_sandbox: serving on {server.url}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            if server.webhooks is not None and server.webhooks.background:
                server.webhooks.stop()
            database.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
