"""Password login of the authorization page: constant-cost checks and throttled failures."""
from __future__ import annotations

import functools
import secrets

from sqlalchemy import delete, func, select
from werkzeug.security import check_password_hash

from .db import get_session
from .models import LoginAttempt, User, hash_secret, now

#: Failed logins for one username within :data:`FAILURE_WINDOW` before it is refused.
MAX_USERNAME_FAILURES = 5
#: Failed logins from one client address within :data:`FAILURE_WINDOW` before it is refused
#: (higher: several people may share an address behind NAT).
MAX_ADDRESS_FAILURES = 20
#: Seconds a failed login counts; a locked username is refused until its failures age out.
FAILURE_WINDOW = 300


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A password hash of the same scheme and cost as real ones, of a password nobody knows."""
    return hash_secret(secrets.token_urlsafe(32))


def _username_key(username: str) -> str:
    return username.strip().casefold()[:128]


def authenticate(username: str, password: str, address: str | None) -> User | None:
    """Return the user whose *username* and *password* match, or None.

    Every attempt costs one password hash check, whether or not the user exists (an unknown
    username is checked against a dummy hash), so the answer time does not tell which
    usernames exist. The attempt is first recorded as a failure, then counted: beyond
    :data:`MAX_USERNAME_FAILURES` for the username or :data:`MAX_ADDRESS_FAILURES` for the
    address within :data:`FAILURE_WINDOW` seconds, the attempt is refused without checking
    the password (recording first means concurrent guesses cannot slip past the count).
    A success forgets the username's failures.

    Parameters
    ----------
    username, password : str
        As typed on the login form.
    address : str or None
        The client's IP address (``request.remote_addr``).

    Returns
    -------
    User or None
        None for a wrong or throttled attempt; the page shows one generic message for both.
    """
    session = get_session()
    key, address = _username_key(username), (address or "")[:64]
    current = now()
    session.execute(delete(LoginAttempt).where(LoginAttempt.at <= current - FAILURE_WINDOW))
    attempt = LoginAttempt(username=key, address=address, at=current)
    session.add(attempt)
    session.commit()

    def recent(column, value) -> int:
        return session.scalar(select(func.count()).select_from(LoginAttempt)
                              .where(column == value, LoginAttempt.at > current - FAILURE_WINDOW))

    if (recent(LoginAttempt.username, key) > MAX_USERNAME_FAILURES
            or recent(LoginAttempt.address, address) > MAX_ADDRESS_FAILURES):
        # Refused attempts do not extend the lock: the failures before them age out.
        session.delete(attempt)
        session.commit()
        return None
    user = session.scalars(select(User).where(User.username == username)).first()
    # Always one hash check of the same cost (OWASP Authentication Cheat Sheet §Authentication
    # Responses): an unknown username is checked against the dummy hash.
    matches = check_password_hash(user.password_hash if user is not None else _dummy_hash(), password or "")
    if user is None or not password or not matches:
        return None
    session.execute(delete(LoginAttempt).where(LoginAttempt.username == key))
    session.commit()
    return user
