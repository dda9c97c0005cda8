"""Transactional outbox: effects become rows in the deciding commit, and a
dispatcher delivers them after it, at least once, in the order written.

A receiver drops repeats by ``dedupe_key`` (extension id + message type +
recipient), which every delivered message carries as ``dedupe_key``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from . import metrics
from .errors import DeliveryError
from .model import (
    ClearClosureGrace,
    Effect,
    JSONValue,
    Notify,
    Participant,
    PushMessage,
    SessionExpiryExtended,
    StartClosureGrace,
)
from .ports import Clock, OutboxMessage, OutboxStore, PushSender, SessionSockets, SessionTimer

__all__ = ["DispatchReport", "OutboxDispatcher", "decode_effect", "encode_effects"]

_log = logging.getLogger("extension_fsm.outbox")

KIND_NOTIFY = "notify"
KIND_SESSION_TIMER = "session_timer"


def encode_effects(
    effects: Sequence[Effect], now: datetime, new_id: Callable[[], str]
) -> list[OutboxMessage]:
    """The outbox rows for ``effects``, in order."""
    rows: list[OutboxMessage] = []
    for effect in effects:
        kind, key, payload = _encode(effect)
        rows.append(OutboxMessage(new_id(), kind, key, payload, now))
    return rows


def _encode(effect: Effect) -> tuple[str, str, dict[str, JSONValue]]:
    match effect:
        case Notify():
            push: JSONValue = None
            if effect.push is not None:
                push = {
                    "title": effect.push.title,
                    "body": effect.push.body,
                    "data": dict(effect.push.data),
                }
            return (
                KIND_NOTIFY,
                effect.dedupe_key,
                {
                    "session_id": effect.session_id,
                    "recipient": effect.recipient.value,
                    "user_id": effect.user_id,
                    "message": dict(effect.message),
                    "push": push,
                },
            )
        case StartClosureGrace():
            key = f"{effect.session_id}:start_closure_grace:{effect.deadline.isoformat()}"
            return (
                KIND_SESSION_TIMER,
                key,
                {
                    "action": "start_closure_grace",
                    "session_id": effect.session_id,
                    "at": effect.deadline.isoformat(),
                },
            )
        case ClearClosureGrace():
            return (
                KIND_SESSION_TIMER,
                f"{effect.session_id}:clear_closure_grace",
                {"action": "clear_closure_grace", "session_id": effect.session_id, "at": None},
            )
        case SessionExpiryExtended():
            return (
                KIND_SESSION_TIMER,
                f"{effect.session_id}:expiry_extended:{effect.expires_at.isoformat()}",
                {
                    "action": "expiry_extended",
                    "session_id": effect.session_id,
                    "at": effect.expires_at.isoformat(),
                },
            )
    raise TypeError(f"not an effect: {effect!r}")  # pragma: no cover


def decode_effect(message: OutboxMessage) -> Effect:
    """The effect an outbox row stands for."""
    p = message.payload
    if message.kind == KIND_NOTIFY:
        push = p.get("push")
        return Notify(
            session_id=str(p["session_id"]),
            recipient=Participant(str(p["recipient"])),
            user_id=str(p["user_id"]),
            message=cast(Mapping[str, JSONValue], p["message"]),
            dedupe_key=message.dedupe_key,
            push=(
                PushMessage(
                    title=str(push["title"]),
                    body=str(push["body"]),
                    data=cast(Mapping[str, JSONValue], push["data"]),
                )
                if isinstance(push, dict)
                else None
            ),
        )
    session_id = str(p["session_id"])
    match p["action"]:
        case "start_closure_grace":
            return StartClosureGrace(session_id, datetime.fromisoformat(str(p["at"])))
        case "clear_closure_grace":
            return ClearClosureGrace(session_id)
        case "expiry_extended":
            return SessionExpiryExtended(session_id, datetime.fromisoformat(str(p["at"])))
    raise ValueError(f"unknown outbox row {message.kind}/{p.get('action')}")


@dataclass(frozen=True, slots=True)
class DispatchReport:
    """What one dispatch pass did."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0


class OutboxDispatcher:
    """Delivers outbox rows: socket first, push when no socket took it.

    A retryable :class:`DeliveryError` (or any unexpected error) puts the row
    back with exponential backoff; a final one marks it dead.  Nothing here
    ever touches extension, session or payment state.
    """

    def __init__(
        self,
        outbox: OutboxStore,
        *,
        clock: Clock,
        sockets: SessionSockets,
        push: PushSender,
        session_timer: SessionTimer,
        lease_seconds: float = 30.0,
        base_backoff: float = 1.0,
        max_backoff: float = 300.0,
        max_attempts: int = 20,
    ) -> None:
        self._outbox = outbox
        self._clock = clock
        self._sockets = sockets
        self._push = push
        self._timer = session_timer
        self._lease = lease_seconds
        self._base = base_backoff
        self._max = max_backoff
        self._max_attempts = max_attempts

    async def deliver(self, ids: Sequence[str]) -> DispatchReport:
        """Deliver exactly these rows now (the fast path right after a commit)."""
        if not ids:
            return DispatchReport()
        claimed = await self._outbox.claim(self._clock.now(), len(ids), self._lease, ids)
        return await self._deliver_all(claimed)

    async def dispatch_due(self, limit: int = 100) -> DispatchReport:
        """Deliver up to ``limit`` rows that are due (left over, or up for retry)."""
        claimed = await self._outbox.claim(self._clock.now(), limit, self._lease)
        return await self._deliver_all(claimed)

    async def run(self, interval: float = 1.0, *, limit: int = 100) -> None:
        """Dispatch forever, every ``interval`` seconds (cancel the task to stop)."""
        while True:
            try:
                report = await self.dispatch_due(limit)
            except Exception:  # the loop must outlive a flaky database
                _log.exception("outbox dispatch pass failed")
                report = DispatchReport()
            if report.delivered + report.retried + report.dead < limit:
                await asyncio.sleep(interval)

    async def _deliver_all(self, rows: Sequence[OutboxMessage]) -> DispatchReport:
        delivered = retried = dead = 0
        for row in rows:
            try:
                await self._deliver_one(row)
            except DeliveryError as err:
                if err.retryable and row.attempts + 1 < self._max_attempts:
                    await self._retry(row, err)
                    retried += 1
                    metrics.delivery(row.kind, "retried")
                else:
                    await self._outbox.mark_dead(row.id, self._clock.now(), str(err))
                    dead += 1
                    metrics.delivery(row.kind, "dead")
                continue
            except Exception as err:  # an adapter bug must not lose the row
                _log.exception("outbox row %s failed", row.id)
                await self._retry(row, err)
                retried += 1
                metrics.delivery(row.kind, "retried")
                continue
            await self._outbox.mark_delivered(row.id, self._clock.now())
            delivered += 1
            metrics.delivery(row.kind, "delivered")
        return DispatchReport(delivered, retried, dead)

    async def _retry(self, row: OutboxMessage, err: BaseException) -> None:
        delay = min(self._max, self._base * 2**row.attempts)
        available = self._clock.now() + timedelta(seconds=delay)
        await self._outbox.mark_retry(row.id, available, f"{type(err).__name__}: {err}")

    async def _deliver_one(self, row: OutboxMessage) -> None:
        effect = decode_effect(row)
        match effect:
            case Notify():
                message = {**effect.message, "dedupe_key": effect.dedupe_key}
                taken = await self._sockets.send(effect.session_id, effect.recipient, message)
                if not taken and effect.push is not None:
                    await self._push.send(effect.recipient, effect.user_id, effect.push)
            case StartClosureGrace():
                await self._timer.start_closure_grace(effect.session_id, effect.deadline)
            case ClearClosureGrace():
                await self._timer.clear_closure_grace(effect.session_id)
            case SessionExpiryExtended():
                await self._timer.expiry_extended(effect.session_id, effect.expires_at)
