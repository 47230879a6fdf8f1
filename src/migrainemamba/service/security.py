"""Access tokens: signed JWTs (PyJWT, HS256) whose subject is the user id.

Onboarding returns a token; every route that names a user requires
``Authorization: Bearer <token>`` for that same user (``deps.OwnedUser``).
Missing or invalid token: 401. Valid token of another user: 403.
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import UTC, datetime, timedelta

import jwt

from migrainemamba.service.settings import Settings

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
ISSUER = "migrainemamba"


class InvalidToken(Exception):
    """The token is missing, malformed, expired or not signed by this service."""


def resolve_secret(settings: Settings) -> str:
    """SECRET_KEY if set; else a random key kept in ``secret_key_file`` (created once, mode 0600).

    Every worker and restart reads the same file, so tokens stay valid; set
    SECRET_KEY explicitly when the service runs on more than one machine.
    """
    if settings.secret_key is not None and settings.secret_key.get_secret_value():
        return settings.secret_key.get_secret_value()
    path = settings.secret_key_file
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker created it first
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
            log.warning("SECRET_KEY is not set: created a random key in %s", path)
    secret = path.read_text().strip()
    if not secret:
        raise RuntimeError(f"security: {path} is empty; delete it or set SECRET_KEY")
    return secret


def create_access_token(
    user_id: str, secret: str, ttl: timedelta, now: datetime | None = None
) -> str:
    issued = now or datetime.now(UTC)
    claims = {"sub": user_id, "iss": ISSUER, "iat": issued, "exp": issued + ttl}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_access_token(token: str, secret: str) -> str:
    """The user id the token was issued to; raises :class:`InvalidToken`."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["sub", "exp", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("token has no subject")
    return subject
