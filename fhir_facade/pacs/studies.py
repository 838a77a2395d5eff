"""Imaging data from the PACS as the FHIR API needs it: study queries, fan-out and bounded caches."""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from cachetools import TTLCache
from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from smart.api import PatientAlias, get_database

from fhir_facade.dicom import dicom_json as dj
from fhir_facade.dicom.patient_ids import InvalidPatientId, hashed_id, to_fhir_id, to_patient_id
from fhir_facade.pacs import metrics
from fhir_facade.pacs.client import PacsClient, PacsError, get_pacs
from fhir_facade.pacs.exact import ExactSource, exact_copy, narrowing
from fhir_facade.resources import mapping

#: Study-level attributes asked of QIDO-RS beyond the ones PS3.18 Table 10.6.3-3 requires.
STUDY_FIELDS = (
    "StudyDate", "StudyTime", "TimezoneOffsetFromUTC", "AccessionNumber", "IssuerOfAccessionNumberSequence",
    "StudyDescription", "ReferringPhysicianName", "NameOfPhysiciansReadingStudy", "ProcedureCodeSequence",
    "ReasonForPerformedProcedureCodeSequence", "PatientName", "PatientID", "IssuerOfPatientID",
    "PatientBirthDate", "PatientSex", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_FIELDS = ("PatientID", "SeriesDescription", "BodyPartExamined", "Laterality", "SeriesDate", "SeriesTime",
                 "TimezoneOffsetFromUTC", "NumberOfSeriesRelatedInstances")
#: Patient module attributes (PS3.3 C.7.1.1) read from instance metadata for Patient resources.
PATIENT_FIELDS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
INSTANCE_FIELDS = ("PatientID", "SeriesInstanceUID", "InstanceNumber", "DocumentTitle", "ConceptNameCodeSequence", "NumberOfFrames")
#: Tags of an instance kept from WADO-RS metadata: what the QIDO-RS query would have answered.
INSTANCE_TAGS = tuple(dj.TAGS[name] for name in ("SOPInstanceUID", "SOPClassUID") + INSTANCE_FIELDS)
#: How instance lists are read from the PACS (``FACADE_INSTANCE_QUERY``).
INSTANCE_QUERIES = ("metadata", "qido")

log = logging.getLogger(__name__)


def _of_patient(rows: list[dict], study: dict) -> list[dict]:
    """The rows (series, instances) of *study*'s patient; a row that names no PatientID is kept."""
    patient_id = dj.patient_id(study)
    return [row for row in rows if dj.patient_id(row) in (None, patient_id)]


#: Least seconds between two reads of the PACS's study list for unseen one-way Patient ids.
SCAN_INTERVAL = 60.0
#: Studies asked for per QIDO-RS page of that list, and most pages read.
SCAN_PAGE = 1000
SCAN_PAGES = 1000


def include(fields: Sequence[str]) -> list[tuple[str, str]]:
    """``includefield`` query parameters (PS3.18 Section 8.3.4.3) for DICOM keywords, as tags."""
    return [("includefield", dj.TAGS[name]) for name in fields]


class StudyRepository:
    """Reads studies from the PACS and maps them, with bounded TTL caches.

    Parameters
    ----------
    pacs : PacsClient
        The PACS client.
    ctx : mapping.MappingContext
        Public URLs and default zone for the mapping.
    cache_size : int
        Entries of the one-way Patient id cache; the per-study caches (series, instances,
        mapped ImagingStudy, patient module) hold an eighth of that.
    ttl : float
        Seconds an entry stays valid.
    workers : int
        Bound on parallel PACS requests when one search maps many studies.
    query_ttl : float
        Seconds a study-level QIDO-RS answer is reused for the same query (0: never).
    aliases : PatientAliases, optional
        Where one-way Patient ids and their PatientIDs are shared between workers.
    exact : ExactSource, optional
        Confirms QIDO-RS rows that may have been re-encoded lossily (:mod:`fhir_facade.pacs.exact`).
    instance_query : {"metadata", "qido"}
        How a study's instances are listed: study-level WADO-RS Retrieve Metadata
        (PS3.18 Section 10.4), or an instance-level QIDO-RS query (Section 10.6). Both
        answer the same attributes; which one is quicker depends on the PACS (Orthanc
        1.10 answers metadata 1.2-3.4 times quicker: its instance QIDO-RS reads every file
        and then some).

    Raises
    ------
    ValueError
        If *instance_query* is neither.
    """

    def __init__(self, pacs: PacsClient, ctx: mapping.MappingContext, cache_size: int = 4096,
                 ttl: float = 60.0, workers: int = 8, query_ttl: float = 10.0, instance_query: str = "metadata",
                 aliases: PatientAliases | None = None, exact: ExactSource | None = None):
        if instance_query not in INSTANCE_QUERIES:
            raise ValueError(f"FACADE_INSTANCE_QUERY must be one of {', '.join(INSTANCE_QUERIES)}")
        self.instance_query = instance_query
        self.aliases = aliases
        self.pacs = pacs
        self.exact = exact or ExactSource(pacs, max(cache_size // 16, 16), ttl)
        self.ctx = ctx
        self._lock = threading.Lock()
        details = max(cache_size // 8, 16)
        # A PACS can file one StudyInstanceUID under two patients (Orthanc does): the per-study
        # caches are keyed by (StudyInstanceUID, PatientID), so neither patient's entry is the other's.
        #: (uid, PatientID) -> (stamp, series-level DICOM JSON)
        self._series: TTLCache = TTLCache(details, ttl)
        #: (uid, PatientID) -> (stamp, instance-level DICOM JSON)
        self._instances: TTLCache = TTLCache(details, ttl)
        #: (uid, PatientID, with_instances) -> ((study fingerprint,), mapped ImagingStudy)
        self._resources: TTLCache = TTLCache(details, ttl)
        #: sorted QIDO-RS matching keys -> study-level answer (None: no query cache)
        self._queries: TTLCache | None = TTLCache(256, query_ttl) if query_ttl > 0 else None
        #: one-way Patient ids (patient_ids rule 3) seen so far -> PatientID
        self._hashed: TTLCache = TTLCache(cache_size, max(ttl, 3600.0))
        #: when the PACS's study list was last read for one-way ids (monotonic seconds)
        self._scanned_at = -SCAN_INTERVAL
        self._scan_lock = threading.Lock()
        #: one-way Patient ids known to be in the database (a failed save is tried again)
        self._recorded: TTLCache = TTLCache(cache_size, max(ttl, 3600.0))
        #: (uid, PatientID) -> study dataset with the patient module from instance metadata
        self._patients: TTLCache = TTLCache(details, ttl)
        #: PatientIDs whose series query filled the series cache within ``ttl``
        self._series_patients: TTLCache = TTLCache(details, ttl)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pacs")

    # -- one-way Patient ids ------------------------------------------------------

    def remember(self, studies: Sequence[dict]) -> None:
        """Remember the PatientID behind each one-way Patient id (patient_ids rule 3) in *studies*.

        New pairs are also recorded in the facade's database (``facade_patient_alias``), so
        that other workers, and later runs, resolve the id too.
        """
        new = {}
        with self._lock:
            for ds in studies:
                patient_id = dj.patient_id(ds) or ""
                fhir_id = to_fhir_id(patient_id)
                if fhir_id.startswith("dcm-h."):
                    self._hashed[fhir_id] = patient_id
                    if fhir_id not in self._recorded:
                        new[fhir_id] = patient_id
        if new and self.aliases is not None and self.aliases.save(new):
            with self._lock:
                self._recorded.update(new)

    def patient_id_of(self, fhir_id: str | None) -> str | None:
        """The exact DICOM PatientID of FHIR Patient id *fhir_id*: the one conversion every
        route, the access decision and the consent page's picker use.

        Rules 1 and 2 of :mod:`fhir_facade.dicom.patient_ids` are inverted directly; a one-way
        id (rule 3) is resolved among the PatientIDs seen (:meth:`resolve_hashed`).

        Returns
        -------
        str or None
            ``None`` for an id no PatientID has (malformed, of an older rule, or one-way and
            unknown to the PACS).

        Raises
        ------
        PacsError
            If the PACS fails while its study list is read for a one-way id.
        """
        if not fhir_id:
            return None
        try:
            patient_id = to_patient_id(fhir_id)
        except InvalidPatientId:
            return None
        return self.resolve_hashed(fhir_id) if patient_id is None else patient_id

    def resolve_hashed(self, fhir_id: str) -> str | None:
        """Return the PatientID behind a one-way Patient id (patient_ids rule 3), else ``None``.

        Looked up among the ids seen before, here or by any worker (the database). An id
        seen nowhere (a token issued before the database was reset) is looked for in the
        PACS's whole study list, which records every one-way id the PACS holds: one list at
        a time, and at most once per :data:`SCAN_INTERVAL` seconds, so unknown ids, however
        many, cost at most one list per interval (a patient stored since the last list is
        found by the next one).

        Raises
        ------
        PacsError
            If the PACS fails while the study list is read.
        """
        if not fhir_id.startswith("dcm-h."):
            return None
        found = self._known_hashed(fhir_id)
        if found is not None:
            return found
        with self._scan_lock:  # one list at a time; who waited finds what it recorded
            found = self._known_hashed(fhir_id)
            if found is None and time.monotonic() - self._scanned_at >= SCAN_INTERVAL:
                try:
                    self._scan_patient_ids()
                finally:  # a failed list is not read again at once either
                    self._scanned_at = time.monotonic()
                found = self._known_hashed(fhir_id)
        return found

    def _known_hashed(self, fhir_id: str) -> str | None:
        with self._lock:
            found = self._hashed.get(fhir_id)
        if found is None and self.aliases is not None:
            found = self.aliases.get(fhir_id)
            if found is not None and to_fhir_id(found) == fhir_id:
                with self._lock:
                    self._hashed[fhir_id] = found
            else:
                found = None
        return found

    def _scan_patient_ids(self) -> None:
        """Read the PACS's study list page by page (PS3.18 Section 8.3.4.4) and remember its one-way ids."""
        offset, seen = 0, set()
        for _ in range(SCAN_PAGES):  # bounded, whatever the PACS answers
            page = self.pacs.qido("studies", include(("PatientID",)) + [("limit", str(SCAN_PAGE)),
                                                                          ("offset", str(offset))])
            keys = {self._key(ds) for ds in page} - seen
            # A lossy PatientID would record the one-way id of a value no patient has.
            self.remember(self.exact.confirm(page))
            # Only an empty page ends the list: a PACS may cap its answers below the limit
            # asked for (Orthanc's LimitFindResults); one that ignores offset repeats itself.
            if not keys:
                return
            seen |= keys
            offset += len(page)

    # -- queries ----------------------------------------------------------------

    def study_rows(self, study_uid: str) -> list[dict]:
        """The PACS's study-level answer for one StudyInstanceUID, as sent, with the attributes
        the mapping needs (one QIDO-RS query; hand it to :meth:`find_studies` as *answer*).

        Raises
        ------
        PacsError
            If the PACS fails.
        """
        return [row for row in self.pacs.qido("studies", [("StudyInstanceUID", study_uid)] + include(STUDY_FIELDS))
                if isinstance(row, dict) and dj.text(row, "StudyInstanceUID") == study_uid]

    def find_studies(self, params: Sequence[tuple[str, str]], with_series: bool = False,
                     answer: list[dict] | None = None) -> list[dict]:
        """Run a study-level QIDO-RS query with the attributes the mapping needs.

        The same query within ``query_ttl`` seconds is answered from a bounded cache
        (DESIGN.md "Data flow" allows time-limited QIDO caches; ``query_ttl`` 0 turns it off).

        Parameters
        ----------
        params : sequence of (str, str)
            Matching keys (DICOM keywords or tags) and values.
        with_series : bool
            The caller will map the studies found. When *params* name one plain PatientID,
            that patient's series-level query (see :meth:`imaging_studies`) then
            runs alongside the study query instead of after it.
        answer : list of dict, optional
            The PACS's answer to *params*, already asked for (:meth:`study_rows`): no
            query is sent, and none is cached.

        A PatientID in *params* names one patient exactly: the PACS is asked for it only
        when it can match it reliably (:func:`fhir_facade.pacs.exact.narrowing`), and only rows
        whose exact PatientID is that one are kept. Rows the PACS may have re-encoded
        lossily are confirmed from metadata first (:meth:`ExactSource.confirm`).

        Returns
        -------
        list of dict
            Study-level DICOM JSON, one per StudyInstanceUID and PatientID (a new list;
            the datasets are shared: read-only). A UID the PACS files under two patients
            comes once for each.
        """
        key = tuple(sorted(params))
        if self._queries is not None and answer is None:
            with self._lock:
                hit = self._queries.get(key)
            metrics.count_lookup("queries", hit is not None)
            if hit is not None:
                return list(hit)
        patient_ids = [value for name, value in params if name in ("PatientID", dj.TAGS["PatientID"])]
        if len(set(patient_ids)) > 1:
            return []  # two different patients at once: nobody
        patient_id = patient_ids[0] if patient_ids else ...
        query = [(n, v) for n, v in params if n not in ("PatientID", dj.TAGS["PatientID"])]
        query += narrowing(patient_id) if patient_id is not ... else []
        exact = patient_id is not ... and bool(narrowing(patient_id))
        with self._lock:
            fresh = exact and patient_id in self._series_patients
        # Cold only: while the patient's series are cached, the query would be wasted.
        series = self._pool.submit(self._patient_series, patient_id) if with_series and exact and not fresh \
            else None
        try:
            if answer is None:
                answer = self.pacs.qido("studies", query + include(STUDY_FIELDS))
            answer = self.exact.confirm(answer, patient_id)
        except BaseException:
            if series is not None:
                series.cancel()
            raise
        # A PACS may file one StudyInstanceUID under two patients and answer it twice
        # (Orthanc does): both answers are kept, each is that patient's study. Only the
        # named patient's rows count: the PACS may match loosely (Orthanc ignores case).
        seen: set = set()
        studies = []
        for ds in answer:
            key_ = self._key(ds)
            if key_[0] and key_ not in seen and (patient_id is ... or (key_[1] or "") == patient_id):
                seen.add(key_)
                studies.append(ds)
        self.remember(studies)
        if series is not None:
            try:
                rows = series.result()
            except PacsError:
                rows = None  # the per-study queries will say what is wrong
            if rows is not None:
                self._cache_series(studies, patient_id, rows)
        if self._queries is not None:
            with self._lock:
                self._queries[key] = studies
        return list(studies)

    @staticmethod
    def _stamp(study: dict) -> tuple:
        """What must not have changed for cached series/instances of *study* to be reused.

        The study-level answer is always fresh; NumberOfStudyRelatedSeries/Instances
        (PS3.18 Table 10.6.3-3) change when the PACS receives more of the study, so a
        stale entry is refetched even within its TTL.
        """
        return (dj.text(study, "NumberOfStudyRelatedSeries"), dj.text(study, "NumberOfStudyRelatedInstances"))

    @staticmethod
    def _key(study: dict) -> tuple:
        """Cache key of a study's details: its UID and whose study it is."""
        return (dj.text(study, "StudyInstanceUID") or "", dj.patient_id(study))

    def _cached(self, cache: TTLCache, key: tuple, stamp: tuple, name: str | None = None):
        """The entry of *key* in *cache* if it was made for *stamp*; counted as a look-up in
        cache *name* (:data:`fhir_facade.pacs.metrics.CACHES`) when one is given."""
        with self._lock:
            hit = cache.get(key)
        found = hit[1] if hit is not None and hit[0] == stamp else None
        if name is not None:
            metrics.count_lookup(name, found is not None)
        return found

    def _series_of(self, study: dict, stamp: tuple) -> list[dict]:
        key = self._key(study)
        series = self._cached(self._series, key, stamp, "series")
        if series is None:
            series = self.exact.confirm(self.pacs.qido(f"studies/{key[0]}/series",
                                                       include(("StudyInstanceUID",) + SERIES_FIELDS)))
            with self._lock:
                self._series[key] = (stamp, series)
        return series

    def _instances_of(self, study: dict, stamp: tuple, query: str) -> list[dict]:
        key = self._key(study)
        study_uid = key[0]
        instances = self._cached(self._instances, key, stamp, "instance_lists") if query == self.instance_query else None
        if instances is None:
            if query == "metadata":
                instances = [{tag: ds[tag] for tag in INSTANCE_TAGS if tag in ds}
                             for ds in self.exact.study(study_uid, fresh=True).instances]
            else:
                instances = self.exact.confirm(self.pacs.qido(f"studies/{study_uid}/instances",
                                                              include(("StudyInstanceUID",) + INSTANCE_FIELDS)))
            with self._lock:
                self._instances[key] = (stamp, instances)
        return instances

    def _own_instances(self, study: dict, stamp: tuple) -> list[dict]:
        """The instances of *study* that belong to its patient.

        A PACS can file one StudyInstanceUID under two patients (Orthanc does) and then
        answer metadata for one of them only. When the patient's instances from metadata
        do not add up to the study's NumberOfStudyRelatedInstances, the instance-level
        QIDO-RS query, which answers for both, is asked instead.
        """
        own = _of_patient(self._instances_of(study, stamp, self.instance_query), study)
        expected = dj.integer(study, "NumberOfStudyRelatedInstances")
        if self.instance_query == "metadata" and expected is not None and len(own) != expected:
            own = _of_patient(self._instances_of(study, stamp, "qido"), study)
        return own

    def _resource(self, study: dict, with_instances: bool) -> dict:
        """Map one study, reusing the mapped resource while its study-level answer is unchanged."""
        fingerprint = json.dumps(study, sort_keys=True)
        key = self._key(study) + (with_instances,)
        cached = self._cached(self._resources, key, (fingerprint,), "imaging_studies")
        if cached is not None:
            return cached
        stamp = self._stamp(study)
        series = self._series_of(study, stamp)
        instances = self._own_instances(study, stamp) if with_instances else []
        # A PACS can file one StudyInstanceUID under two patients (Orthanc does); the series
        # and instances of the study's other patients never enter this patient's resource.
        series = _of_patient(series, study)
        resource = mapping.imaging_study(study, series, instances, self.ctx)
        with self._lock:
            self._resources[key] = ((fingerprint,), resource)
        return resource

    def imaging_studies(self, studies: Sequence[dict], with_instances: bool = True) -> list[dict]:
        """Map study-level datasets to ImagingStudy resources with their series (and instances).

        The series and instance queries of different studies run in parallel, at most
        ``workers`` at a time; results keep the order of *studies*. Answers are cached for
        ``ttl`` seconds and reused only while the study's related-series/instance counts
        are unchanged.

        Parameters
        ----------
        studies : sequence of dict
            Study-level DICOM JSON, as :meth:`find_studies` returns it.
        with_instances : bool
            Fetch and map ``series.instance`` too. Without it (``_summary=true``: FHIR R4
            ImagingStudy marks ``series.instance`` as not in the summary) only the
            series-level QIDO-RS query runs per study.

        Returns
        -------
        list of dict
            FHIR R4 ImagingStudy resources, shared with the cache: treat them as read-only.

        Raises
        ------
        PacsError
            If any of the PACS queries fails (no partial answer is returned).
        """
        studies = [ds for ds in studies if dj.text(ds, "StudyInstanceUID")]
        if len(studies) <= 1:
            return [self._resource(ds, with_instances) for ds in studies]
        self._prefetch_series(studies)
        return list(self._pool.map(lambda ds: self._resource(ds, with_instances), studies))

    def _prefetch_series(self, studies: Sequence[dict]) -> None:
        """Fill the series cache of one patient's studies with a single series-level query.

        One ``series?PatientID=`` query (PS3.18 Section 10.6.1, Search for Series) replaces a
        query per study. A study's rows are cached only when their count is the study's
        NumberOfStudyRelatedSeries, so anything partial is fetched per study as before.
        """
        patients = {dj.patient_id(ds) for ds in studies}
        if len(patients) != 1 or not narrowing(next(iter(patients))):
            return
        [patient_id] = patients
        missing = [ds for ds in studies if self._cached(self._series, self._key(ds), self._stamp(ds)) is None]
        if len(missing) < 2:
            return
        try:
            rows = self._patient_series(patient_id)
        except PacsError:
            return  # the per-study queries will say what is wrong
        self._cache_series(missing, patient_id, rows)

    def _patient_series(self, patient_id: str) -> list[dict]:
        """Every series of one patient, with its StudyInstanceUID (one QIDO-RS query), confirmed exact."""
        rows = self.pacs.qido("series", narrowing(patient_id) + include(("StudyInstanceUID",) + SERIES_FIELDS))
        return self.exact.confirm(rows, patient_id)

    def _cache_series(self, studies: Sequence[dict], patient_id: str, rows: list[dict]) -> None:
        """Cache each study's rows from a patient's series query when they are all of its series."""
        missing = {self._key(ds): self._stamp(ds) for ds in studies if dj.patient_id(ds) == patient_id}
        grouped: dict[str, list[dict]] = {}
        for row in rows:
            if dj.patient_id(row) == patient_id:
                grouped.setdefault(dj.text(row, "StudyInstanceUID") or "", []).append(row)
        with self._lock:
            self._series_patients[patient_id] = True
            for key, stamp in missing.items():
                found = grouped.get(key[0], [])
                expected = stamp[0]
                if found and expected is not None and str(len(found)) == str(expected):
                    self._series[key] = (stamp, found)

    # -- patient module ---------------------------------------------------------------

    def _patient_module(self, study: dict) -> dict:
        key = self._key(study)
        uid, patient_id = key
        if not uid:
            return study
        with self._lock:
            hit = self._patients.get(key)
        metrics.count_lookup("patient_modules", hit is not None)
        if hit is not None:
            return hit
        try:
            # One of this patient's own instances: under a StudyInstanceUID that the PACS
            # files under two patients, the first instance may be the other patient's.
            source = self.exact.study(uid).first("StudyInstanceUID", uid, patient_id)
        except PacsError:
            log.info("patient module of a study kept from QIDO-RS: the PACS failed on metadata")
            return study
        if source is None:
            return study
        merged = dict(study)
        for tag in (dj.TAGS[keyword] for keyword in PATIENT_FIELDS):
            if tag in source:
                merged[tag] = source[tag]
        merged = exact_copy(merged, source)
        with self._lock:
            self._patients[key] = merged
        return merged

    def patient_modules(self, studies: Sequence[dict]) -> list[dict]:
        """The patient module of each study as the PACS stores it, not as QIDO-RS re-encodes it.

        Some PACS answer QIDO-RS in one character set and drop what it cannot hold
        (Orthanc 1.10 answers ISO_IR 100, losing Greek and Cyrillic names); WADO-RS
        metadata of one instance (PS3.18 Section 10.4.1.1.2) keeps them. Falls back to the
        QIDO-RS answer when the PACS fails. Cached per study.

        Parameters
        ----------
        studies : sequence of dict
            Study-level DICOM JSON.

        Returns
        -------
        list of dict
            Each study's dataset with PatientName, PatientID, IssuerOfPatientID,
            PatientBirthDate and PatientSex taken from instance metadata.
        """
        if len(studies) <= 1:
            return [self._patient_module(ds) for ds in studies]
        return list(self._pool.map(self._patient_module, studies))


class PatientAliases:
    """One-way Patient ids and their PatientIDs in the facade's database (:class:`smart.store.models.PatientAlias`).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The facade's database. Each call runs in a short transaction of its own, apart from
        the request's session.
    """

    def __init__(self, engine):
        self.engine = engine
        self._warned = False

    def save(self, pairs: dict[str, str]) -> bool:
        """Record *pairs* (one-way id -> PatientID) that are not recorded yet.

        Returns
        -------
        bool
            Whether they are all in the database now. A failure is not an error of the
            request (this worker still resolves them from memory); it is tried again the
            next time the ids are seen, and logged once as a warning (no ids in it).
        """
        try:
            with self.engine.begin() as conn:
                known = set(conn.scalars(select(PatientAlias.fhir_id).where(PatientAlias.fhir_id.in_(list(pairs)))))
                rows = [{"fhir_id": k, "patient_id": v} for k, v in pairs.items() if k not in known]
                if rows:
                    conn.execute(PatientAlias.__table__.insert(), rows)
            return True
        except SQLAlchemyError as exc:  # another worker won the race, or no table yet
            if not self._warned:
                self._warned = True
                log.warning("one-way Patient ids are not recorded for other workers (%s): "
                            "run `flask --app app init-db` on this database", type(exc).__name__)
            return False

    def get(self, fhir_id: str) -> str | None:
        """The PatientID recorded for *fhir_id*, or ``None``."""
        try:
            with self.engine.connect() as conn:
                return conn.scalar(select(PatientAlias.patient_id).where(PatientAlias.fhir_id == fhir_id))
        except SQLAlchemyError as exc:
            log.info("one-way Patient id not looked up: %s", type(exc).__name__)
            return None


def init_app(app: Flask) -> None:
    """Create the application's :class:`StudyRepository` (after ``pacs.init_app`` and the database)."""
    ctx = mapping.MappingContext(
        public_url=app.config["FACADE_PUBLIC_URL"],
        timezone=app.config.get("FACADE_TIMEZONE", "UTC"),
        patient_id_system=app.config.get("FACADE_PATIENT_ID_SYSTEM"),
    )
    app.extensions["studies"] = StudyRepository(
        app.extensions["pacs"], ctx,
        cache_size=int(app.config.get("FACADE_CACHE_SIZE", 4096)),
        ttl=float(app.config.get("FACADE_CACHE_TTL", 60.0)),
        workers=int(app.config.get("FACADE_PACS_WORKERS", 8)),
        query_ttl=float(app.config.get("FACADE_QUERY_CACHE_TTL", 10.0)),
        instance_query=str(app.config.get("FACADE_INSTANCE_QUERY", "metadata")),
        aliases=PatientAliases(get_database(app).engine),
        exact=app.extensions["exact"],
    )


def get_studies() -> StudyRepository:
    """Return the current application's :class:`StudyRepository`."""
    return current_app.extensions["studies"]


__all__ = ["StudyRepository", "get_studies", "get_pacs", "hashed_id", "init_app"]
