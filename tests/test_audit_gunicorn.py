"""The audit trail under the production server (gunicorn, two workers) and a real Orthanc: on
SIGTERM during load, every request answered has its event written (the queue and the frames
being aggregated are written at worker exit), and the log holds no token."""
from __future__ import annotations

import http.client
import json
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pydicom
import pytest

import devpacs
import samples
from test_operations_gunicorn import _environment, _start, _stop

pytestmark = pytest.mark.integration

PATIENT = "AUDIT-GUNICORN"
FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def _token(env: dict) -> str:
    from app import create_app
    from fhir_facade import config
    from smart.tokens.jwt import issue_access_token

    app = create_app(config.from_environ(env))
    with app.app_context():
        value, _ = issue_access_token("audit-load", "audit-load", "patient/ImagingStudy.rs", context={"patient": PATIENT})
    return value


def test_sigterm_during_load_loses_no_event(orthanc, tmp_path):
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    ds = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=study, SeriesInstanceUID=series,
                               NumberOfFrames=4, Rows=8, Columns=8, Modality="OT")
    devpacs.store_file(orthanc.url, devpacs.to_part10(ds))
    env = _environment(tmp_path, orthanc.dicomweb_url, FACADE_AUDIT_WINDOW="3600")
    token = _token(env)
    process, log_path = _start(env, tmp_path)
    port = int(env["FACADE_PORT"])
    paths = {"frames": f"/dicomweb/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}/frames/1",
             "metadata": f"/dicomweb/studies/{study}/metadata"}
    answered = {"frames": 0, "metadata": 0}
    lock, stop = threading.Lock(), threading.Event()

    def client(kind: str) -> None:
        while not stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
                conn.request("GET", paths[kind], headers={"Authorization": f"Bearer {token}", "Accept": FRAMES
                                                          if kind == "frames" else "application/dicom+json"})
                response = conn.getresponse()
                response.read()
                conn.close()
            except OSError:
                if process.poll() is not None:
                    return
                time.sleep(0.01)
                continue
            assert response.status == 200
            with lock:
                answered[kind] += 1

    threads = [threading.Thread(target=client, args=(kind,)) for kind in ("frames", "metadata") * 4]
    try:
        for thread in threads:
            thread.start()
        time.sleep(3)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        _stop(process)
    assert answered["frames"] > 10 and answered["metadata"] > 10
    database = Path(env["FACADE_DATABASE_URL"][len("sqlite:///"):])
    with sqlite3.connect(database) as connection:
        rows = [(subtype, json.loads(resource)) for subtype, resource in connection.execute(
            "SELECT subtype, resource FROM facade_audit_event")]
    frames = sum(int(e["detail"][0]["valueString"]) for subtype, r in rows if subtype == "wado-rs-frames"
                 for e in r["entity"] if "detail" in e)
    metadata = sum(1 for subtype, _ in rows if subtype == "wado-rs")
    assert (frames, metadata) == (answered["frames"], answered["metadata"])
    # Two workers, one window: at most one frames event per worker (each aggregates its own).
    assert 1 <= sum(1 for subtype, _ in rows if subtype == "wado-rs-frames") <= 2
    text = log_path.read_text(errors="replace")
    assert token not in text and token.split(".")[2] not in text
