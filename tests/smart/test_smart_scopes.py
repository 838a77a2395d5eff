"""SMART scope grammar (v1 and v2) and the permits() check, table-driven."""
from __future__ import annotations

import pytest

from smart.scopes import InvalidScope, Scope, granted, is_valid_scope, parse_scope, permits

ALL = frozenset("cruds")


@pytest.mark.parametrize("text, expected", [
    ("patient/ImagingStudy.rs", Scope("patient", "ImagingStudy", frozenset("rs"))),
    ("patient/ImagingStudy.read", Scope("patient", "ImagingStudy", frozenset("rs"))),
    ("user/*.read", Scope("user", "*", frozenset("rs"))),
    ("user/Observation.write", Scope("user", "Observation", frozenset("cud"))),
    ("system/ImagingStudy.rs", Scope("system", "ImagingStudy", frozenset("rs"))),
    ("system/ImagingStudy.read", Scope("system", "ImagingStudy", frozenset("rs"))),
    ("patient/*.*", Scope("patient", "*", ALL)),
    ("patient/*.cruds", Scope("patient", "*", ALL)),
    ("user/Patient.r", Scope("user", "Patient", frozenset("r"))),
    ("user/Patient.s", Scope("user", "Patient", frozenset("s"))),
    ("patient/Observation.cud", Scope("patient", "Observation", frozenset("cud"))),
    ("patient/Observation.rs?category=laboratory",
     Scope("patient", "Observation", frozenset("rs"), (("category", "laboratory"),))),
    ("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs",
     Scope("patient", "Observation", frozenset("rs"),
           (("category", "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"),))),
    ("user/ImagingStudy.rs?modality=CT&modality=MR",
     Scope("user", "ImagingStudy", frozenset("rs"), (("modality", "CT"), ("modality", "MR")))),
])
def test_parse_valid(text, expected):
    assert parse_scope(text) == expected


@pytest.mark.parametrize("text", [
    "openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
    "offline_access", "online_access", "something-else",
])
def test_non_resource_scopes_parse_to_none(text):
    assert parse_scope(text) is None


@pytest.mark.parametrize("text", [
    "patient/ImagingStudy.sr",        # out of cruds order
    "patient/ImagingStudy.rrs",       # repeated letter
    "patient/ImagingStudy.x",         # unknown letter
    "patient/ImagingStudy.Read",      # v1 suffixes are lower case
    "patient/ImagingStudy.",          # empty suffix
    "patient/ImagingStudy",           # no suffix
    "patient/imagingStudy.rs",        # resource types start upper case
    "patient/.rs",
    "patient/Image-Study.rs",
    "patient/ImagingStudy.read?x=1",  # granular needs v2
    "patient/ImagingStudy.rs?",       # empty parameter list
    "patient/ImagingStudy.rs?=x",     # empty name
    "patient/ImagingStudy.rs?novalue",
])
def test_parse_invalid(text):
    with pytest.raises(InvalidScope):
        parse_scope(text)
    assert not is_valid_scope(text)


@pytest.mark.parametrize("scope, resource, interaction, contexts, expected", [
    ("patient/ImagingStudy.rs", "ImagingStudy", "r", ("patient",), True),
    ("patient/ImagingStudy.rs", "ImagingStudy", "s", ("patient",), True),
    ("patient/ImagingStudy.rs", "ImagingStudy", "c", ("patient",), False),
    ("patient/ImagingStudy.r", "ImagingStudy", "s", ("patient",), False),
    ("patient/ImagingStudy.read", "ImagingStudy", "s", ("patient",), True),
    ("patient/ImagingStudy.write", "ImagingStudy", "r", ("patient",), False),
    ("patient/ImagingStudy.write", "ImagingStudy", "u", ("patient",), True),
    ("patient/*.read", "Endpoint", "r", ("patient",), True),
    ("patient/*.*", "Patient", "d", ("patient",), True),
    ("patient/Patient.rs", "ImagingStudy", "r", ("patient",), False),
    ("user/ImagingStudy.rs", "ImagingStudy", "r", ("patient",), False),
    ("user/ImagingStudy.rs", "ImagingStudy", "r", ("patient", "user"), True),
    ("system/ImagingStudy.read", "ImagingStudy", "r", ("system",), True),
    ("system/ImagingStudy.rs", "ImagingStudy", "s", ("patient", "user", "system"), True),
    ("openid fhirUser launch/patient", "ImagingStudy", "r", ("patient", "user", "system"), False),
    ("patient/ImagingStudy.sr", "ImagingStudy", "r", ("patient",), False),      # invalid grants nothing
    ("patient/ImagingStudy.rs?modality=CT", "ImagingStudy", "r", ("patient",), False),  # granular, no params
    ("launch/patient patient/Patient.rs patient/ImagingStudy.rs", "ImagingStudy", "s", ("patient",), True),
    ("", "ImagingStudy", "r", ("patient",), False),
])
def test_permits(scope, resource, interaction, contexts, expected):
    assert permits(scope, resource, interaction, contexts) is expected


def test_unknown_context_is_not_a_resource_scope_and_not_grantable():
    assert parse_scope("group/ImagingStudy.rs") is None
    assert not is_valid_scope("group/ImagingStudy.rs")


def test_permits_granular_with_params():
    scope = "patient/ImagingStudy.rs?modality=CT"
    assert permits(scope, "ImagingStudy", "s", params={"modality": "CT"})
    assert not permits(scope, "ImagingStudy", "s", params={"modality": "MR"})


def test_permits_default_contexts_are_all_three():
    assert permits("system/ImagingStudy.rs", "ImagingStudy", "r")


@pytest.mark.parametrize("interaction", ["x", "rs", "", "R"])
def test_permits_rejects_unknown_interaction(interaction):
    with pytest.raises(ValueError):
        permits("patient/*.*", "ImagingStudy", interaction)


@pytest.mark.parametrize("requested, allowed, expected", [
    ("launch/patient patient/ImagingStudy.rs", None, "launch/patient patient/ImagingStudy.rs"),
    ("patient/ImagingStudy.rs bogus patient/X.sr", None, "patient/ImagingStudy.rs"),
    ("patient/ImagingStudy.rs patient/ImagingStudy.rs", None, "patient/ImagingStudy.rs"),
    ("openid patient/ImagingStudy.rs user/*.rs", "openid patient/ImagingStudy.rs", "openid patient/ImagingStudy.rs"),
    ("", None, ""),
    (None, None, ""),
    # Compared by interactions, not strings (SMART 2.2 §Scopes, §Scope equivalence).
    ("patient/ImagingStudy.r patient/ImagingStudy.read", "patient/ImagingStudy.rs",
     "patient/ImagingStudy.r patient/ImagingStudy.read"),
    ("patient/ImagingStudy.rs patient/Patient.s", "patient/*.read", "patient/ImagingStudy.rs patient/Patient.s"),
    ("patient/ImagingStudy.rsd patient/*.rs", "patient/ImagingStudy.rs", ""),
    ("user/ImagingStudy.r system/ImagingStudy.r", "patient/ImagingStudy.rs", ""),
    ("launch/patient launch", "launch", "launch"),
    # A granular registered scope grants only requests at least as narrow.
    ("patient/Observation.rs?category=laboratory patient/Observation.rs",
     "patient/Observation.rs?category=laboratory", "patient/Observation.rs?category=laboratory"),
    ("patient/Observation.r?category=laboratory&code=x", "patient/Observation.rs?category=laboratory",
     "patient/Observation.r?category=laboratory&code=x"),
])
def test_granted_is_subset_in_request_order(requested, allowed, expected):
    assert granted(requested, allowed) == expected
