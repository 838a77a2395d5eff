"""Small, cached PACS look-ups the authorization and the proxy need: who owns a study, what an instance holds."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from cachetools import TTLCache
from flask import Flask, current_app


from fhir_facade.dicom import dicom_json as dj
from fhir_facade.dicom.patient_ids import to_fhir_id
from fhir_facade.pacs import metrics
from fhir_facade.pacs.client import PacsClient
from fhir_facade.pacs.exact import ExactSource, is_exact

#: The owner of a study row whose patient cannot be confirmed: no patient's id, so only a
#: grant to every patient passes (:func:`smart.authz.check_patient`).
UNCONFIRMED = ""


#: Refusals of one representation for one resource after which it is not asked for again.
REFUSALS = 2


class UnknownStudy(LookupError):
    """The PACS holds no study with this StudyInstanceUID."""


@dataclass(frozen=True)
class InstanceInfo:
    """What the proxy must know of an instance before relaying frames or renderings.

    Attributes
    ----------
    number_of_frames : int
        NumberOfFrames (0028,0008); 1 when absent on an image, 0 without pixel data.
    has_pixels : bool
        Rows (0028,0010) is present, i.e. the instance is an image (PS3.3 C.7.6.3).
    sop_class_uid : str or None
    bits_allocated : int or None
        BitsAllocated (0028,0100), ``None`` when the PACS does not say.
    """

    number_of_frames: int
    has_pixels: bool
    sop_class_uid: str | None
    bits_allocated: int | None = None


class Lookups:
    """Bounded, time-limited caches of study -> patients and instance -> :class:`InstanceInfo`.

    Parameters
    ----------
    pacs : PacsClient
    size : int
        Entries per cache.
    ttl : float
        Seconds an entry is trusted.
    """

    def __init__(self, pacs: PacsClient, size: int = 4096, ttl: float = 60.0, exact: ExactSource | None = None):
        self.pacs = pacs
        self.exact = exact or ExactSource(pacs, max(size // 16, 16), ttl)
        self._lock = threading.Lock()
        self._owners: TTLCache = TTLCache(size, ttl)
        self._instances: TTLCache = TTLCache(size, ttl)
        #: (resource, representation) pairs the PACS could not produce
        self._refused: TTLCache = TTLCache(size, ttl)

    def patients_of_study(self, study_uid: str, fresh: bool = False) -> frozenset[str]:
        """FHIR Patient ids of every patient holding a study with this UID.

        A StudyInstanceUID is meant to be unique, but a PACS can file the same UID under
        two patients (Orthanc does); access needs every one of them to be allowed. Owners
        come from exact PatientIDs only (:mod:`fhir_facade.pacs.exact`): when a row of the
        PACS's answer may have been re-encoded lossily, every patient the study's metadata
        names is an owner, and a row that metadata cannot confirm adds
        :data:`UNCONFIRMED`, which no patient's grant allows.

        Parameters
        ----------
        study_uid : str
        fresh : bool
            Ask the PACS even if the answer is cached: for resources that hold the whole
            study, which a patient's instance stored since under the same UID would join.

        Raises
        ------
        UnknownStudy
            If the PACS knows no such study.
        PacsError
            If the PACS fails.
        """
        return self._owners_of(("study", study_uid), "studies", "StudyInstanceUID", study_uid, study_uid, fresh)

    def patients_of_series(self, study_uid: str, series_uid: str) -> frozenset[str]:
        """FHIR Patient ids of every patient holding series *series_uid* of study *study_uid*.

        Cached per series, so a series stored under a study after its owners were cached
        is looked up afresh (:meth:`patients_of_study` caches the study's owners).

        Raises
        ------
        UnknownStudy
            If the PACS knows no such series in that study.
        PacsError
            If the PACS fails.
        """
        return self._owners_of(("series", study_uid, series_uid), f"studies/{study_uid}/series",
                               "SeriesInstanceUID", series_uid, study_uid)

    def _owners_of(self, key: tuple, path: str, keyword: str, uid: str, study_uid: str,
                   fresh: bool = False) -> frozenset[str]:
        with self._lock:
            owners = None if fresh else self._owners.get(key)
        if not fresh:
            metrics.count_lookup(f"{key[0]}_owners", owners is not None)
        if owners is not None:
            return owners
        params = [(keyword, uid), ("includefield", dj.TAGS["PatientID"])]
        if keyword != "StudyInstanceUID":  # a study-level row always names it (PS3.18 Table 10.6.3-3)
            params.append(("includefield", dj.TAGS["StudyInstanceUID"]))
        rows = [row for row in self.pacs.qido(path, params) if isinstance(row, dict) and dj.text(row, keyword) == uid]
        return self._owners_from(key, rows, keyword, uid, study_uid)

    def patients_of_study_rows(self, study_uid: str, rows: list[dict]) -> frozenset[str]:
        """:meth:`patients_of_study` from a study-level answer the caller already has.

        Parameters
        ----------
        study_uid : str
        rows : list of dict
            The PACS's whole study-level QIDO-RS answer for ``StudyInstanceUID`` = *study_uid*
            (any attributes, PatientID among them), as the PACS sent it.

        Raises
        ------
        UnknownStudy
            If *rows* hold no row of that study.
        PacsError
            If the PACS fails while metadata confirms a row.
        """
        rows = [row for row in rows if isinstance(row, dict) and dj.text(row, "StudyInstanceUID") == study_uid]
        return self._owners_from(("study", study_uid), rows, "StudyInstanceUID", study_uid, study_uid)

    def _owners_from(self, key: tuple, rows: list[dict], keyword: str, uid: str, study_uid: str) -> frozenset[str]:
        if not rows:
            raise UnknownStudy(uid)
        rows = [dict(row) for row in rows]  # the caller's rows stay as they are
        for row in rows:  # a PACS may leave out the study's UID on a row below it
            row.setdefault(dj.TAGS["StudyInstanceUID"], {"vr": "UI", "Value": [study_uid]})
        found = {to_fhir_id(dj.patient_id(row)) for row in rows if is_exact(row)}
        if any(not is_exact(row) for row in rows):
            confirmed = self.exact.confirm(rows)
            found |= {to_fhir_id(dj.patient_id(ds)) for ds in self.exact.study(study_uid).instances
                      if dj.text(ds, keyword) == uid}
            found |= {to_fhir_id(dj.patient_id(row)) for row in confirmed}
            if len(confirmed) < len(rows):
                found.add(UNCONFIRMED)
        owners = frozenset(found)
        with self._lock:
            self._owners[key] = owners
        return owners

    def instance(self, study_uid: str, series_uid: str, sop_uid: str) -> InstanceInfo | None:
        """Frames, pixel presence and BitsAllocated of one instance, or ``None`` if the PACS does not have it."""
        key = (study_uid, series_uid, sop_uid)
        with self._lock:
            info = self._instances.get(key)
        metrics.count_lookup("instances", info is not None)
        if info is None:
            rows = self.pacs.qido(f"studies/{study_uid}/series/{series_uid}/instances", [
                ("SOPInstanceUID", sop_uid), ("includefield", dj.TAGS["NumberOfFrames"]),
                ("includefield", dj.TAGS["Rows"]), ("includefield", dj.TAGS["BitsAllocated"])])
            rows = [r for r in rows if dj.text(r, "SOPInstanceUID") == sop_uid]
            if not rows:
                return None
            has_pixels = dj.first(rows[0], "Rows") is not None
            frames = dj.integer(rows[0], "NumberOfFrames")
            # A missing, zero or negative NumberOfFrames on an image means one frame.
            info = InstanceInfo(number_of_frames=max(frames or 1, 1) if has_pixels else 0, has_pixels=has_pixels,
                                sop_class_uid=dj.text(rows[0], "SOPClassUID"),
                                bits_allocated=dj.integer(rows[0], "BitsAllocated"))
            with self._lock:
                self._instances[key] = info
        return info

    def refused(self, resource: str, choice) -> bool:
        """Whether the PACS could not produce *choice* (a :class:`~fhir_facade.dicomweb.negotiation.Choice`)
        for *resource* (a path) twice within the cache time: once may have been a passing failure."""
        with self._lock:
            return self._refused.get((resource, choice), 0) >= REFUSALS

    def note_refused(self, resource: str, choice) -> None:
        """Count that the PACS could not produce *choice* for *resource*."""
        with self._lock:
            self._refused[(resource, choice)] = self._refused.get((resource, choice), 0) + 1


def init_app(app: Flask) -> None:
    """Create the application's :class:`Lookups` (after ``pacs.init_app``)."""
    size, ttl = int(app.config.get("FACADE_CACHE_SIZE", 4096)), float(app.config.get("FACADE_CACHE_TTL", 60.0))
    exact = ExactSource(app.extensions["pacs"], max(size // 16, 16), ttl)
    app.extensions["exact"] = exact
    app.extensions["lookups"] = Lookups(app.extensions["pacs"], size=size, ttl=ttl, exact=exact)


def get_lookups() -> Lookups:
    """Return the current application's :class:`Lookups`."""
    return current_app.extensions["lookups"]
