"""Patient picker of the consent page: what smart knows of it, and the protocol it asks.

The patients themselves come from the PACS, which smart knows nothing of: the facade
registers a :class:`PatientDirectory` at app start (:func:`register_patient_directory`),
and the consent page asks it through :func:`find_patients` and :func:`describe_patient`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from flask import Flask, current_app

#: Patients shown at most on one picker page.
PICKER_LIMIT = 20
#: Longest search text accepted (longer input is cut).
QUERY_MAX = 64

#: Shown for a patient whose studies carry no PatientName.
UNNAMED = "(no name)"

#: QIDO-RS wildcard and PN component characters (PS3.4 C.2.2.2.4, PS3.5 6.2.1) that a
#: user's search text must not carry into the matching key.
_SPECIAL = re.compile(r"[*?\\^=]")


class PickerUnavailable(Exception):
    """The PACS could not list patients; the page falls back to the id field."""

    def __init__(self, message: str = "The patient list is not available right now; enter a patient id instead."):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class PatientChoice:
    """One row of the picker: a FHIR Patient id and what a person recognises it by."""

    id: str
    name: str
    birth_date: str | None
    sex: str | None
    studies: int


def clean_query(text: str | None) -> str:
    """The user's search text without QIDO-RS wildcards, trimmed to :data:`QUERY_MAX`."""
    return " ".join(_SPECIAL.sub(" ", text or "").split())[:QUERY_MAX]


class PatientDirectory(Protocol):
    """Where the picker finds patients (the facade implements it over the PACS)."""

    def find_patients(self, query: str, limit: int = PICKER_LIMIT,
                      among: frozenset[str] | None = None) -> list[PatientChoice]:
        """Patients whose name or id contains *query* (already :func:`clean_query`-ed; all
        when empty), at most *limit*, only of the Patient ids *among* when given (a
        practitioner's access list); raises :class:`PickerUnavailable` when the source fails."""

    def describe_patient(self, fhir_id: str | None) -> PatientChoice | None:
        """The picker row of the patient with FHIR id *fhir_id*, or None when it is unknown."""


#: Key of the registered :class:`PatientDirectory` in ``app.extensions``.
EXTENSION = "smart.patient_directory"


def register_patient_directory(app: Flask, directory: PatientDirectory) -> None:
    """Make *directory* the source of the consent page's patient picker on *app*."""
    app.extensions[EXTENSION] = directory


def _directory() -> PatientDirectory | None:
    return current_app.extensions.get(EXTENSION)


def find_patients(query: str | None, limit: int = PICKER_LIMIT,
                  among: frozenset[str] | None = None) -> list[PatientChoice]:
    """Patients whose name or PatientID contains *query* (all when empty), from the
    registered :class:`PatientDirectory`; only those of *among* (Patient ids) when given.

    Raises
    ------
    PickerUnavailable
        If no directory is registered or its source fails.
    """
    directory = _directory()
    if directory is None:
        raise PickerUnavailable()
    return directory.find_patients(clean_query(query), limit, among)


def describe_patient(fhir_id: str | None) -> PatientChoice | None:
    """The picker row of the patient with FHIR id *fhir_id* (for the patient in context of an
    EHR launch), or None when no directory is registered or it does not know the patient:
    the page then shows the bare id."""
    directory = _directory()
    return directory.describe_patient(fhir_id) if directory is not None else None
