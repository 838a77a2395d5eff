"""Benchmark: the DICOMweb proxy under its production server (gunicorn) vs Orthanc direct.

Run with one command from the repository root::

    .venv/bin/python benchmarks/dicomweb_proxy.py [--quick]

It starts its own throwaway Orthanc (``scripts/devpacs.py``) and the facade under
``gunicorn -c gunicorn.conf.py "app:create_app()"``, both on free loopback ports, stores one
300-slice CT study (512x512, 16 bits, Explicit VR Little Endian, ~150 MB), issues a
patient-scoped access token (``patient/ImagingStudy.rs``) and measures, in the same run and
against the same Orthanc, facade vs direct (issue 5, "Must show"):

(a) whole-study WADO-RS (``multipart/related; type="application/dicom"; transfer-syntax=*``),
    median throughput of ``--repeat`` retrievals each way, alternating; aim facade/direct
    >= 0.95. Also the median of the ratios of each back-to-back pair, which the drift of a
    shared machine disturbs less. The part bodies of one retrieval each way are compared
    byte for byte (outside the timings);
(b) 200 single-frame requests (``.../frames/1``, ``application/octet-stream``) in sequence on
    one keep-alive connection, facade and direct interleaved; added p50 latency per request
    (token check and patient check included), aim <= 2 ms. Measured twice: "cold" is the first
    request for each instance (the facade looks the instance up on the PACS), "warm" repeats
    the same 200 requests;
(c) 32 concurrent clients fetching frames for 30 s each way (10 s with ``--quick``); aim zero
    errors; requests per second both ways;
(d) resident memory of the facade (sum over the gunicorn master and workers, from /proc)
    while a slow-ish client streams ~1 GB (the study 7 times); aim growth <= 64 MB.

For (a) and (b) it also reports the CPU time (user + kernel, from /proc) that the PACS, the
facade and the benchmark's client spend per request, direct and through the facade: on two
shared cores the timings move with whatever else runs, and these show what each party costs.

(a) and (b) are measured a second time with the PACS on a CPU of its own (Linux CPU
affinity: Orthanc on the first CPU, the facade and the benchmark's clients on the others),
a model of the PACS on its own host, where the facade does not take CPU time from it. The
aims are judged on the first pass, where all three share every CPU.

With ``--audit`` it measures only the cost of the audit trail (issue 16): two facades on the
same Orthanc, ``FACADE_AUDIT=0`` and ``1``, their CPU per whole study and per frame (each
facade's processes over the phase, the audit writer included, per request), then the 32
concurrent clients on the audited one and its ``facade_audit_events_dropped_total`` (aim 0);
aim: CPU on/off within 5 %.

Everything it starts is stopped at the end; nothing listens beyond loopback.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import devpacs  # noqa: E402
import samples  # noqa: E402
from pydicom.uid import CTImageStorage, generate_uid  # noqa: E402

PATIENT_ID = "BENCH-DW-0001"
SLICES, ROWS, COLUMNS = 300, 512, 512
FRAME_BYTES = ROWS * COLUMNS * 2
STUDY_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
FRAME_REQUESTS = 200
CLIENTS = 32
STREAM_REPEATS = 7
READ_SIZE = 1024 * 1024
#: Slow-ish client of (d): reads this many bytes, then sleeps SLOW_PAUSE seconds.
SLOW_READ, SLOW_PAUSE = 256 * 1024, 0.002
AIMS = {"a": 0.95, "b": 2.0, "d": 64.0}
T = TypeVar("T")


# --- data ---------------------------------------------------------------------------------

class Study:
    """UIDs of the benchmark study (SOP Instance UIDs in InstanceNumber order)."""

    def __init__(self) -> None:
        self.study_uid = generate_uid(entropy_srcs=["bench-dicomweb", "study"])
        self.series_uid = generate_uid(entropy_srcs=["bench-dicomweb", "series"])
        self.sop_uids = [generate_uid(entropy_srcs=["bench-dicomweb", "sop", str(i)]) for i in range(SLICES)]

    def frame_path(self, index: int) -> str:
        sop = self.sop_uids[index % SLICES]
        return f"studies/{self.study_uid}/series/{self.series_uid}/instances/{sop}/frames/1"


def _slice(study: Study, index: int) -> bytes:
    ds = samples.make_instance(
        PatientID=PATIENT_ID, PatientName="Bench^DICOMweb", Modality="CT", SOPClassUID=CTImageStorage,
        StudyInstanceUID=study.study_uid, SeriesInstanceUID=study.series_uid,
        SOPInstanceUID=study.sop_uids[index], InstanceNumber=index + 1, Rows=ROWS, Columns=COLUMNS,
        BitsStored=12, HighBit=11, ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], SliceThickness=1.0,
        ImagePositionPatient=[0.0, 0.0, float(index)], PixelSpacing=[0.7, 0.7],
        StudyDescription="DICOMweb proxy benchmark", PixelData=os.urandom(FRAME_BYTES))
    return devpacs.to_part10(ds)


def store(orthanc_url: str, study: Study) -> None:
    """Store the 300 slices through Orthanc's REST API (``POST /instances``)."""
    import requests

    started = time.perf_counter()
    with requests.Session() as session, ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda i: devpacs.store_file(orthanc_url, _slice(study, i), session=session),
                                range(SLICES)))
    if any(answer is None for answer in answers):
        raise RuntimeError("Orthanc refused a benchmark slice")
    print(f"stored {SLICES} slices ({SLICES * FRAME_BYTES / 1e6:.0f} MB of pixel data) "
          f"in {time.perf_counter() - started:.1f} s", flush=True)


# --- HTTP ---------------------------------------------------------------------------------

class Target:
    """One side of the comparison: where its DICOMweb base is and what headers it needs."""

    def __init__(self, name: str, base_url: str, headers: dict[str, str] | None = None):
        parts = urlsplit(base_url)
        self.name = name
        self.host, self.port = parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.headers = headers or {}

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=60)

    def get(self, conn: http.client.HTTPConnection, path: str, accept: str, sink=None,
            pause: float = 0.0, read_size: int = READ_SIZE) -> tuple[int, int, str]:
        """GET *path* on *conn*; read the whole body (into *sink* when given). Return
        (status, body bytes, Content-Type)."""
        conn.request("GET", f"{self.prefix}/{path}", headers={"Accept": accept, **self.headers})
        response = conn.getresponse()
        buffer = bytearray(read_size)
        view = memoryview(buffer)
        total = 0
        while True:
            n = response.readinto(buffer)
            if not n:
                break
            total += n
            if sink is not None:
                sink.append(bytes(view[:n]))
            if pause:
                time.sleep(pause)
        return response.status, total, response.getheader("Content-Type", "")


def part_bodies(body: bytes, content_type: str) -> list[bytes]:
    """The part bodies of a multipart/related body (RFC 2046 §5.1), for the byte check."""
    boundary = None
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        raise ValueError(f"no boundary in {content_type!r}")
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary.encode())
    parts = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        parts.append(piece[piece.index(b"\r\n\r\n") + 4:])
    return parts


# --- the facade under gunicorn ------------------------------------------------------------

class Facade:
    """The facade started as in production: ``gunicorn -c gunicorn.conf.py "app:create_app()"``."""

    def __init__(self, workdir: Path, pacs_dicomweb: str, **extra_env: str):
        self.port = devpacs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, FACADE_PACS_URL=pacs_dicomweb, FACADE_PUBLIC_URL=self.url,
                        FACADE_HOST="127.0.0.1", FACADE_PORT=str(self.port),
                        FACADE_DATABASE_URL=f"sqlite:///{workdir}/facade.db", **extra_env)
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each instance its own (gunicorn.conf.py)
        self.log_path = workdir / "gunicorn.log"
        self.process: subprocess.Popen | None = None

    def init_db_and_token(self) -> str:
        """``flask --app app init-db`` on the server's database, then a patient-scoped token."""
        subprocess.run([sys.executable, "-m", "flask", "--app", "app", "init-db"], cwd=ROOT, env=self.env,
                       check=True, stdout=subprocess.DEVNULL)
        from app import create_app
        from fhir_facade import config
        from smart.tokens.jwt import issue_access_token

        app = create_app(config.from_environ(self.env))
        with app.app_context():
            token, _ = issue_access_token("bench-dicomweb", "bench", "patient/ImagingStudy.rs",
                                          context={"patient": PATIENT_ID})
        return token

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/fhir/metadata")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within 30 s:\n{self.log_tail()}")

    def pids(self) -> list[int]:
        """The gunicorn master and its workers."""
        master = self.process.pid
        pids = [master]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    pids.append(int(entry))
        return pids

    def rss_mb(self) -> float:
        """Resident set size (VmRSS) summed over master and workers, in MB."""
        total_kb = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
            except OSError:
                pass
        return total_kb / 1024

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # graceful: the master stops its workers
        try:
            process.wait(timeout=35)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the session it was started in
            process.wait()

    def warnings(self, limit: int = 5) -> list[str]:
        """Distinct WARNING/ERROR lines of the facade's log (timestamps and pids cut)."""
        seen: list[str] = []
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return seen
        for line in text.splitlines():
            if "WARNING" in line or "ERROR" in line:
                line = line.split("] ", 2)[-1]
                if line not in seen and len(seen) < limit:
                    seen.append("log: " + line)
        return seen

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# --- measurements -------------------------------------------------------------------------

def _cpu_ms(pid: int) -> float:
    """User + kernel CPU time of process *pid*, all its threads, in ms (/proc/<pid>/stat, clock ticks)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time each party spends per request, by side (direct or through the facade).

    The PACS and the facade are read from /proc before and after each request (outside its
    timing), the benchmark's own client from ``time.process_time``. Requests run one at a
    time, so what a process spent in between belongs to that request. /proc counts in clock
    ticks (10 ms), so one frame request reads 0 or 10 ms; summed over many, the mean holds.
    """

    PARTIES = ("pacs", "facade", "client")

    def __init__(self, pacs_pid: int, facade_pids: list[int]):
        self.pids = {"pacs": [pacs_pid], "facade": facade_pids}
        self.spent = {side: dict.fromkeys(self.PARTIES, 0.0) for side in ("direct", "facade")}
        self.requests = {"direct": 0, "facade": 0}

    def _now(self) -> dict[str, float]:
        now = {party: sum(_cpu_ms(pid) for pid in pids) for party, pids in self.pids.items()}
        now["client"] = time.process_time() * 1000
        return now

    def measure(self, side: str, request: Callable[[], T]) -> T:
        """Run *request* (one request on *side*) and add what each party spent on it."""
        before = self._now()
        result = request()
        after = self._now()
        for party in self.PARTIES:
            self.spent[side][party] += after[party] - before[party]
        self.requests[side] += 1
        return result

    def per_request(self) -> dict[str, dict[str, float]]:
        """Mean CPU ms per request: ``{side: {party: ms}}``."""
        return {side: {party: spent / max(self.requests[side], 1) for party, spent in parties.items()}
                for side, parties in self.spent.items()}


def whole_study(direct: Target, facade: Target, study: Study, repeat: int,
                meter: CpuMeter | None = None) -> dict:
    """(a) Whole-study retrieval, alternating sides; median MB/s each way."""
    path = f"studies/{study.study_uid}"
    # Byte check (untimed) and warm-up: same part bodies both ways.
    bodies = {}
    for target in (direct, facade):
        conn, sink = target.connect(), []
        status, size, content_type = target.get(conn, path, STUDY_ACCEPT, sink=sink)
        conn.close()
        if status != 200:
            raise RuntimeError(f"{target.name}: whole study answered {status}")
        bodies[target.name] = [hashlib.sha256(p).digest() for p in part_bodies(b"".join(sink), content_type)]
    if len(bodies["direct"]) != SLICES or bodies["direct"] != bodies["facade"]:
        raise RuntimeError("the facade's part bodies differ from Orthanc's")
    speeds: dict[str, list[float]] = {"direct": [], "facade": []}
    sizes = {}
    for i in range(repeat):
        for target in ((direct, facade) if i % 2 == 0 else (facade, direct)):
            conn = target.connect()

            def timed(target=target, conn=conn):
                started = time.perf_counter()
                status, size, _ = target.get(conn, path, STUDY_ACCEPT)
                return status, size, time.perf_counter() - started

            status, size, elapsed = meter.measure(target.name, timed) if meter else timed()
            conn.close()
            if status != 200:
                raise RuntimeError(f"{target.name}: whole study answered {status}")
            sizes[target.name] = size
            speeds[target.name].append(size / elapsed / 1e6)
    result = {name: statistics.median(values) for name, values in speeds.items()}
    result["ratio"] = result["facade"] / result["direct"]
    result["paired"] = statistics.median(f / d for d, f in zip(speeds["direct"], speeds["facade"]))
    result["size_mb"] = sizes["facade"] / 1e6
    result["runs"] = speeds
    result["cpu"] = meter.per_request() if meter else None
    return result


def _set_affinity(pids: list[int], cpus: set[int]) -> None:
    """Pin every thread of *pids* to *cpus* (threads started later inherit it)."""
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass


class PacsOnItsOwnCpu:
    """Context: Orthanc on the first CPU, the facade and this process on the others; undone after."""

    def __init__(self, pacs_pid: int, facade: Facade):
        self.pacs_pid, self.facade = pacs_pid, facade
        self.cpus = sorted(os.sched_getaffinity(0))

    @property
    def possible(self) -> bool:
        return len(self.cpus) >= 2

    def __enter__(self):
        _set_affinity([self.pacs_pid], {self.cpus[0]})
        _set_affinity(self.facade.pids() + [os.getpid()], set(self.cpus[1:]))
        return self

    def __exit__(self, *exc) -> None:
        _set_affinity([self.pacs_pid] + self.facade.pids() + [os.getpid()], set(self.cpus))


def _frame_once(target: Target, conn, index: int, study: Study) -> float:
    started = time.perf_counter()
    status, size, _ = target.get(conn, study.frame_path(index), FRAME_ACCEPT, read_size=FRAME_BYTES + 4096)
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200 or size < FRAME_BYTES:
        raise RuntimeError(f"{target.name}: frame {index} answered {status} ({size} bytes)")
    return elapsed


def single_frames(direct: Target, facade: Target, study: Study,
                  meters: Callable[[], CpuMeter] | None = None) -> dict:
    """(b) FRAME_REQUESTS frames in sequence, facade and direct interleaved (who goes first
    alternates), each side on its own keep-alive connection; two passes (cold, warm)."""
    conns = {"direct": direct.connect(), "facade": facade.connect()}
    _frame_once(direct, conns["direct"], SLICES - 1, study)  # open both connections
    _frame_once(facade, conns["facade"], SLICES - 1, study)
    result = {}
    for phase in ("cold", "warm"):
        times: dict[str, list[float]] = {"direct": [], "facade": []}
        meter = meters() if meters else None
        for i in range(FRAME_REQUESTS):
            for target in ((direct, facade) if i % 2 == 0 else (facade, direct)):
                once = lambda target=target, i=i: _frame_once(target, conns[target.name], i, study)  # noqa: E731
                times[target.name].append(meter.measure(target.name, once) if meter else once())
        d, f = statistics.median(times["direct"]), statistics.median(times["facade"])
        paired = statistics.median(b - a for a, b in zip(times["direct"], times["facade"]))
        result[phase] = {"direct": d, "facade": f, "added": f - d, "paired": paired,
                         "p90_direct": statistics.quantiles(times["direct"], n=10)[-1],
                         "p90_facade": statistics.quantiles(times["facade"], n=10)[-1],
                         "cpu": meter.per_request() if meter else None}
    for conn in conns.values():
        conn.close()
    return result


def concurrent_frames(target: Target, study: Study, seconds: float) -> dict:
    """(c) CLIENTS threads, each on its own keep-alive connection, fetching frames until the deadline."""
    deadline = time.monotonic() + seconds
    counts = [0] * CLIENTS
    errors = [0] * CLIENTS
    messages: list[str] = []

    def client(n: int) -> None:
        conn = target.connect()
        index = n
        while time.monotonic() < deadline:
            try:
                status, size, _ = target.get(conn, study.frame_path(index), FRAME_ACCEPT,
                                             read_size=FRAME_BYTES + 4096)
                if status != 200 or size < FRAME_BYTES:
                    raise RuntimeError(f"HTTP {status}, {size} bytes")
                counts[n] += 1
            except (OSError, http.client.HTTPException, RuntimeError) as exc:
                errors[n] += 1
                if len(messages) < 5:
                    messages.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = target.connect()
            index += CLIENTS
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"requests": sum(counts), "errors": sum(errors), "rps": sum(counts) / elapsed, "messages": messages}


def memory_while_streaming(facade_target: Target, facade: Facade, study: Study) -> dict:
    """(d) Facade RSS sampled every 50 ms while a slow-ish client reads the study STREAM_REPEATS times."""
    path = f"studies/{study.study_uid}"
    baseline = facade.rss_mb()
    samples_mb = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            samples_mb.append(facade.rss_mb())

    sampler = threading.Thread(target=sample)
    sampler.start()
    streamed = 0
    started = time.perf_counter()
    try:
        for _ in range(STREAM_REPEATS):
            conn = facade_target.connect()
            status, size, _ = facade_target.get(conn, path, STUDY_ACCEPT, pause=SLOW_PAUSE, read_size=SLOW_READ)
            conn.close()
            if status != 200:
                raise RuntimeError(f"facade: whole study answered {status}")
            streamed += size
    finally:
        done.set()
        sampler.join()
    elapsed = time.perf_counter() - started
    return {"baseline": baseline, "peak": max(samples_mb), "end": facade.rss_mb(),
            "growth": max(samples_mb) - baseline, "streamed_gb": streamed / 1e9, "mbps": streamed / elapsed / 1e6}


# --- report -------------------------------------------------------------------------------

def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def _rows_a_b(a: dict, b: dict, label: str, judged: bool, phases=("cold", "warm")) -> list[tuple]:
    rows = [(f"(a) whole study {a['size_mb']:.0f} MB, MB/s (median){label}", f"{a['direct']:.0f}",
             f"{a['facade']:.0f}", f"ratio {a['ratio']:.3f} (paired {a['paired']:.3f})", f">= {AIMS['a']}",
             _verdict(a["ratio"] >= AIMS["a"]) if judged else "")]
    for phase in phases:
        x = b[phase]
        rows.append((f"(b) frame p50 ms, {phase} ({FRAME_REQUESTS} req){label}", f"{x['direct']:.2f}",
                     f"{x['facade']:.2f}", f"+{x['added']:.2f} ms (paired {x['paired']:+.2f})", f"<= {AIMS['b']} ms",
                     _verdict(x["added"] <= AIMS["b"]) if judged else ""))
        rows.append((f"    frame p90 ms, {phase}{label}", f"{x['p90_direct']:.2f}", f"{x['p90_facade']:.2f}",
                     f"+{x['p90_facade'] - x['p90_direct']:.2f} ms", "", ""))
    return rows


def _cpu_lines(a: dict, b: dict, pinned: tuple[dict, dict] | None) -> str:
    """CPU ms per request of each party, direct and through the facade (user + kernel)."""
    lines = ["\nCPU ms per request (user + kernel):  direct: PACS / client  |  through the facade: PACS / facade / client"]
    figures = [("(a) whole study", a["cpu"], 0), ("(b) frame, cold", b["cold"]["cpu"], 2),
               ("(b) frame, warm", b["warm"]["cpu"], 2)]
    if pinned is not None:
        figures += [("(a) whole study, PACS on its own CPU", pinned[0]["cpu"], 0),
                    ("(b) frame, warm, PACS on its own CPU", pinned[1]["warm"]["cpu"], 2)]
    width = max(len(label) for label, _, _ in figures)
    for label, cpu, digits in figures:
        if cpu is None:
            continue
        d, f = cpu["direct"], cpu["facade"]
        lines.append(f"{label.ljust(width)}  direct: {d['pacs']:.{digits}f} / {d['client']:.{digits}f}  |  "
                     f"facade: {f['pacs']:.{digits}f} / {f['facade']:.{digits}f} / {f['client']:.{digits}f}")
    return "\n".join(lines)


def report(a: dict, b: dict, c: dict, d: dict, seconds: float, pinned: tuple[dict, dict] | None = None) -> bool:
    rows = [("figure", "direct", "facade", "facade vs direct", "aim", "")]
    rows += _rows_a_b(a, b, "", judged=True)
    if pinned is not None:
        # Only warm: the first pass has already filled the facade's instance look-ups.
        rows += _rows_a_b(*pinned, ", PACS on its own CPU", judged=False, phases=("warm",))
    rows.append((f"(c) {CLIENTS} clients x {seconds:.0f} s, req/s", f"{c['direct']['rps']:.1f}",
                 f"{c['facade']['rps']:.1f}", f"ratio {c['facade']['rps'] / c['direct']['rps']:.3f}", "", ""))
    rows.append(("    requests / errors", f"{c['direct']['requests']} / {c['direct']['errors']}",
                 f"{c['facade']['requests']} / {c['facade']['errors']}", "", "0 errors",
                 _verdict(c["facade"]["errors"] == 0 and c["direct"]["errors"] == 0)))
    rows.append((f"(d) RSS MB streaming {d['streamed_gb']:.2f} GB ({d['mbps']:.0f} MB/s)", "",
                 f"{d['baseline']:.0f} -> peak {d['peak']:.0f}", f"+{d['growth']:.1f} MB", f"<= {AIMS['d']:.0f} MB",
                 _verdict(d["growth"] <= AIMS["d"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * width for width in widths))
    for label, x in (("", a), (", PACS on its own CPU", pinned[0] if pinned else None)):
        if x is not None:
            print(f"\n(a) runs MB/s{label}: direct {[round(v) for v in x['runs']['direct']]}, "
                  f"facade {[round(v) for v in x['runs']['facade']]}", end="")
    print()
    print(_cpu_lines(a, b, pinned))
    for side in ("direct", "facade"):
        for message in c[side]["messages"]:
            print(f"(c) {side} error: {message}")
    return (a["ratio"] >= AIMS["a"] and b["cold"]["added"] <= AIMS["b"] and b["warm"]["added"] <= AIMS["b"]
            and c["facade"]["errors"] == 0 and d["growth"] <= AIMS["d"])


# --- auditing on vs off (issue 16) ----------------------------------------------------------

def _facade_cpu(facade: Facade) -> float:
    return sum(_cpu_ms(pid) for pid in facade.pids())


def _audit_metrics(facade: Facade) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", facade.port, timeout=10)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    conn.close()
    found = {}
    for line in body.splitlines():
        for name in ("facade_audit_events_dropped_total", "facade_audit_events_written_total"):
            if line.startswith(name + " "):
                found[name] = float(line.split()[1])
    return found


def audit_compare(workdir: Path, pacs, study: Study, repeat: int, seconds: float) -> bool:
    """Two facades on the same Orthanc, FACADE_AUDIT=0 and 1: facade CPU per whole study and per
    frame (each facade's own processes over the phase, writer thread included, divided by its
    requests; the sides alternate), then CLIENTS concurrent clients on the audited one and its
    dropped-events counter (aim: 0). Report table; aim: CPU within 5 %."""
    off = Facade(workdir / "audit-off", pacs.dicomweb_url, FACADE_AUDIT="0")
    on = Facade(workdir / "audit-on", pacs.dicomweb_url, FACADE_AUDIT="1")
    try:
        tokens = {f: f.init_db_and_token() for f in (off, on)}
        for facade in (off, on):
            facade.start()
        # whole_study / single_frames key their results by target name: "direct" is the baseline here.
        base = Target("direct", off.url + "/dicomweb", {"Authorization": f"Bearer {tokens[off]}"})
        audited = Target("facade", on.url + "/dicomweb", {"Authorization": f"Bearer {tokens[on]}"})
        rows = []
        for label, run, requests in (
                ("CPU ms per whole study", lambda: whole_study(base, audited, study, repeat), repeat + 1),
                ("CPU ms per frame", lambda: single_frames(base, audited, study), 2 * FRAME_REQUESTS + 1)):
            print(f"audit off vs on: {label} ...", flush=True)
            before = {f: _facade_cpu(f) for f in (off, on)}
            run()
            time.sleep(1.5)  # the writer's last batch belongs to this phase
            spent = {f: (_facade_cpu(f) - before[f]) / requests for f in (off, on)}
            rows.append((label, spent[off], spent[on]))
        print(f"audit on: {CLIENTS} concurrent clients, {seconds:.0f} s ...", flush=True)
        load = concurrent_frames(audited, study, seconds)
        time.sleep(1.5)
        counters = _audit_metrics(on)
    except BaseException:
        print(on.log_tail(), file=sys.stderr)
        raise
    finally:
        off.stop()
        on.stop()  # graceful: the audit queue and the frames being aggregated are written
    frames_recorded, studies_recorded = _recorded(on)
    frames_made, studies_made = 2 * FRAME_REQUESTS + 1 + load["requests"], repeat + 1
    print("\n| measure | FACADE_AUDIT=0 | FACADE_AUDIT=1 | on/off |\n| --- | --- | --- | --- |")
    within = True
    for label, a, b in rows:
        ratio = b / a if a else float("nan")
        within &= ratio <= 1.05
        print(f"| {label} | {a:.2f} | {b:.2f} | {ratio:.3f} |")
    dropped = counters.get("facade_audit_events_dropped_total", -1)
    print(f"| {CLIENTS}-client load, audited | {load['requests']} requests, {load['errors']} errors, "
          f"{load['rps']:.0f} req/s | events written {counters.get('facade_audit_events_written_total', 0):.0f}, "
          f"dropped {dropped:.0f} | |")
    print(f"| recorded after the graceful stop | | frame requests {frames_recorded} of {frames_made}, "
          f"whole studies {studies_recorded} of {studies_made} | |")
    complete = (frames_recorded, studies_recorded) == (frames_made, studies_made)
    return within and dropped == 0 and load["errors"] == 0 and complete


def _recorded(facade: Facade) -> tuple[int, int]:
    """Frame requests (the counts of aggregated events) and whole-study retrievals in *facade*'s audit table."""
    import json
    import sqlite3

    with sqlite3.connect(facade.workdir / "facade.db") as connection:
        rows = connection.execute("SELECT subtype, resource FROM facade_audit_event WHERE subtype LIKE 'wado-rs%'")
        frames = studies = 0
        for subtype, resource in rows:
            if subtype == "wado-rs":
                studies += 1
                continue
            for entity in json.loads(resource).get("entity", []):
                for detail in entity.get("detail", []):
                    frames += int(detail["valueString"])
    return frames, studies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s instead of 30 s for (c), 5 runs for (a)")
    parser.add_argument("--repeat", type=int, help="whole-study retrievals per side for (a) (default 11, quick 5)")
    parser.add_argument("--no-pin", action="store_true", help="skip the pass with the PACS on a CPU of its own")
    parser.add_argument("--audit", action="store_true", help="only compare two facades, FACADE_AUDIT=0 and 1: "
                        "CPU per whole study and per frame, and dropped audit events under the concurrent load")
    args = parser.parse_args(argv)
    repeat = args.repeat or (5 if args.quick else 11)
    seconds = 10.0 if args.quick else 30.0
    devpacs.ensure_installed()
    study = Study()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dicomweb-bench-") as tmp:
        workdir = Path(tmp)
        with devpacs.Orthanc(workdir / "pacs") as pacs:
            store(pacs.url, study)
            if args.audit:
                met = audit_compare(workdir, pacs, study, repeat, seconds)
                print(f"\ntotal {time.perf_counter() - began:.0f} s; audit aims met: {'yes' if met else 'no'}")
                return 0 if met else 1
            facade = Facade(workdir, pacs.dicomweb_url)
            try:
                token = facade.init_db_and_token()
                facade.start()
                print(f"facade under gunicorn at {facade.url} (log {facade.log_path.name}), "
                      f"Orthanc at {pacs.url}", flush=True)
                direct = Target("direct", pacs.dicomweb_url)
                through = Target("facade", facade.url + "/dicomweb", {"Authorization": f"Bearer {token}"})
                meter = lambda: CpuMeter(pacs.process.pid, facade.pids())  # noqa: E731
                print("(a) whole study ...", flush=True)
                a = whole_study(direct, through, study, repeat, meter())
                print("(b) single frames ...", flush=True)
                b = single_frames(direct, through, study, meter)
                pinned = None
                own_cpu = PacsOnItsOwnCpu(pacs.process.pid, facade)
                if not args.no_pin and own_cpu.possible:
                    print("(a), (b) again with the PACS on a CPU of its own ...", flush=True)
                    with own_cpu:
                        pinned = (whole_study(direct, through, study, repeat, meter()), single_frames(direct, through, study, meter))
                print(f"(c) {CLIENTS} concurrent clients, {seconds:.0f} s each way ...", flush=True)
                c = {"direct": concurrent_frames(direct, study, seconds),
                     "facade": concurrent_frames(through, study, seconds)}
                c["facade"]["messages"] += facade.warnings()
                print(f"(d) RSS while streaming {STREAM_REPEATS} x the study ...", flush=True)
                d = memory_while_streaming(through, facade, study)
            except BaseException:
                print(facade.log_tail(), file=sys.stderr)
                raise
            finally:
                facade.stop()
    met = report(a, b, c, d, seconds, pinned)
    print(f"\ntotal {time.perf_counter() - began:.0f} s; all aims met: {'yes' if met else 'no'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
