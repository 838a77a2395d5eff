"""A bounded schemathesis run over openapi/openapi.yaml against the facade in-process (issue 11).

Every operation of the spec gets schemathesis's examples, coverage (boundary values, wrong
types, undeclared methods) and :data:`MAX_EXAMPLES` random cases, reproducibly
(derandomized), once with a backend client's token and once with a patient's, so requests
reach past authorization; the PACS is faked by :mod:`fake_pacs`, in which every UID exists.
About 30 s on two cores. The checks: no 5xx, every status, content type
and body documented (``openapi/openapi.yaml`` matches the server), and a 405 for an
undeclared method carries ``Allow`` (RFC 9110 Section 15.5.6).

Left out are ``positive_data_acceptance`` and ``negative_data_rejection``: they would need
the schema to hold the whole FHIR search grammar (FHIR R4 Section 3.1.1: dates with
prefixes, tokens, modifiers, the combinations the server refuses), which JSON Schema cannot
say; the server's answer to such input is a documented 400.
"""
from __future__ import annotations

import collections
from pathlib import Path

import pytest
import responses
import schemathesis
from hypothesis import HealthCheck, settings

import fake_pacs
from facade_helpers import FAKE_PACS, bearer, make_app, token

SPEC = Path(__file__).resolve().parents[1] / "openapi" / "openapi.yaml"
#: Random cases per operation and token, on top of the examples and coverage phases.
MAX_EXAMPLES = 30
#: Scope of the backend client's token: every study, and EHR launch contexts (``/auth/launch``).
BACKEND_SCOPE = "system/*.rs launch"

schema = schemathesis.openapi.from_path(SPEC)
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, no_shrink=True)
schema.config.checks.update(excluded_check_names=["positive_data_acceptance", "negative_data_rejection"])

#: (operation, method sent, status) -> answers seen, for the check that the run got past authorization.
SEEN: collections.Counter = collections.Counter()


@pytest.fixture(scope="module")
def fake_pacs_mock():
    """The fake PACS, answering for the whole module."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake_pacs.install(mock, FAKE_PACS)
        yield mock


def backend_token(app) -> str:
    """A ``system/`` token of a registered backend client that may see every patient."""
    from smart.admin.cli import add_client, grant_access
    from smart.tokens.jwt import issue_access_token

    with app.app_context():
        add_client("backend", [], public=False, jwks={"keys": []}, scope=BACKEND_SCOPE)
        grant_access(client_id="backend", all_patients=True)
        value, _ = issue_access_token("backend", "backend", BACKEND_SCOPE)
    return value


#: Tokens the run is made with: a backend client's, and one of the fake PACS's patient.
TOKENS = {
    "backend": backend_token,
    "patient": lambda app: token(app, scope="launch/patient patient/*.rs", patient=fake_pacs.PATIENT_ID),
}


@pytest.fixture(scope="module", params=sorted(TOKENS))
def facade(request, tmp_path_factory, fake_pacs_mock):
    """One app on the fake PACS per token (building one per operation took a third of the run),
    and the headers of one of :data:`TOKENS`."""
    app = make_app(tmp_path_factory.mktemp(request.param))
    yield app, bearer(TOKENS[request.param](app))
    app.extensions["smart_db"].engine.dispose()


@schema.parametrize()
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_the_server_answers_as_its_spec_says(case, facade):
    """No 5xx; status, content type, headers and body as documented; 405 with Allow."""
    app, headers = facade
    response = case.call_and_validate(app=app, headers=headers)
    SEEN[(case.operation.label, response.request.method, response.status_code)] += 1


def test_the_run_reached_past_authorization():
    """Each FHIR and DICOMweb read and search answered 2xx at least once (not only 4xx)."""
    if not SEEN:
        pytest.skip("the schemathesis run did not take place in this session")
    operations = {label for label, _, _ in SEEN if " /fhir/" in label or " /dicomweb/" in label}
    operations -= {label for label in operations if label.startswith("GET ") and label.endswith("/_search")}
    answered = {label for label, method, status in SEEN if label.startswith(method + " ") and 200 <= status < 300}
    assert sorted(operations - answered) == []
