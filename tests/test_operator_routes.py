"""Issue 13: the operator routes /healthz, /readyz and /metrics, and who may read them.

Health and metrics need no SMART token, but each is declared with ``smart.authz.operator``: only
clients in FACADE_HEALTH_ALLOW / FACADE_METRICS_ALLOW (default loopback), judged behind
FACADE_TRUSTED_PROXIES, or carrying FACADE_METRICS_TOKEN, are answered; everyone else gets 403.
"""
from __future__ import annotations

import shutil

import pytest
import requests
import responses
from responses import matchers

from facade_helpers import FAKE_PACS, make_app

PROBE = f"{FAKE_PACS}/studies"
#: The readiness probe's query: a UID no study has.
QUERY = [matchers.query_string_matcher("StudyInstanceUID=2.25.0&limit=1")]
OPERATOR_ROUTES = ("/healthz", "/readyz", "/metrics")
OUTSIDER = "203.0.113.9"  # TEST-NET-3 (RFC 5737)


def get(app, path, address="127.0.0.1", **headers):
    return app.test_client().get(path, headers=headers, environ_base={"REMOTE_ADDR": address})


@pytest.fixture
def pacs():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


# --- liveness and readiness --------------------------------------------------------------------

def test_healthz_answers_ok_without_touching_the_pacs_or_the_database(tmp_path, pacs):
    app = make_app(tmp_path / "db")
    app.extensions["smart_db"].engine.dispose()
    shutil.rmtree(tmp_path / "db")  # the database file and its folder are gone
    response = get(app, "/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    assert len(pacs.calls) == 0


def test_health_checks_open_no_session_so_a_cookie_needs_no_database(tmp_path, pacs):
    """Flask opens the session before routing, and reading a session cookie needs the signing key
    stored in the database: the operator routes skip it."""
    pacs.add(responses.GET, PROBE, json=[], match=QUERY)
    app = make_app(tmp_path / "db")
    app.extensions["smart_db"].engine.dispose()
    shutil.rmtree(tmp_path / "db")
    client = app.test_client()
    client.set_cookie("session", "eyJ4IjoxfQ.Z2E.c2lnbmF0dXJl")
    assert client.get("/healthz", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    ready = client.get("/readyz", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert (ready.status_code, ready.get_json()["failed"]) == (503, ["database"])


def test_readyz_is_200_when_the_database_and_the_pacs_answer(fake_app, pacs):
    pacs.add(responses.GET, PROBE, json=[], match=QUERY)
    response = get(fake_app, "/readyz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ready"})
    assert "Retry-After" not in response.headers
    assert len(pacs.calls) == 1 and pacs.calls[0].request.headers["Accept"] == "application/dicom+json"


@pytest.mark.parametrize("failure", [
    {"body": requests.ConnectionError("refused")},
    {"body": requests.ConnectTimeout("silent")},
    {"status": 401},
    {"status": 500},
])
def test_readyz_is_503_naming_the_pacs_when_it_fails(fake_app, pacs, failure):
    pacs.add(responses.GET, PROBE, match=QUERY, **failure)
    response = get(fake_app, "/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json() == {"status": "unavailable", "failed": ["pacs"]}


def test_readyz_is_503_naming_the_database_when_it_cannot_be_opened(tmp_path, pacs):
    pacs.add(responses.GET, PROBE, json=[], match=QUERY)
    app = make_app(tmp_path / "db")
    app.extensions["smart_db"].engine.dispose()  # no pooled connection to the old file
    shutil.rmtree(tmp_path / "db")
    response = get(app, "/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    body = response.get_json()
    assert body == {"status": "unavailable", "failed": ["database"]}
    assert str(tmp_path) not in response.get_data(as_text=True)


def test_readyz_names_both_when_both_fail_and_recovers_without_a_restart(tmp_path, pacs):
    app = make_app(tmp_path / "db")
    database = tmp_path / "db" / "facade.db"
    saved = database.read_bytes()
    app.extensions["smart_db"].engine.dispose()
    shutil.rmtree(tmp_path / "db")
    pacs.add(responses.GET, PROBE, body=requests.ConnectionError("refused"), match=QUERY)
    assert get(app, "/readyz").get_json()["failed"] == ["database", "pacs"]
    (tmp_path / "db").mkdir()
    database.write_bytes(saved)
    pacs.replace(responses.GET, PROBE, json=[], match=QUERY)
    assert get(app, "/readyz").status_code == 200


def test_the_readiness_timeout_bounds_the_pacs_probe(tmp_path, pacs):
    app = make_app(tmp_path, FACADE_READY_TIMEOUT=0.5)
    pacs.add(responses.GET, PROBE, json=[], match=QUERY)
    assert get(app, "/readyz").status_code == 200
    # responses records the timeout the adapter was given.
    assert pacs.calls[0].request.req_kwargs["timeout"] == 0.5


# --- who may read them ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", OPERATOR_ROUTES)
def test_operator_routes_refuse_other_addresses_by_default(fake_app, pacs, path):
    response = get(fake_app, path, address=OUTSIDER)
    assert response.status_code == 403
    assert response.get_json() == {"error": "access_denied"}
    assert len(pacs.calls) == 0


@pytest.mark.parametrize("path", OPERATOR_ROUTES)
@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_operator_routes_answer_loopback_by_default(fake_app, pacs, path, address):
    pacs.add(responses.GET, PROBE, json=[], match=QUERY)
    assert get(fake_app, path, address=address).status_code == 200


def test_health_and_metrics_have_lists_of_their_own(tmp_path):
    app = make_app(tmp_path, FACADE_HEALTH_ALLOW="10.0.0.0/8", FACADE_METRICS_ALLOW="192.0.2.7, 2001:db8::/32")
    assert get(app, "/healthz", address="10.1.2.3").status_code == 200
    assert get(app, "/metrics", address="10.1.2.3").status_code == 403
    assert get(app, "/metrics", address="192.0.2.7").status_code == 200
    assert get(app, "/metrics", address="2001:db8::5").status_code == 200
    assert get(app, "/healthz", address="192.0.2.7").status_code == 403
    assert get(app, "/healthz", address="127.0.0.1").status_code == 403  # the list replaces loopback


def test_none_allows_no_address(tmp_path):
    app = make_app(tmp_path, FACADE_METRICS_ALLOW="none")
    assert get(app, "/metrics").status_code == 403


def test_forwarded_requests_are_refused_unless_the_proxy_is_trusted(tmp_path):
    """Through a proxy on loopback, the peer address is the proxy's: without FACADE_TRUSTED_PROXIES
    the client is unknown and refused; with it, the forwarded address is judged."""
    untrusted = make_app(tmp_path / "0")
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        assert get(untrusted, "/metrics", **{header: "127.0.0.1"}).status_code == 403
    trusted = make_app(tmp_path / "1", FACADE_TRUSTED_PROXIES=1)
    assert get(trusted, "/metrics", **{"X-Forwarded-For": OUTSIDER}).status_code == 403
    assert get(trusted, "/metrics", **{"X-Forwarded-For": "127.0.0.1"}).status_code == 200
    # The proxy appends the real peer: a client cannot smuggle loopback in front of it.
    assert get(trusted, "/metrics", **{"X-Forwarded-For": f"127.0.0.1, {OUTSIDER}"}).status_code == 403


def test_the_metrics_token_opens_every_operator_route_from_anywhere(tmp_path, pacs):
    pacs.add(responses.GET, PROBE, json=[], match=QUERY)
    secret = "s3cret-scrape-token"
    app = make_app(tmp_path, FACADE_METRICS_TOKEN=secret)
    for path in OPERATOR_ROUTES:
        assert get(app, path, address=OUTSIDER, Authorization=f"Bearer {secret}").status_code == 200
        assert get(app, path, address=OUTSIDER, Authorization="Bearer wrong").status_code == 403
        assert get(app, path, address=OUTSIDER, Authorization=f"Basic {secret}").status_code == 403
        assert get(app, path, address=OUTSIDER).status_code == 403
        # A wrong secret is refused from an allowed address too: it names itself as a scraper.
        assert get(app, path, Authorization="Bearer wrong").status_code == 403
    assert secret not in get(app, "/metrics", Authorization=f"Bearer {secret}").get_data(as_text=True)


@pytest.mark.parametrize("name", ["FACADE_HEALTH_ALLOW", "FACADE_METRICS_ALLOW"])
def test_a_malformed_allow_list_stops_the_app_naming_the_variable(tmp_path, name):
    with pytest.raises(ValueError, match=f"{name}: 'localhost' is not an IP address"):
        make_app(tmp_path, **{name: "127.0.0.1, localhost"})
