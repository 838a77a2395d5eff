"""Test helper: store an access list for the client or user of test tokens (SMART Imaging Access)."""
from __future__ import annotations


def allow(app, patients=None, client_id="test-client", username=None) -> None:
    """Let a client (default: the ``test-client`` of ``facade_helpers.token``) or a user see
    *patients* (FHIR Patient ids), or every patient when *patients* is None.

    Rows are written directly, so the client or user need not be registered.
    """
    from smart import authz
    from smart.store.db import get_session
    from smart.store.models import ACCESS_CLIENT, ACCESS_USER, ALL_PATIENTS, PatientAccess

    kind, subject = (ACCESS_USER, username) if username else (ACCESS_CLIENT, client_id)
    with app.app_context():
        session = get_session()
        for patient in [ALL_PATIENTS] if patients is None else patients:
            session.merge(PatientAccess(kind=kind, subject=subject, patient=patient))
        session.commit()
        authz.forget_access()
