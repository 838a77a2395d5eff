"""FHIR API against the real Orthanc: field cases FH-1..FH-4 and every sample file, validated.

Studies for the field cases are generated with pydicom (scripts/samples.make_instance) and
stored through devpacs.store_dataset under PatientIDs starting ``FHIT-`` so other test
modules sharing the session's Orthanc are not disturbed. Every resource the facade serves
for the sample files is validated with the ``fhir.resources`` R4B models and parsed with
the ``fhirclient`` (SMART client-py) R4 models, in JSON and in XML.
"""
from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhirclient.models.fhirelementfactory import FHIRElementFactory
from pydicom.uid import CTImageStorage, PositronEmissionTomographyImageStorage, generate_uid

from access_helpers import allow
from facade_helpers import bearer, make_app, token
from fhir_facade.dicom.patient_ids import to_fhir_id
from fhir_validation import validate

DCM = "http://dicom.nema.org/resources/ontology/DCM"
RUN = uuid.uuid4().hex[:8].upper()  # keeps PatientIDs unique if the Orthanc is reused
ZONE = "Asia/Tokyo"  # the facade's configured zone: +09:00 all year (FH-4)


def patient_id(case: str) -> str:
    return f"FHIT-{case}-{RUN}"


def store_study(orthanc, patient: str, series: list[tuple[str, int]], **study) -> dict:
    """Store one generated study; *series* is [(Modality, number of instances)]. Returns its UIDs."""
    import devpacs
    import samples

    study_uid = study.pop("StudyInstanceUID", None) or generate_uid()
    stored = {"StudyInstanceUID": study_uid, "series": [], "instances": []}
    for number, (modality, count) in enumerate(series, 1):
        series_uid = generate_uid()
        stored["series"].append(series_uid)
        sop_class = PositronEmissionTomographyImageStorage if modality == "PT" else CTImageStorage
        for instance in range(1, count + 1):
            sop_uid = generate_uid()
            stored["instances"].append((sop_uid, sop_class))
            ds = samples.make_instance(pixels=False, PatientID=patient, StudyInstanceUID=study_uid,
                                       SeriesInstanceUID=series_uid, SOPInstanceUID=sop_uid,
                                       SOPClassUID=sop_class, Modality=modality, SeriesNumber=number,
                                       InstanceNumber=instance, **study)
            assert devpacs.store_dataset(orthanc.url, ds) is not None
    return stored


@pytest.fixture(scope="module")
def facade(orthanc, tmp_path_factory):
    app = make_app(tmp_path_factory.mktemp("fhir-int"), FACADE_PACS_URL=orthanc.dicomweb_url,
                   FACADE_TIMEZONE=ZONE, FACADE_QUERY_CACHE_TTL=0)
    allow(app)  # system/ reaches only the client's access list
    return app, bearer(token(app, scope="system/*.rs", patient=None))


def get(facade, path, **headers):
    app, auth = facade
    response = app.test_client().get(path, headers={**auth, **headers})
    assert response.status_code == 200, (path, response.get_data(as_text=True)[:400])
    return response.get_json()


def ids(bundle) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


# --- FH-1 date ranges ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def fh1(orthanc):
    patient = patient_id("FH1")
    uids = {d: store_study(orthanc, patient, [("CT", 1)], StudyDate=d, StudyTime=None)["StudyInstanceUID"]
            for d in ("20201231", "20210115", "20210116")}
    return patient, uids


@pytest.mark.parametrize("value, dates", [
    ("le2021-01-15", ["20201231", "20210115"]),
    ("ge2021-01-15", ["20210115", "20210116"]),
    ("2021-01-15", ["20210115"]),
    ("lt2021-01-15", ["20201231"]),
    ("gt2021-01-15", ["20210116"]),
    ("ne2021-01-15", ["20201231", "20210116"]),
    ("2021-01", ["20210115", "20210116"]),
    ("2020", ["20201231"]),
])
def test_fh1_started_ranges(facade, fh1, value, dates):
    patient, uids = fh1
    bundle = get(facade, f"/fhir/ImagingStudy?patient={patient}&started={value}")
    assert bundle["total"] == len(dates)
    assert sorted(ids(bundle)) == sorted(uids[d] for d in dates)


def test_fh1_filter_applies_before_paging(facade, fh1):
    patient, uids = fh1
    first = get(facade, f"/fhir/ImagingStudy?patient={patient}&started=le2021-01-15&_count=1")
    assert first["total"] == 2 and len(ids(first)) == 1
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert "started=le2021-01-15" in links["next"]
    following = urlsplit(links["next"])
    second = get(facade, f"{following.path.replace('/base', '')}?{following.query}")
    assert second["total"] == 2
    assert sorted(ids(first) + ids(second)) == sorted([uids["20201231"], uids["20210115"]])
    # newest first, the same order on every page
    assert ids(first) == [uids["20210115"]]
    assert "next" not in {link["relation"] for link in second["link"]}


# --- FH-2 modalities -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fh2(orthanc):
    patient = patient_id("FH2")
    return patient, store_study(orthanc, patient, [("CT", 2), ("PT", 1)])["StudyInstanceUID"]


def test_fh2_modalities_from_series(facade, fh2):
    patient, uid = fh2
    study = get(facade, f"/fhir/ImagingStudy/{uid}")
    assert study["modality"] == [{"system": DCM, "code": "CT"}, {"system": DCM, "code": "PT"}]
    assert [s["modality"]["code"] for s in study["series"]] == ["CT", "PT"]
    for query, found in (("modality=CT", True), ("modality=PT", True), ("modality=MR", False),
                         (f"modality={DCM}|PT", True), ("modality=http://other|PT", False),
                         ("modality=MR,PT", True)):
        bundle = get(facade, f"/fhir/ImagingStudy?patient={patient}&{query}")
        assert ids(bundle) == ([uid] if found else []), query


# --- FH-3 identifiers ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fh3(orthanc):
    patient = patient_id("FH3")
    accession = f"A123{RUN}"[:16]
    stored = store_study(orthanc, patient, [("CT", 3), ("CT", 2)], AccessionNumber=accession)
    return patient, accession, stored


def test_fh3_identifiers_and_counts(facade, fh3):
    patient, accession, stored = fh3
    uid = stored["StudyInstanceUID"]
    study = get(facade, f"/fhir/ImagingStudy/{uid}")
    validate(study)
    assert study["identifier"][0] == {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}
    assert study["identifier"][1]["type"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
    assert study["identifier"][1]["value"] == accession
    assert [s["uid"] for s in study["series"]] == stored["series"]
    instances = {i["uid"]: i for s in study["series"] for i in s["instance"]}
    assert set(instances) == {sop for sop, _ in stored["instances"]}
    for sop, sop_class in stored["instances"]:
        assert instances[sop]["sopClass"] == {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{sop_class}"}
        assert not instances[sop]["uid"].startswith("urn:")
    assert (study["numberOfSeries"], study["numberOfInstances"]) == (2, 5)
    assert [s["numberOfInstances"] for s in study["series"]] == [3, 2]
    for query in (f"identifier=urn:dicom:uid|urn:oid:{uid}", f"identifier=urn:oid:{uid}",
                  f"identifier={accession}", f"_id={uid}", f"series={stored['series'][1]}",
                  f"instance={stored['instances'][0][0]}", f"dicom-class=urn:oid:{CTImageStorage}"):
        assert ids(get(facade, f"/fhir/ImagingStudy?{query}&patient={patient}")) == [uid], query
    assert ids(get(facade, f"/fhir/ImagingStudy?identifier=urn:dicom:uid|urn:oid:{uid}")) == [uid]
    assert ids(get(facade, f"/fhir/ImagingStudy?identifier={accession}")) == [uid]
    assert ids(get(facade, f"/fhir/ImagingStudy?patient={patient}&identifier=urn:oid:1.2.999")) == []


# --- FH-4 time zones -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fh4(orthanc):
    patient = patient_id("FH4")
    return patient, {
        "offset": store_study(orthanc, patient, [("CT", 1)], StudyDate="20240105", StudyTime="101500.123456",
                              TimezoneOffsetFromUTC="-0500")["StudyInstanceUID"],
        "zone": store_study(orthanc, patient, [("CT", 1)], StudyDate="20240106",
                            StudyTime="101500")["StudyInstanceUID"],
        "date": store_study(orthanc, patient, [("CT", 1)], StudyDate="20240107",
                            StudyTime=None)["StudyInstanceUID"],
    }


def test_fh4_started_time_zones(facade, fh4):
    _, uids = fh4
    assert get(facade, f"/fhir/ImagingStudy/{uids['offset']}")["started"] == "2024-01-05T10:15:00.123456-05:00"
    assert get(facade, f"/fhir/ImagingStudy/{uids['zone']}")["started"] == "2024-01-06T10:15:00+09:00"
    assert get(facade, f"/fhir/ImagingStudy/{uids['date']}")["started"] == "2024-01-07"


def test_fh4_instant_search_uses_the_offset(facade, fh4):
    patient, uids = fh4
    # 10:15-05:00 is 15:15Z; 10:15+09:00 is 01:15Z on the 6th
    bundle = get(facade, f"/fhir/ImagingStudy?patient={patient}&started=ge2024-01-05T15:00:00Z"
                         f"&started=lt2024-01-06T00:00:00Z")
    assert ids(bundle) == [uids["offset"]]


# --- every sample: valid R4 for fhir.resources and fhirclient, in JSON and XML ------------

def parse_with_fhirclient(resource: dict):
    """Parse with SMART client-py's R4 models in strict mode (raises on any unknown/invalid element)."""
    return FHIRElementFactory.instantiate(resource["resourceType"], resource)


def check_resource(facade, path: str) -> dict:
    resource = get(facade, path)
    validate(resource)
    parse_with_fhirclient(resource)
    app, auth = facade
    xml = app.test_client().get(path, headers={**auth, "Accept": "application/fhir+xml"})
    assert xml.status_code == 200 and xml.mimetype == "application/fhir+xml"
    model = get_fhir_model_class(resource["resourceType"]).model_validate_xml(xml.data)
    assert model.id == resource.get("id")
    return resource


def test_every_sample_study_and_patient_is_valid(facade, orthanc):
    assert len(orthanc.samples["studies"]) > 20
    for uid in orthanc.samples["studies"]:
        study = check_resource(facade, f"/fhir/ImagingStudy/{uid}")
        assert study["id"] == uid and study["identifier"][0]["value"] == f"urn:oid:{uid}"
    for patient in orthanc.samples["patients"]:
        fhir_id = to_fhir_id(patient)
        resource = check_resource(facade, f"/fhir/Patient/{fhir_id}")
        assert resource["id"] == fhir_id
        bundle = check_resource(facade, f"/fhir/ImagingStudy?patient={fhir_id}&_include=ImagingStudy:endpoint"
                                        f"&_include=ImagingStudy:patient")
        assert bundle["total"] >= 1
        included = {e["resource"]["resourceType"] for e in bundle["entry"] if e["search"]["mode"] == "include"}
        assert included == {"Endpoint", "Patient"}
    for path in ("/fhir/metadata", "/fhir/Endpoint/dicomweb", "/fhir/Endpoint", "/fhir/Patient?_count=500"):
        check_resource(facade, path)


@pytest.mark.parametrize("patient, family, given", [
    ("SCSFREN", "Buc", ["Jérôme"]),      # ISO_IR 100
    ("SCSGERM", "Äneas", ["Rüdiger"]),    # ISO_IR 100
    ("H31EXAMPLE", "Yamada", ["Tarou"]),  # ISO 2022 IR 87, alphabetic group
    ("I2EXAMPLE", "Hong", ["Gildong"]),   # ISO 2022 IR 149, alphabetic group
    ("X1EXAMPLE", "Wang", ["XiaoDong"]),  # ISO_IR 192
])
def test_character_set_samples_keep_their_names(facade, patient, family, given):
    resource = get(facade, f"/fhir/Patient/{patient}")
    assert resource["name"][0]["family"] == family
    assert resource["name"][0]["given"] == given


def test_japanese_ideographic_and_phonetic_names_of_the_h32_sample(facade):
    # ISO 2022 IR 13\ISO 2022 IR 87: the PACS strips the JIS escapes; the facade decodes again.
    names = get(facade, "/fhir/Patient/H32EXAMPLE")["name"]
    assert [(n.get("family"), n.get("given")) for n in names] == [
        ("ﾔﾏﾀﾞ", ["ﾀﾛｳ"]), ("山田", ["太郎"]), ("やまだ", ["たろう"])]


@pytest.mark.parametrize("patient, family", [("SCSGREEK", "Διονυσιος"), ("SCSRUSS", "Люкceмбypг")])
def test_non_latin1_names_survive_a_pacs_that_answers_qido_in_latin1(facade, patient, family):
    # Orthanc DICOMweb 1.7 answers QIDO-RS in ISO_IR 100 and drops what Latin-1 cannot hold;
    # the Patient is built from WADO-RS instance metadata, which keeps the names.
    resource = get(facade, f"/fhir/Patient/{patient}")
    assert resource["name"][0]["family"] == family
    found = get(facade, f"/fhir/Patient?family={family}")
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [patient]
    included = get(facade, f"/fhir/ImagingStudy?patient={patient}&_include=ImagingStudy:patient")
    assert [e["resource"] for e in included["entry"] if e["resource"]["resourceType"] == "Patient"] == [resource]


def test_instance_lists_from_metadata_and_from_qido_are_the_same(facade, orthanc, tmp_path_factory):
    """FACADE_INSTANCE_QUERY=metadata (WADO-RS) and =qido (QIDO-RS) map every sample study alike,
    except that metadata also has the title of an SR (Orthanc's QIDO-RS leaves out
    ConceptNameCodeSequence, asked for or not)."""
    app = make_app(tmp_path_factory.mktemp("fhir-qido"), FACADE_PACS_URL=orthanc.dicomweb_url,
                   FACADE_TIMEZONE=ZONE, FACADE_QUERY_CACHE_TTL=0, FACADE_INSTANCE_QUERY="qido")
    allow(app)  # system/ reaches only the client's access list
    by_qido = (app, bearer(token(app, scope="system/*.rs", patient=None)))
    titles, instances = {}, 0

    def without_titles(resource):
        for series in resource["series"]:
            for instance in series.get("instance", []):
                if "title" in instance:
                    titles[instance["uid"]] = instance.pop("title")
        return resource

    for uid in orthanc.samples["studies"]:
        from_metadata = get(facade, f"/fhir/ImagingStudy/{uid}")
        instances += sum(len(series.get("instance", [])) for series in from_metadata["series"])
        from_qido = get(by_qido, f"/fhir/ImagingStudy/{uid}")
        assert not any("title" in i for series in from_qido["series"] for i in series.get("instance", []))
        assert without_titles(from_metadata) == from_qido
    assert instances >= len(orthanc.samples["studies"])
    # reportsi.dcm: ConceptNameCodeSequence (0040,A043) CodeMeaning "Document Title"
    assert titles.get("1.2.276.0.7230010.3.1.4.1787205428.166.1117461927.10") == "Document Title"
