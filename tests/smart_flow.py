"""Test helper that drives the SMART authorization code flow like a browser (AuthActions)."""
from __future__ import annotations

import base64
import hashlib
import secrets
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

DEFAULT_CLIENT_ID = "test-app"
DEFAULT_REDIRECT_URI = "http://127.0.0.1:9999/callback"
DEFAULT_SCOPE = "launch/patient openid fhirUser patient/ImagingStudy.rs patient/Patient.rs patient/Endpoint.rs"


def make_verifier() -> str:
    """A fresh RFC 7636 §4.1 code_verifier (43+ unreserved characters)."""
    return secrets.token_urlsafe(48)


def s256(verifier: str) -> str:
    """RFC 7636 §4.2 S256 code_challenge of *verifier*."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Code(str):
    """An authorization code that remembers its verifier, state and redirect."""

    verifier: str
    state: str | None
    location: str


class FormParser(HTMLParser):
    """Collect each <form>'s fields the way a browser would submit them."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action"), "fields": [], "buttons": []})
        elif not self.forms:
            return
        elif tag == "input":
            kind = (a.get("type") or "text").lower()
            if "disabled" in a or not a.get("name"):
                return
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self.forms[-1]["fields"].append((a["name"], a.get("value", "")))
        elif tag == "button" and a.get("name"):
            self.forms[-1]["buttons"].append((a["name"], a.get("value", "")))


def parse_forms(html: str) -> list[dict]:
    parser = FormParser()
    parser.feed(html)
    return parser.forms


def form_with_action(html: str, action: str) -> dict:
    """The form whose hidden ``action`` field equals *action* (login, consent, switch)."""
    for form in parse_forms(html):
        if ("action", action) in form["fields"]:
            return form
    raise AssertionError(f"no {action!r} form in page:\n{html[:2000]}")


def form_data(form: dict, values: dict | None = None, button: tuple[str, str] | None = None) -> dict:
    """What a browser posts for *form*: its fields, *values* replacing them, and the pressed *button*."""
    data: dict[str, list[str]] = {}
    for name, value in form["fields"]:
        data.setdefault(name, []).append(value)
    for name, value in (values or {}).items():
        data[name] = value if isinstance(value, list) else [value]
    if button:
        data[button[0]] = [button[1]]
    return data


class AuthActions:
    """Multi-step SMART flows against a Flask test client (like the Flask tutorial's AuthActions)."""

    def __init__(self, client):
        self.client = client
        self.app = client.application

    # --- registration -------------------------------------------------------------------
    def register_public_client(self, client_id=DEFAULT_CLIENT_ID, redirect_uris=(DEFAULT_REDIRECT_URI,), scope=None):
        from smart.admin.cli import add_client

        with self.app.app_context():
            add_client(client_id, list(redirect_uris), public=True, scope=scope)
        return client_id

    def register_confidential_client(self, client_id, secret, redirect_uris=(DEFAULT_REDIRECT_URI,), scope=None):
        from smart.admin.cli import add_client

        with self.app.app_context():
            add_client(client_id, list(redirect_uris), public=False, secret=secret, scope=scope)
        return client_id

    def register_user(self, username="alice", password="correct horse", patient="patient-1", role="patient"):
        from smart.admin.cli import add_user

        with self.app.app_context():
            add_user(username, password, patient=patient, role=role)
        return username

    def ensure_client(self, client_id=DEFAULT_CLIENT_ID, redirect_uri=DEFAULT_REDIRECT_URI):
        from smart.oauth.server import query_client

        with self.app.app_context():
            exists = query_client(client_id) is not None
        if not exists:
            self.register_public_client(client_id, (redirect_uri,))

    # --- authorization endpoint ---------------------------------------------------------
    def authorize_params(self, client_id=DEFAULT_CLIENT_ID, redirect_uri=DEFAULT_REDIRECT_URI,
                         scope=DEFAULT_SCOPE, state=None, aud=None, verifier=None, **extra):
        """Query parameters of an authorization request (SMART 2.2 §Obtain authorization code)."""
        verifier = verifier or make_verifier()
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state if state is not None else secrets.token_urlsafe(8),
            "aud": aud if aud is not None else self.app.config["FACADE_PUBLIC_URL"] + "/fhir",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        }
        params.update({k: v for k, v in extra.items() if v is not None})
        params = {k: v for k, v in params.items() if v is not None}
        return params, verifier

    def submit(self, html: str, action: str, values: dict | None = None, button=None):
        """Submit the page's *action* form with *values* overriding/adding fields."""
        form = form_with_action(html, action)
        return self.client.post(form["action"], data=form_data(form, values, button))

    def login(self, page_html: str, username: str, password: str):
        return self.submit(page_html, "login", {"username": username, "password": password})

    def authorize(self, username="alice", password="correct horse", decision="approve", patient=None,
                  deselect=(), **kwargs) -> Code:
        """Run authorize → login → consent and return the code from the redirect.

        A user who approved the same scopes for the client before goes straight back with a
        code (remembered consent, issue 14); asking to deny or deselect forces the consent
        page (``prompt=consent``).

        Raises AssertionError (with the page) if no redirect with a code comes back.
        """
        if decision != "approve" or deselect:
            kwargs.setdefault("prompt", "consent")
        params, verifier = self.authorize_params(**kwargs)
        response = self.client.get("/auth/authorize", query_string=params)
        html = response.get_data(as_text=True)
        if response.status_code == 200 and ("action", "login") in sum((f["fields"] for f in parse_forms(html)), []):
            response = self.login(html, username, password)
            html = response.get_data(as_text=True)
        if response.status_code != 302:
            assert response.status_code == 200, html
            form = form_with_action(html, "consent")
            values: dict = {}
            if patient is not None:
                values["patient"] = patient
            if deselect:
                kept = [v for n, v in form["fields"] if n == "grant_scope" and v not in deselect]
                values["grant_scope"] = kept
            response = self.submit(html, "consent", values, button=("decision", decision))
        assert response.status_code == 302, response.get_data(as_text=True)
        location = response.headers["Location"]
        query = parse_qs(urlsplit(location).query)
        assert "code" in query, location
        code = Code(query["code"][0])
        code.verifier = verifier
        code.state = query.get("state", [None])[0]
        code.location = location
        return code

    def logout(self, **params):
        """Sign this browser out at the end-session endpoint, answering "Sign out?" when asked
        (a logout without the user's id_token_hint, RP-Initiated Logout 1.0 §2)."""
        response = self.client.get("/auth/logout", query_string=params)
        html = response.get_data(as_text=True)
        if any(("action", "logout") in form["fields"] for form in parse_forms(html)):
            response = self.submit(html, "logout", button=("decision", "sign_out"))
        return response

    # --- token endpoint -----------------------------------------------------------------
    def exchange_response(self, code, verifier, client_id=DEFAULT_CLIENT_ID, redirect_uri=DEFAULT_REDIRECT_URI,
                          secret=None, basic=True, **extra):
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": verifier}
        headers = {}
        if secret and basic:
            raw = f"{client_id}:{secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        else:
            data["client_id"] = client_id
            if secret:
                data["client_secret"] = secret
        data.update(extra)
        data = {k: v for k, v in data.items() if v is not None}
        return self.client.post("/auth/token", data=data, headers=headers)

    def exchange(self, code, verifier=None, **kwargs) -> dict:
        """Exchange *code* at the token endpoint and return the token response JSON (asserts 200)."""
        verifier = verifier if verifier is not None else getattr(code, "verifier", None)
        response = self.exchange_response(code, verifier, **kwargs)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def refresh_response(self, refresh_token, client_id=DEFAULT_CLIENT_ID, scope=None, **extra):
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id,
                "scope": scope}
        data.update(extra)
        return self.client.post("/auth/token", data={k: v for k, v in data.items() if v is not None})

    def obtain_token(self, username="alice", password="correct horse", scope=DEFAULT_SCOPE, **kwargs) -> dict:
        """The whole standalone launch for a registered user: returns the token response."""
        self.ensure_client(kwargs.get("client_id", DEFAULT_CLIENT_ID),
                           kwargs.get("redirect_uri", DEFAULT_REDIRECT_URI))
        code = self.authorize(username, password, scope=scope, **kwargs)
        exchange_kwargs = {k: kwargs[k] for k in ("client_id", "redirect_uri") if k in kwargs}
        return self.exchange(code, code.verifier, **exchange_kwargs)
