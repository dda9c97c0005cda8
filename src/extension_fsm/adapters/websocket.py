"""The in-process WebSocket hub: the :class:`~extension_fsm.ports.SessionSockets`
port for one backend instance.

Sockets are registered per user and, when they are a chat screen's socket, per
(session, participant), like the seed's ``plugins/websocket.js``.  Any object
with ``async send_json(data)`` (Starlette / FastAPI ``WebSocket``) or
``async send_text(str)`` works.  A socket whose send raises or hangs is
dropped from the hub and counts as "did not take it"; the caller never sees
the exception.  For several instances wrap the hub in
:class:`extension_fsm.adapters.redis_bridge.RedisSocketBridge`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..model import JSONValue, Participant
from ..wire import js_stringify

__all__ = ["JsonSocket", "SessionKey", "SocketKey", "TextSocket", "UserKey", "WebSocketHub"]

_log = logging.getLogger("extension_fsm.websocket")


@runtime_checkable
class JsonSocket(Protocol):
    """A socket that sends JSON itself (Starlette's ``WebSocket``)."""

    async def send_json(self, data: Any) -> None: ...


@runtime_checkable
class TextSocket(Protocol):
    """A socket that sends text frames."""

    async def send_text(self, data: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A chat screen: one participant on one session."""

    session_id: str
    participant: Participant


@dataclass(frozen=True, slots=True)
class UserKey:
    """A user, on any screen."""

    participant: Participant
    user_id: str


SocketKey = SessionKey | UserKey


@dataclass(frozen=True, slots=True)
class _Entry:
    user: UserKey
    session: SessionKey | None


class WebSocketHub:
    """Sockets of this process, by (session, participant) and by user.

    ``send_timeout`` bounds one socket's send: a client that stops reading
    must not hold up the outbox.  ``on_vacated`` callbacks hear each key that
    lost its last socket (the Redis bridge forgets it there).
    """

    def __init__(self, *, send_timeout: float = 5.0) -> None:
        self._send_timeout = send_timeout
        self._entries: dict[int, tuple[object, _Entry]] = {}
        self._by_key: dict[SocketKey, dict[int, object]] = {}
        self._vacated_listeners: list[Callable[[SocketKey], None]] = []

    def on_vacated(self, listener: Callable[[SocketKey], None]) -> None:
        """Call ``listener(key)`` whenever a key loses its last socket."""
        self._vacated_listeners.append(listener)

    def register(
        self,
        socket: object,
        participant: Participant,
        user_id: str,
        session_id: str | None = None,
    ) -> list[SocketKey]:
        """Add ``socket``; returns the keys it is now reachable under."""
        if not isinstance(socket, JsonSocket | TextSocket):
            raise TypeError("a socket needs async send_json or send_text")
        self.unregister(socket)
        entry = _Entry(
            UserKey(participant, user_id),
            SessionKey(session_id, participant) if session_id is not None else None,
        )
        self._entries[id(socket)] = (socket, entry)
        keys = self._keys(entry)
        for key in keys:
            self._by_key.setdefault(key, {})[id(socket)] = socket
        return keys

    def unregister(self, socket: object) -> list[SocketKey]:
        """Remove ``socket`` (no-op if unknown); returns the keys it vacated."""
        found = self._entries.pop(id(socket), None)
        if found is None:
            return []
        vacated: list[SocketKey] = []
        for key in self._keys(found[1]):
            sockets = self._by_key.get(key)
            if sockets is None:
                continue
            sockets.pop(id(socket), None)
            if not sockets:
                del self._by_key[key]
                vacated.append(key)
        for key in vacated:
            for listener in self._vacated_listeners:
                listener(key)
        return vacated

    def holds(self, key: SocketKey) -> bool:
        """Whether a socket of this process is registered under ``key``."""
        return bool(self._by_key.get(key))

    def held_keys(self) -> list[SocketKey]:
        """Every key with at least one socket here."""
        return [key for key, sockets in self._by_key.items() if sockets]

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        """Send to every socket of ``participant`` on the session; True if one took it."""
        sockets = list(self._by_key.get(SessionKey(session_id, participant), {}).values())
        if not sockets:
            return False
        results = await asyncio.gather(*(self._send_one(s, message) for s in sockets))
        return any(results)

    async def is_connected(self, participant: Participant, user_id: str) -> bool:
        """Whether the user has a socket open in this process."""
        return self.holds(UserKey(participant, user_id))

    async def _send_one(self, socket: object, message: Mapping[str, JSONValue]) -> bool:
        try:
            async with asyncio.timeout(self._send_timeout):
                if isinstance(socket, JsonSocket):
                    await socket.send_json(dict(message))
                else:
                    assert isinstance(socket, TextSocket)
                    await socket.send_text(js_stringify(message))  # as the seed's frames
        except Exception as err:  # a dead socket is a "no", never the caller's problem
            _log.info("dropping a socket whose send failed: %r", err)
            self.unregister(socket)
            return False
        return True

    @staticmethod
    def _keys(entry: _Entry) -> list[SocketKey]:
        return [entry.user] if entry.session is None else [entry.user, entry.session]
