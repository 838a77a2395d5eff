"""Benchmark: a JPEG-compressed 300-slice CT study transcoded by the facade vs retrieved as stored.

Run with one command from the repository root::

    .venv/bin/python benchmarks/transcoding.py [--repeat N] [--syntax jpeg|j2k]

It starts its own throwaway Orthanc and the facade under gunicorn (as
``benchmarks/dicomweb_proxy.py`` does), generates a 300-slice CT study with pydicom (512 x 512;
``jpeg``: JPEG Baseline 8-bit, encoded with Pillow, the default; ``j2k``: JPEG 2000 Lossless of
12-bit values in 16, encoded with pylibjpeg-openjpeg) and measures, in the same run, whole-study
WADO-RS retrievals, alternating, ``--repeat`` times each (issue 14 item 3):

- **as stored** through the facade (``transfer-syntax=*``): parts relayed, spliced;
- **transcoded** through the facade: the default ``multipart/related; type="application/dicom"``
  (Explicit VR Little Endian), the facade decoding every slice with pydicom;
- **Orthanc transcoding** for reference: the same default request to Orthanc directly (which
  Orthanc 1.10 refuses for JPEG 2000: printed as its status).

For each: median wall time, CPU time (user + kernel, /proc) of the facade's gunicorn processes
and of Orthanc per retrieval, bytes received, and the facade's peak resident memory while it
transcodes (sampled every 20 ms): one instance at a time, so it should not grow with the study.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "benchmarks")]

import devpacs  # noqa: E402
import numpy as np  # noqa: E402
import samples  # noqa: E402
from dicomweb_proxy import PATIENT_ID, Facade, Target, _cpu_ms  # noqa: E402
from pydicom.uid import CTImageStorage, JPEG2000Lossless, JPEGBaseline8Bit, generate_uid  # noqa: E402

SLICES, ROWS, COLUMNS = 300, 512, 512
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
DEFAULT = 'multipart/related; type="application/dicom"'


def _phantom(index: int, bits: int) -> np.ndarray:
    """A smooth body-like slice with noise: compresses like a CT, not like random bytes."""
    y, x = np.mgrid[0:ROWS, 0:COLUMNS]
    body = ((x - 256) / 200.0) ** 2 + ((y - 256) / 160.0) ** 2 < 1
    bone = ((x - 256 - 40 * np.sin(index / 20)) / 30.0) ** 2 + ((y - 300) / 25.0) ** 2 < 1
    top = (1 << bits) - 1
    values = np.where(body, top * 0.35, 0) + np.where(bone, top * 0.45, 0)
    values = values + np.random.default_rng(index).normal(0, top * 0.01, (ROWS, COLUMNS))
    return np.clip(values, 0, top).astype(np.uint8 if bits == 8 else np.uint16)


def _jpeg_frame(values: np.ndarray) -> bytes:
    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(values, mode="L").save(out, format="JPEG", quality=90)
    return out.getvalue()


def make_slice(study_uid: str, series_uid: str, index: int, syntax: str) -> bytes:
    """One CT slice Part-10 file, compressed in *syntax* (``jpeg`` or ``j2k``)."""
    common = dict(PatientID=PATIENT_ID, PatientName="Bench^Transcoding", Modality="CT", SOPClassUID=CTImageStorage,
                  StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid,
                  SOPInstanceUID=generate_uid(entropy_srcs=["bench-transcoding", syntax, str(index)]),
                  InstanceNumber=index + 1, Rows=ROWS, Columns=COLUMNS, ImagePositionPatient=[0.0, 0.0, float(index)],
                  PixelSpacing=[0.7, 0.7], SliceThickness=1.0, StudyDescription="Transcoding benchmark")
    if syntax == "jpeg":
        ds = samples.make_instance(transfer_syntax=JPEGBaseline8Bit, BitsAllocated=8, BitsStored=8, HighBit=7,
                                   frames=[_jpeg_frame(_phantom(index, 8))], **common)
    else:
        ds = samples.make_instance(BitsStored=12, HighBit=11, PixelData=_phantom(index, 12).tobytes(), **common)
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    return devpacs.to_part10(ds)


def store(orthanc_url: str, syntax: str) -> tuple[str, int]:
    """Store the study; return its StudyInstanceUID and its stored size in bytes."""
    import requests
    study_uid = generate_uid(entropy_srcs=["bench-transcoding", syntax, "study"])
    series_uid = generate_uid(entropy_srcs=["bench-transcoding", syntax, "series"])
    started, size = time.perf_counter(), 0
    with requests.Session() as session:
        for index in range(SLICES):
            data = make_slice(study_uid, series_uid, index, syntax)
            size += len(data)
            if devpacs.store_file(orthanc_url, data, session=session) is None:
                raise RuntimeError("Orthanc refused a benchmark slice")
    print(f"stored {SLICES} {syntax} slices ({size / 1e6:.1f} MB) in {time.perf_counter() - started:.1f} s",
          flush=True)
    return study_uid, size


class PeakRss:
    """The facade's peak resident memory (MB) while a retrieval runs, sampled every 20 ms."""

    def __init__(self, facade: Facade):
        self.facade, self.peak, self._stop = facade, 0.0, threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.facade.rss_mb())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def retrieve(target: Target, path: str, accept: str, facade: Facade, pacs_pid: int) -> dict:
    """One whole-study retrieval: wall seconds, CPU ms of facade and PACS, bytes, peak RSS."""
    pids = facade.pids()
    cpu = lambda: (sum(_cpu_ms(pid) for pid in pids), _cpu_ms(pacs_pid))  # noqa: E731
    before = cpu()
    conn = target.connect()
    with PeakRss(facade) as rss:
        started = time.perf_counter()
        status, size, _ = target.get(conn, path, accept)
        wall = time.perf_counter() - started
    conn.close()
    after = cpu()
    if status != 200:
        return {"status": status}
    return {"status": status, "wall": wall, "facade_cpu": after[0] - before[0], "pacs_cpu": after[1] - before[1], "bytes": size,
            "rss": rss.peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="retrievals per way (default 5)")
    parser.add_argument("--syntax", choices=("jpeg", "j2k"), default="jpeg")
    args = parser.parse_args(argv)
    devpacs.ensure_installed()
    with tempfile.TemporaryDirectory(prefix="transcoding-bench-") as tmp:
        workdir = Path(tmp)
        with devpacs.Orthanc(workdir / "pacs") as pacs:
            study_uid, stored = store(pacs.url, args.syntax)
            facade = Facade(workdir, pacs.dicomweb_url)
            try:
                token = facade.init_db_and_token()
                facade.start()
                through = Target("facade", facade.url + "/dicomweb", {"Authorization": f"Bearer {token}"})
                direct = Target("direct", pacs.dicomweb_url)
                ways = {"as stored (facade)": (through, AS_STORED), "transcoded (facade)": (through, DEFAULT),
                        "Orthanc transcoding": (direct, DEFAULT)}
                idle = facade.rss_mb()
                runs: dict[str, list[dict]] = {name: [] for name in ways}
                refused = {}
                for name, (target, accept) in ways.items():  # warm-up, untimed
                    status = retrieve(target, f"studies/{study_uid}", accept, facade, pacs.process.pid)["status"]
                    if status != 200:
                        refused[name] = status  # Orthanc 1.10 cannot transcode JPEG 2000
                ways = {name: way for name, way in ways.items() if name not in refused}
                runs = {name: [] for name in ways}
                for _ in range(args.repeat):
                    for name, (target, accept) in ways.items():
                        runs[name].append(retrieve(target, f"studies/{study_uid}", accept, facade,
                                                   pacs.process.pid))
            except BaseException:
                print(facade.log_tail(), file=sys.stderr)
                raise
            finally:
                facade.stop()
    print(f"\n{SLICES}-slice {args.syntax} CT, {stored / 1e6:.1f} MB stored; medians of {args.repeat} "
          f"(facade idle RSS {idle:.0f} MB)")
    print(f"{'':22} {'wall s':>8} {'facade CPU s':>13} {'PACS CPU s':>11} {'MB sent':>8} {'peak RSS MB':>12}")
    for name, status in refused.items():
        print(f"{name:22} answered {status}")
    for name, results in runs.items():
        median = {key: statistics.median(r[key] for r in results) for key in results[0]}
        print(f"{name:22} {median['wall']:8.2f} {median['facade_cpu'] / 1000:13.2f} {median['pacs_cpu'] / 1000:11.2f} "
              f"{median['bytes'] / 1e6:8.1f} {max(r['rss'] for r in results):12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
