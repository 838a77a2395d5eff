"""Tokens of trusted EHRs, the edge cases (issue 17): the EHR faked with ``responses``."""
from __future__ import annotations

import base64
import json
import logging
import time

import pytest
import requests
import responses
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from facade_helpers import FHIR_BASE, bearer, token
from smart import authz
from smart.admin.issuers import add_issuer, list_issuers, remove_issuer
from smart.tokens import issuers

ISSUER = "https://ehr.test"
JWKS_URI = ISSUER + "/jwks"
INTROSPECT = ISSUER + "/introspect"
SYSTEM = "urn:oid:1.2.3.4"
KEY = RSAKey.generate_key(2048, private=True, parameters={"kid": "k1"})


def _discovery(rsps):
    rsps.get(ISSUER + "/.well-known/smart-configuration", json={
        "issuer": ISSUER, "jwks_uri": JWKS_URI, "introspection_endpoint": INTROSPECT,
        "token_endpoint": ISSUER + "/token"})


def _jwks(rsps, *keys):
    return rsps.get(JWKS_URI, json={"keys": [k.as_dict(private=False) for k in keys or (KEY,)]})


def _patient(rsps, ehr_id="e1", mrn="MRN-1", status=200):
    return rsps.get(f"{ISSUER}/fhir/Patient/{ehr_id}", status=status, json={
        "resourceType": "Patient", "id": ehr_id,
        "identifier": [{"system": "urn:other", "value": "X"}, {"system": SYSTEM, "value": mrn}]})


def _jwt(key=KEY, **changes):
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "u", "aud": FHIR_BASE, "exp": now + 600, "iat": now, "client_id": "app",
              "scope": "patient/ImagingStudy.rs", "patient": "e1"}
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    alg = "ES256" if isinstance(key, ECKey) else "RS256"
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])


@pytest.fixture
def trusted(app):
    with app.app_context():
        add_issuer(ISSUER, SYSTEM, fhir_base=ISSUER + "/fhir", introspection_client_id="facade id",
                   introspection_secret="s3cret:&")
    return app


def _grant(app, value):
    with app.test_request_context(headers=bearer(value)):
        return authz.current_grant()


@responses.activate
def test_a_jwt_of_a_trusted_issuer_becomes_a_grant_in_the_facades_patient_ids(trusted):
    _discovery(responses)
    keys = _jwks(responses)
    patient = _patient(responses, mrn="MRN 1/x")
    value = _jwt()
    for _ in range(5):
        grant = _grant(trusted, value)
    assert (grant.issuer, grant.ehr_patient, grant.client_id) == (ISSUER, "e1", "app")
    assert grant.patient == "dcm-MRN.201.2Fx"  # the facade's id of PatientID "MRN 1/x" (rule 2)
    with trusted.app_context():
        assert grant.patients("ImagingStudy", "s") == frozenset({"dcm-MRN.201.2Fx"})
    assert keys.call_count == 1 and patient.call_count == 1  # all cached
    assert patient.calls[0].request.headers["Authorization"] == f"Bearer {value}"


@responses.activate
def test_own_tokens_still_work_beside_trusted_issuers(trusted):
    own = token(trusted, patient="P1")
    grant = _grant(trusted, own)
    assert (grant.patient, grant.issuer, grant.ehr_patient) == ("P1", None, None)
    assert len(responses.calls) == 0


@pytest.mark.parametrize("changes,description", [
    ({"exp": 1}, "expired"),
    ({"aud": "https://other.example/fhir"}, "not meant for this FHIR server"),
    ({"aud": None}, "not meant for this FHIR server"),
    ({"iss": "https://untrusted.test"}, "not trusted"),
])
@responses.activate
def test_bad_claims_are_401(trusted, changes, description):
    _discovery(responses)
    _jwks(responses)
    with pytest.raises(authz.Unauthorized, match=description):
        _grant(trusted, _jwt(**changes))


@responses.activate
def test_the_configured_audience_replaces_the_fhir_base(app):
    with app.app_context():
        add_issuer(ISSUER, SYSTEM, fhir_base=ISSUER + "/fhir", audience="https://imaging.example/fhir")
    _discovery(responses)
    _jwks(responses)
    _patient(responses)
    assert _grant(app, _jwt(aud=["x", "https://imaging.example/fhir"])).ehr_patient == "e1"
    with pytest.raises(authz.Unauthorized):
        _grant(app, _jwt(aud=FHIR_BASE))


@responses.activate
def test_an_unknown_kid_refetches_the_jwks_once_per_backoff(trusted, monkeypatch):
    _discovery(responses)
    new = RSAKey.generate_key(2048, private=True, parameters={"kid": "k2"})
    keys = _jwks(responses)
    _patient(responses)
    _grant(trusted, _jwt())
    responses.replace(responses.GET, JWKS_URI, json={"keys": [KEY.as_dict(private=False), new.as_dict(private=False)]})
    assert _grant(trusted, _jwt(key=new)).ehr_patient == "e1"  # rotated: fetched again at once
    forged = RSAKey.generate_key(2048, private=True, parameters={"kid": "k3"})
    for _ in range(3):
        with pytest.raises(authz.Unauthorized, match="unknown key"):
            _grant(trusted, _jwt(key=forged, jti=str(time.time())))
    jwks_fetches = [c for c in responses.calls if c.request.url == JWKS_URI]
    assert len(jwks_fetches) == 2  # the first, the rotation; forged kids within the backoff fetch nothing
    monkeypatch.setattr(issuers, "UNKNOWN_KID_BACKOFF", 0.0)
    with pytest.raises(authz.Unauthorized, match="unknown key"):
        _grant(trusted, _jwt(key=forged, jti="after the backoff"))
    assert len([c for c in responses.calls if c.request.url == JWKS_URI]) == 3


@responses.activate
def test_ec_keys_are_accepted_and_hs_none_are_not(trusted):
    _discovery(responses)
    ec = ECKey.generate_key("P-256", private=True, parameters={"kid": "ec1"})
    _jwks(responses, KEY, ec)
    _patient(responses)
    assert _grant(trusted, _jwt(key=ec)).ehr_patient == "e1"
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": "k1"}).encode()).rstrip(b"=").decode()
    body = _jwt().split(".")[1]
    with pytest.raises(authz.Unauthorized, match="algorithm is not accepted"):
        _grant(trusted, f"{header}.{body}.c2ln")


def _introspection(rsps, **answer):
    return rsps.post(INTROSPECT, json={"active": True, "scope": "patient/ImagingStudy.rs", "patient": "e1",
                                       "client_id": "app", "exp": int(time.time()) + 600, "aud": FHIR_BASE,
                                       **answer})


@responses.activate
def test_opaque_tokens_are_introspected_once_per_cache_period_with_client_secret_basic(trusted):
    _discovery(responses)
    _patient(responses)
    calls = _introspection(responses)
    for _ in range(10):
        grant = _grant(trusted, "opaque-token-1")
    assert grant.ehr_patient == "e1" and grant.scope == "patient/ImagingStudy.rs"
    assert calls.call_count == 1
    request = calls.calls[0].request
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"facade+id:s3cret%3A%26").decode()
    assert "token=opaque-token-1" in request.body


@responses.activate
def test_an_accepted_verdict_ends_at_the_bound_and_at_exp(trusted):
    trusted.config["SMART_EHR_TOKEN_CACHE_SECONDS"] = 0.2
    _discovery(responses)
    _patient(responses)
    calls = _introspection(responses)
    _grant(trusted, "opaque-token-2")
    time.sleep(0.3)
    _grant(trusted, "opaque-token-2")
    assert calls.call_count == 2
    responses.replace(responses.POST, INTROSPECT, json={"active": True, "exp": int(time.time()) + 1,
                                                        "scope": "patient/ImagingStudy.rs", "patient": "e1",
                                                        "aud": FHIR_BASE})
    trusted.config["SMART_EHR_TOKEN_CACHE_SECONDS"] = 60
    _grant(trusted, "opaque-token-3")
    time.sleep(1.1)
    with pytest.raises(authz.Unauthorized):
        _grant(trusted, "opaque-token-3")


@responses.activate
def test_inactive_tokens_are_401_and_cached_briefly(trusted):
    _discovery(responses)
    calls = responses.post(INTROSPECT, json={"active": False})
    for _ in range(3):
        with pytest.raises(authz.Unauthorized, match="not active"):
            _grant(trusted, "opaque-inactive")
    assert calls.call_count == 1


@pytest.mark.parametrize("failure", [
    {"status": 500, "json": {"error": "server_error"}},
    {"status": 401, "json": {"error": "invalid_client"}},
    {"status": 200, "body": "not json"},
    {"status": 200, "json": ["active"]},
    {"body": requests.ConnectionError("refused")},
    {"body": requests.ReadTimeout("slow")},
])
@responses.activate
def test_an_issuer_that_cannot_vouch_gives_503_with_retry_after_never_active(trusted, failure):
    _discovery(responses)
    calls = responses.post(INTROSPECT, **failure)
    client = trusted.test_client()
    for _ in range(2):  # never cached: asked again
        response = client.get("/fhir/Endpoint", headers=bearer("opaque-x"))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.get_json()["issue"][0]["code"] == "transient"
    assert calls.call_count == 2
    dicomweb = client.get("/dicomweb/studies", headers=bearer("opaque-x"))
    assert dicomweb.status_code == 503 and dicomweb.headers["Retry-After"] == "5"


@responses.activate
def test_an_unreachable_discovery_is_503(trusted):
    responses.get(ISSUER + "/.well-known/smart-configuration", body=requests.ConnectionError("down"))
    responses.get(ISSUER + "/.well-known/openid-configuration", body=requests.ConnectionError("down"))
    with pytest.raises(authz.Unavailable):
        _grant(trusted, _jwt())


@responses.activate
def test_private_key_jwt_introspection_signs_an_assertion_for_the_endpoint(app):
    key = RSAKey.generate_key(2048, private=True)
    with app.app_context():
        add_issuer(ISSUER, SYSTEM, introspection_client_id="facade",
                   introspection_key=key.as_pem(private=True).decode())
    _discovery(responses)
    responses.get(ISSUER + "/Patient/e1", json={"resourceType": "Patient", "identifier": [
        {"system": SYSTEM, "value": "M"}]})  # no --fhir-base: the issuer URL
    calls = _introspection(responses)
    assert _grant(app, "opaque-pkj").patient == "M"
    form = dict(pair.split("=", 1) for pair in calls.calls[0].request.body.split("&"))
    assert form["client_assertion_type"] == "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
    claims = jwt.decode(form["client_assertion"], key, algorithms=["RS256"]).claims
    assert (claims["iss"], claims["sub"], claims["aud"]) == ("facade", "facade", INTROSPECT)
    assert "Authorization" not in calls.calls[0].request.headers


@pytest.mark.parametrize("answer,error", [
    ({"status": 200, "json": {"resourceType": "Patient", "identifier": [{"system": "urn:other", "value": "X"}]}},
     authz.Forbidden),
    ({"status": 404, "json": {"resourceType": "OperationOutcome"}}, authz.Forbidden),
    ({"status": 503, "json": {}}, authz.Unavailable),
    ({"body": requests.ConnectTimeout("slow")}, authz.Unavailable),
])
@responses.activate
def test_an_unmappable_patient_is_403_and_a_failing_ehr_503(trusted, answer, error):
    _discovery(responses)
    _jwks(responses)
    responses.get(ISSUER + "/fhir/Patient/e1", **answer)
    with pytest.raises(error):
        _grant(trusted, _jwt())


@responses.activate
def test_a_malformed_patient_claim_never_reaches_the_ehrs_url(trusted):
    _discovery(responses)
    _jwks(responses)
    with pytest.raises(authz.Forbidden):
        _grant(trusted, _jwt(patient="../Observation/1"))


@responses.activate
def test_system_tokens_of_an_ehr_reach_the_access_list_of_client_at_issuer(trusted):
    from smart.admin.cli import grant_access
    _discovery(responses)
    _jwks(responses)
    with trusted.app_context():
        grant_access(client_id=f"backend@{ISSUER}", patients=["P7"])
    grant = _grant(trusted, _jwt(scope="system/ImagingStudy.rs", patient=None, client_id="backend"))
    other = _grant(trusted, _jwt(scope="system/ImagingStudy.rs", patient=None, client_id="other"))
    with trusted.app_context():
        assert grant.patients("ImagingStudy", "s") == frozenset({"P7"})
        assert other.patients("ImagingStudy", "s") == frozenset()


@responses.activate
def test_the_fhir_search_speaks_the_ehrs_patient_id(trusted):
    _discovery(responses)
    _jwks(responses)
    _patient(responses, mrn="MRN-1")
    value = _jwt()
    with trusted.test_request_context(headers=bearer(value)):
        grant = authz.current_grant()
        from fhir_facade.access import local_patient_params, public_subject
        assert local_patient_params(grant, [("patient", "e1"), ("subject:Patient", "Patient/e1"), ("x", "e1")]) == [
            ("patient", "MRN-1"), ("subject:Patient", "MRN-1"), ("x", "e1")]
        with pytest.raises(authz.Forbidden):
            local_patient_params(grant, [("patient", "MRN-1")])
        study = {"resourceType": "ImagingStudy", "subject": {"reference": "Patient/MRN-1"}}
        assert public_subject(grant, study)["subject"] == {"reference": "Patient/e1"}
        assert study["subject"] == {"reference": "Patient/MRN-1"}  # the cached resource is untouched


@responses.activate
def test_no_token_reaches_the_log(trusted, caplog):
    _discovery(responses)
    responses.post(INTROSPECT, status=500)
    caplog.set_level(logging.DEBUG)
    trusted.test_client().get("/fhir/Endpoint", headers=bearer("very-secret-opaque-token"))
    assert "very-secret-opaque-token" not in caplog.text


def test_issuer_administration(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["smart", "add-issuer", "--issuer", ISSUER, "--patient-identifier-system", SYSTEM,
                                 "--introspection-client-id", "facade", "--introspection-secret", "hush"])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(args=["smart", "list-issuers"])
    assert json.loads(listed.output) == [{
        "issuer": ISSUER, "patient_identifier_system": SYSTEM, "fhir_base": ISSUER, "audience": None,
        "introspection_client_id": "facade", "introspection_auth": "client_secret_basic"}]
    assert "hush" not in listed.output
    again = runner.invoke(args=["smart", "add-issuer", "--issuer", ISSUER, "--patient-identifier-system", SYSTEM])
    assert again.exit_code != 0 and "already trusted" in again.output and "Traceback" not in again.output
    for args, message in ((["--issuer", "ftp://x"], "absolute http(s) URL"),
                          (["--issuer", "https://b.test", "--introspection-client-id", "c"], "needs"),
                          (["--issuer", "https://b.test", "--introspection-secret", "s"], "needs")):
        bad = runner.invoke(args=["smart", "add-issuer", "--patient-identifier-system", SYSTEM, *args])
        assert bad.exit_code != 0 and message in bad.output, bad.output
    fragment = json.loads(runner.invoke(args=["smart", "associated-endpoints"]).output)
    assert fragment == {"associated_endpoints": [
        {"url": FHIR_BASE, "capabilities": ["smart-imaging-access"]},
        {"url": FHIR_BASE.removesuffix("/fhir") + "/dicomweb", "capabilities": ["smart-imaging-access"]}]}
    assert runner.invoke(args=["smart", "remove-issuer", "--issuer", ISSUER]).exit_code == 0
    with app.app_context():
        assert list_issuers() == []
        with pytest.raises(Exception, match="not trusted"):
            remove_issuer(ISSUER)


def test_discovery_lists_the_dicomweb_base_as_associated_endpoint(client):
    config = client.get("/.well-known/smart-configuration").get_json()
    assert config["associated_endpoints"] == [
        {"url": FHIR_BASE.removesuffix("/fhir") + "/dicomweb", "capabilities": ["smart-imaging-access"]}]


def test_an_unknown_issuer_without_trusted_issuers_is_401(app):
    with pytest.raises(authz.Unauthorized):
        _grant(app, _jwt())
    with pytest.raises(authz.Unauthorized):
        _grant(app, "opaque")


def test_the_verdict_cache_is_keyed_by_the_tokens_hash(app):
    assert issuers.token_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
