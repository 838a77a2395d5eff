"""Benchmark: FHIR ``ImagingStudy?patient=`` through the facade vs a bare QIDO-RS study query.

Run with one command from the repository root::

    .venv/bin/python benchmarks/fhir_search.py

It starts its own throwaway Orthanc (``scripts/devpacs.py``), stores one patient with
20 studies x 4 series x 50 instances (no pixel data, so storing is quick), then times,
in the same run and against the same Orthanc:

- **bare**: ``GET {pacs}/dicom-web/studies?PatientID=P`` (QIDO-RS study level, PS3.18
  Section 10.6), the least a client could ask of the PACS for this patient;
- **cold**: ``GET /fhir/ImagingStudy?patient=P`` through a freshly created facade app
  (empty caches), with every series and instance of the 20 studies in the Bundle;
- **warm**: the same FHIR request again on the same app (caches filled);
- **cold _summary=true**: a fresh app asked for the summary (series, no instance lists);
- **warm, no query cache**: warm with ``FACADE_QUERY_CACHE_TTL=0``, so the study-level
  QIDO-RS query runs on every request and only series/instances come from the cache;
- **PACS floor**: what a cold search has to ask, asked of Orthanc directly with the same
  parallelism (the study query, the patient's series query, and each study's WADO-RS
  metadata, JSON parsed): the least any facade could take for a cold answer with instance
  lists from this PACS. "cold / floor" is the facade's own share.

Each figure is the median of ``--repeat`` runs; the ratios fhir/bare are printed. Aim
(issue 3): warm <= 1.2x, cold <= 3x. ``--pacs-url`` reuses an Orthanc that already holds
the data (stored again only when missing).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import devpacs  # noqa: E402
import samples  # noqa: E402
from pydicom.uid import CTImageStorage, generate_uid  # noqa: E402

PATIENT_ID = "BENCH-FHIR-0001"
STUDIES, SERIES, INSTANCES = 20, 4, 50
MODALITIES = ("CT", "PT", "MR", "SR")


def _datasets():
    """Yield the benchmark patient's instances (deterministic UIDs)."""
    for st in range(STUDIES):
        study_uid = generate_uid(entropy_srcs=["bench-fhir", str(st)])
        for se in range(SERIES):
            series_uid = generate_uid(entropy_srcs=["bench-fhir", str(st), str(se)])
            for inst in range(INSTANCES):
                yield samples.make_instance(
                    pixels=False, PatientID=PATIENT_ID, PatientName="Bench^Mark",
                    StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid,
                    SOPInstanceUID=generate_uid(entropy_srcs=["bench-fhir", str(st), str(se), str(inst)]),
                    SOPClassUID=CTImageStorage, StudyDate=f"2023{1 + st % 12:02d}{1 + st:02d}",
                    StudyTime="101500", AccessionNumber=f"BENCH{st:04d}", Modality=MODALITIES[se],
                    SeriesNumber=se + 1, InstanceNumber=inst + 1, BodyPartExamined="CHEST",
                    StudyDescription=f"benchmark study {st}", SeriesDescription=f"series {se}")


def store(orthanc_url: str) -> None:
    """Store the benchmark patient unless Orthanc already holds all of it."""
    dicomweb = orthanc_url + "/dicom-web"
    found = requests.get(f"{dicomweb}/studies", params={"PatientID": PATIENT_ID,
                                                       "includefield": "00201208"}, timeout=60)
    have = sum(int(s.get("00201208", {}).get("Value", [0])[0]) for s in (found.json() if found.text else []))
    if have >= STUDIES * SERIES * INSTANCES:
        return
    started = time.perf_counter()
    with requests.Session() as session, ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda ds: devpacs.store_dataset(orthanc_url, ds, session=session), _datasets()))
    print(f"stored {STUDIES * SERIES * INSTANCES} instances in {time.perf_counter() - started:.1f} s")


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(orthanc_url: str, repeat: int) -> dict:
    """Time bare QIDO-RS, cold FHIR and warm FHIR searches; return medians in ms."""
    from app import create_app
    from smart.admin.schema import init_db
    from smart.tokens.jwt import issue_access_token

    dicomweb = orthanc_url + "/dicom-web"
    session = requests.Session()

    def bare():
        response = session.get(f"{dicomweb}/studies", params={"PatientID": PATIENT_ID},
                               headers={"Accept": "application/dicom+json"}, timeout=60)
        assert response.status_code == 200 and len(response.json()) == STUDIES

    tmp = tempfile.mkdtemp(prefix="fhir-bench-")

    def new_app(**config):
        app = create_app({"TESTING": True, "FACADE_DATABASE_URL": f"sqlite:///{tmp}/facade.db",
                          "FACADE_PACS_URL": dicomweb, "FACADE_PUBLIC_URL": "http://127.0.0.1:8080", **config})
        with app.app_context():
            init_db()
            token, _ = issue_access_token("bench", "bench", "system/ImagingStudy.rs", context=None)
        return app, {"Authorization": f"Bearer {token}"}

    def fhir(app, headers, check=False, query=""):
        response = app.test_client().get(f"/fhir/ImagingStudy?patient={PATIENT_ID}{query}", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
        if check:  # outside the timed runs: parsing 1 MB of JSON is the client's cost
            bundle = response.get_json()
            assert bundle["total"] == STUDIES
            assert sum(len(i) for e in bundle["entry"] for s in e["resource"]["series"]
                       for i in [s["instance"]]) == STUDIES * SERIES * INSTANCES

    def floor():
        studies = session.get(f"{dicomweb}/studies", params={"PatientID": PATIENT_ID},
                              headers={"Accept": "application/dicom+json"}, timeout=60).json()
        session.get(f"{dicomweb}/series", params={"PatientID": PATIENT_ID},
                    headers={"Accept": "application/dicom+json"}, timeout=60).json()
        uids = [ds["0020000D"]["Value"][0] for ds in studies]
        with ThreadPoolExecutor(8) as pool:  # FACADE_PACS_WORKERS' default
            answers = list(pool.map(lambda uid: session.get(f"{dicomweb}/studies/{uid}/metadata", timeout=60,
                                                            headers={"Accept": "application/dicom+json"}).json(),
                                    uids))
        assert sum(map(len, answers)) == STUDIES * SERIES * INSTANCES

    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))
    for _ in range(3):  # warm Orthanc's own caches and the connection pools
        bare()
    apps = [new_app() for _ in range(repeat)]
    cold_times = []
    for app, headers in apps:
        started = time.perf_counter()
        fhir(app, headers)
        cold_times.append((time.perf_counter() - started) * 1000)
    app, headers = apps[-1]
    fhir(app, headers, check=True)
    summary_cold = []
    for _ in range(repeat):  # series level only (_summary=true leaves out series.instance)
        fresh, fresh_headers = new_app()
        started = time.perf_counter()
        fhir(fresh, fresh_headers, query="&_summary=true")
        summary_cold.append((time.perf_counter() - started) * 1000)
    uncached, uncached_headers = new_app(FACADE_QUERY_CACHE_TTL=0)
    fhir(uncached, uncached_headers)
    return {
        "bare": _median_ms(bare, repeat),
        "floor": _median_ms(floor, repeat),
        "cold": statistics.median(cold_times),
        "warm": _median_ms(lambda: fhir(app, headers), repeat),
        "cold _summary=true": statistics.median(summary_cold),
        "warm, no query cache": _median_ms(lambda: fhir(uncached, uncached_headers), repeat),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pacs-url", help="Orthanc REST root to reuse instead of starting one")
    parser.add_argument("--repeat", type=int, default=7, help="runs per figure (median)")
    args = parser.parse_args(argv)
    if args.pacs_url:
        url = devpacs.rest_root(args.pacs_url)
        store(url)
        figures = measure(url, args.repeat)
    else:
        devpacs.ensure_installed()
        with tempfile.TemporaryDirectory(prefix="fhir-bench-pacs-") as workdir, devpacs.Orthanc(workdir) as pacs:
            store(pacs.url)
            figures = measure(pacs.url, args.repeat)
    bare = figures["bare"]
    print(f"patient with {STUDIES} studies x {SERIES} series x {INSTANCES} instances, median of {args.repeat}")
    print(f"bare QIDO-RS /studies?PatientID=    {bare:8.1f} ms")
    print(f"PACS floor for a cold answer        {figures['floor']:8.1f} ms  ratio {figures['floor'] / bare:5.2f}x "
          f"(Orthanc alone; cold / floor = {figures['cold'] / figures['floor']:.2f})")
    for name, aim in (("cold", 3.0), ("warm", 1.2), ("cold _summary=true", 3.0), ("warm, no query cache", 1.2)):
        ratio = figures[name] / bare
        print(f"FHIR ImagingStudy?patient= {name:<22} {figures[name]:8.1f} ms  ratio {ratio:5.2f}x "
              f"(aim <= {aim}x: {'ok' if ratio <= aim else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
