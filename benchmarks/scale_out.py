"""Benchmark: requests per second through nginx with one and with two facade instances (issue 13).

Run with one command from the repository root::

    .venv/bin/python benchmarks/scale_out.py [--seconds 15] [--connections 16]

It starts its own throwaway Orthanc with the demo study (``scripts/devpacs.py``), a throwaway
PostgreSQL (``scripts/devpg.py``), facade instances under ``gunicorn -c gunicorn.conf.py`` (the
production configuration: one worker per core, 16 threads) and Debian's nginx in front of them
(``scripts/scaleout.py``: round robin, keep-alive to the upstreams), all on loopback. The load
comes from ``wrk`` (Debian package ``wrk``, installed when missing) with a patient-scoped token:

- **FHIR search**: ``GET /fhir/ImagingStudy?patient=DEMO-0001`` (the demo study with its series
  and instances; the facade's QIDO-RS caches warm, as in production);
- **WADO-RS frame**: ``GET .../instances/{SOP}/frames/1`` as ``application/octet-stream``.

Measured in the same run, each for ``--seconds``, in ``--rounds`` interleaved rounds (medians
reported): one instance direct (no nginx: the baseline), one instance through nginx, two
instances through nginx (two nginx servers, one per setup; both instances run throughout). The machine's cores are
shared by Orthanc, PostgreSQL, nginx, the instances and wrk, so a second instance adds
processes, not CPU: the figures say what a second instance costs or gains here, not on two
hosts. No aim: the figures are reported. Everything it starts is stopped at the end.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import devpacs  # noqa: E402
import devpg  # noqa: E402
import samples  # noqa: E402
import scaleout  # noqa: E402

PATIENT = "DEMO-0001"


def ensure_wrk() -> str:
    """The wrk binary, installed from Debian's package when missing (as root or ``sudo -n``)."""
    found = shutil.which("wrk")
    if found:
        return found
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run(prefix + ["apt-get", "install", "-y", "--no-install-recommends", "wrk"], check=True,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    return shutil.which("wrk")


def wrk(binary: str, url: str, headers: dict, seconds: int, connections: int) -> dict:
    """Run wrk against *url*; requests per second, p50 / p99 latency (ms) and errors."""
    command = [binary, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def latency(percent: str) -> float:
        value, unit = re.search(rf"{percent}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {"rps": rps, "p50": latency("50"), "p99": latency("99"), "errors": errors}


def facade_env(pacs: str, database: str, public: str) -> dict:
    env = dict(os.environ, FACADE_PACS_URL=pacs, FACADE_DATABASE_URL=database, FACADE_PUBLIC_URL=public,
               FACADE_TRUSTED_PROXIES="1")
    env.pop("FACADE_WORKERS", None)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each measurement")
    parser.add_argument("--connections", type=int, default=16, help="wrk's concurrent connections")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    args = parser.parse_args(argv)
    binary = ensure_wrk()
    devpacs.ensure_installed()
    devpg.ensure_installed()
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    cleanup: list = []  # what to stop, in reverse order
    try:
        orthanc = devpacs.Orthanc(workdir / "orthanc").start()
        cleanup.append(orthanc.stop)
        summary = samples.load_samples(orthanc.url, pydicom_files=False)
        demo = summary["demo"]
        sop = demo["SOPInstanceUIDs"][0]
        series = summary["instances"][sop]["SeriesInstanceUID"]
        cluster = devpg.PostgreSQL()
        cleanup.append(cluster.destroy)
        cluster.start()
        nginx_port = scaleout.free_port()
        public = f"http://127.0.0.1:{nginx_port}"
        env = facade_env(orthanc.dicomweb_url, cluster.url, public)
        subprocess.run([sys.executable, "-m", "flask", "--app", "app", "init-db"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        from app import create_app
        from fhir_facade import config
        from smart.tokens.jwt import issue_access_token
        with create_app(config.from_environ(env)).app_context():
            token, _ = issue_access_token("bench", "bench", "patient/ImagingStudy.rs", context={"patient": PATIENT},
                                          lifetime=3600)
        targets = {
            "FHIR search": ("/fhir/ImagingStudy?patient=" + PATIENT, {"Authorization": f"Bearer {token}"}),
            "WADO-RS frame": (f"/dicomweb/studies/{demo['StudyInstanceUID']}/series/{series}/instances/{sop}/frames/1",
                              {"Authorization": f"Bearer {token}",
                               "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}),
        }
        instances = [scaleout.Instance(env, workdir / f"instance-{n}") for n in (1, 2)]
        cleanup += [instance.stop for instance in instances]
        for instance in instances:
            instance.start()
        one = scaleout.Nginx([instances[0].address], port=nginx_port)
        cleanup.append(one.stop)
        two = scaleout.Nginx([i.address for i in instances])
        cleanup.append(two.stop)
        one.start(), two.start()
        setups = {"1 instance, direct": f"http://{instances[0].address}", "1 instance, nginx": one.url,
                  "2 instances, nginx": two.url}
        results: dict = {}
        for round_number in range(args.rounds):
            # Interleaved rounds, each in another order, so the drift of a shared machine
            # falls on every setup alike; the median of the rounds is reported.
            order = list(setups.items())
            order = order[round_number % len(order):] + order[:round_number % len(order)]
            for label, base in order:
                for name, (path, headers) in targets.items():
                    wrk(binary, base + path, headers, 2, args.connections)  # warm caches and pools
                    result = wrk(binary, base + path, headers, args.seconds, args.connections)
                    results.setdefault((label, name), []).append(result)
                    print(f"round {round_number + 1}: {label:20} {name:14} {result['rps']:8.1f} req/s  "
                          f"errors {result['errors']}", flush=True)
        print()
        for (label, name), runs in results.items():
            print(f"{label:20} {name:14} median {statistics.median(r['rps'] for r in runs):8.1f} req/s  "
                  f"p50 {statistics.median(r['p50'] for r in runs):6.1f} ms  "
                  f"p99 {statistics.median(r['p99'] for r in runs):6.1f} ms  "
                  f"errors {sum(r['errors'] for r in runs)}")
        print(f"\n{os.cpu_count()} CPUs, wrk -t2 -c{args.connections} -d{args.seconds}s x {args.rounds} rounds; "
              "gunicorn.conf.py defaults (workers = CPUs, 16 threads) per instance")
        return 0
    finally:
        for stop in reversed(cleanup):
            stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
