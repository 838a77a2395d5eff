"""FHIR search on Patient and Endpoint (FHIR R4 §3.1.1), as exact tests on the mapped resources.

Patient resources are built from DICOM patient attributes (:func:`mapping.patient`); the
PACS is asked by PatientID when the search names one, and every FHIR matching rule
(string: case- and accent-insensitive prefix, FHIR R4 §3.1.1.5.6) is applied here.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from fhir_facade.dicom.patient_ids import InvalidPatientId, to_patient_id
from fhir_facade.fhir.outcomes import BadSearch
from fhir_facade.fhir.search_params import (
    ResultParams, check_modifier, coding_matcher, date_predicate, parse_result_parameter, reference_id,
    split_token, split_values,
)

#: Patient.gender codes (FHIR R4 ValueSet administrative-gender, required binding).
GENDERS = frozenset({"male", "female", "other", "unknown"})
GENDER_SYSTEM = "http://hl7.org/fhir/administrative-gender"

#: Endpoint.status codes (FHIR R4 ValueSet endpoint-status, required binding).
ENDPOINT_STATUSES = frozenset({"active", "suspended", "error", "off", "entered-in-error", "test"})

#: Patient string parameter -> the HumanName parts it searches (FHIR R4 Patient search parameters).
NAME_PARTS = {
    "name": ("text", "family", "given", "prefix", "suffix"),
    "family": ("family",),
    "given": ("given",),
}
STRING_MODIFIERS = frozenset({"exact", "contains"})


def normalize(text: str) -> str:
    """Case- and accent-insensitive form of *text* (FHIR R4 §3.1.1.5.6 string matching)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def string_matcher(parts: tuple[str, ...], raw: str, modifier: str) -> Callable[[dict], bool]:
    """A test on Patient.name for a string parameter with optional ``:exact`` / ``:contains``."""
    wanted = split_values(raw)

    def values(resource: dict) -> list[str]:
        found = []
        for name in resource.get("name", []):
            for part in parts:
                value = name.get(part)
                if isinstance(value, list):
                    found.extend(value)
                elif value:
                    found.append(value)
        return found

    def matches(resource: dict) -> bool:
        for value in values(resource):
            for w in wanted:
                if modifier == "exact" and value == w:
                    return True
                if modifier == "contains" and normalize(w) in normalize(value):
                    return True
                if not modifier and any(word.startswith(normalize(w))
                                        for word in [normalize(value)] + normalize(value).split()):
                    return True
        return False

    return matches


@dataclass
class PatientSearch(ResultParams):
    """A parsed Patient search.

    Attributes
    ----------
    patient_ids : set of str or None
        DICOM PatientIDs to ask the PACS for (``None``: not restricted by the search).
    filters : list of callables
        Exact tests on mapped Patient resources.
    """

    patient_ids: set | None = None
    fhir_ids: set | None = None
    filters: list = field(default_factory=list)

    def restrict(self, fhir_ids: set[str]) -> None:
        """AND a set of allowed Patient ids into the search."""
        self.fhir_ids = set(fhir_ids) if self.fhir_ids is None else self.fhir_ids & set(fhir_ids)
        ids = set()
        for fhir_id in self.fhir_ids:
            try:
                dicom_id = to_patient_id(fhir_id)
            except InvalidPatientId as exc:
                raise BadSearch(f"invalid Patient id {fhir_id!r}") from exc
            if dicom_id is not None:
                ids.add(dicom_id)
        self.patient_ids = ids if self.patient_ids is None else self.patient_ids & ids


def parse_patient_search(params: list[tuple[str, str]], zone_name: str, strict: bool = False) -> PatientSearch:
    """Translate Patient search parameters (``_id``, ``identifier``, ``name``, ``family``,
    ``given``, ``birthdate``, ``gender``) into a :class:`PatientSearch`.

    Raises
    ------
    BadSearch
        Unknown parameter under strict handling, unsupported modifier, malformed value.
    """
    search = PatientSearch()
    for name, raw in params:
        if parse_result_parameter(search, name, raw, {}, strict):
            continue
        base = name.partition(":")[0]
        if base == "_id":
            check_modifier(name)
            search.restrict({v for v in split_values(raw)})
        elif base == "identifier":
            check_modifier(name)
            tokens = [split_token(v) for v in split_values(raw)]
            values = {code for _, code in tokens if code}
            if len(values) == 1 and search.patient_ids is None:
                search.patient_ids = set(values)

            def matches(resource: dict, tokens=tokens) -> bool:
                for identifier in resource.get("identifier", []):
                    for system, code in tokens:
                        if code and identifier.get("value") != code:
                            continue
                        if system is None or (system == "" and "system" not in identifier) or \
                                (system and identifier.get("system") == system):
                            return True
                return False

            search.filters.append(matches)
        elif base in NAME_PARTS:
            _, modifier = check_modifier(name, STRING_MODIFIERS)
            search.filters.append(string_matcher(NAME_PARTS[base], raw, modifier))
        elif base == "birthdate":
            check_modifier(name)
            tests = [date_predicate(v, zone_name)[0] for v in split_values(raw)]
            search.filters.append(lambda r, tests=tests: any(t(r.get("birthDate")) for t in tests))
        elif base == "gender":
            check_modifier(name)
            tokens = [split_token(v) for v in split_values(raw)]
            if any(code not in GENDERS or system not in (None, GENDER_SYSTEM) for system, code in tokens):
                raise BadSearch(f"invalid gender {raw!r}: not an administrative-gender code")
            codes = frozenset(code for _, code in tokens)
            search.filters.append(lambda r, codes=codes: r.get("gender") in codes)
        else:
            if strict:
                raise BadSearch(f"unknown search parameter {name!r}")
            continue
        search.echo.append((name, raw))
    return search


@dataclass
class EndpointSearch(ResultParams):
    """A parsed Endpoint search: exact tests on the facade's one Endpoint."""

    filters: list = field(default_factory=list)


def parse_endpoint_search(params: list[tuple[str, str]], strict: bool = False) -> EndpointSearch:
    """Translate Endpoint search parameters (``_id``, ``connection-type``, ``status``).

    Raises
    ------
    BadSearch
        Unknown parameter under strict handling, unsupported modifier, malformed value.
    """
    search = EndpointSearch()
    for name, raw in params:
        if parse_result_parameter(search, name, raw, {}, strict):
            continue
        base = name.partition(":")[0]
        if base == "_id":
            check_modifier(name)
            ids = frozenset(reference_id(v, "Endpoint") for v in split_values(raw))
            search.filters.append(lambda r, ids=ids: r["id"] in ids)
        elif base == "connection-type":
            check_modifier(name)
            match = coding_matcher(raw)
            search.filters.append(lambda r, match=match: match([r["connectionType"]]))
        elif base == "status":
            check_modifier(name)
            codes = frozenset(split_token(v)[1] for v in split_values(raw))
            if not codes <= ENDPOINT_STATUSES:
                raise BadSearch(f"invalid status {raw!r}: not an Endpoint status code")
            search.filters.append(lambda r, codes=codes: r["status"] in codes)
        else:
            if strict:
                raise BadSearch(f"unknown search parameter {name!r}")
            continue
        search.echo.append((name, raw))
    return search


__all__ = ["parse_patient_search", "parse_endpoint_search", "PatientSearch", "EndpointSearch", "normalize"]
