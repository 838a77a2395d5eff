"""The audit trail's table: one row per FHIR AuditEvent, with the columns its searches filter on."""
from __future__ import annotations

from sqlalchemy import JSON, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from smart.store.columns import BigRowId
from smart.store.db import Base


class AuditRecord(Base):
    """One recorded AuditEvent (FHIR R4 AuditEvent, shaped after IHE BALP).

    The whole resource is in :attr:`resource`; the indexed columns repeat what
    ``GET /fhir/AuditEvent`` searches by (``patient``, ``date``, ``agent``, ``entity``,
    ``type``) and what retention prunes by. No token, password or share secret is ever
    stored here: a token is named by its ``jti`` only.
    """

    __tablename__ = "facade_audit_event"

    #: 64-bit: one id per recorded event for the life of the deployment (pruning does not reuse ids).
    id: Mapped[int] = mapped_column(BigRowId, primary_key=True, autoincrement=True)
    #: AuditEvent.id (32 hex digits).
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    #: AuditEvent.recorded, seconds since the epoch (UTC).
    recorded: Mapped[float] = mapped_column(Float, index=True)
    #: AuditEvent.type.code (a DICOM event id such as ``110112``, or ``rest``).
    type: Mapped[str] = mapped_column(String(64), index=True)
    #: AuditEvent.subtype[0].code (``read``, ``search-type``, ``110122``, ``token-issued`` ...).
    subtype: Mapped[str | None] = mapped_column(String(64), index=True)
    #: AuditEvent.action: C, R, U, D or E.
    action: Mapped[str] = mapped_column(String(1))
    #: AuditEvent.outcome: 0, 4, 8 or 12.
    outcome: Mapped[str] = mapped_column(String(2), index=True)
    #: Patient id the event is about (an entity ``Patient/x``).
    patient: Mapped[str | None] = mapped_column(String(64), index=True)
    #: Patient id of the acting token or user (an agent ``Patient/x``).
    agent_patient: Mapped[str | None] = mapped_column(String(64), index=True)
    #: The OAuth client (agent identifier).
    client_id: Mapped[str | None] = mapped_column(String(256), index=True)
    #: The user: ``fhirUser`` (``Practitioner/x``, ``Patient/x``) or the username.
    who: Mapped[str | None] = mapped_column(String(256), index=True)
    #: The study's StudyInstanceUID (an entity ``ImagingStudy/uid``).
    entity: Mapped[str | None] = mapped_column(String(128), index=True)
    #: The AuditEvent resource as JSON.
    resource: Mapped[dict] = mapped_column(JSON)
