"""EHR launch contexts (SMART 2.2 §EHR launch): created by the admin CLI (``flask smart create-launch``)
and by a trusted EHR back end (``POST /auth/launch``), so both use this module rather than each other."""
from __future__ import annotations

import re
import secrets

from smart.store.db import get_session
from smart.store.models import LaunchContext, now

#: FHIR id grammar (FHIR R4 §2.24.0.1 id): launch context ids, the picker's and the CLI's patient ids.
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

#: Seconds an EHR launch context stays usable (issue 4: short-lived).
LAUNCH_LIFETIME = 300


class AdminError(Exception):
    """A refused administrative action; the message says why (shown without traceback)."""


def create_launch(
    patient: str | None = None,
    encounter: str | None = None,
    username: str | None = None,
    need_patient_banner: bool = False,
    lifetime: int = LAUNCH_LIFETIME,
) -> str:
    """Create an EHR launch context (SMART 2.2 §EHR launch) and return its ``launch`` id.

    The id is single-use and expires after *lifetime* seconds. ``need_patient_banner`` is
    false unless asked for: the EHR the app is launched in already shows the patient
    (SMART 2.2 §Launch context arrives with your access_token).
    """
    if patient is not None and not FHIR_ID.match(patient):
        raise AdminError(f"patient id {patient!r} is not a valid FHIR id")
    if encounter is not None and not FHIR_ID.match(encounter):
        raise AdminError(f"encounter id {encounter!r} is not a valid FHIR id")
    launch_id = secrets.token_urlsafe(24)
    session = get_session()
    session.add(LaunchContext(
        launch_id=launch_id,
        patient=patient,
        encounter=encounter,
        username=username,
        need_patient_banner=need_patient_banner,
        created_at=now(),
        expires_at=now() + lifetime,
    ))
    session.commit()
    return launch_id
