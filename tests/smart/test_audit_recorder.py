"""The audit recorder without a PACS: queue bound and dropped count, frame aggregation per window,
nothing lost at close, syslog forwarding (RFC 5424 over UDP), export and prune, access lists."""
from __future__ import annotations

import json
import socket
import time

import pytest
from click.testing import CliRunner

from facade_helpers import bearer, make_app, token
from fhir_validation import validate
from smart.admin import audit_cli
from smart.audit import events, recorder
from smart.audit.syslog import forwarding_logger


def _rows(app):
    from sqlalchemy import select

    from smart.store.audit_log import AuditRecord
    with app.app_context():
        return app.extensions["smart_db"].sessionmaker().scalars(select(AuditRecord).order_by(AuditRecord.id)).all()


def test_a_full_queue_drops_and_counts(tmp_path):
    app = make_app(tmp_path, FACADE_AUDIT_QUEUE=2)
    held = app.extensions["smart_audit"]
    held._thread = object()  # a writer that never takes: the queue fills
    before = recorder.DROPPED._value.get()
    with app.app_context():
        results = [recorder.record("read", patient="P1", study="1.2.3") for _ in range(5)]
    assert results == [True, True, False, False, False]
    assert held.dropped == 3 and recorder.DROPPED._value.get() - before == 3
    held._thread = None
    assert held.flush() and len(_rows(app)) == 2


def test_frames_of_one_study_by_one_token_are_one_event_per_window(tmp_path):
    app = make_app(tmp_path, FACADE_AUDIT_WINDOW=0.3)
    with app.app_context():
        for _ in range(7):
            recorder.record("frames", jti="j1", study="1.2.3", patient="P1", client_id="viewer")
        recorder.record("frames", jti="j2", study="1.2.3", patient="P1", client_id="viewer")
        recorder.record("frames", jti="j1", study="1.2.3", patient="P1", outcome=4)
    time.sleep(0.8)  # the window ends: the writer writes the aggregates by itself
    deadline = time.time() + 5
    while len(_rows(app)) < 3 and time.time() < deadline:
        time.sleep(0.05)
    counts = sorted((r.resource["entity"][-2]["detail"][0]["valueString"], r.outcome) for r in _rows(app))
    assert counts == [("1", "0"), ("1", "4"), ("7", "0")]
    for row in _rows(app):
        validate(row.resource)
        assert row.resource["period"]["start"] <= row.resource["period"]["end"]


def test_close_writes_everything_queued_and_pending(tmp_path):
    app = make_app(tmp_path, FACADE_AUDIT_WINDOW=3600)
    with app.app_context():
        for n in range(300):
            recorder.record("read", patient=f"P{n}", client_id="c")
        recorder.record("frames", jti="j", study="1.2.3", patient="P1")
    recorder.close_all()
    rows = _rows(app)
    assert len(rows) == 301 and {r.patient for r in rows} >= {"P0", "P299"}


def test_every_kind_is_valid_r4b(tmp_path):
    for kind in events.EVENTS:
        item = {"kind": kind, "outcome": 0, "recorded": time.time(), "patient": "P1", "agent_patient": "P1",
                "client_id": "app", "who": "Patient/P1", "jti": "abc", "address": "127.0.0.1", "study": "1.2.3",
                "query": "patient=P1", "path": "/fhir/ImagingStudy", "description": "x"}
        validate(events.to_resource(item, "e1", "https://facade.example"))
    anonymous = events.to_resource({"kind": "login", "outcome": 4, "recorded": 0.0}, "e2", "https://f.example")
    assert validate(anonymous) and anonymous["agent"][0]["requestor"] is True


def test_syslog_forwarding_is_rfc5424_over_udp(tmp_path):
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(5)
    port = collector.getsockname()[1]
    app = make_app(tmp_path, FACADE_AUDIT_SYSLOG=f"udp://127.0.0.1:{port}")
    with app.app_context():
        recorder.record("read", patient="P1", study="1.2.3", client_id="viewer")
    assert app.extensions["smart_audit"].flush()
    message = collector.recv(65536).decode()
    collector.close()
    # <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD SP MSG (RFC 5424 §6)
    header, _, body = message.partition(" - ")
    pri_version, stamp, _host, app_name, _pid, msg_id = header.split(" ")
    assert pri_version == "<86>1"  # authpriv (10) * 8 + informational (6)
    assert stamp.endswith("Z") and app_name == "imaging-fhir-facade" and msg_id == "AuditEvent"
    assert json.loads(body)["entity"][-1]["what"]["reference"] == "ImagingStudy/1.2.3"
    with pytest.raises(ValueError):
        forwarding_logger("syslog.example:514")


def test_export_ndjson_since_and_prune(tmp_path):
    app = make_app(tmp_path, FACADE_AUDIT_RETENTION_DAYS=30)
    old = time.time() - 40 * 86400
    with app.app_context():
        recorder.record("read", patient="P1", recorded=old)
        recorder.record("read", patient="P2")
    assert app.extensions["smart_audit"].flush()
    runner = app.test_cli_runner()
    out = runner.invoke(args=["audit", "export"])
    assert out.exit_code == 0
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 2
    recent = runner.invoke(args=["audit", "export", "--since", time.strftime("%Y-%m-%d", time.gmtime())])
    assert [json.loads(l)["entity"][0]["what"]["reference"] for l in recent.stdout.splitlines() if l.startswith("{")] \
        == ["Patient/P2"]
    bad = runner.invoke(args=["audit", "export", "--since", "yesterday"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    pruned = runner.invoke(args=["audit", "prune"])
    assert pruned.exit_code == 0 and "1 events deleted" in pruned.output
    assert [r.patient for r in _rows(app)] == ["P2"]


def test_an_auditor_needs_an_access_list(tmp_path, monkeypatch):
    app = make_app(tmp_path)
    with app.app_context():
        recorder.record("read", patient="P1", study="1.2.3")
        recorder.record("read", patient="P2", study="1.2.4")
        recorder.record("token-issued", client_id="c")
    assert app.extensions["smart_audit"].flush()
    client = app.test_client()
    auditor = token(app, scope="system/AuditEvent.rs", patient=None)
    assert client.get("/fhir/AuditEvent", headers=bearer(auditor)).get_json()["total"] == 0  # no list: nothing
    from smart.admin.cli import add_client, grant_access
    with app.app_context():
        add_client("test-client", ["https://auditor.example/cb"], public=False, secret="s3cret-audit")
        grant_access(client_id="test-client", patients=["P2"])
    assert app.extensions["smart_audit"].flush()
    seen = client.get("/fhir/AuditEvent", headers=bearer(auditor)).get_json()
    assert sorted((e["resource"]["subtype"][0]["code"], e["resource"]["entity"][0]["what"]["reference"])
                  for e in seen["entry"]) == [("110136", "Patient/P2"), ("read", "Patient/P2")]
    assert client.get("/fhir/AuditEvent?patient=P1", headers=bearer(auditor)).status_code == 403
    with app.app_context():
        grant_access(client_id="test-client", all_patients=True)
    assert app.extensions["smart_audit"].flush()
    everything = client.get("/fhir/AuditEvent?_count=100", headers=bearer(auditor)).get_json()
    # the three above, the two access grants (P2, then all), and the auditor's own three reads
    assert everything["total"] == 8
    assert client.get("/fhir/AuditEvent?date=notadate", headers=bearer(auditor)).status_code == 400
    assert app.extensions["smart_audit"].flush()
    assert client.get("/fhir/AuditEvent?date=ge2000-01-01", headers=bearer(auditor)).get_json()["total"] == 10
    assert client.get("/fhir/AuditEvent?date=lt2000-01-01", headers=bearer(auditor)).get_json()["total"] == 0
    refused = client.get("/fhir/AuditEvent?outcome=4", headers=bearer(auditor)).get_json()
    assert refused["total"] == 2  # the 403 for P1 and the 400
