"""PatientIDs with characters a PACS reads specially, against the real Orthanc.

Orthanc 1.10 reads a comma in any QIDO-RS value as a list of values (PS3.18 allows that for
UIDs only), so an exact ``PatientID=SMITH,JOHN`` matched nothing; the facade sends the comma
as a wildcard and filters the answer exactly.
"""
from __future__ import annotations

import pydicom
import pytest

import devpacs
import samples
from access_helpers import allow
from facade_helpers import bearer, make_app, token
from fhir_facade.dicom.patient_ids import to_fhir_id

COMMA = "SMITH,JOHN"
NEIGHBOUR = "SMITH;JOHN"  # what the wildcard also matches: filtered out
LONG_COMMA = "LONG,COMMA-" + "_" * 20  # escaped, longer than 64: the one-way (dcm-h.) Patient id


@pytest.fixture(scope="module")
def forms(orthanc, tmp_path_factory):
    studies = {}
    for patient in (COMMA, NEIGHBOUR, LONG_COMMA):
        ds = samples.make_instance(PatientID=patient, StudyInstanceUID=pydicom.uid.generate_uid(), Modality="OT")
        devpacs.store_dataset(orthanc.url, ds)
        studies[patient] = str(ds.StudyInstanceUID)
    return {"orthanc": orthanc, "tmp": tmp_path_factory, "studies": studies}


def test_a_patient_id_with_a_comma_is_found_everywhere(forms):
    app = make_app(forms["tmp"].mktemp("comma"), FACADE_PACS_URL=forms["orthanc"].dicomweb_url)
    client, fhir_id = app.test_client(), to_fhir_id(COMMA)
    assert fhir_id == "dcm-SMITH.2CJOHN"
    headers = bearer(token(app, patient=fhir_id))
    bundle = client.get(f"/fhir/ImagingStudy?patient={fhir_id}", headers=headers).get_json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == [forms["studies"][COMMA]]
    patient = client.get(f"/fhir/Patient/{fhir_id}", headers=headers)
    assert patient.status_code == 200 and patient.get_json()["identifier"][0]["value"] == COMMA
    rows = client.get("/dicomweb/studies", headers=headers).get_json()
    assert [r["0020000D"]["Value"][0] for r in rows] == [forms["studies"][COMMA]]


def test_a_one_way_patient_id_with_a_comma_is_found_once_seen(forms):
    app = make_app(forms["tmp"].mktemp("long-comma"), FACADE_PACS_URL=forms["orthanc"].dicomweb_url)
    client, fhir_id = app.test_client(), to_fhir_id(LONG_COMMA)
    assert fhir_id.startswith("dcm-h.")
    allow(app)  # system/ reaches only the client's access list
    system = bearer(token(app, scope="system/*.rs", patient=None))
    assert client.get("/fhir/Patient?_count=500", headers=system).status_code == 200  # the worker sees it
    headers = bearer(token(app, patient=fhir_id))
    bundle = client.get(f"/fhir/ImagingStudy?patient={fhir_id}", headers=headers).get_json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == [forms["studies"][LONG_COMMA]]
    rows = client.get("/dicomweb/studies", headers=headers).get_json()
    assert [r["0020000D"]["Value"][0] for r in rows] == [forms["studies"][LONG_COMMA]]


def test_a_one_way_patient_id_never_seen_is_found_in_the_pacs(forms):
    """A token whose one-way id no worker ever saw (a database reset): read, search and QIDO-RS find it."""
    app = make_app(forms["tmp"].mktemp("unseen"), FACADE_PACS_URL=forms["orthanc"].dicomweb_url)
    fhir_id = to_fhir_id(LONG_COMMA)
    client, headers = app.test_client(), bearer(token(app, patient=fhir_id))
    assert client.get(f"/fhir/Patient/{fhir_id}", headers=headers).get_json()["identifier"][0]["value"] == LONG_COMMA
    bundle = client.get(f"/fhir/ImagingStudy?patient={fhir_id}", headers=headers).get_json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == [forms["studies"][LONG_COMMA]]
    rows = client.get("/dicomweb/studies", headers=headers).get_json()
    assert [r["0020000D"]["Value"][0] for r in rows] == [forms["studies"][LONG_COMMA]]


def test_a_one_way_patient_id_seen_by_one_worker_is_resolved_by_another(forms):
    """Two apps on one database stand for two gunicorn workers (or a restart)."""
    shared_db = forms["tmp"].mktemp("workers")
    seen_by = make_app(shared_db, FACADE_PACS_URL=forms["orthanc"].dicomweb_url)
    allow(seen_by)  # system/ reaches only the client's access list
    system = bearer(token(seen_by, scope="system/*.rs", patient=None))
    assert seen_by.test_client().get("/fhir/Patient?_count=500", headers=system).status_code == 200
    other = make_app(shared_db, FACADE_PACS_URL=forms["orthanc"].dicomweb_url)
    fhir_id = to_fhir_id(LONG_COMMA)
    client, headers = other.test_client(), bearer(token(other, patient=fhir_id))
    bundle = client.get(f"/fhir/ImagingStudy?patient={fhir_id}", headers=headers).get_json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == [forms["studies"][LONG_COMMA]]
    rows = client.get("/dicomweb/studies?limit=1", headers=headers).get_json()
    assert [r["0020000D"]["Value"][0] for r in rows] == [forms["studies"][LONG_COMMA]]
    assert client.get(f"/fhir/Patient/{fhir_id}", headers=headers).get_json()["identifier"][0]["value"] == LONG_COMMA


def test_one_way_ids_are_recorded_once_the_table_exists(forms, caplog):
    """A database from before the alias table (and before migrations: no alembic_version): a warning,
    then the ids are recorded after init-db, whose baseline revision creates the missing table."""
    import logging

    from smart.store.db import get_database
    from smart.admin.schema import init_db
    from smart.store.models import PatientAlias
    app = make_app(forms["tmp"].mktemp("old-schema"), FACADE_PACS_URL=forms["orthanc"].dicomweb_url,
                   FACADE_QUERY_CACHE_TTL=0)  # each search asks the PACS, so each sees the id anew
    with app.app_context():
        PatientAlias.__table__.drop(get_database().engine)
        with get_database().engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE alembic_version")
    allow(app)  # system/ reaches only the client's access list
    system = bearer(token(app, scope="system/*.rs", patient=None))
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="fhir_facade.pacs.studies"):
        assert client.get("/fhir/Patient?_count=500", headers=system).status_code == 200
    assert any("init-db" in r.getMessage() and LONG_COMMA not in r.getMessage() for r in caplog.records)
    with app.app_context():
        init_db()
    assert client.get("/fhir/Patient?_count=500", headers=system).status_code == 200
    from sqlalchemy import select
    with app.app_context(), get_database().engine.connect() as conn:
        recorded = conn.execute(select(PatientAlias.patient_id)).scalars().all()
    assert recorded == [LONG_COMMA]


def test_a_patient_id_made_to_look_like_a_one_way_id_reads_only_its_own_studies(forms):
    """Rule 2 wrote "h" + escaped byte + 30 hex as dcm-h.<32 hex>: another patient's one-way id."""
    def first_byte(patient_id: str) -> int:
        return int(to_fhir_id(patient_id)[6:8], 16)

    # A victim whose one-way id starts with the hex of an ASCII byte that rule 2 escapes.
    victim = next(v for v in (f"VICTIM {n:06d} " + "é" * 10 for n in range(10000))
                  if first_byte(v) < 0x80 and not chr(first_byte(v)).isalnum() and chr(first_byte(v)) != "-")
    victim_id = to_fhir_id(victim)
    attacker = "h" + chr(int(victim_id[6:8], 16)) + victim_id[8:]
    studies = {}
    for patient in (victim, attacker):
        ds = samples.make_instance(PatientID=patient, StudyInstanceUID=pydicom.uid.generate_uid(), Modality="OT")
        devpacs.store_dataset(forms["orthanc"].url, ds)
        studies[patient] = str(ds.StudyInstanceUID)
    app = make_app(forms["tmp"].mktemp("forged"), FACADE_PACS_URL=forms["orthanc"].dicomweb_url)
    client, attacker_id = app.test_client(), to_fhir_id(attacker)
    assert attacker_id != victim_id
    headers = bearer(token(app, patient=attacker_id))
    bundle = client.get(f"/fhir/ImagingStudy?patient={attacker_id}", headers=headers).get_json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == [studies[attacker]]
    assert client.get(f"/fhir/ImagingStudy?patient={victim_id}", headers=headers).status_code == 403
    assert client.get(f"/dicomweb/studies/{studies[victim]}", headers=headers).status_code == 403
    rows = client.get("/dicomweb/studies", headers=headers).get_json()
    assert [r["0020000D"]["Value"][0] for r in rows] == [studies[attacker]]
