"""How effects become outbox rows and back: each row's kind, dedupe key,
payload and ordering lane (per session: its timer commands share a lane, so
do its payment events, and so do the messages to each of its participants).

Amounts go into the JSON as whole numbers, exactly (:func:`~.money.whole_money`:
a ``Decimal`` a host's ``numeric`` column gave is written as its ``int``, never
through ``float``; a fraction of a unit is refused before anything is written).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import cast

from .model import (
    ClearClosureGrace,
    Effect,
    FailureCause,
    JSONValue,
    Notify,
    Participant,
    PaymentConsumed,
    PaymentFailed,
    PushMessage,
    SessionExpiryExtended,
    StartClosureGrace,
)
from .money import whole_money
from .ports import OutboxMessage

__all__ = [
    "KIND_NOTIFY",
    "KIND_PAYMENT",
    "KIND_SESSION_TIMER",
    "decode_effect",
    "encode_effects",
]

KIND_NOTIFY = "notify"
KIND_SESSION_TIMER = "session_timer"
KIND_PAYMENT = "payment"


def encode_effects(
    effects: Sequence[Effect], now: datetime, new_id: Callable[[], str]
) -> list[OutboxMessage]:
    """The outbox rows for ``effects``, in order."""
    rows: list[OutboxMessage] = []
    for effect in effects:
        kind, key, payload = _encode(effect)
        rows.append(OutboxMessage(new_id(), kind, key, payload, now, 0, _lane(effect, kind)))
    return rows


def _lane(effect: Effect, kind: str) -> str:
    """The ordering lane of ``effect``'s row: per session, one for its timer
    commands, one for its payment events, one per recipient for its messages."""
    if isinstance(effect, Notify):
        return f"{effect.session_id}:{kind}:{effect.recipient.value}"
    return f"{effect.session_id}:{kind}"


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
        case PaymentConsumed():
            return (
                KIND_PAYMENT,
                effect.dedupe_key,
                {
                    "action": "consumed",
                    "session_id": effect.session_id,
                    "extension_id": effect.extension_id,
                    "payment_session_id": effect.payment_session_id,
                    "customer_id": effect.customer_id,
                    "amount": whole_money(effect.amount),
                    "duration_minutes": effect.duration_minutes,
                    "via_timeout": effect.via_timeout,
                    "at": effect.at.isoformat(),
                },
            )
        case PaymentFailed():
            return (
                KIND_PAYMENT,
                effect.dedupe_key,
                {
                    "action": "failed",
                    "session_id": effect.session_id,
                    "extension_id": effect.extension_id,
                    "payment_session_id": effect.payment_session_id,
                    "customer_id": effect.customer_id,
                    "amount": whole_money(effect.amount),
                    "cause": effect.cause.value,
                    "at": effect.at.isoformat(),
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
        case "consumed":
            return PaymentConsumed(
                session_id,
                str(p["extension_id"]),
                str(p["payment_session_id"]),
                str(p["customer_id"]),
                whole_money(p["amount"]),
                _int(p["duration_minutes"]),
                bool(p["via_timeout"]),
                datetime.fromisoformat(str(p["at"])),
            )
        case "failed":
            return PaymentFailed(
                session_id,
                str(p["extension_id"]),
                str(p["payment_session_id"]),
                str(p["customer_id"]),
                whole_money(p["amount"]),
                FailureCause(str(p["cause"])),
                datetime.fromisoformat(str(p["at"])),
            )
    raise ValueError(f"unknown outbox row {message.kind}/{p.get('action')}")


def _int(value: JSONValue) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not a whole number: {value!r}")
    return value
