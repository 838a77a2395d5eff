"""Test helper: the EHR of tests/ehr/ehr.mjs (oidc-provider + a Patient read) on a free loopback
port, and an app's authorization code + PKCE flow against it."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

import devpacs

EHR_DIR = Path(__file__).resolve().parent / "ehr"
REDIRECT_URI = "http://127.0.0.1/callback"
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.19.5"
FACADE_SECRET = "facade-secret"


class Ehr:
    """``node tests/ehr/ehr.mjs`` on *port* (a free one by default); :meth:`start` / :meth:`stop`
    may be called again on the same port (the provider "down" and "back")."""

    def __init__(self, resource: str, patients: dict, port: int | None = None, facade_jwks: dict | None = None):
        self.port = port or devpacs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "EHR_PORT": str(self.port), "EHR_RESOURCE": resource,
                    "EHR_PATIENTS": json.dumps(patients), "EHR_MRN_SYSTEM": MRN_SYSTEM,
                    "EHR_FACADE_SECRET": FACADE_SECRET}
        if facade_jwks is not None:
            self.env["EHR_FACADE_JWKS"] = json.dumps(facade_jwks)
        self.process: subprocess.Popen | None = None

    def start(self) -> Ehr:
        if not (EHR_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError("tests/ehr/node_modules is missing: run scripts/bootstrap.sh (npm ci in tests/ehr)")
        self.process = subprocess.Popen(["node", "ehr.mjs"], cwd=EHR_DIR, env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/.well-known/openid-configuration", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the EHR (oidc-provider) did not start")

    def stop(self) -> None:
        devpacs.stop_process(self.process, 10)
        self.process = None

    def token(self, client_id: str = "imaging-app", login: str = "alice", resource: str | None = None,
              scope: str = "launch/patient patient/ImagingStudy.rs") -> str:
        """An access token as an app gets it: authorization code + PKCE S256 (RFC 7636)."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        resource = resource or self.env["EHR_RESOURCE"]
        session = requests.Session()
        url = self.url + "/auth?" + requests.compat.urlencode({
            "client_id": client_id, "response_type": "code", "redirect_uri": REDIRECT_URI, "scope": scope,
            "code_challenge": challenge, "code_challenge_method": "S256", "resource": resource,
            "login_hint": login, "state": secrets.token_urlsafe(8)})
        for _ in range(10):
            response = session.get(url, allow_redirects=False, timeout=10)
            assert response.status_code in (302, 303), (response.status_code, response.text[:300])
            url = urljoin(url, response.headers["Location"])
            if url.startswith(REDIRECT_URI):
                break
        query = parse_qs(urlsplit(url).query)
        assert "code" in query, query
        answer = session.post(self.url + "/token", data={
            "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier, "client_id": client_id, "resource": resource}, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    def revoke(self, token: str, client_id: str = "imaging-app-opaque") -> None:
        """Revoke *token* at the provider (RFC 7009) as the app that holds it."""
        answer = requests.post(self.url + "/token/revocation", data={"token": token, "client_id": client_id},
                               timeout=10)
        assert answer.status_code == 200, answer.text

    def jwks(self) -> dict:
        return requests.get(self.url + "/jwks", timeout=10).json()
