"""Every message the flow sends, in one place: the seed's WebSocket payloads,
its FCM fallback for the mitra, and our push fallback for the customer.

These are the wire contract (``extension.service.js``): keys, values and the
Indonesian texts are kept as the seed has them.  Pure functions of the rows;
the core calls them, the outbox delivers what they return.
"""

from __future__ import annotations

from datetime import datetime

from .model import (
    Extension,
    JSONValue,
    MessageType,
    Notify,
    Participant,
    PushMessage,
    Session,
    TimeoutReason,
    builder,
)

__all__ = [
    "accepted_response",
    "cancelled_response",
    "dedupe_key",
    "extension_request",
    "plain",
    "rejected_response",
    "session_paused",
    "timed_out_response",
]

#: title, body of each push; the mitra's is the seed's, the customer's are ours
MITRA_REQUEST_TITLE = "Permintaan Perpanjang"
MITRA_REQUEST_BODY = "{customer_display_name} mau lanjut +{duration_minutes} menit"
CUSTOMER_ACCEPTED = ("Perpanjangan Diterima", "Sesi kamu diperpanjang +{duration_minutes} menit")
CUSTOMER_REJECTED = ("Perpanjangan Ditolak", "Mitra tidak bisa melanjutkan sesi ini.")
CUSTOMER_TIMED_OUT = ("Perpanjangan Tidak Dijawab", "Mitra belum merespons permintaanmu.")
CUSTOMER_CANCELLED = (
    "Perpanjangan Dibatalkan",
    "Sesi sudah berakhir, perpanjangan dibatalkan tanpa biaya.",
)


# The hot path builds every field positionally (see ``model.fast_init``) and reads
# the wire names once here rather than through ``Enum.value`` on every message.
_notify = builder(Notify)
_push = builder(PushMessage)
_CUSTOMER = Participant.CUSTOMER
_MITRA = Participant.MITRA
_REQUEST = MessageType.EXTENSION_REQUEST.value
_PAUSED = MessageType.SESSION_PAUSED.value
_RESPONSE = MessageType.EXTENSION_RESPONSE.value
_RESPONSE_KEY = f":{MessageType.EXTENSION_RESPONSE}:{Participant.CUSTOMER}"


def dedupe_key(ext: Extension, kind: MessageType, to: Participant) -> str:
    """``extension id:message type:recipient``: what a receiver drops repeats by."""
    return f"{ext.id}:{kind}:{to}"  # a StrEnum formats as its value


def extension_request(session: Session, ext: Extension) -> Notify:
    """To the mitra: the request, with the seed's FCM fallback when no socket takes it."""
    message: dict[str, JSONValue] = {
        "type": _REQUEST,
        "extension_id": ext.id,
        "session_id": session.id,
        "duration_minutes": ext.duration_minutes,
        "price": ext.price,
        "topic_sensitivity": session.topic_sensitivity,
        "timeout_seconds": ext.timeout_seconds,
    }
    # Seed: the mitra on Home/Undangan or backgrounded gets FCM instead.
    push = _push(
        MITRA_REQUEST_TITLE,
        MITRA_REQUEST_BODY.format(
            customer_display_name=session.customer_display_name,
            duration_minutes=ext.duration_minutes,
        ),
        {
            "type": _REQUEST,
            "session_id": session.id,
            "extension_id": ext.id,
            "duration_minutes": ext.duration_minutes,
            "price": ext.price,
            "timeout_seconds": ext.timeout_seconds,
            "action": "open_extension",
        },
    )
    key = dedupe_key(ext, MessageType.EXTENSION_REQUEST, _MITRA)
    return _notify(session.id, _MITRA, session.mitra_id, message, key, push)


def session_paused(session: Session, ext: Extension) -> Notify:
    """To the customer: the chat is paused while the mitra decides."""
    message: dict[str, JSONValue] = {
        "type": _PAUSED,
        "session_id": session.id,
        "reason": "extension_pending",
    }
    key = dedupe_key(ext, MessageType.SESSION_PAUSED, _CUSTOMER)
    return _notify(session.id, _CUSTOMER, session.customer_id, message, key, None)


def plain(session: Session, ext: Extension, to: Participant, kind: MessageType) -> Notify:
    """``session_resumed`` / ``session_closing``: just the type and the session."""
    return _notify(
        session.id,
        to,
        session.customer_id if to is _CUSTOMER else session.mitra_id,
        {"type": str(kind), "session_id": session.id},  # a StrEnum's str is its value
        f"{ext.id}:{kind}:{to}",
        None,
    )


def accepted_response(
    session: Session, ext: Extension, expires_at: datetime, via_timeout: bool
) -> Notify:
    """To the customer: accepted, with the new expiry so the ticker resumes at once."""
    title, body = CUSTOMER_ACCEPTED
    message: dict[str, JSONValue] = {
        "type": _RESPONSE,
        "accepted": True,
        "duration_minutes": ext.duration_minutes,
        "expires_at": expires_at.isoformat(),
        "via_timeout": via_timeout,
    }
    body = body.format(duration_minutes=ext.duration_minutes)
    return _customer_response(session, ext, message, title, body, True)


def rejected_response(session: Session, ext: Extension) -> Notify:
    """To the customer: the mitra said no."""
    message: dict[str, JSONValue] = {
        "type": _RESPONSE,
        "accepted": False,
        "via_timeout": False,
    }
    return _customer_response(session, ext, message, *CUSTOMER_REJECTED, False)


def timed_out_response(session: Session, ext: Extension, reason: TimeoutReason) -> Notify:
    """To the customer: no answer in time (``timeout``) or the safeguard tripped."""
    message: dict[str, JSONValue] = {
        "type": _RESPONSE,
        "accepted": False,
        "reason": reason.value,
    }
    return _customer_response(session, ext, message, *CUSTOMER_TIMED_OUT, False)


def cancelled_response(session: Session, ext: Extension) -> Notify:
    """To the customer: the session ended under the pending request; no charge."""
    message: dict[str, JSONValue] = {
        "type": _RESPONSE,
        "accepted": False,
        "via_timeout": False,
        "reason": "session_ended",
    }
    return _customer_response(session, ext, message, *CUSTOMER_CANCELLED, False)


def _customer_response(
    session: Session,
    ext: Extension,
    message: dict[str, JSONValue],
    title: str,
    body: str,
    accepted: bool,
) -> Notify:
    # Ours (the seed's follow-up): a backgrounded customer still learns the outcome.
    data: dict[str, JSONValue] = {
        "type": _RESPONSE,
        "session_id": session.id,
        "extension_id": ext.id,
        "accepted": accepted,
        "action": "open_chat",
    }
    push = _push(title, body, data)
    key = f"{ext.id}{_RESPONSE_KEY}"
    return _notify(session.id, _CUSTOMER, session.customer_id, message, key, push)
