"""Who is calling: a signed bearer token (PyJWT, HS256), never the request body.

Claims: ``sub`` (the user id), ``role`` (``customer`` or ``mitra``), ``exp``.
The secret comes from the environment (``EXTENSION_FSM_JWT_SECRET``); the
algorithm is pinned, so an ``alg=none`` or RS/HS-confusion token is refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from fastapi import HTTPException, Request, WebSocket

from extension_fsm import Participant

__all__ = ["Identity", "bearer_token", "decode_token", "mint_token"]

ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller."""

    role: Participant
    user_id: str
    #: the token's ``exp`` (seconds since the epoch); None when not known
    expires_at: float | None = None


class Unauthorized(HTTPException):
    """401 with the Bearer challenge."""

    def __init__(self, message: str) -> None:
        super().__init__(401, message, headers={"WWW-Authenticate": "Bearer"})


def decode_token(token: str, secret: str) -> Identity:
    """The identity in ``token``; :class:`Unauthorized` if it is not ours or expired."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "role"]}
        )
    except jwt.ExpiredSignatureError as err:
        raise Unauthorized("token expired") from err
    except jwt.PyJWTError as err:  # its text names library internals: not echoed
        raise Unauthorized("invalid token") from err
    role, sub = claims.get("role"), claims.get("sub")
    if role not in (Participant.CUSTOMER.value, Participant.MITRA.value):
        raise Unauthorized("invalid token: unknown role")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("invalid token: no subject")
    exp = claims.get("exp")
    expires_at = float(exp) if isinstance(exp, int | float) else None
    return Identity(Participant(role), sub, expires_at)


def mint_token(role: Participant | str, user_id: str, secret: str, ttl: int = 3600) -> str:
    """A token for ``user_id`` (dev and tests; production tokens come from your login)."""
    now = int(time.time())
    claims = {"sub": user_id, "role": Participant(role).value, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def bearer_token(connection: Request | WebSocket) -> str | None:
    """The token of an HTTP request (``Authorization: Bearer``) or a WebSocket
    (the same header, or ``?token=`` since browsers cannot set WS headers)."""
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if isinstance(connection, WebSocket):
        return connection.query_params.get("token") or None
    return None
