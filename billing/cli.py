"""Operator commands: `flask --app app <command>`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from billing.models import Member, Workspace, utcnow
from billing.state import current
from billing.tokens import mint_token

ROOT = Path(__file__).resolve().parent.parent
# `flask reconcile`'s exit status when it went through but some objects failed
# (listed in its report's `failed`): not 1, which says it could not run at all;
# not 2, click's usage error.
RECONCILE_INCOMPLETE = 3


def run_migrations(database_url: str) -> None:
    """`alembic upgrade head` against the given database."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")


# The operator commands, each run in the app's context (AppGroup); `register` adds them to the app's CLI.
_commands = AppGroup()


def register(app: Flask) -> None:
    for command in _commands.commands.values():
        app.cli.add_command(command)


@_commands.command("migrate")
def migrate() -> None:
    """Apply the database migrations."""
    run_migrations(current().config.database_url)
    click.echo("database is up to date")


@_commands.command("mint-token")
@click.argument("user_id")
@click.option("--ttl", default=86400, show_default=True, help="Lifetime in seconds.")
@click.option("--scope", default=None, help="The token's scope claim, e.g. billing:usage for a service.")
def mint(user_id: str, ttl: int, scope: str | None) -> None:
    """Print a bearer token for USER_ID signed with JWT_SECRET (development)."""
    click.echo(mint_token(current().config, user_id, ttl_seconds=ttl, scope=scope))


@_commands.command("reconcile")
@click.option("--full", is_flag=True, help="Re-copy every customer's objects instead of catching up from events.")
def reconcile_command(full: bool) -> None:
    """Repair the index and the copy of Stripe: catch up from Stripe's events (or --full)."""
    from billing.reconcile import reconcile

    report = reconcile(current(), full=full)
    click.echo(json.dumps(report.__dict__, indent=2))
    if report.failed:  # done with everything else; these wait for an operator (README)
        raise SystemExit(RECONCILE_INCOMPLETE)


@_commands.command("worker")
@click.option("--threads", type=int, default=None, help="Worker threads (default WORKER_THREADS, 4).")
@click.option("--burst", is_flag=True, help="Apply what waits now, then exit (no periodic tasks).")
def worker(threads: int | None, burst: bool) -> None:
    """Run a queue worker: apply Stripe's events, sweep, clean up, reconcile (the Procfile's worker)."""
    from billing.jobs import apply_due

    state = current()
    if burst:
        queued = state.queue.run_queued()
        click.echo(json.dumps({"tasks": queued, "objects": apply_due()}))
        return
    # Background work yields the CPU to Stripe's deliveries and users' requests on a shared machine
    # (never raised: a process already nicer stays so).
    os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), state.config.worker_nice))
    state.queue.consumer(threads or state.config.worker_threads).run()


@_commands.group("events")
def events() -> None:
    """Stripe's events in the inbox: what waits, what is parked."""


@events.command("status")
def events_status() -> None:
    """How far the copy lags: events pending, the oldest one's age, events parked."""
    from billing.webhooks import inbox

    click.echo(json.dumps(inbox.backlog(current().db).__dict__))


@events.command("parked")
@click.option("--limit", default=100, show_default=True)
def events_parked(limit: int) -> None:
    """List parked events (one JSON object a line): id, type, object, attempts, last error."""
    from billing.webhooks import inbox

    for event in inbox.parked(current().db, limit):
        click.echo(
            json.dumps(
                {
                    "id": event.id,
                    "type": event.type,
                    "object": event.object_key,
                    "attempts": event.attempts,
                    "received_at": event.received_at.isoformat(),
                    "last_error": event.last_error,
                }
            )
        )


@events.command("replay")
@click.argument("event_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Every parked event.")
def events_replay(event_ids: tuple[str, ...], replay_all: bool) -> None:
    """Queue parked events again (by id, or --all), with fresh tries."""
    from billing.webhooks import inbox

    if not event_ids and not replay_all:
        raise click.UsageError("give event ids, or --all")
    state = current()
    keys = inbox.replay(state.db, None if replay_all else event_ids)
    for key in keys:
        state.queue.apply_later(key)
    click.echo(json.dumps({"queued_objects": len(keys)}))


@_commands.command("sync-catalog")
def sync_catalog_command() -> None:
    """Create or update the catalog's products and prices in Stripe (idempotent)."""
    from billing.catalog import sync_catalog

    report = sync_catalog(current().gateway)
    current().prices.clear()
    click.echo(json.dumps(report.__dict__, indent=2))


@_commands.command("dev-setup")
@click.option("--user", "user_id", default="dev-user", show_default=True)
@click.option("--base-url", default="http://127.0.0.1:8000", show_default=True)
def dev_setup(user_id: str, base_url: str) -> None:
    """Make sure USER owns a demo workspace; print a token and a curl line."""
    workspace_id = _demo_workspace(user_id)
    token = mint_token(current().config, user_id, ttl_seconds=30 * 86400)
    click.echo(f"\nBearer token for {user_id} (30 days):\n\n  {token}\n")
    click.echo("List the demo workspace's billing accounts:\n")
    click.echo(f"  curl -s -H 'Authorization: Bearer {token}' {base_url}/workspaces/{workspace_id}/billing-accounts\n")
    click.echo(f"API docs: {base_url}/docs   OpenAPI: {base_url}/openapi.json\n")


def _demo_workspace(user_id: str) -> str:
    """The first workspace USER owns, made (a pooled "Demo workspace") when there is none."""
    with current().db.write() as session:
        workspace = session.scalar(
            select(Workspace)
            .join(Member, Member.workspace_id == Workspace.id)
            .where(Member.user_id == user_id, Member.role == "owner")
            .order_by(Workspace.created_at)
        )
        if workspace is None:
            now = utcnow()
            workspace = Workspace(name="Demo workspace", billing_mode="pooled", created_at=now, updated_at=now)
            session.add(workspace)
            session.flush()
            session.add(
                Member(workspace_id=workspace.id, user_id=user_id, role="owner", created_at=now, updated_at=now)
            )
        return workspace.id
