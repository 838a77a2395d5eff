"""``flask --app app audit ...``: exporting the audit trail as NDJSON and pruning it by retention."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy.exc import OperationalError, ProgrammingError

from smart.audit import close_all
from smart.audit import search as audit_search

#: Seconds in a day (retention is counted in days).
DAY = 86_400


def parse_since(value: str) -> float:
    """Epoch seconds of an ISO 8601 date or date-time (``2026-12-01``, ``2026-12-01T08:00:00Z``);
    a value without an offset is UTC.

    Raises
    ------
    click.BadParameter
        For anything else (the message names the value).
    """
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD) or date-time", param_hint="--since") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def export_events(out, since: float | None = None) -> int:
    """Write every AuditEvent recorded since *since* to *out*, one JSON object a line (NDJSON);
    the number written. Events still queued in this process are written to the table first."""
    close_all()
    written = 0
    for resource in audit_search.export(since):
        out.write(json.dumps(resource, separators=(",", ":")) + "\n")
        written += 1
    return written


def prune_events(days: int | None = None) -> int:
    """Delete the AuditEvents older than *days* (default ``FACADE_AUDIT_RETENTION_DAYS``); the number deleted.

    Raises
    ------
    click.BadParameter
        For a negative number of days.
    """
    days = int(current_app.config.get("FACADE_AUDIT_RETENTION_DAYS", 365)) if days is None else days
    if days < 0:
        raise click.BadParameter("retention must be 0 days or more", param_hint="--days")
    return audit_search.prune(time.time() - days * DAY)


def _database_errors(func, *args):
    try:
        return func(*args)
    except (OperationalError, ProgrammingError) as exc:
        raise click.ClickException("the database has no audit table yet: run `flask --app app init-db`") from exc


@click.group("audit")
def audit_cli() -> None:
    """The audit trail (FHIR AuditEvents): export and retention."""


@audit_cli.command("export")
@click.option("--since", "since", default=None, help="only events recorded at or after this date (YYYY-MM-DD, UTC) "
              "or date-time")
@click.option("--output", "output", type=click.File("w"), default="-", help="file to write (default: stdout)")
@with_appcontext
def export_command(since, output) -> None:
    """Write the audit trail as NDJSON (one AuditEvent per line), oldest first."""
    start = parse_since(since) if since else None
    count = _database_errors(export_events, output, start)
    click.echo(f"{count} events exported", err=True)


@audit_cli.command("prune")
@click.option("--days", type=int, default=None, help="keep this many days (default: FACADE_AUDIT_RETENTION_DAYS)")
@with_appcontext
def prune_command(days) -> None:
    """Delete audit events older than the retention period."""
    count = _database_errors(prune_events, days)
    click.echo(f"{count} events deleted")


__all__ = ["audit_cli", "export_events", "prune_events", "parse_since"]
