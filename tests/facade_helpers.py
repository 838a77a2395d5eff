"""Test helpers for the FHIR API and DICOMweb proxy: an app on a fake PACS and tokens."""
from __future__ import annotations

from app import create_app

FAKE_PACS = "http://pacs.internal:8042/dicom-web"
PUBLIC = "https://facade.example/base"
#: The public URL of the ``app`` fixture (conftest.py) and its FHIR base.
PUBLIC_URL = "http://127.0.0.1:8080"
FHIR_BASE = PUBLIC_URL + "/fhir"


def make_app(tmp_path, **config):
    """An app whose PACS is FAKE_PACS (mock it with `responses`) and whose database is in tmp_path."""
    settings = {"TESTING": True, "FACADE_DATABASE_URL": f"sqlite:///{tmp_path}/facade.db",
                "FACADE_PACS_URL": FAKE_PACS, "FACADE_PUBLIC_URL": PUBLIC}
    settings.update(config)
    app = create_app(settings)
    from smart.admin.schema import init_db
    with app.app_context():
        init_db()
    return app


def token(app, scope="patient/ImagingStudy.rs patient/Patient.rs", patient="P1", lifetime=3600,
          fhir_user=None) -> str:
    """A real signed access token from the app's own key, as the token endpoint would issue it."""
    from smart.tokens.jwt import issue_access_token
    with app.app_context():
        context = {"patient": patient} if patient else None
        value, _ = issue_access_token("test-client", "tester", scope, context=context, fhir_user=fhir_user,
                                      lifetime=lifetime)
    return value


def bearer(value: str) -> dict:
    return {"Authorization": f"Bearer {value}"}

