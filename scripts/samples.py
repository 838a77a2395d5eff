"""Sample DICOM data for the dev PACS: pydicom's bundled files and a generated PET/CT demo study."""
from __future__ import annotations

import argparse
import array
import hashlib
import io
import json
import sys
from pathlib import Path

import requests
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    PositronEmissionTomographyImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import devpacs  # noqa: E402  (sibling module; scripts/ is not a package)

#: Patient of the generated demo study; scripts/demo links the demo user to it.
DEMO_PATIENT_ID = "DEMO-0001"

#: Seed for the demo study's UIDs: the same UIDs on every run and machine.
DEMO_ENTROPY = "fhir-facade demo study v1"

#: Transfer syntaxes whose pixel data :func:`make_instance` encodes natively.
NATIVE_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)

#: Attributes every :func:`make_instance` dataset starts with (DICOM keyword -> value).
INSTANCE_DEFAULTS = {
    "SpecificCharacterSet": "ISO_IR 192",
    "PatientID": "TEST-0001",
    "PatientName": "Test^Patient",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "StudyDate": "20240101",
    "StudyTime": "120000",
    "StudyID": "1",
    "AccessionNumber": "",
    "ReferringPhysicianName": "",
    "Modality": "OT",
    "SeriesNumber": 1,
    "InstanceNumber": 1,
    "ConversionType": "WSD",
}

#: Image Pixel module defaults (PS3.3 C.7.6.3): 8x8 16-bit unsigned monochrome.
PIXEL_DEFAULTS = {
    "Rows": 8,
    "Columns": 8,
    "SamplesPerPixel": 1,
    "PhotometricInterpretation": "MONOCHROME2",
    "BitsAllocated": 16,
    "BitsStored": 16,
    "HighBit": 15,
    "PixelRepresentation": 0,
}


def demo_uid(*parts: str) -> UID:
    """Return a deterministic UID for one object of the demo study.

    Parameters
    ----------
    *parts : str
        What the UID names, e.g. ``("series", "CT")``.

    Returns
    -------
    pydicom.uid.UID
        ``generate_uid`` under pydicom's root, seeded with :data:`DEMO_ENTROPY`
        and *parts*: stable across runs.
    """
    return generate_uid(entropy_srcs=[DEMO_ENTROPY, *parts])


def _pattern_frame(rows: int, columns: int, samples: int, bits: int, index: int) -> bytes:
    """Deterministic native pixel data for one frame (little endian)."""
    count = rows * columns * samples
    if bits == 8:
        return bytes((index * 37 + i) % 256 for i in range(count))
    if bits == 16:
        return array.array("H", ((index * 37 + i) % 4096 for i in range(count))).tobytes()
    if bits == 32:
        return array.array("I", ((index * 37 + i) % 65536 for i in range(count))).tobytes()
    raise ValueError(f"BitsAllocated={bits} is not supported (8, 16 or 32)")


def make_instance(
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    pixels: bool = True,
    frames: list[bytes] | None = None,
    **attrs,
) -> Dataset:
    """Build a minimal valid DICOM instance, ready for :func:`devpacs.to_part10`.

    Parameters
    ----------
    transfer_syntax : str, optional
        Transfer syntax UID of the file. Native syntaxes
        (:data:`NATIVE_SYNTAXES`) and RLE Lossless are encoded here; any
        other (JPEG, JPEG 2000, ...) needs *frames*.
    pixels : bool, optional
        Whether to add an Image Pixel module and Pixel Data. Without pixels
        the default SOP Class stays Secondary Capture; pass ``SOPClassUID``
        (e.g. a Structured Report class) for a non-image object.
    frames : list of bytes, optional
        Pixel data of each frame, already encoded in *transfer_syntax*
        (native bytes for native syntaxes, a compressed bitstream otherwise);
        encapsulated per PS3.5 Section A.4 for compressed syntaxes. A
        deterministic pattern is generated when omitted.
    **attrs
        DICOM keyword -> value, overriding the defaults
        (:data:`INSTANCE_DEFAULTS`, :data:`PIXEL_DEFAULTS`, fresh random
        Study/Series/SOP Instance UIDs). A value of None removes the
        attribute. ``NumberOfFrames`` makes a multi-frame instance (Multi-frame
        Grayscale Word Secondary Capture unless ``SOPClassUID`` is given).

    Returns
    -------
    pydicom.dataset.Dataset
        Dataset with ``file_meta`` (Media Storage SOP Class/Instance UIDs,
        Transfer Syntax UID) and a 128-byte zero preamble.

    Raises
    ------
    ValueError
        If a keyword is not in the DICOM dictionary, or pixel data cannot be
        produced for *transfer_syntax* without *frames*.

    Examples
    --------
    >>> ds = make_instance(PatientID="P1", Modality="CT", NumberOfFrames=3)
    >>> int(ds.NumberOfFrames), len(ds.PixelData)
    (3, 384)
    """
    unknown = sorted(k for k in attrs if tag_for_keyword(k) is None)
    if unknown:
        raise ValueError(f"not DICOM keywords: {', '.join(unknown)}")
    transfer_syntax = UID(transfer_syntax)
    multiframe = attrs.get("NumberOfFrames") is not None
    values = dict(INSTANCE_DEFAULTS)
    values.update(
        StudyInstanceUID=generate_uid(),
        SeriesInstanceUID=generate_uid(),
        SOPInstanceUID=generate_uid(),
        SOPClassUID=(
            MultiFrameGrayscaleWordSecondaryCaptureImageStorage
            if multiframe and pixels
            else SecondaryCaptureImageStorage
        ),
    )
    if pixels:
        values.update(PIXEL_DEFAULTS)
    values.update(attrs)

    ds = Dataset()
    for keyword, value in values.items():
        if value is not None and keyword != "PixelData":
            setattr(ds, keyword, value)

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.preamble = b"\0" * 128

    if pixels:
        _add_pixel_data(ds, transfer_syntax, frames, attrs.get("PixelData"))
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    return ds


def _add_pixel_data(ds: Dataset, transfer_syntax: UID, frames, pixel_data) -> None:
    """Fill Pixel Data of *ds* for *transfer_syntax* (file_meta says Explicit VR LE on entry)."""
    number_of_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if pixel_data is not None:
        frames = [pixel_data]
    if frames is None:
        if transfer_syntax not in NATIVE_SYNTAXES and transfer_syntax != RLELossless:
            raise ValueError(
                f"cannot encode pixel data in {transfer_syntax.name}; pass frames=[...] "
                "already encoded in that transfer syntax"
            )
        frames = [
            _pattern_frame(ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated, i)
            for i in range(number_of_frames)
        ]
        if transfer_syntax == ExplicitVRBigEndian and ds.BitsAllocated > 8:
            frames = [_byteswap(frame, ds.BitsAllocated) for frame in frames]
        ds.PixelData = b"".join(frames)
        if transfer_syntax == RLELossless:
            ds.compress(RLELossless)  # pydicom's own RLE encoder, PS3.5 Annex G
    elif transfer_syntax in NATIVE_SYNTAXES:
        ds.PixelData = b"".join(frames)
    else:
        ds.PixelData = encapsulate(list(frames))
    # Odd-length native pixel data gets padded by the writer; OB for 8-bit.
    ds["PixelData"].VR = "OB" if (ds.BitsAllocated <= 8 or transfer_syntax.is_compressed) else "OW"
    if transfer_syntax.is_compressed:
        ds["PixelData"].is_undefined_length = True


def _byteswap(frame: bytes, bits: int) -> bytes:
    values = array.array("H" if bits == 16 else "I", frame)
    values.byteswap()
    return values.tobytes()


# -- the generated demo study -------------------------------------------

#: Study-level attributes shared by every instance of the demo study.
DEMO_STUDY = {
    "PatientID": DEMO_PATIENT_ID,
    "PatientName": "Demo^Patient",
    "PatientBirthDate": "19650412",
    "PatientSex": "F",
    "StudyDate": "20240315",
    "StudyTime": "093000",
    "TimezoneOffsetFromUTC": "+0100",
    "AccessionNumber": "DEMOACC0001",
    "ReferringPhysicianName": "Referrer^Rita",
    "StudyDescription": "PET/CT chest (demo)",
    "StudyID": "1",
    "InstitutionName": "Facade Demo Hospital",
    "Manufacturer": "fhir-facade devpacs",
}

#: Series of the demo study: (modality, number of images, rows/columns).
DEMO_SERIES = (("CT", 5, 64), ("PT", 3, 32))


def _ellipse(row: int, col: int, center: tuple[float, float], radii: tuple[float, float]) -> bool:
    return ((row - center[0]) / radii[0]) ** 2 + ((col - center[1]) / radii[1]) ** 2 <= 1.0


def _phantom(size: int, modality: str, index: int) -> bytes:
    """A small chest-like phantom slice as little-endian uint16 stored values."""
    half = size / 2
    values = array.array("H")
    for row in range(size):
        for col in range(size):
            body = _ellipse(row, col, (half, half), (half * 0.7, half * 0.9))
            lung = _ellipse(row, col, (half - 2, half * 0.55), (half * 0.4, half * 0.25)) or _ellipse(
                row, col, (half - 2, half * 1.45), (half * 0.4, half * 0.25)
            )
            spine = _ellipse(row, col, (half * 1.45, half), (half * 0.1, half * 0.1))
            if modality == "CT":  # stored = HU + 1024 (RescaleIntercept -1024)
                hu = -1000
                if body:
                    hu = 40
                if lung:
                    hu = -750
                if spine:
                    hu = 700
                values.append(hu + 1024 + (row * 7 + col * 3 + index) % 11)
            else:  # PT: uptake in a lesion that moves with the slice
                activity = 0
                if body:
                    activity = 200
                if _ellipse(row, col, (half - 2, half * 0.55 + index), (2.5, 2.5)):
                    activity = 3000
                values.append(activity)
    return values.tobytes()


def build_demo_study() -> list[Dataset]:
    """Build the generated PET/CT demo study: one patient, 5 CT and 3 PT images.

    Returns
    -------
    list of pydicom.dataset.Dataset
        Eight instances in Explicit VR Little Endian: series 1 is CT Image
        Storage (64x64, BodyPartExamined CHEST, 5 mm slices), series 2 is PET
        Image Storage (32x32, Units BQML, F-18 FDG). All UIDs come from
        :func:`demo_uid`, so the study is identical on every run.
    """
    study_uid = demo_uid("study")
    frame_of_reference = demo_uid("frame-of-reference")
    datasets = []
    for series_number, (modality, count, size) in enumerate(DEMO_SERIES, start=1):
        series_uid = demo_uid("series", modality)
        for number in range(1, count + 1):
            attrs = dict(DEMO_STUDY)
            attrs.update(
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=series_uid,
                SOPInstanceUID=demo_uid("instance", modality, str(number)),
                FrameOfReferenceUID=frame_of_reference,
                PositionReferenceIndicator="",
                Modality=modality,
                SeriesNumber=series_number,
                InstanceNumber=number,
                BodyPartExamined="CHEST",
                PatientPosition="HFS",
                SeriesDate=DEMO_STUDY["StudyDate"],
                SeriesTime="0931%02d" % series_number,
                ContentDate=DEMO_STUDY["StudyDate"],
                ContentTime="0932%02d" % number,
                AcquisitionNumber=1,
                ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                ImagePositionPatient=[-160, -160, -50 + 5 * (number - 1)],
                SliceLocation=-50 + 5 * (number - 1),
                Rows=size,
                Columns=size,
                ConversionType=None,
            )
            attrs.update(_ct_attrs(size) if modality == "CT" else _pt_attrs(size, count, number))
            datasets.append(
                make_instance(frames=[_phantom(size, modality, number)], **attrs)
            )
    return datasets


def _ct_attrs(size: int) -> dict:
    return {
        "SOPClassUID": CTImageStorage,
        "SeriesDescription": "CT chest 5 mm",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "PixelSpacing": [320 / size, 320 / size],
        "SliceThickness": 5,
        "KVP": 120,
        "BitsStored": 12,
        "HighBit": 11,
        "RescaleIntercept": -1024,
        "RescaleSlope": 1,
        "RescaleType": "HU",
        "WindowCenter": 40,
        "WindowWidth": 400,
    }


def _pt_attrs(size: int, count: int, number: int) -> dict:
    radionuclide = Dataset()
    radionuclide.CodeValue = "C-111A1"
    radionuclide.CodingSchemeDesignator = "SRT"
    radionuclide.CodeMeaning = "^18^Fluorine"
    radiopharmaceutical = Dataset()
    radiopharmaceutical.Radiopharmaceutical = "Fluorodeoxyglucose"
    radiopharmaceutical.RadiopharmaceuticalStartTime = "083000"
    radiopharmaceutical.RadionuclideTotalDose = 370000000
    radiopharmaceutical.RadionuclideHalfLife = 6586.2
    radiopharmaceutical.RadionuclideCodeSequence = [radionuclide]
    return {
        "SOPClassUID": PositronEmissionTomographyImageStorage,
        "SeriesDescription": "PET FDG AC",
        "ImageType": ["ORIGINAL", "PRIMARY"],
        "PixelSpacing": [320 / size, 320 / size],
        "SliceThickness": 5,
        "Units": "BQML",
        "SeriesType": ["STATIC", "IMAGE"],
        "CorrectedImage": ["DECY", "ATTN"],
        "DecayCorrection": "START",
        "NumberOfSlices": count,
        "ImageIndex": number,
        "AcquisitionDate": DEMO_STUDY["StudyDate"],
        "AcquisitionTime": "093000",
        "FrameReferenceTime": 0,
        "ActualFrameDuration": 300000,
        "RescaleIntercept": 0,
        "RescaleSlope": 10,
        "RadiopharmaceuticalInformationSequence": [radiopharmaceutical],
    }


# -- loading ------------------------------------------------------------


def sample_files() -> list[Path]:
    """List pydicom's bundled test and character-set files, in a stable order.

    Returns
    -------
    list of pathlib.Path
        Regular files from ``pydicom.data.get_testdata_files()`` and
        ``get_charset_files()``, sorted by path. Some are not Part-10 DICOM
        (READMEs, dumps, files without meta); Orthanc refuses those.
    """
    from pydicom.data import get_charset_files, get_testdata_files

    paths = {Path(p) for p in get_testdata_files() + get_charset_files()}
    return sorted(p for p in paths if p.is_file())


def _identify(body: bytes) -> dict:
    """Patient/study/series/instance identifiers of a Part-10 file, read with pydicom."""
    ds = dcmread(io.BytesIO(body), stop_before_pixels=True)
    return {
        "PatientID": str(ds.get("PatientID", "") or ""),
        "StudyInstanceUID": str(ds.StudyInstanceUID),
        "SeriesInstanceUID": str(ds.SeriesInstanceUID),
        "SOPInstanceUID": str(ds.SOPInstanceUID),
    }


def _identify_in_orthanc(url: str, instance_id: str, session: requests.Session) -> dict:
    """The same identifiers as Orthanc indexed them, for files pydicom cannot read."""
    response = session.get(f"{url}/instances/{instance_id}/simplified-tags", timeout=devpacs.HTTP_TIMEOUT)
    response.raise_for_status()
    tags = response.json()
    keys = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    return {key: str(tags.get(key, "")) for key in keys}


def _sources(pydicom_files: bool, demo_datasets: list[Dataset]) -> list[tuple[str, bytes]]:
    """(name, file bytes) of everything to store; names are relative to pydicom's data folder."""
    import pydicom.data

    sources = []
    if pydicom_files:
        root = Path(pydicom.data.__file__).parent
        for path in sample_files():
            name = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
            sources.append((name, path.read_bytes()))
    for ds in demo_datasets:
        sources.append((f"demo/{ds.Modality}-{ds.InstanceNumber}", devpacs.to_part10(ds)))
    return sources


def load_samples(orthanc_url: str, pydicom_files: bool = True, demo: bool = True) -> dict:
    """Store the sample files and the generated demo study in Orthanc.

    Files Orthanc refuses and SOPInstanceUIDs it already holds are counted,
    never raised: loading twice is harmless.

    Parameters
    ----------
    orthanc_url : str
        Orthanc REST root (a DICOMweb base ending in ``/dicom-web`` is accepted).
    pydicom_files : bool, optional
        Store :func:`sample_files`.
    demo : bool, optional
        Store :func:`build_demo_study`.

    Returns
    -------
    dict
        ``files`` (offered), ``stored`` (new to Orthanc), ``already_stored``
        (Orthanc already held an instance with the same PatientID, Study,
        Series and SOP Instance UIDs and dropped the new file), ``refused`` (count) and
        ``refused_files`` (file name -> Orthanc's reason); ``patients`` and
        ``studies`` (sorted PatientIDs and StudyInstanceUIDs of the accepted
        files); ``sha256`` (SOPInstanceUID -> SHA-256 hex of the bytes Orthanc
        holds for it, omitting ambiguous UIDs); ``instances``
        (SOPInstanceUID -> ``PatientID``, ``StudyInstanceUID``,
        ``SeriesInstanceUID``, ``sha256``, ``source``, ``orthanc_id``, for the
        first file with that UID); ``ambiguous`` (SOPInstanceUIDs that Orthanc
        now holds as two different instances because it indexed two files
        with the same UID under different patient/study/series identities;
        WADO-RS answers 404 for them); ``demo`` (``PatientID``, ``StudyInstanceUID``,
        ``AccessionNumber``, ``series`` modality -> SeriesInstanceUID,
        ``SOPInstanceUIDs``), present when *demo* is true.

    Raises
    ------
    devpacs.OrthancError
        If Orthanc cannot be reached or answers a server error.
    """
    url = devpacs.rest_root(orthanc_url)
    demo_datasets = build_demo_study() if demo else []
    sources = _sources(pydicom_files, demo_datasets)

    summary: dict = {
        "files": len(sources),
        "stored": 0,
        "already_stored": 0,
        "refused": 0,
        "refused_files": {},
        "patients": [],
        "studies": [],
        "sha256": {},
        "instances": {},
    }
    ambiguous: set[str] = set()
    with requests.Session() as session:
        for name, body in sources:
            answer = devpacs.post_instance(url, body, session=session)
            if isinstance(answer, str):
                summary["refused"] += 1
                summary["refused_files"][name] = answer
                continue
            try:
                ids = _identify(body)
            except Exception:  # noqa: BLE001 - Orthanc read it, pydicom did not: ask Orthanc
                ids = _identify_in_orthanc(url, answer["ID"], session)
            uid = ids["SOPInstanceUID"]
            if answer["Status"] == "Success":
                summary["stored"] += 1
            else:
                summary["already_stored"] += 1
            if uid in summary["instances"]:
                # Same SOPInstanceUID earlier in this run. Orthanc keeps the
                # first file when its patient/study/series/instance identity
                # matches; when it parsed them differently it holds two
                # instances and WADO-RS cannot resolve the UID any more.
                if summary["instances"][uid]["orthanc_id"] != answer["ID"]:
                    ambiguous.add(uid)
                continue
            if answer["Status"] == "Success":
                digest = hashlib.sha256(body).hexdigest()
            else:  # stored before this run: hash what Orthanc actually holds
                digest = _stored_sha256(url, answer["ID"], session)
            summary["instances"][uid] = dict(
                ids, sha256=digest, source=name, orthanc_id=answer["ID"]
            )
            summary["sha256"][uid] = digest
    for uid in ambiguous:
        del summary["sha256"][uid]
    summary["ambiguous"] = sorted(ambiguous)
    accepted = summary["instances"].values()
    summary["patients"] = sorted({i["PatientID"] for i in accepted})
    summary["studies"] = sorted({i["StudyInstanceUID"] for i in accepted})
    if demo:
        summary["demo"] = {
            "PatientID": DEMO_PATIENT_ID,
            "StudyInstanceUID": str(demo_datasets[0].StudyInstanceUID),
            "AccessionNumber": DEMO_STUDY["AccessionNumber"],
            "series": {str(ds.Modality): str(ds.SeriesInstanceUID) for ds in demo_datasets},
            "SOPInstanceUIDs": [str(ds.SOPInstanceUID) for ds in demo_datasets],
        }
    return summary


def _stored_sha256(url: str, instance_id: str, session: requests.Session) -> str:
    response = session.get(f"{url}/instances/{instance_id}/file", timeout=devpacs.HTTP_TIMEOUT)
    response.raise_for_status()
    return hashlib.sha256(response.content).hexdigest()


def describe(summary: dict) -> str:
    """One human-readable paragraph about a :func:`load_samples` summary.

    Parameters
    ----------
    summary : dict
        As returned by :func:`load_samples`.

    Returns
    -------
    str
        Counts, patients and the demo study UID.
    """
    lines = [
        f"samples: {summary['files']} files offered, {summary['stored']} stored, "
        f"{summary['already_stored']} duplicates of files already stored, "
        f"{summary['refused']} not storable (pydicom's JSON, dumps, DICOMDIRs and deliberately broken "
        f"files; --verbose lists them)"
        + (f", {len(summary['ambiguous'])} SOPInstanceUIDs held twice" if summary.get("ambiguous") else ""),
        f"patients: {', '.join(p or '(empty)' for p in summary['patients'])}",
    ]
    if "demo" in summary:
        lines.append(
            f"demo study: PatientID {summary['demo']['PatientID']}, "
            f"StudyInstanceUID {summary['demo']['StudyInstanceUID']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the ``samples`` command line: ``load URL`` stores everything, ``uids`` prints the demo UIDs.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when omitted.

    Returns
    -------
    int
        Exit status: 0, or 1 when Orthanc cannot be reached.
    """
    parser = argparse.ArgumentParser(prog="samples", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load", help="store the samples in a running Orthanc")
    load.add_argument("url", help="Orthanc REST root, e.g. http://127.0.0.1:8042")
    load.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    load.add_argument("--no-pydicom", action="store_true", help="only the generated demo study")
    load.add_argument("--verbose", action="store_true", help="list each file Orthanc refused, and why")
    args = parser.parse_args(argv)
    try:
        summary = load_samples(args.url, pydicom_files=not args.no_pydicom)
    except devpacs.OrthancError as exc:
        print(f"samples: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(describe(summary))
        if args.verbose:
            for name, reason in sorted(summary["refused_files"].items()):
                print(f"  refused {name}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
