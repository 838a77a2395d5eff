"""The PACS PatientID of an EHR's Patient: its identifier of the configured system, read from
the EHR's FHIR server (SMART Imaging Access: the token's ``patient`` is the EHR's id, the PACS
files studies under the MRN).

Mappings are cached per app, ``(issuer, Patient id) -> PatientID``, for
``SMART_EHR_PATIENT_CACHE_SECONDS`` (bounded in entries too); failures are not cached.
"""
from __future__ import annotations

import re
import threading

import requests
from cachetools import TTLCache
from flask import current_app

from smart.tokens.ehr_metadata import Issuer, IssuerUnavailable, setting, state

#: FHIR R4 §2.24.0.1 ``id``: what may be put in the ``Patient/{id}`` path.
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: Mappings kept per app.
CACHE_SIZE = 4096


class PatientNotMapped(Exception):
    """The EHR's Patient has no identifier of the configured system (or cannot be read with
    the token): the token reaches no PACS patient."""

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


class _Mappings:
    def __init__(self, ttl: float) -> None:
        self.lock = threading.Lock()
        self.entries: TTLCache = TTLCache(CACHE_SIZE, ttl)


def _mappings() -> _Mappings:
    found = current_app.extensions.get("smart_ehr_patients")
    if found is None:
        found = current_app.extensions["smart_ehr_patients"] = _Mappings(
            float(setting("SMART_EHR_PATIENT_CACHE_SECONDS")))
    return found


def forget() -> None:
    """Drop this app's cached mappings."""
    current_app.extensions.pop("smart_ehr_patients", None)


def identifier_of(patient: dict, system: str) -> str | None:
    """The value of *patient*'s first identifier of *system* (FHIR R4 Patient.identifier), else None."""
    for identifier in patient.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") == system:
            value = identifier.get("value")
            if isinstance(value, str) and value:
                return value
    return None


def pacs_patient_id(issuer: Issuer, ehr_patient: str, token: str) -> str:
    """The PACS PatientID of the EHR's ``Patient/{ehr_patient}``, read with the presented token.

    Parameters
    ----------
    issuer : Issuer
        The issuer of the token; its ``fhir_base`` and ``patient_identifier_system`` decide.
    ehr_patient : str
        The token's ``patient`` (the EHR's Patient id).
    token : str
        The presented access token (sent to the EHR's FHIR server only).

    Returns
    -------
    str
        The identifier value, which is the PACS's PatientID.

    Raises
    ------
    PatientNotMapped
        A malformed id, a Patient the EHR does not show (4xx), or no identifier of the system.
    IssuerUnavailable
        The EHR's FHIR server is unreachable, slow or failing (5xx).
    """
    key = (issuer.issuer, ehr_patient)
    cache = _mappings()
    with cache.lock:
        hit = cache.entries.get(key)
    if hit is not None:
        return hit
    if not FHIR_ID.fullmatch(ehr_patient):
        raise PatientNotMapped("the access token's patient is not a FHIR id")
    url = f"{issuer.fhir_base}/Patient/{ehr_patient}"
    try:
        response = state().http.get(url, timeout=float(setting("SMART_EHR_TIMEOUT")), headers={
            "Authorization": f"Bearer {token}", "Accept": "application/fhir+json"})
    except requests.RequestException as exc:
        raise IssuerUnavailable("the EHR's FHIR server is unavailable") from exc
    if response.status_code >= 500:
        raise IssuerUnavailable(f"the EHR's FHIR server answered {response.status_code}")
    if response.status_code != 200:
        raise PatientNotMapped(f"the EHR's FHIR server answered {response.status_code} for the token's patient")
    try:
        patient = response.json()
    except (ValueError, RecursionError) as exc:
        raise IssuerUnavailable("the EHR's FHIR server answered something that is not JSON") from exc
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise PatientNotMapped("the EHR's FHIR server answered no Patient for the token's patient")
    value = identifier_of(patient, issuer.patient_identifier_system)
    if value is None:
        raise PatientNotMapped(f"the EHR's Patient has no identifier of system {issuer.patient_identifier_system}")
    with cache.lock:
        cache.entries[key] = value
    return value
