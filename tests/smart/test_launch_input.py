"""``POST /auth/launch`` refuses fields of the wrong JSON type with 400, never a 500 (issue 11)."""
import pytest

from access_helpers import allow
from facade_helpers import bearer
from smart.web.routes import launch_fields


def launch_token(app) -> str:
    """A Backend Services token of a registered backend client with the ``launch`` scope."""
    from smart.admin.cli import add_client
    from smart.tokens.jwt import issue_access_token

    with app.app_context():
        add_client("ehr", [], public=False, jwks={"keys": []}, scope="launch")
        value, _ = issue_access_token("ehr", "ehr", "launch")
    return value


@pytest.mark.parametrize("body", [{"user": [None, None]}, {"patient": ["p"]}, {"patient": 5},
                                  {"encounter": {"id": "e"}}, {"patient": "p", "user": True}])
def test_a_field_that_is_not_a_string_is_an_invalid_request(fake_app, body):
    """schemathesis sent ``"user": [null, null]``: SQLite could not bind a list, a 500."""
    response = fake_app.test_client().post("/auth/launch", json=body, headers=bearer(launch_token(fake_app)))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


def test_string_fields_still_create_a_launch(fake_app):
    token = launch_token(fake_app)
    allow(fake_app, ["p-1"], client_id="ehr")
    response = fake_app.test_client().post("/auth/launch", json={"patient": "p-1", "user": "dr"},
                                           headers=bearer(token))
    assert response.status_code == 201, response.get_data(as_text=True)


def test_a_launch_for_a_patient_outside_the_clients_access_list_is_403(fake_app):
    """Issue 12: an EHR back end launches only for the patients it was granted."""
    token = launch_token(fake_app)
    client = fake_app.test_client()
    refused = client.post("/auth/launch", json={"patient": "p-2"}, headers=bearer(token))
    assert refused.status_code == 403 and refused.get_json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    allow(fake_app, ["p-2"], client_id="ehr")
    assert client.post("/auth/launch", json={"patient": "p-2"}, headers=bearer(token)).status_code == 201


def test_launch_fields_reads_empty_values_as_none():
    assert launch_fields({"patient": "", "user": "dr"}) == ({"patient": None, "encounter": None, "user": "dr"}, None)
    assert launch_fields({"patient": 0, "encounter": 1})[1] == "encounter must be a string"
