"""PostgreSQL stopped mid-run (issue 13 item 3): routes that need the database answer 503 with
``Retry-After`` in their protocol's shape, never a 500; started again, the same app (no restart)
serves every route again. A cluster of this module's own, so the session's is never stopped."""
from __future__ import annotations

import pytest
import responses

import fake_pacs
from facade_helpers import FAKE_PACS, bearer, make_app
from smart_flow import AuthActions

pytestmark = [pytest.mark.postgresql, pytest.mark.integration]


@pytest.fixture(scope="module")
def cluster():
    import devpg

    devpg.ensure_installed()
    with devpg.PostgreSQL() as running:
        yield running


@pytest.fixture
def pacs():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake_pacs.install(mock, FAKE_PACS)
        yield mock


def probes(client, tokens: dict) -> dict:
    """One request per protocol that needs the database (the revocation list is read on each
    request: ``SMART_REVOCATION_CACHE_SECONDS`` is 0)."""
    headers = bearer(tokens["access_token"])
    return {
        "fhir": client.get(f"/fhir/ImagingStudy?patient={fake_pacs.PATIENT_ID}", headers=headers),
        "dicomweb": client.get(f"/dicomweb/studies?PatientID={fake_pacs.PATIENT_ID}", headers=headers),
        "token": client.post("/auth/token", data={"grant_type": "refresh_token", "client_id": "test-app",
                                                  "refresh_token": tokens["refresh_token"]}),
        "introspect": client.post("/auth/introspect", data={"token": tokens["access_token"]}, headers=headers),
    }


def test_database_stopped_then_started_again(tmp_path, cluster, pacs):
    app = make_app(tmp_path, FACADE_DATABASE_URL=cluster.url, SMART_REVOCATION_CACHE_SECONDS=0)
    client = app.test_client()
    auth = AuthActions(client)
    auth.register_user(patient=fake_pacs.PATIENT_ID)
    tokens = auth.obtain_token(scope="launch/patient offline_access patient/ImagingStudy.rs")
    before = probes(client, tokens)
    assert {name: r.status_code for name, r in before.items()} == dict.fromkeys(before, 200)
    tokens["refresh_token"] = before["token"].get_json().get("refresh_token", tokens["refresh_token"])

    headers = bearer(tokens["access_token"])
    cluster.stop()
    try:
        down = probes(client, tokens)
        for name, response in down.items():
            assert response.status_code == 503, (name, response.get_data(as_text=True))
            assert response.headers["Retry-After"] == "5", name
            assert "Traceback" not in response.get_data(as_text=True)
        assert down["fhir"].get_json()["resourceType"] == "OperationOutcome"
        assert down["fhir"].get_json()["issue"][0]["code"] == "transient"
        assert down["dicomweb"].get_json()["status"] == 503
        for name in ("token", "introspect"):
            assert down[name].get_json()["error"] == "temporarily_unavailable", name
        # The login page needs the database too (the client and its redirect URI).
        params, _ = auth.authorize_params(scope="launch/patient patient/ImagingStudy.rs")
        page = client.get("/auth/authorize", query_string=params)
        assert (page.status_code, page.get_json()["error"]) == (503, "temporarily_unavailable")
        # The public keys were read before the outage: the JWK Set is still served from the cache.
        assert client.get("/.well-known/jwks.json").status_code == 200
        # A browser's requests carry an Origin, checked against the registered clients in the
        # after_request hooks (where an exception would be a bare 500): still the protocols' answers.
        app.extensions.pop("smart_origins", None)  # as after ORIGINS_CACHE_SECONDS
        origin = {"Origin": "http://127.0.0.1:9999"}
        assert client.get("/fhir/metadata", headers=origin).status_code == 200
        assert client.get(f"/fhir/ImagingStudy?patient={fake_pacs.PATIENT_ID}",
                          headers={**headers, **origin}).status_code == 503
        assert client.options("/auth/token", headers={**origin, "Access-Control-Request-Method": "POST"}
                              ).status_code in (200, 204)
        assert client.post("/auth/token", data={"grant_type": "refresh_token", "client_id": "test-app",
                                                "refresh_token": tokens["refresh_token"]},
                           headers=origin).status_code == 503
    finally:
        cluster.start()

    after = probes(client, tokens)
    assert {name: r.status_code for name, r in after.items()} == dict.fromkeys(after, 200)
    assert after["introspect"].get_json()["active"] is True
    # And a whole new launch works on the same app.
    assert auth.obtain_token(scope="launch/patient patient/ImagingStudy.rs")["patient"] == fake_pacs.PATIENT_ID
    app.extensions["smart_db"].engine.dispose()
