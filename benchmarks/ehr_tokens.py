"""Benchmark: what an EHR-issued token costs the facade per frame request, against its own token.

Run with one command from the repository root::

    .venv/bin/python benchmarks/ehr_tokens.py [--requests N]

It starts its own throwaway Orthanc (``scripts/devpacs.py``) and the EHR of the tests
(``tests/ehr/ehr.mjs``: oidc-provider, after ``scripts/bootstrap.sh`` installed it), both on free
loopback ports, stores one 10-frame instance, trusts the EHR (``smart add-issuer``), and gets a
JWT and an opaque token from the EHR by authorization code + PKCE, as an app would. Then, in the
same run and against the same Orthanc (issue 17, "Must show"):

(a) facade CPU per ``.../frames/1`` request (``application/octet-stream``) on a warm cache:
    the facade's own token, the EHR's JWT and the EHR's opaque token, in interleaved blocks;
    CPU is this process's user + kernel time (``time.process_time``: the facade's WSGI app
    driven by Flask's test client, which costs the same for every token; Orthanc is another
    process). Aim: an EHR token costs <= 0.1 ms more than an own token;
(b) introspection requests per opaque token per cache period (``SMART_EHR_TOKEN_CACHE_SECONDS``):
    several tokens, each used many times within one period. Aim: one.

Everything it starts is stopped at the end; nothing listens beyond loopback.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

import devpacs  # noqa: E402
import samples  # noqa: E402
from ehr_provider import FACADE_SECRET, MRN_SYSTEM, Ehr  # noqa: E402

PUBLIC = "http://127.0.0.1:8080"
MRN = "BENCH-EHR-1"
BLOCK = 100


def _cpu_per_request(client, path: str, headers: dict, count: int) -> float:
    """Microseconds of this process's CPU per request, over *count* requests."""
    started = time.process_time()
    for _ in range(count):
        response = client.get(path, headers=headers)
        data = response.data
        assert response.status_code == 200 and data, response.status_code
    return (time.process_time() - started) / count * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="frame requests per token kind")
    args = parser.parse_args(argv)
    logging.getLogger("facade.access").disabled = True  # one line per request, the same for every token

    from app import create_app
    from smart.admin.issuers import add_issuer
    from smart.admin.schema import init_db
    from smart.tokens import issuers
    from smart.tokens.jwt import issue_access_token

    devpacs.ensure_installed()
    with tempfile.TemporaryDirectory(prefix="ehr-bench-") as tmp, devpacs.Orthanc(Path(tmp) / "orthanc") as pacs:
        ds = samples.make_instance(PatientID=MRN, NumberOfFrames=10, Rows=64, Columns=64, Modality="OT")
        devpacs.store_file(pacs.url, devpacs.to_part10(ds))
        path = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}/frames/1")
        app = create_app({"TESTING": True, "FACADE_DATABASE_URL": f"sqlite:///{tmp}/facade.db",
                          "FACADE_PACS_URL": pacs.dicomweb_url, "FACADE_PUBLIC_URL": PUBLIC,
                          "SMART_EHR_TOKEN_CACHE_SECONDS": 600.0})
        ehr = Ehr(PUBLIC + "/fhir", {"alice": {"id": "ehr-alice", "mrn": MRN}}).start()
        try:
            with app.app_context():
                init_db()
                add_issuer(ehr.url, MRN_SYSTEM, fhir_base=ehr.url + "/fhir", introspection_client_id="facade",
                           introspection_secret=FACADE_SECRET)
                own, _ = issue_access_token("bench", "bench", "patient/ImagingStudy.rs", context={"patient": MRN})
            kinds = {"own token": own, "EHR JWT": ehr.token("imaging-app"),
                     "EHR opaque": ehr.token("imaging-app-opaque")}
            client = app.test_client()
            headers = {name: {"Authorization": f"Bearer {value}", "Accept": "application/octet-stream"}
                       for name, value in kinds.items()}
            for name in kinds:  # warm: verdicts, patient mapping, PACS look-ups, connections
                _cpu_per_request(client, path, headers[name], 50)
            samples_us: dict[str, list[float]] = {name: [] for name in kinds}
            for _ in range(max(args.requests // BLOCK, 1)):
                for name in kinds:
                    samples_us[name].append(_cpu_per_request(client, path, headers[name], BLOCK))
            print(f"(a) facade CPU per frame request, warm, {args.requests} requests per kind "
                  f"in interleaved blocks of {BLOCK} (median of blocks, mean):")
            base = statistics.median(samples_us["own token"])
            for name, values in samples_us.items():
                median = statistics.median(values)
                print(f"    {name:11s} {median:8.1f} us  mean {statistics.mean(values):8.1f} us  "
                      f"added vs own {median - base:+7.1f} us")

            with app.app_context():
                before = issuers.state().introspections
            tokens = [ehr.token("imaging-app-opaque") for _ in range(5)]
            uses = 200
            for value in tokens:
                for _ in range(uses):
                    response = client.get(path, headers={"Authorization": f"Bearer {value}",
                                                         "Accept": "application/octet-stream"})
                    assert response.status_code == 200
            with app.app_context():
                calls = issuers.state().introspections - before
            print(f"(b) introspection requests: {calls} for {len(tokens)} opaque tokens used {uses} times each "
                  f"within one cache period = {calls / len(tokens):.2f} per token per period")
        finally:
            ehr.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
