"""Password login of the authorization page: constant-cost checks and throttled failures.

Throttling rule (every count is of failed logins within the last :data:`FAILURE_WINDOW`
seconds; the attempt being made is recorded as a failure first and counted with them):

1. An address that already has :data:`MAX_ADDRESS_FAILURES` failures, for any usernames,
   is refused for every username.
2. A username is refused *from one address* once it has :data:`MAX_PAIR_FAILURES` failures
   from that address. Other addresses are not affected, so guessing from one address
   cannot lock the real user out of their own.
3. Once a username has :data:`MAX_USERNAME_FAILURES` failures from all addresses together
   (a guess spread over many addresses), each address may fail only
   :data:`MAX_PAIR_FAILURES_UNDER_ATTACK` times for it. An address without failures, such as
   the real user's own, still logs in; so does one that mistyped once.

A refused attempt gets the same answer as a wrong password, its password is not checked and
it is not kept, so the refusal ends when the failures before it age out. A success forgets
the failures of that username from that address only.
"""
from __future__ import annotations

import functools
import secrets

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash

from smart import audit
from smart.store.db import get_session
from smart.store.models import LoginAttempt, User, hash_secret, now

#: Failed logins of one username from one client address before that pair is refused.
MAX_PAIR_FAILURES = 5
#: Failed logins from one client address, any usernames, before the address is refused
#: (higher than :data:`MAX_PAIR_FAILURES`: several people may share an address behind NAT).
MAX_ADDRESS_FAILURES = 20
#: Failed logins of one username from all addresses together before each address gets only
#: :data:`MAX_PAIR_FAILURES_UNDER_ATTACK` failures for it (a guess spread over many addresses).
MAX_USERNAME_FAILURES = 50
#: Failed logins of one username from one address before that pair is refused while the
#: username has more than :data:`MAX_USERNAME_FAILURES`: one typo is still forgiven.
MAX_PAIR_FAILURES_UNDER_ATTACK = 2
#: Seconds a failed login counts; a refusal lasts until the failures before it age out.
FAILURE_WINDOW = 300


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A password hash of the same scheme and cost as real ones, of a password nobody knows."""
    return hash_secret(secrets.token_urlsafe(32))


def _username_key(username: str) -> str:
    """The username as failures are counted: trimmed, case-folded, at most 128 characters."""
    return username.strip().casefold()[:128]


def _record(session: Session, key: str, address: str, at: int) -> LoginAttempt:
    """Drop failures older than the window and record this attempt as a failure (committed).

    Committing before counting means concurrent guesses each see the others, so together
    they cannot pass more than the allowed number of password checks.
    """
    session.execute(delete(LoginAttempt).where(LoginAttempt.at <= at - FAILURE_WINDOW))
    attempt = LoginAttempt(username=key, address=address, at=at)
    session.add(attempt)
    session.commit()
    return attempt


def _failures(session: Session, since: int, *where) -> int:
    """Number of recorded failures after *since* that match every condition in *where*."""
    query = select(func.count()).select_from(LoginAttempt).where(LoginAttempt.at > since, *where)
    return session.scalar(query)


def pair_allowance(username_failures: int) -> int:
    """Failures one address may have for a username that has *username_failures* in all.

    Parameters
    ----------
    username_failures : int
        Recorded failures of the username from all addresses, the current attempt included.

    Returns
    -------
    int
        :data:`MAX_PAIR_FAILURES`, or :data:`MAX_PAIR_FAILURES_UNDER_ATTACK` beyond
        :data:`MAX_USERNAME_FAILURES`.
    """
    if username_failures > MAX_USERNAME_FAILURES:
        return MAX_PAIR_FAILURES_UNDER_ATTACK
    return MAX_PAIR_FAILURES


def _throttled(session: Session, key: str, address: str, since: int) -> bool:
    """True if the attempt just recorded for (*key*, *address*) is beyond the module's rule.

    Each count includes the attempt itself, so "beyond N" means N failures came before it.
    """
    if _failures(session, since, LoginAttempt.address == address) > MAX_ADDRESS_FAILURES:
        return True
    allowance = pair_allowance(_failures(session, since, LoginAttempt.username == key))
    pair = _failures(session, since, LoginAttempt.username == key, LoginAttempt.address == address)
    return pair > allowance


def _check_password(session: Session, username: str, password: str) -> User | None:
    """The user if *password* is theirs, else None, at the cost of one password hash check.

    An unknown username is checked against the dummy hash, so the answer time does not tell
    which usernames exist (OWASP Authentication Cheat Sheet §Authentication Responses).
    """
    user = session.scalars(select(User).where(User.username == username)).first()
    stored = user.password_hash if user is not None else _dummy_hash()
    matches = check_password_hash(stored, password or "")
    return user if user is not None and password and matches else None


def _forget(session: Session, *where) -> None:
    """Delete the recorded failures matching *where* (committed)."""
    session.execute(delete(LoginAttempt).where(*where))
    session.commit()


def authenticate(username: str, password: str, address: str | None, client_id: str | None = None) -> User | None:
    """Return the user whose *username* and *password* match, or None.

    The attempt is first recorded as a failure, then counted under the throttling rule in
    this module's docstring; a throttled attempt is refused without checking the password
    and forgotten (refusals do not extend themselves). Otherwise the attempt costs exactly
    one password hash check, whether or not the user exists. A success forgets the
    failures of this username from this address, and no others. Nothing here is logged.

    Parameters
    ----------
    username, password : str
        As typed on the login form.
    address : str or None
        The client's IP address (``request.remote_addr``); None counts as one empty address.
    client_id : str, optional
        The app the user is signing in to (the audit trail's agent).

    Returns
    -------
    User or None
        None for a wrong or throttled attempt; the page shows one generic message for both.
    """
    address = (address or "")[:64]
    user = _attempt(_username_key(username), address,
                    lambda: _check_password(get_session(), username, password))
    _audit_login(user, address, client_id)
    return user


def _attempt(key: str, address: str, check):
    """One throttled attempt at a secret, counted under *key* from *address*: recorded as a
    failure first; when throttled, forgotten and refused (None) without calling *check*;
    otherwise *check*'s result, and a true one forgets this key's failures from this address."""
    session = get_session()
    current = now()
    attempt = _record(session, key, address, current)
    if _throttled(session, key, address, current - FAILURE_WINDOW):
        _forget(session, LoginAttempt.id == attempt.id)
        return None
    result = check()
    if result:
        _forget(session, LoginAttempt.username == key, LoginAttempt.address == address)
    return result


def sign_in(form, address: str | None, client_id: str | None = None) -> User | None:
    """Check a login form's ``username`` and ``password`` (:func:`authenticate`) and, when they
    match, start a fresh login session: cleared, so a new CSRF token too (session fixation), with
    ``user_id`` and ``auth_time`` (OIDC Core 1.0 §2, for ``max_age``).

    Returns
    -------
    User or None
        The signed-in user, or None for a wrong, unknown or throttled login (one answer for all).
    """
    from flask import session

    user = authenticate(form.get("username", ""), form.get("password", ""), address, client_id=client_id)
    if user is not None:
        session.clear()
        session["user_id"] = user.id
        session["auth_time"] = now()
    return user


def throttled_check(key: str, address: str | None, check) -> bool:
    """Check another secret (a share link's PIN) under this module's throttling rule, with *key*
    in place of the username (e.g. ``share:<id>``): the same limits, window and answer as a
    password, so a 4-digit PIN cannot be guessed faster than a password.

    Parameters
    ----------
    key : str
        What the failures are counted under, per address and in all.
    address : str or None
        The client's IP address.
    check : callable
        Returns whether the secret is right; not called when the attempt is throttled.

    Returns
    -------
    bool
        True when *check* passed and the attempt was not throttled.
    """
    return bool(_attempt(key[:128], (address or "")[:64], check))


def _audit_login(user: User | None, address: str, client_id: str | None) -> None:
    """Record a login (DICOM 110114 / 110122). A failure is recorded by address only: what was
    typed as a username may be a mistyped password."""
    if user is None:
        audit.record("login", audit.events.MINOR_FAILURE, client_id=client_id, address=address or None,
                     description="unknown username, wrong password or throttled")
        return
    audit.record("login", client_id=client_id, who=user.fhir_user, user=None if user.fhir_user else user.username,
                 agent_patient=user.patient if user.role == "patient" else None, address=address or None)
