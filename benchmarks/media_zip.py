"""Benchmark: a study as a DICOM-media ZIP vs its multipart WADO-RS retrieval, both through the
facade under gunicorn, in the same run (issue 15 "Must show").

Run from the repository root::

    .venv/bin/python benchmarks/media_zip.py [--repeat N]

It starts its own throwaway Orthanc and the facade under gunicorn on free loopback ports, stores
the 300-slice CT study of ``benchmarks/dicomweb_proxy.py`` (512x512, 16 bits, ~150 MB) and
measures, alternating, ``--repeat`` whole-study retrievals each way:

(a) throughput of ``Accept: application/zip`` over that of
    ``multipart/related; type="application/dicom"; transfer-syntax=*``; aim >= 0.8;
(b) resident memory of the facade (master and workers, from /proc) sampled every 20 ms while
    the ZIPs stream; aim growth <= 64 MB over the value before the first ZIP.

It also reports the CPU each party spends per request, each way (Orthanc and the facade from
/proc, the benchmark's client from its thread's CPU time), and the median of the ratios of each
back-to-back pair. On two shared cores the three parties compete for CPU, so the throughput ratio
follows the ratio of their summed CPU, and moves with whatever else runs.

One ZIP is checked outside the timings: its DICOMDIR (pydicom FileSet) lists the 300 instances
and each member equals the multipart part of the same instance, byte for byte.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dicomweb_proxy as bench  # noqa: E402  (its study, its gunicorn and HTTP helpers)

ZIP = "application/zip"
AIMS = {"a": 0.8, "b": 64.0}


def _check_zip(facade: bench.Target, multipart: bench.Target, study: bench.Study) -> str:
    import pydicom
    from pydicom.fileset import FileSet

    path = f"studies/{study.study_uid}"
    zipped, parts = [], []
    conn = facade.connect()
    status, _, _ = facade.get(conn, path, ZIP, sink=zipped)
    _, _, content_type = multipart.get(conn, path, bench.STUDY_ACCEPT, sink=parts)
    conn.close()
    if status != 200:
        return f"ZIP status {status}"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(zipped)))
    by_hash = {hashlib.sha256(p).hexdigest() for p in bench.part_bodies(b"".join(parts), content_type)}
    with tempfile.TemporaryDirectory() as folder:
        archive.extractall(folder)
        listed = list(FileSet(pydicom.dcmread(Path(folder) / "DICOMDIR")))
    members = {hashlib.sha256(archive.read(i.FileID.replace("\\", "/"))).hexdigest() for i in listed}
    ok = len(listed) == bench.SLICES and members == by_hash
    return f"DICOMDIR lists {len(listed)} instances; members byte-identical to the multipart parts: {ok}"


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (from /proc/PID/stat)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-zip-") as tmp:
        workdir = Path(tmp)
        bench.devpacs.ensure_installed()
        with bench.devpacs.Orthanc(workdir / "pacs") as orthanc:
            return _run(args, workdir, orthanc)


def _run(args, workdir: Path, orthanc) -> int:
    facade = None
    try:
        study = bench.Study()
        bench.store(orthanc.url, study)
        facade = bench.Facade(workdir, orthanc.dicomweb_url)
        token = facade.init_db_and_token()
        facade.start()
        target = bench.Target("facade", facade.url + "/dicomweb", {"Authorization": f"Bearer {token}"})
        print(_check_zip(target, target, study), flush=True)
        path = f"studies/{study.study_uid}"
        speeds: dict[str, list[float]] = {"multipart": [], "zip": []}
        parties = ("pacs", "facade", "client")
        cpu: dict[str, dict[str, list[float]]] = {name: {party: [] for party in parties} for name in speeds}
        samples: list[float] = []
        baseline = facade.rss_mb()
        zipping = threading.Event()
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                if zipping.is_set():
                    samples.append(facade.rss_mb())
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for _ in range(args.repeat):
            for name, accept in (("multipart", bench.STUDY_ACCEPT), ("zip", ZIP)):
                conn = target.connect()
                if name == "zip":
                    zipping.set()
                pids = {"pacs": [orthanc.process.pid], "facade": facade.pids()}
                before = {party: _cpu_seconds(p) for party, p in pids.items()} | {"client": time.thread_time()}
                started = time.perf_counter()
                status, size, _ = target.get(conn, path, accept)
                elapsed = time.perf_counter() - started
                after = {party: _cpu_seconds(p) for party, p in pids.items()} | {"client": time.thread_time()}
                for party in parties:
                    cpu[name][party].append(after[party] - before[party])
                zipping.clear()
                conn.close()
                if status != 200:
                    raise RuntimeError(f"{name}: status {status}")
                speeds[name].append(size / elapsed / 1e6)
        done.set()
        sampler.join()
        multipart, zipped = statistics.median(speeds["multipart"]), statistics.median(speeds["zip"])
        ratio = zipped / multipart
        growth = max(samples, default=baseline) - baseline
        print(f"(a) whole study, median of {args.repeat}: multipart {multipart:.0f} MB/s, ZIP {zipped:.0f} MB/s, "
              f"ratio {ratio:.2f} (aim >= {AIMS['a']}: {'met' if ratio >= AIMS['a'] else 'NOT met'})")
        for name, spent in cpu.items():
            print(f"    {name}: CPU per request (s), median [all]: " + "; ".join(
                f"{party} {statistics.median(v):.3f} {[round(x, 2) for x in v]}" for party, v in spent.items()))
        totals = {name: sum(statistics.median(v) for v in spent.values()) for name, spent in cpu.items()}
        print(f"    CPU of the three parties per request (medians summed): multipart {totals['multipart']:.3f} s, "
              f"ZIP {totals['zip']:.3f} s, ratio {totals['multipart'] / totals['zip']:.2f}; paired throughput "
              f"ratios, median: {statistics.median(z / m for z, m in zip(speeds['zip'], speeds['multipart'])):.2f}")
        print(f"(b) facade RSS {baseline:.0f} MB before, at most {baseline + growth:.0f} MB while zipping: "
              f"growth {growth:.1f} MB (aim <= {AIMS['b']:.0f}: {'met' if growth <= AIMS['b'] else 'NOT met'})")
        return 0 if ratio >= AIMS["a"] and growth <= AIMS["b"] else 1
    finally:
        if facade is not None:
            facade.stop()


if __name__ == "__main__":
    sys.exit(main())
