"""The facade's half of the access decision: may a grant read a study, given who the PACS files it under?

Used by both the FHIR API and the DICOMweb proxy; the decision about each patient is smart's
(``check_patient`` through :mod:`smart.api`), the owners of a study come from the PACS
(:mod:`fhir_facade.pacs.lookups`).
"""
from __future__ import annotations

from flask import Flask

from fhir_facade.dicom import dicom_json as dj
from fhir_facade.dicom.patient_ids import to_fhir_id
from fhir_facade.pacs.lookups import UnknownStudy, get_lookups
from fhir_facade.pacs.studies import get_studies
from smart import api as authz  # the one smart module the facade may import

#: Search parameters that name the patient of an ImagingStudy (FHIR R4 ImagingStudy search).
PATIENT_PARAMS = ("patient", "subject")


def init_app(app: Flask) -> None:
    """Tell smart how a PACS PatientID becomes a Patient id here (DESIGN.md "Identifiers"):
    an EHR token's patient is mapped to a PatientID, and from it to the id every decision uses."""
    authz.register_patient_id_rule(app, to_fhir_id)
    authz.register_study_owners(app, study_owners)
    authz.register_patient_studies(app, patient_studies)


def patient_studies(patient: str) -> list[dict]:
    """Patient *patient*'s studies for the "My images" page (issue 15), newest first: ``uid``,
    ``date``, ``description``, ``modalities``; only studies whose PatientID is exactly theirs."""
    studies = get_studies()
    dicom_id = studies.patient_id_of(patient)
    if dicom_id is None:
        return []
    found = [ds for ds in studies.find_studies([("PatientID", dicom_id)]) if to_fhir_id(dj.patient_id(ds)) == patient]
    listed = [{"uid": dj.text(ds, "StudyInstanceUID"), "date": dj.text(ds, "StudyDate") or "",
               "description": dj.text(ds, "StudyDescription") or "",
               "modalities": " ".join((ds.get("00080061") or {}).get("Value") or [])} for ds in found]
    return sorted(listed, key=lambda s: s["date"], reverse=True)


def study_owners(study_uid: str) -> frozenset[str] | None:
    """The Patient ids study *study_uid* is filed under, asked of the PACS afresh (a patient may
    share only a study that is theirs alone); ``None`` when the PACS knows no such study."""
    try:
        return get_lookups().patients_of_study(study_uid, fresh=True)
    except UnknownStudy:
        return None


def local_patient_params(grant: authz.AccessGrant, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """*params* with each ``patient`` / ``subject`` value the client sent in its grant's ids
    (an EHR token's: the EHR's Patient id) turned into the facade's (:meth:`AccessGrant.local_patient`).

    Raises
    ------
    smart.authz.Forbidden
        An EHR token with a patient, and a value that is not that patient (SMART Imaging Access).
    """
    if grant.ehr_patient is None:
        return params
    local = []
    for name, raw in params:
        if name.partition(":")[0] in PATIENT_PARAMS:
            value = raw[len("Patient/"):] if raw.startswith("Patient/") else raw
            raw = grant.local_patient(value)
        local.append((name, raw))
    return local


def local_patient_ids(grant: authz.AccessGrant, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """*params* of a Patient search with each ``_id`` value the client sent in its grant's ids
    (an EHR token's: the EHR's Patient id) turned into the facade's, as :func:`local_patient_params`
    does for ``patient``.

    Raises
    ------
    smart.authz.Forbidden
        An EHR token with a patient, and an ``_id`` that is not that patient.
    """
    if grant.ehr_patient is None:
        return params
    return [(name, ",".join(grant.local_patient(value) for value in raw.split(",")) if name == "_id" else raw)
            for name, raw in params]


def public_search_params(grant: authz.AccessGrant, echo: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The search parameters a Bundle's links echo (FHIR R4 §3.1.1.4.2), with the patient named as
    the grant's client knows it: an EHR token's ``patient`` / ``subject`` / ``_id`` values back
    in the EHR's Patient id, so that its ``next`` link is a search that token may make."""
    if grant.ehr_patient is None:
        return echo
    names = (*PATIENT_PARAMS, "_id")
    return [(name, ",".join(grant.public_patient(value) for value in raw.split(","))
             if name.partition(":")[0] in names else raw) for name, raw in echo]


def public_patient(grant: authz.AccessGrant, patient: dict) -> dict:
    """A Patient resource with the id the grant's client knows it by: the EHR's Patient id for
    an EHR token's patient (a copy), else *patient* itself."""
    if grant.ehr_patient is None or patient.get("id") != grant.patient:
        return patient
    return {**patient, "id": grant.ehr_patient}


def public_subject(grant: authz.AccessGrant, resource: dict) -> dict:
    """*resource* (an ImagingStudy) with ``subject`` naming the patient as the grant's client
    knows it: the EHR's Patient id for an EHR token's patient (a copy; the cached one stays)."""
    if grant.ehr_patient is None:
        return resource
    reference = (resource.get("subject") or {}).get("reference", "")
    if reference != f"Patient/{grant.patient}":
        return resource
    return {**resource, "subject": {**resource["subject"], "reference": f"Patient/{grant.ehr_patient}"}}


def check_study_access(grant: authz.AccessGrant, study_uid: str, resource_type: str = "ImagingStudy",
                       series_uid: str | None = None, fresh: bool = False) -> None:
    """Refuse unless *grant* may read study *study_uid* (every patient it is filed under) and,
    when named, its series *series_uid* (every patient that series is filed under).

    Used by both the FHIR API and the DICOMweb proxy; the decision itself is
    :func:`smart.authz.check_patient`.

    Parameters
    ----------
    grant : smart.authz.AccessGrant
    study_uid, series_uid : str
    resource_type : str
        The FHIR resource type whose scope decides.
    fresh : bool
        Ask the PACS for the study's owners even when cached (a resource holding the whole
        study: see :meth:`Lookups.patients_of_study`).

    Raises
    ------
    UnknownStudy
        If the PACS knows no such study (or series).
    smart.authz.Forbidden
        If any owner of the study or series is outside the patients the grant reaches, or the
        grant is bound to another study (a share link's token).
    PacsError
        If the PACS fails.
    """
    authz.check_study(grant, study_uid)  # a share's token reaches its one study only
    lookups = get_lookups()
    check_owners(grant, lookups.patients_of_study(study_uid, fresh=fresh), resource_type)
    if series_uid is not None:
        for patient in lookups.patients_of_series(study_uid, series_uid):
            authz.check_patient(grant, resource_type, patient)


def check_owners(grant: authz.AccessGrant, owners: frozenset[str], resource_type: str = "ImagingStudy",
                 study_uid: str | None = None) -> None:
    """Refuse unless *grant* may see every patient in *owners* (FHIR Patient ids) and, when
    named, study *study_uid* (a share link's token reaches one study).

    Raises
    ------
    smart.authz.Forbidden
        If any of them is outside the patients the grant reaches, or the study is not the
        grant's.
    """
    if study_uid is not None:
        authz.check_study(grant, study_uid)
    for patient in owners:
        authz.check_patient(grant, resource_type, patient)
