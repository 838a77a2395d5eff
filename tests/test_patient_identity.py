"""Issue 11: patients whose PatientIDs differ never reach each other's studies, on a PACS that
answers QIDO-RS in UTF-8 and on one that re-encodes it lossily to Latin-1.

Each holder's PatientID is what a Latin-1 answer leaves of its victims' PatientIDs: Orthanc
answers ``Nandu-日本`` as ``Nandu-``, ``山田`` as an empty PatientID (Patient ``dcm-``), the
multi-valued ``bs\\x`` starts with ``bs``.
"""
from __future__ import annotations

import pydicom
import pytest

import devpacs
import samples
from facade_helpers import bearer, make_app, token
from fhir_facade.patient_ids import to_fhir_id

#: holder PatientID -> the PatientIDs a lossy answer makes look like it
HOLDERS = {
    "Nandu-": ["Nandu-日本", "Nandu-中国"],
    "": ["山田", "王小东"],
    "bs": ["bs\\x"],
    "7": ["Ωμέγα7"],
    "ceyp": ["Люкceмбypг"],
}
#: owners only: locked out of their own study before the fix
OTHERS = ["Ñandú-日本"]
PAIRS = [(holder, victim) for holder, victims in HOLDERS.items() for victim in victims]
EVERYONE = list(HOLDERS) + [v for vs in HOLDERS.values() for v in vs] + OTHERS
REFUSED = (403, 404)


def _name(index: int) -> str:
    return f"Ωmega{index}^Ñandú 日本"


@pytest.fixture(scope="module")
def world(encoded_pacs, tmp_path_factory):
    """One single-instance study per PatientID in EVERYONE, a facade on that PACS, a token each."""
    studies = {}
    for index, patient_id in enumerate(EVERYONE):
        ds = samples.make_instance(PatientID=patient_id, PatientName=_name(index), SpecificCharacterSet="ISO_IR 192",
                                   StudyDescription=f"Люкceмбypг {index}", SeriesDescription=f"Ωmega {index}",
                                   Modality="OT")
        devpacs.store_dataset(encoded_pacs.url, ds)
        studies[patient_id] = {"study": str(ds.StudyInstanceUID), "series": str(ds.SeriesInstanceUID),
                               "sop": str(ds.SOPInstanceUID), "name": _name(index)}
    app = make_app(tmp_path_factory.mktemp("identity"), FACADE_PACS_URL=encoded_pacs.dicomweb_url)
    headers = {p: bearer(token(app, patient=to_fhir_id(p))) for p in EVERYONE}
    return {"client": app.test_client(), "studies": studies, "headers": headers}


def _paths(study: dict) -> list[str]:
    base = f"/dicomweb/studies/{study['study']}"
    series = f"{base}/series/{study['series']}"
    instance = f"{series}/instances/{study['sop']}"
    return [base, f"{base}/metadata", f"{base}/series", series, f"{series}/metadata", f"{series}/instances",
            instance, f"{instance}/metadata", f"{instance}/frames/1", f"{instance}/rendered"]


def _uids(answer) -> set:
    return {ds["0020000D"]["Value"][0] for ds in (answer.get_json() or []) if "0020000D" in ds} \
        if answer.status_code == 200 else set()


@pytest.mark.parametrize("holder, victim", PAIRS)
def test_a_holder_reaches_no_victim_study_by_any_route(world, holder, victim):
    client, headers, target = world["client"], world["headers"][holder], world["studies"][victim]
    uid = target["study"]
    assert client.get(f"/fhir/ImagingStudy/{uid}", headers=headers).status_code in REFUSED
    for query in (f"patient={to_fhir_id(holder)}", "", f"identifier=urn:oid:{uid}"):
        bundle = client.get(f"/fhir/ImagingStudy?{query}", headers=headers)
        assert bundle.status_code == 200
        assert uid not in [e["resource"]["id"] for e in bundle.get_json().get("entry", [])], query
    for path in _paths(target):
        status = client.get(path, headers={**headers, "Accept": "*/*"}).status_code
        assert status in REFUSED, path
    for query in ("", f"?StudyInstanceUID={uid}", f"?PatientID={holder}"):
        assert uid not in _uids(client.get(f"/dicomweb/studies{query}", headers=headers)), query
    series = client.get(f"/dicomweb/series?StudyInstanceUID={uid}", headers=headers)
    assert uid not in _uids(series) and target["series"] not in series.get_data(as_text=True)


@pytest.mark.parametrize("patient_id", EVERYONE)
def test_each_owner_reads_and_finds_their_own_study(world, patient_id):
    client, headers, own = world["client"], world["headers"][patient_id], world["studies"][patient_id]
    fhir_id = to_fhir_id(patient_id)
    read = client.get(f"/fhir/ImagingStudy/{own['study']}", headers=headers)
    assert read.status_code == 200
    resource = read.get_json()
    assert resource["subject"]["reference"] == f"Patient/{fhir_id}"
    index = EVERYONE.index(patient_id)
    assert resource["subject"]["display"] == f"Ñandú 日本 Ωmega{index}"
    assert resource["description"] == f"Люкceмбypг {index}"
    assert [s["description"] for s in resource["series"]] == [f"Ωmega {index}"]
    bundle = client.get(f"/fhir/ImagingStudy?patient={fhir_id}", headers=headers).get_json()
    assert own["study"] in [e["resource"]["id"] for e in bundle.get("entry", [])]
    assert own["study"] in _uids(client.get("/dicomweb/studies", headers=headers))
    metadata = client.get(f"/dicomweb/studies/{own['study']}/metadata", headers=headers)
    assert metadata.status_code == 200
    assert "\\".join(metadata.get_json()[0]["00100020"].get("Value", [""])) == patient_id
    patient = client.get(f"/fhir/Patient/{fhir_id}", headers=headers).get_json()
    assert patient["name"][0]["text"] == resource["subject"]["display"]
