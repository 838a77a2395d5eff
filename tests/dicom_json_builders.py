"""Test helper: build DICOM JSON datasets (PS3.18 Annex F) by keyword."""
from fhir_facade.dicom.dicom_json import TAGS

VR = {
    "StudyInstanceUID": "UI", "SeriesInstanceUID": "UI", "SOPInstanceUID": "UI", "SOPClassUID": "UI",
    "StudyDate": "DA", "SeriesDate": "DA", "PatientBirthDate": "DA", "StudyTime": "TM", "SeriesTime": "TM",
    "PatientName": "PN", "ReferringPhysicianName": "PN", "NameOfPhysiciansReadingStudy": "PN",
    "SeriesNumber": "IS", "InstanceNumber": "IS", "NumberOfStudyRelatedSeries": "IS",
    "NumberOfStudyRelatedInstances": "IS", "NumberOfSeriesRelatedInstances": "IS", "NumberOfFrames": "IS",
    "ProcedureCodeSequence": "SQ", "IssuerOfAccessionNumberSequence": "SQ", "ConceptNameCodeSequence": "SQ",
    "ReasonForPerformedProcedureCodeSequence": "SQ", "ModalitiesInStudy": "CS", "Modality": "CS",
    "PatientSex": "CS", "BodyPartExamined": "CS", "Laterality": "CS", "RetrieveURL": "UR",
    "SpecificCharacterSet": "CS",
}
#: What a PACS that answers in UTF-8 puts on every row (Orthanc with ``DefaultEncoding: Utf8``).
UTF8 = "ISO_IR 192"


def ds(**attrs) -> dict:
    """DICOM JSON object from keyword=value (lists for multi-valued, dicts/lists of dicts for SQ/PN).

    Rows are UTF-8 (SpecificCharacterSet ISO_IR 192) unless told otherwise: pass
    ``SpecificCharacterSet="ISO_IR 100"`` for a PACS that re-encodes, or ``None`` for none.
    """
    attrs.setdefault("SpecificCharacterSet", UTF8)
    out = {}
    for keyword, value in attrs.items():
        vr = VR.get(keyword, "LO")
        if value is None:
            if keyword != "SpecificCharacterSet":
                out[TAGS[keyword]] = {"vr": vr}
            continue
        values = value if isinstance(value, list) else [value]
        if vr == "PN":
            values = [v if isinstance(v, dict) else {"Alphabetic": v} for v in values]
        out[TAGS[keyword]] = {"vr": vr, "Value": values}
    return out
