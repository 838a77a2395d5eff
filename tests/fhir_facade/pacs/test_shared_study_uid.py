"""One StudyInstanceUID filed under two patients (Orthanc does this): neither patient's token
sees the other's series, instances or pixels through any route."""
from __future__ import annotations

import pydicom
import pytest

import devpacs
import samples
from access_helpers import allow
from facade_helpers import bearer, make_app, token


#: Each patient's own name and birth date, to tell whose Patient resource comes back.
NAMES = {"SHARE-A": ("Alpha^Anna", "19700101"), "SHARE-B": ("Beta^Bert", "19990909")}


@pytest.fixture(scope="module")
def shared(orthanc, tmp_path_factory):
    study = pydicom.uid.generate_uid()
    series = {"SHARE-A": pydicom.uid.generate_uid(), "SHARE-B": pydicom.uid.generate_uid()}
    sops = {}
    for patient, series_uid in series.items():
        ds = samples.make_instance(PatientID=patient, StudyInstanceUID=study, SeriesInstanceUID=series_uid,
                                   Modality="OT", PatientName=NAMES[patient][0], PatientBirthDate=NAMES[patient][1])
        devpacs.store_dataset(orthanc.url, ds)
        sops[patient] = str(ds.SOPInstanceUID)
    app = make_app(tmp_path_factory.mktemp("shared"), FACADE_PACS_URL=orthanc.dicomweb_url)
    qido_app = make_app(tmp_path_factory.mktemp("shared-qido"), FACADE_PACS_URL=orthanc.dicomweb_url,
                        FACADE_INSTANCE_QUERY="qido")
    return {"app": app, "orthanc": orthanc, "tmp": tmp_path_factory,
            "client": app.test_client(), "qido_client": qido_app.test_client(), "study": study, "series": series,
            "sops": sops, "tokens": {p: bearer(token(app, patient=p)) for p in series},
            "qido_tokens": {p: bearer(token(qido_app, patient=p)) for p in series}}


@pytest.mark.parametrize("instance_query", ["metadata", "qido"])
@pytest.mark.parametrize("patient, other", [("SHARE-A", "SHARE-B"), ("SHARE-B", "SHARE-A")])
def test_search_shows_only_the_patients_own_series(shared, patient, other, instance_query):
    prefix = "" if instance_query == "metadata" else "qido_"
    client, headers = shared[prefix + "client"], shared[prefix + "tokens"][patient]
    bundle = client.get(f"/fhir/ImagingStudy?patient={patient}", headers=headers).get_json()
    [study] = [e["resource"] for e in bundle["entry"]]
    assert study["id"] == shared["study"]
    assert [s["uid"] for s in study["series"]] == [shared["series"][patient]]
    assert [i["uid"] for i in study["series"][0]["instance"]] == [shared["sops"][patient]]
    assert study["numberOfSeries"] == 1 and study["numberOfInstances"] == 1
    assert shared["series"][other] not in str(bundle)


@pytest.mark.parametrize("patient", ["SHARE-A", "SHARE-B"])
def test_read_and_retrieval_of_the_shared_study_are_refused(shared, patient):
    client, headers, study = shared["client"], shared["tokens"][patient], shared["study"]
    assert client.get(f"/fhir/ImagingStudy/{study}", headers=headers).status_code == 403
    for path in (f"studies/{study}", f"studies/{study}/metadata", f"studies/{study}/series",
                 f"studies/{study}/series/{shared['series'][patient]}"):
        assert client.get(f"/dicomweb/{path}", headers=headers).status_code == 403, path


@pytest.mark.parametrize("first, then", [("SHARE-A", "SHARE-B"), ("SHARE-B", "SHARE-A")])
def test_each_patient_keeps_its_own_series_whoever_searched_first(shared, first, then):
    """One app, so one set of caches: the shared UID's entries must not be the other patient's."""
    app = make_app(shared["tmp"].mktemp("order"), FACADE_PACS_URL=shared["orthanc"].dicomweb_url)
    client = app.test_client()
    for patient in (first, then, first):
        headers = bearer(token(app, patient=patient))
        [study] = [e["resource"] for e in client.get(f"/fhir/ImagingStudy?patient={patient}",
                                                      headers=headers).get_json()["entry"]]
        assert [s["uid"] for s in study["series"]] == [shared["series"][patient]], patient


@pytest.mark.parametrize("first, then", [("SHARE-A", "SHARE-B"), ("SHARE-B", "SHARE-A")])
def test_each_patient_gets_its_own_demographics(shared, first, then):
    """Patient read, search and _include build the Patient from one of the patient's own instances."""
    app = make_app(shared["tmp"].mktemp("demographics"), FACADE_PACS_URL=shared["orthanc"].dicomweb_url)
    client = app.test_client()
    for patient in (first, then):
        headers = bearer(token(app, patient=patient))
        family = NAMES[patient][0].split("^")[0]
        birth = f"{NAMES[patient][1][:4]}-{NAMES[patient][1][4:6]}-{NAMES[patient][1][6:]}"
        read = client.get(f"/fhir/Patient/{patient}", headers=headers).get_json()
        searched = client.get(f"/fhir/Patient?_id={patient}", headers=headers).get_json()["entry"][0]["resource"]
        bundle = client.get(f"/fhir/ImagingStudy?patient={patient}&_include=ImagingStudy:patient",
                            headers=headers).get_json()
        [included] = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
        for resource in (read, searched, included):
            assert (resource["id"], resource["name"][0]["family"], resource["birthDate"]) == (patient, family, birth)


def test_a_system_token_finds_both_patients_and_the_study_once(shared):
    """Patient search keeps both owners of the UID; ImagingStudy search has one resource per id."""
    app = make_app(shared["tmp"].mktemp("system"), FACADE_PACS_URL=shared["orthanc"].dicomweb_url)
    client = app.test_client()
    allow(app)  # system/ reaches only the client's access list
    headers = bearer(token(app, scope="system/Patient.rs system/ImagingStudy.rs", patient=None))
    for patient, (name, _) in NAMES.items():
        bundle = client.get(f"/fhir/Patient?family={name.split('^')[0]}", headers=headers).get_json()
        assert [e["resource"]["id"] for e in bundle["entry"]] == [patient]
    everyone = {e["resource"]["id"] for e in client.get("/fhir/Patient?_count=1000", headers=headers)
                .get_json()["entry"]}
    assert {"SHARE-A", "SHARE-B"} <= everyone
    studies = [e["resource"]["id"] for e in client.get("/fhir/ImagingStudy?_count=1000", headers=headers)
               .get_json()["entry"]]
    assert studies.count(shared["study"]) == 1 and len(studies) == len(set(studies))
    for patient in NAMES:
        [study] = [e["resource"] for e in client.get(f"/fhir/ImagingStudy?patient={patient}",
                                                      headers=headers).get_json()["entry"]]
        assert [s["uid"] for s in study["series"]] == [shared["series"][patient]]
