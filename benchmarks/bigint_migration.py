"""Benchmark: how long revision 0005 (64-bit times and ids) holds a full PostgreSQL database, against
one copy of its largest table.

Run with one command from the repository root::

    .venv/bin/python benchmarks/bigint_migration.py [--events N] [--rounds R]

It starts its own throwaway PostgreSQL cluster (``scripts/devpg.py``, a free loopback port),
migrates a new database to revision 0004 and fills it as a busy deployment's would be: N audit
events (AuditEvent JSON of about 1 KB, as the recorder writes them), N/10 refresh tokens, N/100
share links and N/100 failed logins. Then, R times, in the same run and on the same data:

(a) the baseline: one copy of ``facade_audit_event`` with its ten indexes (``CREATE TABLE ... AS``,
    ``CREATE INDEX`` each), which is what rewriting that table costs at least;
(b) ``init-db``'s upgrade 0004 -> 0005 (``smart.store.migrate.upgrade``): every ALTER of 0005 in
    one transaction, under its exclusive locks; then the downgrade back to 0004 for the next round.

It prints the medians (seconds) and the ratio (b)/(a). The cluster is removed at the end.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import devpg  # noqa: E402
from alembic import command  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from smart.store import migrate  # noqa: E402

#: An AuditEvent of about 1 KB, the shape the recorder writes (smart/audit/events.py).
RESOURCE = ('{"resourceType": "AuditEvent", "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", '
            '"code": "110112", "display": "Query"}, "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", '
            '"code": "search-type"}], "action": "E", "recorded": "2026-12-06T21:00:00Z", "outcome": "0", '
            '"agent": [{"type": {"coding": [{"code": "110153"}]}, "who": {"identifier": {"value": "viewer-app"}}, '
            '"requestor": false, "network": {"address": "10.0.0.7", "type": "2"}}, {"who": {"reference": '
            '"Practitioner/dr-who"}, "requestor": true}], "source": {"observer": {"display": '
            '"https://facade.example/fhir"}}, "entity": [{"what": {"reference": "Patient/P-%s"}}, {"what": '
            '{"reference": "ImagingStudy/1.2.826.0.1.3680043.8.498.%s"}, "query": "cGF0aWVudD1QLTEyMzQ1"}], '
            '"padding": "%s"}')


def _fill(connection, events: int) -> None:
    """The rows of a database at 0004 after a long busy life (times of 2033 and earlier)."""
    connection.execute(text(
        "INSERT INTO facade_audit_event (event_id, recorded, type, subtype, action, outcome, patient, "
        "agent_patient, client_id, who, entity, resource) "
        "SELECT md5(i::text), 1700000000 + i, 'rest', 'search-type', 'E', '0', 'P-' || (i % 5000), NULL, "
        "'viewer-app', 'Practitioner/dr-who', '1.2.826.0.1.3680043.8.498.' || i, "
        "format(:resource, i % 5000, i, repeat('x', 200))::json FROM generate_series(1, :n) AS i"),
        {"resource": RESOURCE, "n": events})
    connection.execute(text(
        "INSERT INTO smart_refresh_token (token_hash, client_id, user_id, scope, context, issued_at, expires_at) "
        "SELECT md5('r' || i) || md5(i::text), 'viewer-app', NULL, 'launch/patient patient/*.rs online_access', "
        "'{\"patient\": \"P-1\"}', 1700000000 + i, 2000000000 FROM generate_series(1, :n) AS i"), {"n": events // 10})
    connection.execute(text(
        "INSERT INTO smart_share_link (id, secret_hash, patient, study, created_by, created_at, expires_at, uses) "
        "SELECT 's' || i, md5('s' || i) || md5(i::text), 'P-' || i, 'all', 'Patient/P-1', 1700000000, 2000000000, 0 "
        "FROM generate_series(1, :n) AS i"), {"n": events // 100})
    connection.execute(text(
        "INSERT INTO smart_login_attempt (username, address, at) "
        "SELECT 'user' || i, '10.0.0.' || (i % 250), 1700000000 + i FROM generate_series(1, :n) AS i"),
        {"n": events // 100})


def _copy_audit_table(engine) -> float:
    """Seconds to copy ``facade_audit_event`` and build its ten indexes (then drop the copy)."""
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE audit_copy AS SELECT * FROM facade_audit_event"))
        connection.execute(text("CREATE UNIQUE INDEX audit_copy_id ON audit_copy (id)"))
        connection.execute(text("CREATE UNIQUE INDEX audit_copy_event_id ON audit_copy (event_id)"))
        for column in ("recorded", "type", "subtype", "outcome", "patient", "agent_patient", "client_id", "who",
                       "entity"):
            connection.execute(text(f"CREATE INDEX audit_copy_{column} ON audit_copy ({column})"))
    elapsed = time.perf_counter() - started
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE audit_copy"))
    return elapsed


def _upgrade(engine) -> float:
    started = time.perf_counter()
    before, after = migrate.upgrade(engine)
    elapsed = time.perf_counter() - started
    assert (before, after) == ("0004", "0005"), (before, after)
    return elapsed


def _downgrade(engine) -> None:
    with engine.begin() as connection:
        command.downgrade(migrate.alembic_config(connection), "0004")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="audit events in the database")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    devpg.ensure_installed()
    with devpg.PostgreSQL() as cluster:
        engine = create_engine(cluster.create_database("bigint_bench"))
        try:
            with engine.begin() as connection:
                command.upgrade(migrate.alembic_config(connection), "0004")
                _fill(connection, args.events)
            with engine.begin() as connection:
                connection.execute(text("ANALYZE"))
                size = connection.execute(text(
                    "SELECT pg_size_pretty(pg_total_relation_size('facade_audit_event'))")).scalar()
            copies, upgrades = [], []
            for _ in range(args.rounds):
                copies.append(_copy_audit_table(engine))
                upgrades.append(_upgrade(engine))
                _downgrade(engine)
        finally:
            engine.dispose()
    copy, upgrade = statistics.median(copies), statistics.median(upgrades)
    print(f"{args.events} audit events ({size} with indexes), {args.events // 10} refresh tokens, "
          f"{args.events // 100} share links, {args.events // 100} failed logins; medians of {args.rounds} rounds")
    print(f"(a) copy of the audit table and its indexes: {copy:.2f} s  {[round(c, 2) for c in copies]}")
    print(f"(b) upgrade 0004 -> 0005:                    {upgrade:.2f} s  {[round(u, 2) for u in upgrades]}")
    print(f"(b)/(a): {upgrade / copy:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
