"""Forwarding audit events to a syslog collector (RFC 5424 over UDP, RFC 5426, or TCP, RFC 6587),
for hospitals whose ATNA audit repository collects them (IHE ITI-20 Record Audit Event)."""
from __future__ import annotations

import logging
import logging.handlers
import os
import socket
from datetime import datetime, timezone
from urllib.parse import urlsplit

#: RFC 5424 §6.2.5 APP-NAME and §6.2.7 MSGID of the forwarded messages.
APP_NAME = "imaging-fhir-facade"
MSG_ID = "AuditEvent"


class Rfc5424Formatter(logging.Formatter):
    """``VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG`` (RFC 5424 §6);
    :class:`logging.handlers.SysLogHandler` puts the ``<PRI>`` in front."""

    def __init__(self, trailer: str = "") -> None:
        super().__init__()
        self.hostname = socket.gethostname() or "-"
        self.trailer = trailer  # TCP: a line feed ends each message (RFC 6587 §3.4.2)

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
        stamp = stamp.replace("+00:00", "Z")
        return f"1 {stamp} {self.hostname} {APP_NAME} {os.getpid()} {MSG_ID} - {record.getMessage()}{self.trailer}"


def forwarding_logger(target: str | None, name: str = "facade.audit.syslog") -> logging.Logger | None:
    """A logger that sends each message to the syslog collector *target*, or ``None`` without one.

    Parameters
    ----------
    target : str or None
        ``udp://host:port`` or ``tcp://host:port`` (``FACADE_AUDIT_SYSLOG``).

    Raises
    ------
    ValueError
        For a target that is not ``udp://`` or ``tcp://`` with a host and port.
    """
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme not in ("udp", "tcp") or not parts.hostname or not parts.port:
        raise ValueError(f"FACADE_AUDIT_SYSLOG {target!r} is not udp://host:port or tcp://host:port")
    kind = socket.SOCK_DGRAM if parts.scheme == "udp" else socket.SOCK_STREAM
    handler = logging.handlers.SysLogHandler(address=(parts.hostname, parts.port), socktype=kind,
                                             facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV)
    handler.append_nul = False
    handler.setFormatter(Rfc5424Formatter("\n" if parts.scheme == "tcp" else ""))
    logger = logging.getLogger(f"{name}.{parts.scheme}.{parts.hostname}.{parts.port}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the events name patients: never into the facade's own log
    return logger
