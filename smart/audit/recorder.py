"""Recording audit events off the hot path: a bounded queue per process and a writer thread
that aggregates a viewer's frame requests and writes the events in batches.

:func:`record` only puts a small dict on the queue (a few microseconds); the writer turns
items into AuditEvents (:func:`smart.audit.events.to_resource`), inserts them in batches,
and forwards each to syslog when configured. A full queue drops the event and counts it
(:data:`DROPPED`, metric ``facade_audit_events_dropped_total``). A graceful stop loses
nothing: :func:`close_all` (at interpreter exit, and from gunicorn's ``worker_exit``) drains
the queue and writes the pending aggregates.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import threading
import time
import uuid
import weakref

from flask import Flask, current_app
from prometheus_client import Counter
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from smart.audit import events
from smart.store.audit_log import AuditRecord
from smart.store.db import get_database

log = logging.getLogger("facade.audit")

DROPPED = Counter("facade_audit_events_dropped", "Audit events dropped because the audit queue was full "
                  "or the database refused them")
WRITTEN = Counter("facade_audit_events_written", "Audit events written to the audit table")

#: Items taken from the queue per database transaction, at most.
BATCH = 500
#: A writer with nothing to do for this many seconds ends; the next event starts another.
IDLE_SECONDS = 30.0
#: Attempts at writing one batch before its events are counted as dropped.
WRITE_ATTEMPTS = 3

_recorders: weakref.WeakSet = weakref.WeakSet()


class Recorder:
    """The audit queue and writer of one app in one process.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        Where the ``facade_audit_event`` table is.
    public_url : str
        The facade's public base URL (AuditEvent.source).
    window : float
        Seconds over which frame requests of one study by one token make one event.
    capacity : int
        Bound of the queue; a full queue drops events (counted).
    forward : logging.Logger, optional
        Logger every written AuditEvent is also sent to (syslog forwarding).
    """

    def __init__(self, engine: Engine, public_url: str, window: float = 10.0, capacity: int = 10000,
                 forward: logging.Logger | None = None):
        self.engine, self.public_url, self.window, self.capacity = engine, public_url, window, capacity
        self.forward = forward
        self.dropped = 0
        self._reset()

    def _reset(self) -> None:
        self._queue: queue.Queue = queue.Queue(self.capacity)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending: dict[tuple, dict] = {}

    # --- the hot path ---------------------------------------------------------------------

    def put(self, item: dict) -> bool:
        """Queue *item* for writing; ``False`` (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            DROPPED.inc()
            return False
        if self._thread is None:
            self._start()
        return True

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    # --- control --------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything queued so far, aggregates included; ``True`` once written."""
        done = threading.Event()
        self._start()
        try:
            self._queue.put(("flush", done), timeout=timeout)
        except queue.Full:
            return False
        self._start()
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued and pending, then let the writer end (graceful stop)."""
        if self._thread is not None or not self._queue.empty() or self._pending:
            self.flush(timeout)

    # --- the writer -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            wait = IDLE_SECONDS
            if self._pending:
                oldest = min(item["start"] for item in self._pending.values())
                wait = max(0.05, oldest + self.window - time.time())
            try:
                first = self._queue.get(timeout=wait)
            except queue.Empty:
                first = None
            batch, waiters = [], []
            taken = [first] if first is not None else []
            while len(taken) < BATCH:
                try:
                    taken.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for item in taken:
                if isinstance(item, tuple):  # ("flush", event)
                    waiters.append(item[1])
                elif events.EVENTS[item["kind"]][3]:
                    self._aggregate(item)
                else:
                    batch.append(item)
            batch += self._due(force=bool(waiters))
            if batch:
                self._write(batch)
            for waiter in waiters:
                waiter.set()
            if first is None and not self._pending:
                with self._lock:
                    self._thread = None
                    if self._queue.empty():
                        return
                    self._thread = threading.current_thread()

    def _aggregate(self, item: dict) -> None:
        key = (item["kind"], item.get("jti") or item.get("client_id"), item.get("who"), item.get("study"),
               item.get("patient"), item["outcome"])
        found = self._pending.get(key)
        if found is None:
            self._pending[key] = {**item, "start": item["recorded"], "count": 1}
        else:
            found["count"] += 1
            found["recorded"] = max(found["recorded"], item["recorded"])

    def _due(self, force: bool) -> list[dict]:
        now = time.time()
        due = [key for key, item in self._pending.items() if force or item["start"] + self.window <= now]
        return [self._pending.pop(key) for key in due]

    def _row(self, item: dict) -> dict:
        event_id = uuid.uuid4().hex
        resource = events.to_resource(item, event_id, self.public_url)
        type_code, subtype = events.type_and_subtype(item["kind"])
        return {"event_id": event_id, "recorded": item["recorded"], "type": type_code, "subtype": subtype,
                "action": resource["action"], "outcome": resource["outcome"], "patient": item.get("patient"),
                "agent_patient": item.get("agent_patient"), "client_id": item.get("client_id"),
                "who": item.get("who") or item.get("user"), "entity": item.get("study"), "resource": resource}

    def _write(self, batch: list[dict]) -> None:
        rows = []
        for item in batch:
            try:
                rows.append(self._row(item))
            except (KeyError, TypeError, ValueError):
                log.error("an audit event of kind %r could not be built; dropped", item.get("kind"))
                self.dropped += 1
                DROPPED.inc()
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self.engine.begin() as connection:
                    connection.execute(insert(AuditRecord), rows)
                break
            except Exception as exc:  # noqa: BLE001 - the database is down or locked: retry, then count
                if attempt == WRITE_ATTEMPTS - 1:
                    log.error("audit events could not be written (%s); %d dropped", type(exc).__name__, len(rows))
                    self.dropped += len(rows)
                    DROPPED.inc(len(rows))
                    return
                time.sleep(0.5 * (attempt + 1))
        WRITTEN.inc(len(rows))
        if self.forward is not None:
            for row in rows:
                self.forward.info("%s", json.dumps(row["resource"], separators=(",", ":")))


def _after_fork() -> None:
    # A forked child has the parent's queue and lock but not its thread: start afresh.
    for recorder in _recorders:
        recorder._reset()


os.register_at_fork(after_in_child=_after_fork)


def close_all(timeout: float = 10.0) -> None:
    """Write what every recorder of this process holds (at exit; gunicorn ``worker_exit``)."""
    for recorder in list(_recorders):
        recorder.close(timeout)


atexit.register(close_all)


def get_recorder(app: Flask | None = None) -> Recorder | None:
    """The recorder of *app* (default: the current app), or ``None`` with auditing off."""
    return (app or current_app).extensions.get("smart_audit")


def record(kind: str, outcome: int = events.SUCCESS, **fields) -> bool:
    """Record one audit event of the current app: cheap, never blocks, never raises for a full queue.

    Parameters
    ----------
    kind : str
        A key of :data:`smart.audit.events.EVENTS` (``read``, ``search``, ``retrieve``,
        ``frames``, ``query``, ``login``, ``token-issued``, ``token-refreshed``,
        ``token-revoked``, ``consent-given``, ``consent-withdrawn``, ``share-created``,
        ``share-used``, ``share-revoked``, ``access-granted``, ``access-revoked`` ...).
    outcome : int
        0 success, 4 minor failure (refused), 8 serious failure, 12 major failure
        (FHIR R4 AuditEvent.outcome); :func:`smart.audit.events.outcome_of_status` maps HTTP.
    **fields
        Any of ``patient`` (the Patient id the event is about), ``agent_patient`` (the acting
        patient), ``client_id``, ``who`` (``fhirUser``), ``user`` (a username), ``jti``,
        ``address``, ``study`` (StudyInstanceUID), ``resource_type``, ``resource_id``,
        ``query``, ``path``, ``description``. Never a token, password or share secret.

    Returns
    -------
    bool
        ``False`` when auditing is off or the event was dropped (queue full, counted).

    Raises
    ------
    KeyError
        For an unknown *kind* (a programming error, found at once).
    """
    if kind not in events.EVENTS:
        raise KeyError(kind)
    recorder = current_app.extensions.get("smart_audit")
    if recorder is None:
        return False
    fields["kind"], fields["outcome"] = kind, outcome
    fields.setdefault("recorded", time.time())
    return recorder.put(fields)


def init_app(app: Flask, forward: logging.Logger | None = None) -> None:
    """Give *app* a recorder unless ``FACADE_AUDIT`` is ``0`` (no thread starts before the first event).

    Configuration: ``FACADE_AUDIT`` (``1``), ``FACADE_AUDIT_WINDOW`` (seconds frame requests are
    aggregated over, ``10``), ``FACADE_AUDIT_QUEUE`` (queue bound, ``10000``).
    """
    if str(app.config.get("FACADE_AUDIT", "1")) == "0":
        app.extensions.pop("smart_audit", None)
        return
    recorder = Recorder(get_database(app).engine, app.config["FACADE_PUBLIC_URL"].rstrip("/"),
                        window=float(app.config.get("FACADE_AUDIT_WINDOW", 10)),
                        capacity=int(app.config.get("FACADE_AUDIT_QUEUE", 10000)), forward=forward)
    app.extensions["smart_audit"] = recorder
    _recorders.add(recorder)
