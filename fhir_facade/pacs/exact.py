"""PatientID and text from exact sources: which QIDO-RS rows to trust, and confirming the rest from metadata.

A PACS may answer QIDO-RS in one character set and silently drop what that set cannot hold
(Orthanc 1.10 with its default ``DefaultEncoding`` answers ISO_IR 100: PatientIDs
``Nandu-日本`` and ``Nandu-中国`` both come back as ``Nandu-``). Who owns a study must never be
decided on such a value. A row is *exact* when nothing can have been lost: it is encoded in
UTF-8 (ISO_IR 192, which holds every character), its PatientID holds no replacement
character, and no person name carries an Ideographic or Phonetic group left as 7-bit bytes
(the trace of an ISO 2022 set decoded without its escapes, PS3.5 Section 6.1.2.5).
Every other row is confirmed from WADO-RS metadata (PS3.18 Section 10.4.1.1.2), which the
PACS produces from the stored instance and its own Specific Character Set: the row gets the
stored values, or is dropped when the metadata cannot say which patient it is (fail closed).
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cachetools import TTLCache

from fhir_facade.dicom import dicom_json as dj
from fhir_facade.dicom.charsets import repair_person_name
from fhir_facade.pacs import metrics
from fhir_facade.pacs.client import PacsClient

log = logging.getLogger(__name__)

#: Specific Character Set (0008,0005) of an answer that can hold every character (PS3.3 C.12.1.1.2).
UTF8 = "ISO_IR 192"
#: Characters a lossy re-encoding leaves in place of one it cannot hold.
REPLACEMENTS = frozenset("?\ufffd")
#: Attributes of a QIDO-RS row that the PACS computes (PS3.18 Table 10.6.3-3/-4): never
#: taken from an instance's metadata.
COMPUTED = frozenset(dj.TAGS[k] for k in (
    "SpecificCharacterSet", "RetrieveURL", "ModalitiesInStudy", "SOPClassesInStudy", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances"))
_SEVEN_BIT = re.compile(r"[\x00-\x7f]+")
#: A PatientID the PACS can be asked for as it is: printable ASCII without QIDO-RS wildcards
#: or the value separator (PS3.4 C.2.2.2.4, PS3.5 Section 6.2).
_PLAIN = re.compile(r"[\x20-\x7e]+")
_SPECIAL = frozenset("*?\\")


def _seven_bit_group(pn: object) -> bool:
    if not isinstance(pn, dict):
        return False
    return any(isinstance(pn.get(g), str) and _SEVEN_BIT.fullmatch(pn[g].replace(" ", ""))
               for g in ("Ideographic", "Phonetic"))


def is_exact(row: dict) -> bool:
    """Whether *row*'s PatientID and text are what the PACS stored (see the module's docstring).

    Parameters
    ----------
    row : dict
        A DICOM JSON dataset from a QIDO-RS answer (PS3.18 Annex F).

    Returns
    -------
    bool
        ``True`` only for a UTF-8 answer whose PatientID holds no ``?`` or U+FFFD and whose
        person names have no 7-bit Ideographic or Phonetic group.
    """
    if [str(v).strip() for v in dj.values(row, "SpecificCharacterSet")] != [UTF8]:
        return False
    if set(dj.patient_id(row) or "") & REPLACEMENTS:
        return False
    for tag, element in row.items():
        if isinstance(element, dict) and element.get("vr") == "PN" \
                and any(_seven_bit_group(pn) for pn in element.get("Value") or ()):
            return False
    return True


def narrowing(patient_id: str | None) -> list[tuple[str, str]]:
    """QIDO-RS matching keys that narrow a search to *patient_id* without deciding it.

    Only a plain ASCII PatientID is sent: a PACS matches others unreliably (Orthanc 1.10
    finds nothing for ``Nandu-日本``, strips a leading space from the value asked for, and
    matches identifiers case-insensitively), and
    ``*``, ``?`` and ``\\`` would be read as wildcards or a value list (PS3.4 C.2.2.2.4).
    The rows found are always checked exactly afterwards.

    Returns
    -------
    list of (str, str)
        ``[("PatientID", patient_id)]``, or ``[]`` when the search cannot be narrowed.
    """
    if patient_id and _PLAIN.fullmatch(patient_id) and patient_id == patient_id.strip() \
            and not set(patient_id) & _SPECIAL:
        return [("PatientID", patient_id)]
    return []


def could_be(lossy: str | None, exact: str | None) -> bool:
    """Whether a lossy re-encoding of *exact* could read *lossy*.

    Re-encoding drops characters or replaces them with ``?``: *lossy* must be *exact* with
    characters removed or replaced. Used only to skip confirming rows that cannot be the
    patient's; a row that passes is still confirmed from metadata.
    """
    lossy, exact = lossy or "", exact or ""
    pos = 0
    for char in lossy:
        while pos < len(exact) and exact[pos] != char and char not in REPLACEMENTS:
            pos += 1
        if pos == len(exact):
            return False
        pos += 1
    return True


def exact_copy(row: dict, source: dict) -> dict:
    """*row* with every attribute it names taken from *source*, an instance's WADO-RS metadata.

    Person names are repaired where the PACS decoded an ISO 2022 set without its escapes
    (:func:`fhir_facade.dicom.charsets.repair_person_name`); attributes the PACS computes for
    the row (:data:`COMPUTED`) are kept. The copy is marked UTF-8 (ISO_IR 192).
    """
    charsets = [str(v) for v in dj.values(source, "SpecificCharacterSet")]
    copy = dict(row)
    for tag in row:
        if tag in COMPUTED or tag not in source:
            continue
        element = source[tag]
        if isinstance(element, dict) and element.get("vr") == "PN" and "Value" in element:
            element = dict(element, Value=[repair_person_name(pn, charsets) for pn in element["Value"]])
        copy[tag] = element
    copy[dj.TAGS["SpecificCharacterSet"]] = {"vr": "CS", "Value": [UTF8]}
    return copy


@dataclass(frozen=True)
class StudyView:
    """What a study's WADO-RS metadata says, instance by instance.

    Attributes
    ----------
    instances : tuple of dict
        One DICOM JSON dataset per instance the PACS returned for the study.
    """

    instances: tuple

    def patients(self) -> frozenset:
        """Every exact PatientID (``None``: empty) among the instances."""
        return frozenset(dj.patient_id(ds) for ds in self.instances)

    def first(self, keyword: str, value: str, patient_id: str | None = ...) -> dict | None:
        """The first instance whose *keyword* is *value*, or ``None`` when there is none, or when
        those instances belong to several patients (then no one of them speaks for all)."""
        found = [ds for ds in self.instances if dj.text(ds, keyword) == value
                 and (patient_id is ... or dj.patient_id(ds) == patient_id)]
        if not found or len({dj.patient_id(ds) for ds in found}) != 1:
            return None
        return found[0]


class ExactSource:
    """Confirms QIDO-RS rows from WADO-RS metadata, with a bounded cache of study metadata.

    Parameters
    ----------
    pacs : PacsClient
    size : int
        Studies whose metadata is kept.
    ttl : float
        Seconds an entry is trusted.
    """

    def __init__(self, pacs: PacsClient, size: int = 256, ttl: float = 60.0):
        self.pacs = pacs
        self._lock = threading.Lock()
        self._views: TTLCache = TTLCache(size, ttl)

    def study(self, study_uid: str, fresh: bool = False) -> StudyView:
        """The metadata of every instance of *study_uid* (PS3.18 Section 10.4.1.1.2).

        Parameters
        ----------
        study_uid : str
        fresh : bool
            Ask the PACS even when the cache holds the study (the answer replaces it).

        Raises
        ------
        PacsError
            If the PACS fails.
        """
        with self._lock:
            view = None if fresh else self._views.get(study_uid)
        if not fresh:
            metrics.count_lookup("study_metadata", view is not None)
        if view is None:
            datasets = self.pacs.metadata(f"studies/{study_uid}/metadata")
            view = StudyView(tuple(ds for ds in datasets if isinstance(ds, dict)))
            with self._lock:
                self._views[study_uid] = view
        return view

    def confirm(self, rows: Iterable[dict], patient_id: str | None = ...) -> list[dict]:
        """Return *rows* with every row that is not exact replaced by the stored values, or dropped.

        A study-level row is matched to the one patient of its study whose stored PatientID
        its own could be a re-encoding of; a series- or instance-level row to the instance
        (or the series' first instance) with its UID. A row that matches none, or more
        than one patient, is dropped: the facade refuses rather than guesses.

        Parameters
        ----------
        rows : iterable of dict
            QIDO-RS answer rows at any level; each must carry its StudyInstanceUID to be
            confirmed.
        patient_id : str or None, optional
            When given, rows that cannot be this patient's are dropped without asking the
            PACS (the caller keeps only this patient's rows anyway).

        Returns
        -------
        list of dict
            Exact rows, in the order given.

        Raises
        ------
        PacsError
            If the PACS fails while metadata is read.
        """
        rows = [row for row in rows if isinstance(row, dict)]
        exact = [is_exact(row) for row in rows]
        if all(exact):
            return rows  # a UTF-8 answer with nothing replaced: nothing to ask
        by_study: dict[str, list[dict]] = {}
        # Patients whose study-level row is exact already: no lossy row of that study is theirs.
        claimed: dict[str, set] = {}
        for row, trusted in zip(rows, exact):
            study_uid = dj.text(row, "StudyInstanceUID") or ""
            if not trusted and (patient_id is ... or could_be(dj.patient_id(row), patient_id)):
                by_study.setdefault(study_uid, []).append(row)
            elif trusted and not dj.text(row, "SeriesInstanceUID") and not dj.text(row, "SOPInstanceUID"):
                claimed.setdefault(study_uid, set()).add(dj.patient_id(row))
        replaced: dict[int, dict | None] = {}
        for study_uid, lossy in by_study.items():
            view = self.study(study_uid) if study_uid else StudyView(())
            for row, source in zip(lossy, _sources(view, lossy, claimed.get(study_uid, set()))):
                replaced[id(row)] = None if source is None else exact_copy(row, source)
        confirmed = [row if trusted else replaced[id(row)] for row, trusted in zip(rows, exact)
                     if trusted or replaced.get(id(row)) is not None]
        if len(confirmed) < len(rows) and patient_id is ...:
            log.info("%d QIDO-RS rows left out: their patient could not be confirmed", len(rows) - len(confirmed))
        return confirmed


def _sources(view: StudyView, rows: Sequence[dict], claimed: set) -> list[dict | None]:
    """The instance each lossy row of one study is confirmed from (``None``: none can be told).

    *claimed* holds the PatientIDs whose study-level rows are exact: no lossy row is theirs.
    """
    sources: list[dict | None] = []
    study_rows = []
    for row in rows:
        if dj.text(row, "SOPInstanceUID"):
            sources.append(view.first("SOPInstanceUID", dj.text(row, "SOPInstanceUID")))
        elif dj.text(row, "SeriesInstanceUID"):
            sources.append(view.first("SeriesInstanceUID", dj.text(row, "SeriesInstanceUID")))
        else:
            sources.append(None)
            study_rows.append(len(sources) - 1)
    # Study-level rows: one row per patient the PACS files the UID under. Each must match
    # exactly one stored PatientID, and no two rows the same one.
    patients = view.patients() - claimed
    chosen = []
    for index in study_rows:
        candidates = [p for p in patients if could_be(dj.patient_id(rows[index]), p)]
        chosen.append(candidates[0] if len(candidates) == 1 else ...)  # None is the empty PatientID
    for index, patient in zip(study_rows, chosen):
        if patient is not ... and chosen.count(patient) == 1:
            sources[index] = view.first("StudyInstanceUID", dj.text(rows[index], "StudyInstanceUID"), patient)
    return sources
