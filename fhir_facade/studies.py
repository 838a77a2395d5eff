"""Imaging data from the PACS as the FHIR API needs it: study queries, fan-out and bounded caches."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from cachetools import TTLCache
from flask import Flask, current_app

from . import dicom_json as dj
from . import mapping
from .pacs import PacsClient, get_pacs
from .patient_ids import hashed_id, to_fhir_id

#: Study-level attributes asked of QIDO-RS beyond the ones PS3.18 Table 10.6.3-3 requires.
STUDY_FIELDS = (
    "StudyDate", "StudyTime", "TimezoneOffsetFromUTC", "AccessionNumber", "IssuerOfAccessionNumberSequence",
    "StudyDescription", "ReferringPhysicianName", "NameOfPhysiciansReadingStudy", "ProcedureCodeSequence",
    "ReasonForPerformedProcedureCodeSequence", "PatientName", "PatientID", "IssuerOfPatientID",
    "PatientBirthDate", "PatientSex", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_FIELDS = ("SeriesDescription", "BodyPartExamined", "Laterality", "SeriesDate", "SeriesTime",
                 "TimezoneOffsetFromUTC", "NumberOfSeriesRelatedInstances")
INSTANCE_FIELDS = ("SeriesInstanceUID", "InstanceNumber", "DocumentTitle", "NumberOfFrames")


def include(fields: Sequence[str]) -> list[tuple[str, str]]:
    """``includefield`` query parameters (PS3.18 Section 8.3.4.3) for DICOM keywords, as tags."""
    return [("includefield", dj.TAGS[name]) for name in fields]


class StudyNotFound(LookupError):
    """No study with this StudyInstanceUID exists in the PACS."""

    def __init__(self, uid: str):
        super().__init__(f"no study {uid!r}")
        self.uid = uid


class StudyRepository:
    """Reads studies from the PACS and maps them, with bounded TTL caches.

    Parameters
    ----------
    pacs : PacsClient
        The PACS client.
    ctx : mapping.MappingContext
        Public URLs and default zone for the mapping.
    cache_size : int
        Entries per cache (study -> PatientID, study -> ImagingStudy).
    ttl : float
        Seconds an entry stays valid.
    workers : int
        Bound on parallel PACS requests when one search maps many studies.
    """

    def __init__(self, pacs: PacsClient, ctx: mapping.MappingContext, cache_size: int = 4096,
                 ttl: float = 60.0, workers: int = 8):
        self.pacs = pacs
        self.ctx = ctx
        self._lock = threading.Lock()
        self._patient_of_study: TTLCache = TTLCache(cache_size, ttl)
        self._details: TTLCache = TTLCache(max(cache_size // 8, 16), ttl)
        #: one-way Patient ids (patient_ids rule 3) seen so far -> PatientID
        self._hashed: TTLCache = TTLCache(cache_size, max(ttl, 3600.0))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pacs")

    # -- study -> patient ------------------------------------------------------

    def remember(self, studies: Sequence[dict]) -> None:
        """Cache the PatientID of each study-level dataset in *studies*."""
        with self._lock:
            for ds in studies:
                uid = dj.text(ds, "StudyInstanceUID")
                if uid:
                    patient_id = dj.text(ds, "PatientID") or ""
                    self._patient_of_study[uid] = patient_id
                    fhir_id = to_fhir_id(patient_id)
                    if fhir_id.startswith("dcm-h."):
                        self._hashed[fhir_id] = patient_id

    def patient_of_study(self, study_uid: str) -> str:
        """Return the FHIR Patient id of a study (cached).

        Raises
        ------
        StudyNotFound
            If the PACS knows no such study.
        PacsError
            If the PACS fails.
        """
        with self._lock:
            patient_id = self._patient_of_study.get(study_uid)
        if patient_id is None:
            found = self.pacs.qido("studies", [("StudyInstanceUID", study_uid), ("includefield", dj.TAGS["PatientID"])])
            found = [ds for ds in found if dj.text(ds, "StudyInstanceUID") == study_uid]
            if not found:
                raise StudyNotFound(study_uid)
            self.remember(found[:1])
            patient_id = dj.text(found[0], "PatientID") or ""
        return to_fhir_id(patient_id)

    def resolve_hashed(self, fhir_id: str) -> str | None:
        """Return the PatientID behind a one-way Patient id seen before, else ``None``."""
        with self._lock:
            return self._hashed.get(fhir_id)

    # -- queries ----------------------------------------------------------------

    def find_studies(self, params: Sequence[tuple[str, str]]) -> list[dict]:
        """Run a study-level QIDO-RS query with the attributes the mapping needs.

        Parameters
        ----------
        params : sequence of (str, str)
            Matching keys (DICOM keywords or tags) and values.

        Returns
        -------
        list of dict
            Study-level DICOM JSON, each remembered in the study -> patient cache.
        """
        studies = self.pacs.qido("studies", list(params) + include(STUDY_FIELDS))
        self.remember(studies)
        return studies

    def _details_of(self, study_uid: str) -> tuple[list[dict], list[dict]]:
        with self._lock:
            cached = self._details.get(study_uid)
        if cached is not None:
            return cached
        series = self.pacs.qido(f"studies/{study_uid}/series", include(SERIES_FIELDS))
        instances = self.pacs.qido(f"studies/{study_uid}/instances", include(INSTANCE_FIELDS))
        with self._lock:
            self._details[study_uid] = (series, instances)
        return series, instances

    def imaging_studies(self, studies: Sequence[dict]) -> list[dict]:
        """Map study-level datasets to ImagingStudy resources with series and instances.

        The series and instance queries of different studies run in parallel, at most
        ``workers`` at a time; results keep the order of *studies*.

        Raises
        ------
        PacsError
            If any of the PACS queries fails (no partial answer is returned).
        """
        uids = [dj.text(ds, "StudyInstanceUID") for ds in studies]
        if len(studies) <= 1:
            details = [self._details_of(uid) for uid in uids if uid]
        else:
            details = list(self._pool.map(self._details_of, [uid for uid in uids if uid]))
        result = []
        for ds, (series, instances) in zip([s for s, u in zip(studies, uids) if u], details):
            result.append(mapping.imaging_study(ds, series, instances, self.ctx))
        return result


def init_app(app: Flask) -> None:
    """Create the application's :class:`StudyRepository` (after ``pacs.init_app``)."""
    ctx = mapping.MappingContext(
        public_url=app.config["FACADE_PUBLIC_URL"],
        timezone=app.config.get("FACADE_TIMEZONE", "UTC"),
        patient_id_system=app.config.get("FACADE_PATIENT_ID_SYSTEM"),
    )
    app.extensions["studies"] = StudyRepository(
        app.extensions["pacs"], ctx,
        cache_size=int(app.config.get("FACADE_CACHE_SIZE", 4096)),
        ttl=float(app.config.get("FACADE_CACHE_TTL", 60.0)),
    )


def get_studies() -> StudyRepository:
    """Return the current application's :class:`StudyRepository`."""
    return current_app.extensions["studies"]


__all__ = ["StudyRepository", "StudyNotFound", "get_studies", "get_pacs", "hashed_id", "init_app"]
