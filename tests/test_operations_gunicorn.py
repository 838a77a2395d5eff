"""Issue 13 under the production server (gunicorn, gunicorn.conf.py) and a real Orthanc:

- one scrape of /metrics sees every worker (prometheus-client multiprocess mode, two workers);
- on SIGTERM an instance refuses new connections, finishes the study it is streaming to a slow
  client, byte for byte, and exits 0 (graceful shutdown);
- /readyz goes 503 at the first probe after the PACS stops, and 200 at the first after it is back.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

import devpacs
import samples
from multipart_parsers import parse_by_length

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PATIENT = "OPS-GRACEFUL"
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
HEALTHZ = ("facade_http_requests_total", (("method", "GET"), ("route", "/healthz"), ("status", "200")))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _get(port: int, path: str, **headers) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _start(env: dict, workdir: Path) -> tuple[subprocess.Popen, Path]:
    log_path = workdir / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited:\n{log_path.read_text()}")
        try:
            if _get(int(env["FACADE_PORT"]), "/healthz")[0] == 200:
                return process, log_path
        except OSError:
            pass
        time.sleep(0.2)
    _stop(process)
    pytest.fail(f"gunicorn did not answer:\n{log_path.read_text()}")


def _stop(process: subprocess.Popen) -> None:
    devpacs.stop_process(process, 40)  # past FACADE_GRACEFUL_TIMEOUT of the graceful-stop tests


def _environment(workdir: Path, pacs_url: str, **extra: str) -> dict:
    port = devpacs.free_port()
    env = dict(os.environ, FACADE_PACS_URL=pacs_url, FACADE_PUBLIC_URL=f"http://127.0.0.1:{port}",
               FACADE_HOST="127.0.0.1", FACADE_PORT=str(port), FACADE_DATABASE_URL=f"sqlite:///{workdir}/facade.db",
               FACADE_WORKERS="2", FACADE_THREADS="4", HOME=str(workdir / "home"))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # gunicorn.conf.py makes one unless the test names it
    env.update(extra)
    subprocess.run([sys.executable, "-m", "flask", "--app", "app", "init-db"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return env


def _scrape(port: int) -> dict:
    status, body = _get(port, "/metrics")
    assert status == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode()) for sample in family.samples}


def _per_worker(folder: Path, scratch: Path) -> dict[str, float]:
    """/healthz answers counted by each worker, read from its own file with the public collector."""
    counts = {}
    for path in folder.glob("counter_*.db"):
        alone = scratch / path.stem
        alone.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        values = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in registry.collect() for s in m.samples}
        counts[path.stem] = values.get(HEALTHZ, 0.0)
        shutil.rmtree(alone)
    return counts


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


def test_one_scrape_sees_every_worker(tmp_path):
    """Workers that answered /healthz are stopped (gunicorn starts others) and more requests are
    made: every scrape then reports the sum of every worker's file, gone ones included, which is
    more than any one worker counted. A gone worker's live gauge file is removed (child_exit).
    Files a previous run left in the folder are cleared at start."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_424242.db").write_bytes(b"left by a previous run")
    env = _environment(tmp_path, "http://127.0.0.1:9/dicom-web", PROMETHEUS_MULTIPROC_DIR=str(folder))
    process, log_path = _start(env, tmp_path)
    port = int(env["FACADE_PORT"])
    try:
        assert not (folder / "counter_424242.db").exists()
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(lambda _: _get(port, "/healthz")[0], range(40))) == {200}
            first = {name: count for name, count in _per_worker(folder, tmp_path / "scratch").items() if count}
            assert first
            for name in first:
                pid = int(name.split("_")[1])
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 20
                # child_exit drops the gone worker's live gauge file once the master reaps it.
                while not _gone(pid) or (folder / f"gauge_livesum_{pid}.db").exists():
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.1)
            # Until two workers have loaded the app (each makes its live gauge file then): a worker
            # stopped while it boots would miss the signal and hold the master's stop for its timeout.
            deadline = time.monotonic() + 30
            while len(list(folder.glob("gauge_livesum_*.db"))) < 2:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            assert set(pool.map(lambda _: _get(port, "/healthz")[0], range(40))) == {200}
        per_worker = {name: count for name, count in _per_worker(folder, tmp_path / "scratch").items() if count}
        assert len(per_worker) >= 2 and set(first) < set(per_worker)
        total = sum(per_worker.values())
        assert total >= 81
        for _ in range(6):  # scrapes land on either worker
            assert _scrape(port)[HEALTHZ] == total > max(per_worker.values())
    finally:
        _stop(process)
    assert process.returncode == 0, log_path.read_text()


@pytest.fixture(scope="module")
def big_study(orthanc):
    """A study of eight 512 x 512 x 16-bit instances (~4 MB) of its own patient: {SOPInstanceUID: sha256}."""
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    stored = {}
    for n in range(1, 9):
        ds = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=study, SeriesInstanceUID=series,
                                   InstanceNumber=n, Modality="OT", Rows=512, Columns=512)
        data = devpacs.to_part10(ds)
        assert devpacs.store_file(orthanc.url, data) is not None
        stored[str(ds.SOPInstanceUID)] = sha(data)
    return study, stored


class _SmallWindowConnection(http.client.HTTPConnection):
    """A client whose socket receive buffer is small, so the server cannot write ahead of a slow reader."""

    def connect(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.settimeout(self.timeout)
        sock.connect((self.host, self.port))
        self.sock = sock


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_finishes_the_stream_in_flight_refuses_new_connections_and_exits_0(orthanc, big_study, tmp_path):
    study, stored = big_study
    env = _environment(tmp_path, orthanc.dicomweb_url, FACADE_GRACEFUL_TIMEOUT="30")
    from app import create_app
    from fhir_facade import config
    from smart.tokens.jwt import issue_access_token
    with create_app(config.from_environ(env)).app_context():
        token, _ = issue_access_token("ops-test", "tester", "patient/ImagingStudy.rs", context={"patient": PATIENT})
    process, log_path = _start(env, tmp_path)
    port = int(env["FACADE_PORT"])
    started, result = threading.Event(), {}

    def read_slowly():
        conn = _SmallWindowConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", f"/dicomweb/studies/{study}", headers={"Authorization": f"Bearer {token}", "Accept": ACCEPT})
        response = conn.getresponse()
        body = bytearray()
        while chunk := response.read(32768):
            body += chunk
            if len(body) >= 256 * 1024:
                started.set()
            time.sleep(0.02)  # ~1.5 MB/s: about three seconds for the study
        result.update(status=response.status, content_type=response.getheader("Content-Type"), body=bytes(body))
        conn.close()

    reader = threading.Thread(target=read_slowly)
    try:
        reader.start()
        assert started.wait(30), log_path.read_text()
        assert _scrape(port)[("facade_active_streams", ())] == 1
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not _refused(port):
            assert time.monotonic() < deadline, "new connections still accepted after SIGTERM"
            time.sleep(0.05)
        assert reader.is_alive()  # refused while the study was still streaming
        reader.join(60)
        assert not reader.is_alive()
        assert process.wait(timeout=40) == 0, log_path.read_text()
    finally:
        _stop(process)
        reader.join(5)
    assert result["status"] == 200
    parts = parse_by_length(result["body"], result["content_type"])
    assert sorted(sha(data) for _, data in parts) == sorted(stored.values())


def test_readyz_follows_the_pacs_going_away_and_coming_back(tmp_path):
    """A throwaway Orthanc of its own (not the session's): stopped, the very next probe is 503
    naming the PACS; started again on the same port, the very next probe is 200."""
    from facade_helpers import make_app

    devpacs.ensure_installed()
    pacs = devpacs.Orthanc(tmp_path / "orthanc", http_port=devpacs.free_port())
    pacs.start()
    try:
        app = make_app(tmp_path / "facade", FACADE_PACS_URL=pacs.dicomweb_url, FACADE_READY_TIMEOUT=2.0)
        client = app.test_client()
        assert client.get("/readyz").status_code == 200
        pacs.stop()
        started = time.monotonic()
        down = client.get("/readyz")
        assert time.monotonic() - started < 2.5
        assert down.status_code == 503 and down.headers["Retry-After"] == "5"
        assert down.get_json() == {"status": "unavailable", "failed": ["pacs"]}
        assert client.get("/healthz").status_code == 200  # alive all the same
        pacs.start()
        up = client.get("/readyz")
        assert (up.status_code, up.get_json()) == (200, {"status": "ready"})
    finally:
        pacs.stop()
