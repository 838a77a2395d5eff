"""Reading values out of DICOM JSON datasets (PS3.18 Annex F) by keyword."""
from __future__ import annotations

from typing import Any

#: DICOM keyword -> tag (PS3.6) for every attribute the facade reads.
TAGS = {
    "SpecificCharacterSet": "00080005",
    "SOPClassUID": "00080016",
    "SOPInstanceUID": "00080018",
    "StudyDate": "00080020",
    "SeriesDate": "00080021",
    "StudyTime": "00080030",
    "SeriesTime": "00080031",
    "AccessionNumber": "00080050",
    "IssuerOfAccessionNumberSequence": "00080051",
    "Modality": "00080060",
    "ModalitiesInStudy": "00080061",
    "SOPClassesInStudy": "00080062",
    "ReferringPhysicianName": "00080090",
    "CodeValue": "00080100",
    "CodingSchemeDesignator": "00080102",
    "CodeMeaning": "00080104",
    "RetrieveURL": "00081190",
    "TimezoneOffsetFromUTC": "00080201",
    "StudyDescription": "00081030",
    "ProcedureCodeSequence": "00081032",
    "SeriesDescription": "0008103E",
    "NameOfPhysiciansReadingStudy": "00081060",
    "PatientName": "00100010",
    "PatientID": "00100020",
    "IssuerOfPatientID": "00100021",
    "PatientBirthDate": "00100030",
    "PatientSex": "00100040",
    "BodyPartExamined": "00180015",
    "StudyInstanceUID": "0020000D",
    "SeriesInstanceUID": "0020000E",
    "StudyID": "00200010",
    "SeriesNumber": "00200011",
    "InstanceNumber": "00200013",
    "Laterality": "00200060",
    "NumberOfStudyRelatedSeries": "00201206",
    "NumberOfStudyRelatedInstances": "00201208",
    "NumberOfSeriesRelatedInstances": "00201209",
    "NumberOfFrames": "00280008",
    "Rows": "00280010",
    "BitsAllocated": "00280100",
    "LocalNamespaceEntityID": "00400031",
    "UniversalEntityID": "00400032",
    "ReasonForPerformedProcedureCodeSequence": "00401012",
    "DocumentTitle": "00420010",
    "ConceptNameCodeSequence": "0040A043",
}


def values(dataset: dict, keyword: str) -> list[Any]:
    """Return the ``Value`` list of *keyword* in a DICOM JSON *dataset* (empty if absent)."""
    element = dataset.get(TAGS[keyword])
    if not isinstance(element, dict):
        return []
    found = element.get("Value")
    return found if isinstance(found, list) else []


def first(dataset: dict, keyword: str) -> Any:
    """Return the first value of *keyword*, or ``None`` when absent or empty.

    Strings are stripped of the padding DICOM allows; empty strings become ``None``.
    """
    found = values(dataset, keyword)
    if not found:
        return None
    value = found[0]
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def text(dataset: dict, keyword: str) -> str | None:
    """Return the first value of *keyword* as a string (numbers converted), or ``None``."""
    value = first(dataset, keyword)
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def integer(dataset: dict, keyword: str) -> int | None:
    """Return the first value of an IS/US/UL *keyword* as an int, or ``None`` if absent or not a number."""
    value = first(dataset, keyword)
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def items(dataset: dict, keyword: str) -> list[dict]:
    """Return the items of sequence *keyword* (SQ), skipping anything that is not an item."""
    return [item for item in values(dataset, keyword) if isinstance(item, dict)]


def patient_id(dataset: dict) -> str | None:
    """Return the whole PatientID (0010,0020) of *dataset*, or ``None`` when absent or empty.

    PatientID is one identity, however many values it holds: a multi-valued element
    (``bs\\x``, whose backslash is DICOM's value separator, PS3.5 Section 6.4) is its values
    joined by ``\\`` again, never its first value, and one of empty values only (``\\``)
    is that, not the empty PatientID. Only trailing spaces, the padding of PS3.5 Section
    6.2, are removed: a PACS files ``P1``, `` P1``, ``P1<TAB>`` and ``P1<NBSP>`` as four
    patients, and so does the facade.
    """
    found = values(dataset, "PatientID")
    parts = ["" if v is None else str(v).rstrip(" ") for v in found]
    if len(parts) > 1:
        return "\\".join(parts)
    return parts[0] if parts and parts[0] else None
