"""Issue 12: every route that is not public by design refuses a request without a token (401 with
``WWW-Authenticate: Bearer``) and one whose token lacks the scope (403), each in its protocol's
own error shape. The URL map is walked, so a route added later is covered without a new test.
Issue 13: the operator routes (``authz.operator``: health, metrics) need no token but refuse any
client the operator did not allow (403), with a token or without."""
from __future__ import annotations

import pytest
import responses

from facade_helpers import bearer, token

#: Routes that answer without a bearer token by design: discovery, keys, the
#: CapabilityStatement, and the OAuth endpoints (which authenticate the client instead).
PUBLIC = {
    "/.well-known/jwks.json", "/.well-known/openid-configuration", "/.well-known/smart-configuration",
    "/fhir/.well-known/smart-configuration", "/fhir/metadata", "/auth/authorize", "/auth/token",
    "/auth/introspect", "/auth/revoke", "/auth/smart-style.json", "/static/<path:filename>",
    # Browser pages whose credential is the login session (and their forms' CSRF token), not a
    # bearer token: RP-initiated logout, and the signed-in user's approved apps (issue 14).
    "/auth/logout", "/auth/apps",
    # The bundled viewer's static files, its generated configuration and its post-logout page.
    "/viewer/", "/viewer/<path:name>", "/viewer/app-config.js", "/viewer/signed-out",
}
#: A concrete value for each path variable.
SAMPLES = {"<study_id>": "1.2.3", "<endpoint_id>": "dicomweb", "<patient_id>": "P1",
           "<path:rest>": "1.2.3/series/1.2.3.4/instances/1.2.3.4.5/frames/1"}
#: A valid token that allows nothing the facade serves.
NO_SCOPE = "patient/Observation.rs"


#: Routes for operators (load balancers, Prometheus), declared with ``authz.operator``.
OPERATOR = {"/healthz", "/readyz", "/metrics"}


def _declared(app, rule):
    return getattr(app.view_functions[rule.endpoint], "_facade_access", None)


def guarded_requests(app) -> list[tuple[str, str]]:
    """(method, URL) for every method of every route that is neither public nor an operator's."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.rule in PUBLIC or rule.rule in OPERATOR:
            continue
        url = rule.rule
        for placeholder, value in SAMPLES.items():
            url = url.replace(placeholder, value)
        assert "<" not in url, f"no sample for a variable of {rule.rule}"
        found += [(method, url) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return found


def _shape(url: str, response) -> None:
    """The error is in the protocol's own shape."""
    body = response.get_json(silent=True)
    assert body is not None, url
    if url.startswith("/fhir/"):
        assert body["resourceType"] == "OperationOutcome", url
    elif url.startswith("/dicomweb/"):
        assert body["status"] == response.status_code, url
    else:
        assert body["error"] in ("invalid_request", "invalid_token", "insufficient_scope"), url


def test_the_walk_covers_every_protected_kind_of_route(fake_app):
    urls = {url.split("/")[1] for _, url in guarded_requests(fake_app)}
    assert urls == {"fhir", "dicomweb", "auth"}
    assert len(guarded_requests(fake_app)) >= 11


def test_every_guarded_route_refuses_no_token_and_a_token_without_the_scope(fake_app):
    client = fake_app.test_client()
    wrong_scope = bearer(token(fake_app, scope=NO_SCOPE))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as pacs:
        for method, url in guarded_requests(fake_app):
            anonymous = client.open(url, method=method)
            assert anonymous.status_code == 401, (method, url)
            assert anonymous.headers["WWW-Authenticate"].startswith("Bearer "), (method, url)
            _shape(url, anonymous)
            refused = client.open(url, method=method, headers=wrong_scope)
            assert refused.status_code == 403, (method, url, refused.get_data(as_text=True))
            _shape(url, refused)
        assert len(pacs.calls) == 0  # nothing reached the PACS


def test_operator_routes_are_exactly_the_ones_declared_so(fake_app):
    declared = {rule.rule for rule in fake_app.url_map.iter_rules()
                if isinstance(_declared(fake_app, rule), tuple) and _declared(fake_app, rule)[0] == "operator"}
    assert declared == OPERATOR


def test_every_operator_route_refuses_an_address_not_allowed_even_with_a_valid_token(fake_app):
    client = fake_app.test_client()
    valid = bearer(token(fake_app, scope="system/*.rs", patient=None))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as pacs:
        for rule in fake_app.url_map.iter_rules():
            if rule.rule not in OPERATOR:
                continue
            for method in sorted(rule.methods - {"OPTIONS"}):
                for headers in ({}, valid):
                    refused = client.open(rule.rule, method=method, headers=headers,
                                          environ_base={"REMOTE_ADDR": "198.51.100.4"})
                    assert refused.status_code == 403, (method, rule.rule)
                    if method != "HEAD":
                        assert refused.get_json() == {"error": "access_denied"}
        assert len(pacs.calls) == 0


def test_a_route_that_declares_nothing_is_refused(fake_app):
    """Fail closed: a view added without ``authz.needs`` or ``authz.public`` answers 403."""
    from fhir_facade.fhir import api as fhir
    view = fake_app.view_functions["fhir.read_endpoint"]
    declared = getattr(view, "_facade_access")
    try:
        delattr(view, "_facade_access")
        client = fake_app.test_client()
        allowed = bearer(token(fake_app, scope="patient/ImagingStudy.rs"))
        response = client.get("/fhir/Endpoint/dicomweb", headers=allowed)
        assert response.status_code == 403
        assert response.get_json()["resourceType"] == "OperationOutcome"
        assert client.get("/fhir/Endpoint/dicomweb").status_code == 401
    finally:
        setattr(view, "_facade_access", declared)
    assert fhir.read_endpoint is view


@pytest.mark.parametrize("scope", ["patient/ImagingStudy.rs", "patient/Endpoint.rs"])
def test_the_endpoint_is_read_with_an_imagingstudy_or_an_endpoint_scope(fake_app, scope):
    response = fake_app.test_client().get("/fhir/Endpoint/dicomweb", headers=bearer(token(fake_app, scope=scope)))
    assert response.status_code == 200 and response.get_json()["resourceType"] == "Endpoint"
