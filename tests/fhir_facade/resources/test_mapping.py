"""Tests for DICOM JSON -> FHIR mapping (fhir_facade.resources.mapping); each resource validates with R4B."""
import re

import pytest

from dicom_json_builders import ds
from fhir_facade.resources import mapping
from fhir_validation import validate

CTX = mapping.MappingContext(public_url="https://facade.example/base", timezone="UTC")
CT = "1.2.840.10008.5.1.4.1.1.2"
PT = "1.2.840.10008.5.1.4.1.1.128"


def study_fixture():
    study = ds(StudyInstanceUID="1.2.3", AccessionNumber="A123", StudyDate="20240105",
               StudyTime="101500.123456", TimezoneOffsetFromUTC="-0500", PatientID="P1",
               PatientName="Doe^Jane", StudyDescription="PET-CT", ReferringPhysicianName="Ref^Rita",
               ProcedureCodeSequence=[ds(CodeValue="24627-2", CodingSchemeDesignator="LN",
                                         CodeMeaning="CT Chest")])
    series = [
        ds(SeriesInstanceUID="1.2.3.2", SeriesNumber="2", Modality="PT", BodyPartExamined="CHEST"),
        ds(SeriesInstanceUID="1.2.3.1", SeriesNumber="1", Modality="CT", Laterality="L"),
    ]
    instances = [ds(SeriesInstanceUID="1.2.3.1", SOPInstanceUID=f"1.2.3.1.{n}", SOPClassUID=CT,
                    InstanceNumber=str(n)) for n in (2, 1, 3)]
    instances += [ds(SeriesInstanceUID="1.2.3.2", SOPInstanceUID="1.2.3.2.1", SOPClassUID=PT)]
    return study, series, instances


def test_field_case_fh3_identifiers_and_counts():
    study = mapping.imaging_study(*study_fixture(), CTX)
    validate(study)
    assert study["id"] == "1.2.3"
    assert study["identifier"][0] == {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}
    assert study["identifier"][1]["value"] == "A123"
    assert study["identifier"][1]["type"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
    assert [s["uid"] for s in study["series"]] == ["1.2.3.1", "1.2.3.2"]
    assert [i["uid"] for i in study["series"][0]["instance"]] == ["1.2.3.1.1", "1.2.3.1.2", "1.2.3.1.3"]
    assert study["series"][0]["instance"][0]["sopClass"] == {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{CT}"}
    assert study["numberOfSeries"] == 2
    assert study["numberOfInstances"] == 4
    assert study["series"][0]["numberOfInstances"] == 3


def test_field_case_fh2_modalities_come_from_the_series():
    study = mapping.imaging_study(*study_fixture(), CTX)
    assert study["modality"] == [{"system": mapping.DCM, "code": "CT"}, {"system": mapping.DCM, "code": "PT"}]


def test_study_elements():
    study = mapping.imaging_study(*study_fixture(), CTX)
    assert study["subject"] == {"reference": "Patient/P1", "display": "Jane Doe"}
    assert study["started"] == "2024-01-05T10:15:00.123456-05:00"
    assert study["referrer"] == {"display": "Rita Ref"}
    assert study["description"] == "PET-CT"
    assert study["endpoint"] == [{"reference": "Endpoint/dicomweb"}, {"reference": "Endpoint/viewer-1.2.3"}]
    assert study["procedureCode"][0]["coding"][0] == {"system": "http://loinc.org", "code": "24627-2",
                                                      "display": "CT Chest"}
    assert study["series"][1]["bodySite"]["code"] == "816094009"
    assert study["series"][0]["laterality"]["code"] == "7771000"


@pytest.mark.parametrize("da, tm, offset, zone, expected", [
    ("20240105", "101500.123456", "-0500", "UTC", "2024-01-05T10:15:00.123456-05:00"),
    ("20240105", "101500", None, "UTC", "2024-01-05T10:15:00+00:00"),
    ("20240105", "1015", None, "America/New_York", "2024-01-05T10:15:00-05:00"),
    ("20240705", "10", None, "America/New_York", "2024-07-05T10:00:00-04:00"),
    ("20240105", None, "-0500", "UTC", "2024-01-05"),
    ("20240105", "garbage", None, "UTC", "2024-01-05"),
    ("2024", None, None, "UTC", "2024"),
    ("20241301", "101500", None, "UTC", None),
    (None, "101500", None, "UTC", None),
    ("20240105", "10:15:00", "+0000", "UTC", "2024-01-05T10:15:00+00:00"),
])
def test_field_case_fh4_started(da, tm, offset, zone, expected):
    assert mapping.fhir_datetime(da, tm, offset, zone) == expected


def test_study_without_series_falls_back_to_study_attributes():
    study = ds(StudyInstanceUID="1.9", PatientID="P 2", ModalitiesInStudy=["MR", "SR"],
               NumberOfStudyRelatedSeries="3", NumberOfStudyRelatedInstances="17")
    resource = mapping.imaging_study(study, [], [], CTX)
    validate(resource)
    assert resource["subject"]["reference"] == "Patient/dcm-P.202"
    assert [m["code"] for m in resource["modality"]] == ["MR", "SR"]
    assert (resource["numberOfSeries"], resource["numberOfInstances"]) == (3, 17)
    assert "started" not in resource


@pytest.mark.parametrize("sex, gender", [("M", "male"), ("F", "female"), ("O", "other"), ("X", "unknown"),
                                         ("m", "male"), (None, None)])
def test_patient_gender(sex, gender):
    patient = mapping.patient(ds(PatientID="P1", PatientSex=sex), CTX)
    validate(patient)
    assert patient.get("gender") == gender


def test_patient_name_groups_and_issuer():
    patient = mapping.patient(ds(PatientID="P1", IssuerOfPatientID="1.2.840.99", PatientBirthDate="19700102",
                                 PatientName={"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎",
                                              "Phonetic": "やまだ^たろう"}), CTX)
    validate(patient)
    assert patient["identifier"] == [{"value": "P1", "system": "urn:oid:1.2.840.99"}]
    assert patient["birthDate"] == "1970-01-02"
    assert [n["family"] for n in patient["name"]] == ["Yamada", "山田", "やまだ"]
    assert patient["name"][1]["extension"][0]["valueCode"] == "IDE"
    assert patient["name"][2]["extension"][0]["valueCode"] == "SYL"


def test_patient_with_empty_patient_id():
    patient = mapping.patient(ds(PatientID=None, PatientName="Anon"), CTX)
    validate(patient)
    assert patient["id"] == "dcm-"
    assert "identifier" not in patient


def test_endpoint_points_at_the_facade():
    endpoint = mapping.endpoint(CTX)
    validate(endpoint)
    assert endpoint["address"] == "https://facade.example/base/dicomweb"
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    assert endpoint["extension"][0] == {"url": mapping.REQUIRES_ACCESS_TOKEN, "valueBoolean": True}


def _dicom_sct_concepts():
    """SNOMED CT code -> [(Code Meaning, CIDs)] from pydicom's tables generated from DICOM PS3.16."""
    from pydicom.sr._concepts_dict import concepts
    by_code: dict = {}
    for _keyword, entries in concepts["SCT"].items():
        for code, (meaning, cids) in entries.items():
            by_code.setdefault(code, []).append((meaning, set(cids)))
    return by_code


@pytest.mark.parametrize("term", sorted(mapping.BODY_PART))
def test_body_part_codes_match_ps3_16(term):
    """Each Annex L code is a PS3.16 anatomic-region concept (CID 4 "Anatomic Region", 4030 "CT, MR
    and PET Anatomy Imaged" or 4031 "Common Anatomic Regions") with the Code Meaning DICOM gives it."""
    code, meaning = mapping.BODY_PART[term]
    found = _dicom_sct_concepts()[code]
    assert any(m == meaning and cids & {4, 4030, 4031} for m, cids in found), (term, found)
    site = mapping.body_site(term.lower())
    assert site == {"system": mapping.SNOMED, "code": code, "display": meaning}


@pytest.mark.parametrize("value", sorted(mapping.LATERALITY))
def test_laterality_codes_match_cid_244(value):
    code, meaning = mapping.LATERALITY[value]
    assert any(m == meaning and 244 in cids for m, cids in _dicom_sct_concepts()[code])


def test_unknown_body_part_keeps_its_text_without_a_code():
    assert mapping.body_site("BELLYBUTTON") == {"display": "BELLYBUTTON"}
    assert mapping.laterality("U") is None


def test_series_started_uses_the_study_offset():
    study, series, instances = study_fixture()
    series[0] = ds(SeriesInstanceUID="1.2.3.2", SeriesNumber="2", Modality="PT", SeriesDate="20240105",
                   SeriesTime="1030")
    resource = mapping.imaging_study(study, series, instances, CTX)
    assert resource["series"][1]["started"] == "2024-01-05T10:30:00-05:00"


def test_accession_issuer_is_the_assigner():
    study, series, instances = study_fixture()
    study.update(ds(IssuerOfAccessionNumberSequence=[ds(LocalNamespaceEntityID="HOSP-A")]))
    resource = mapping.imaging_study(study, series, instances, CTX)
    validate(resource)
    assert resource["identifier"][1]["assigner"] == {"display": "HOSP-A"}


# --- the web-viewer Endpoint (issue 14 item 2, IHE MADO) ------------------------------------------
@pytest.mark.parametrize("uid", ["1.2.3", "1.2.840.10008.5.1.4.1.1.2", "0.0", "1." + "9" * 55, "2.25." + "1" * 59,
                                 "1." + "0" * 62])
def test_viewer_endpoint_ids_are_fhir_ids_and_name_their_study(uid):
    endpoint_id = mapping.viewer_endpoint_id(uid)
    assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", endpoint_id), endpoint_id
    assert mapping.viewer_endpoint_study(endpoint_id) == uid
    assert endpoint_id == ("viewer-" + uid if len(uid) <= 57 else endpoint_id)
    assert endpoint_id.startswith("viewer-x") == (len(uid) > 57)


@pytest.mark.parametrize("endpoint_id", ["dicomweb", "viewer-", "viewer-x", "viewer-1.2.a", "viewer-x!", "viewer-x0",
                                         "Viewer-1.2"])
def test_other_ids_name_no_study(endpoint_id):
    assert mapping.viewer_endpoint_study(endpoint_id) is None


def test_viewer_endpoint_is_mados_web_viewer_for_the_study():
    endpoint = mapping.viewer_endpoint("1.2.3", CTX)
    assert endpoint["id"] == "viewer-1.2.3"
    assert endpoint["connectionType"]["system"] == "https://profiles.ihe.net/RAD/MADO/CodeSystem/MadoEndpointConnectionTypes"
    assert endpoint["connectionType"]["code"] == "web-viewer"
    assert endpoint["payloadMimeType"] == ["text/html"]
    assert endpoint["payloadType"][0]["coding"][0]["code"] == "none"
    assert endpoint["address"] == f"{CTX.public_url}/viewer/viewer?StudyInstanceUIDs=1.2.3"


def test_a_study_without_a_valid_uid_has_no_viewer_endpoint():
    assert not mapping.has_viewer_endpoint(None)
    assert not mapping.has_viewer_endpoint("1.2.x")
    assert mapping.has_viewer_endpoint("1.2.3")


def test_viewer_endpoint_is_valid_fhir():
    assert validate(mapping.viewer_endpoint("1.2.3", CTX)).id == "viewer-1.2.3"
