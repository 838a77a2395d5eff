"""The facade's half of the access decision: may a grant read a study, given who the PACS files it under?

Used by both the FHIR API and the DICOMweb proxy; the decision about each patient is smart's
(``check_patient`` through :mod:`smart.api`), the owners of a study come from the PACS
(:mod:`fhir_facade.pacs.lookups`).
"""
from __future__ import annotations

from fhir_facade.pacs.lookups import get_lookups
from smart import api as authz  # the one smart module the facade may import


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
        If any owner of the study or series is outside the patients the grant reaches.
    PacsError
        If the PACS fails.
    """
    lookups = get_lookups()
    check_owners(grant, lookups.patients_of_study(study_uid, fresh=fresh), resource_type)
    if series_uid is not None:
        for patient in lookups.patients_of_series(study_uid, series_uid):
            authz.check_patient(grant, resource_type, patient)


def check_owners(grant: authz.AccessGrant, owners: frozenset[str], resource_type: str = "ImagingStudy") -> None:
    """Refuse unless *grant* may see every patient in *owners* (FHIR Patient ids).

    Raises
    ------
    smart.authz.Forbidden
        If any of them is outside the patients the grant reaches.
    """
    for patient in owners:
        authz.check_patient(grant, resource_type, patient)
