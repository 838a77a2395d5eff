"""dicomweb-client with its defaults, through the facade, on every sample study in a real Orthanc (issue 14 item 3).

No transfer syntax asked for means Explicit VR Little Endian (PS3.18 Section 8.7.3.5.2): every
study, series and instance comes whole, in that syntax, with pixel values equal to pydicom's
decoding of the stored instance; uncompressed frames equal its decoded frames. Instances whose
stored pixel data pydicom itself cannot decode (damaged sample files) get a 406 or a detectably
incomplete answer, never a complete-looking one.
"""
from __future__ import annotations

import collections
import io

import numpy as np
import pydicom
import pytest
import requests
from pydicom.encaps import encapsulate
from pydicom.pixels import pixel_array

import devpacs
from facade_helpers import make_app, token
from fhir_facade.dicom.patient_ids import to_fhir_id
from live_server import live_server

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
_ENCODINGS = {(False, True): EXPLICIT_VR_LE, (True, True): "1.2.840.10008.1.2", (False, False): "1.2.840.10008.1.2.2"}


class Stored:
    """One instance as Orthanc stores it, decoded by pydicom here (the reference)."""

    def __init__(self, data: bytes, series: str):
        self.series = series
        self.ds = pydicom.dcmread(io.BytesIO(data), force=True)
        if "TransferSyntaxUID" not in self.ds.file_meta:  # a bare dataset, stored without File Meta
            self.ds.file_meta.TransferSyntaxUID = _ENCODINGS[self.ds.original_encoding]
        self.syntax = self.ds.file_meta.TransferSyntaxUID
        self.has_pixels = "PixelData" in self.ds
        self.damaged = False
        self.pixels = None
        if self.has_pixels:
            try:
                self.pixels = self.ds.pixel_array
            except Exception:  # noqa: BLE001 - what pydicom cannot decode, the facade cannot either
                self.damaged = True

    @property
    def frames(self) -> int:
        return int(self.ds.get("NumberOfFrames", 1) or 1)

    def frame(self, number: int) -> np.ndarray:
        """Frame *number* decoded as an uncompressed octet-stream frame is: native data raw."""
        return pixel_array(self.ds, index=number - 1, raw=not self.syntax.is_compressed)


@pytest.fixture(scope="module")
def corpus(orthanc):
    """StudyInstanceUID -> (FHIR patient id, {SOPInstanceUID: Stored}) for every sample study."""
    studies = collections.defaultdict(dict)
    patients = collections.defaultdict(set)
    session = requests.Session()
    for sop, info in orthanc.samples["instances"].items():
        if sop in orthanc.samples["ambiguous"]:
            continue
        data = session.get(f"{orthanc.url}/instances/{info['orthanc_id']}/file", timeout=30).content
        studies[info["StudyInstanceUID"]][sop] = Stored(data, info["SeriesInstanceUID"])
        patients[info["StudyInstanceUID"]].add(info["PatientID"])
    return {study: (to_fhir_id(next(iter(patients[study]))), instances) for study, instances in studies.items()
            if len(patients[study]) == 1}


@pytest.fixture(scope="module")
def facade(orthanc, tmp_path_factory):
    port = devpacs.free_port()
    url = f"http://127.0.0.1:{port}"
    app = make_app(tmp_path_factory.mktemp("transcoding"), FACADE_PACS_URL=orthanc.dicomweb_url, FACADE_PUBLIC_URL=url)
    with live_server(app, port=port):
        yield app, url


def _client(facade, patient):
    from dicomweb_client.api import DICOMwebClient
    app, url = facade
    return DICOMwebClient(url=f"{url}/dicomweb", headers={"Authorization": f"Bearer {token(app, patient=patient)}"})


def _check_whole(datasets, expected: dict[str, Stored], as_stored: bool = False) -> None:
    """Every expected instance came, in Explicit VR Little Endian (or as stored), with the stored pixel values."""
    got = {str(ds.SOPInstanceUID): ds for ds in datasets}
    assert set(got) == set(expected)
    for sop, stored in expected.items():
        ds = got[sop]
        assert ds.file_meta.TransferSyntaxUID == (stored.syntax if as_stored else EXPLICIT_VR_LE), sop
        assert ("PixelData" in ds) == stored.has_pixels
        if stored.pixels is not None:
            assert np.array_equal(ds.pixel_array, stored.pixels), sop
        elif stored.damaged:  # as stored: the same damaged bytes
            assert ds.PixelData == stored.ds.PixelData


def _whole_or_refused(retrieve, expected: dict[str, Stored], as_stored: bool = False) -> str:
    """Run *retrieve*; a damaged instance among *expected* may make it a 406 or an incomplete answer."""
    damaged = any(stored.damaged for stored in expected.values()) and not as_stored
    try:
        datasets = retrieve()
    except requests.HTTPError as exc:
        assert damaged and exc.response.status_code == 406, exc
        return "406"
    except Exception:  # noqa: BLE001 - an answer broken off after whole parts: the client notices
        assert damaged
        return "incomplete"
    assert not damaged, "an instance pydicom cannot decode came back as a complete answer"
    _check_whole(datasets, expected, as_stored)
    return "whole"


def test_default_retrieve_study_series_and_instance_on_every_sample_study(corpus, facade):
    outcomes = collections.Counter()
    for study, (patient, instances) in sorted(corpus.items()):
        client = _client(facade, patient)
        outcomes[_whole_or_refused(lambda: client.retrieve_study(study), instances)] += 1
        by_series = collections.defaultdict(dict)
        for sop, stored in instances.items():
            by_series[stored.series][sop] = stored
        for series, members in by_series.items():
            outcomes[_whole_or_refused(lambda: client.retrieve_series(study, series), members)] += 1
        for sop, stored in instances.items():
            # dicomweb-client's default for one instance is as stored (transfer-syntax=*)
            outcomes[_whole_or_refused(lambda: [client.retrieve_instance(study, stored.series, sop)],
                                       {sop: stored}, as_stored=True)] += 1
            outcomes[_whole_or_refused(lambda: [client.retrieve_instance(
                study, stored.series, sop, media_types=(("application/dicom", EXPLICIT_VR_LE),))],
                {sop: stored})] += 1
    # The compressed samples (JPEG, JPEG Lossless, JPEG 2000, RLE) and the big endian, deflated and
    # bare ones all come whole; only the study of two damaged pydicom test files does not.
    assert outcomes["whole"] > 150
    assert outcomes["406"] + outcomes["incomplete"] <= 4


#: Lossy stored syntaxes (JPEG Baseline and Extended, JPEG 2000): decoders differ slightly.
LOSSY = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.91"})
#: Largest difference (in stored units) between two conformant decoders of the same lossy frame.
LOSSY_TOLERANCE = 4


def _assert_same(got: np.ndarray, expected: np.ndarray, stored: Stored, what) -> None:
    """Equal to pydicom's decoding; within :data:`LOSSY_TOLERANCE` where the PACS decoded a lossy
    frame with its own decoder (Orthanc's IJG JPEG decoder rounds otherwise than libjpeg)."""
    assert got.shape == expected.shape, what
    if stored.syntax in LOSSY:
        difference = np.abs(got.astype(np.int64) - expected.astype(np.int64))
        assert difference.max() <= LOSSY_TOLERANCE, what
    else:
        assert np.array_equal(got, expected), what


def _native(frame: bytes, stored: Stored, number: int) -> np.ndarray:
    reference = stored.frame(number)
    values = np.frombuffer(frame, dtype=reference.dtype.newbyteorder("<"))
    if reference.ndim == 3 and stored.ds.get("PlanarConfiguration", 0) == 1 and not stored.syntax.is_compressed:
        return values.reshape(reference.shape[2], *reference.shape[:2]).transpose(1, 2, 0)
    return values.reshape(reference.shape)


def _as_stored(frame: bytes, stored: Stored, number: int) -> np.ndarray:
    """A frame as stored (dicomweb-client's default ``type="*/*"``), decoded with the instance's attributes."""
    if not stored.syntax.is_compressed:
        return _native(frame, stored, number)
    ds = stored.ds.copy()  # shallow: the stored dataset keeps its own Pixel Data
    ds.PixelData = encapsulate([frame])
    ds.NumberOfFrames = 1
    return pixel_array(ds, raw=False)


def test_default_and_uncompressed_frames_on_every_sample_instance(corpus, facade):
    uncompressed = (("application/octet-stream", EXPLICIT_VR_LE),)
    checked = refused = 0
    for study, (patient, instances) in sorted(corpus.items()):
        client = _client(facade, patient)
        for sop, stored in instances.items():
            if not stored.has_pixels or stored.ds.get("BitsAllocated") == 1:
                continue
            numbers = sorted({1, stored.frames})
            try:
                frames = client.retrieve_instance_frames(study, stored.series, sop, frame_numbers=numbers,
                                                         media_types=uncompressed)
            except requests.HTTPError as exc:
                assert stored.damaged and exc.response.status_code == 406, (sop, exc)
                refused += 1
                continue
            assert len(frames) == len(numbers)
            if stored.damaged:  # the PACS's decoder read what pydicom's cannot: uncompressed, whole
                ds = stored.ds
                assert {len(f) for f in frames} == {ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8}
                continue
            for number, frame in zip(numbers, frames):
                _assert_same(_native(frame, stored, number), stored.frame(number), stored, (sop, number))
            default = client.retrieve_instance_frames(study, stored.series, sop, frame_numbers=[1])
            if stored.syntax.is_compressed:
                expected = pixel_array(stored.ds, index=0)
            else:
                expected = stored.frame(1)
            _assert_same(_as_stored(default[0], stored, 1), expected, stored, sop)
            checked += 1
    assert checked > 60 and refused <= 2
