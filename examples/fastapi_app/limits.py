"""Bounded inputs: request bodies and sockets per user.

:class:`BoundedBodies` (ASGI middleware) answers a request that carries a body
before the app reads any of it: ``401`` without a valid bearer token (the
body is never read), ``413 PAYLOAD_TOO_LARGE`` when ``Content-Length`` is over
``EXTENSION_FSM_MAX_BODY_BYTES`` (never read either), and ``413`` as soon as a
body without a length (chunked) passes the limit (at most the limit is held).
The routes' own bodies are a few hundred bytes.

The WebSocket route takes a slot of :class:`SocketSlots` per open socket:
at most ``EXTENSION_FSM_MAX_SOCKETS_PER_USER`` per user on one instance; one
more is accepted and closed at once with :data:`TOO_MANY_SOCKETS_CLOSE`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request

from extension_fsm import Participant

from .auth import Unauthorized, bearer_token, decode_token
from .http_errors import error_response

__all__ = ["TOO_MANY_SOCKETS_CLOSE", "BoundedBodies", "SocketSlots"]

#: the close code of a socket over the per-user cap
TOO_MANY_SOCKETS_CLOSE = 4429

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]


class BoundedBodies:
    """ASGI middleware: no body is read without a valid token, none over the limit."""

    def __init__(self, app: Callable[[_Scope, _Receive, _Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if not chunked and length in (None, "0"):
            await self.app(scope, receive, send)  # no body: the route checks the token
            return
        settings = scope["app"].state.runtime.settings
        token = bearer_token(Request(scope))
        try:
            if token is None:
                raise Unauthorized("missing bearer token")
            decode_token(token, settings.jwt_secret)
        except Unauthorized as err:
            await error_response(401, "UNAUTHORIZED", str(err.detail), err.headers)(
                scope, receive, send
            )
            return
        limit: int = settings.max_body_bytes
        too_large = error_response(
            413, "PAYLOAD_TOO_LARGE", f"the body is over {limit} bytes", {"Connection": "close"}
        )
        if length is not None and length.isdigit() and int(length) > limit:
            await too_large(scope, receive, send)
            return
        body = bytearray()
        while True:  # a body without a length, or one we were told is small
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _Replay(bytes(body), receive), send)


class _Replay:
    """``receive`` for the app: the body read already, then the real one (disconnect)."""

    def __init__(self, body: bytes, receive: _Receive) -> None:
        self._body: bytes | None = body
        self._receive = receive

    async def __call__(self) -> _Message:
        if self._body is None:
            return await self._receive()
        body, self._body = self._body, None
        return {"type": "http.request", "body": body, "more_body": False}


class SocketSlots:
    """Open sockets per user on this instance, at most ``cap`` each."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[tuple[Participant, str], int] = {}

    def take(self, role: Participant, user_id: str) -> bool:
        """Take a slot for one more socket of ``user_id``; ``False`` at the cap."""
        key = (role, user_id)
        held = self._open.get(key, 0)
        if held >= self.cap:
            return False
        self._open[key] = held + 1
        return True

    def give_back(self, role: Participant, user_id: str) -> None:
        """The socket of a slot closed."""
        key = (role, user_id)
        held = self._open.get(key, 0) - 1
        if held > 0:
            self._open[key] = held
        else:
            self._open.pop(key, None)

    def held(self, role: Participant, user_id: str) -> int:
        """How many sockets ``user_id`` has open here."""
        return self._open.get((role, user_id), 0)
