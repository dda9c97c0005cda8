"""Every message the flow sends, in one place: the seed's WebSocket payloads,
its FCM fallback for the mitra, and our push fallback for the customer.

These are the wire contract (``extension.service.js``): keys, key order, values,
the Indonesian texts and the timestamp form (``Date.toJSON()``, see
:mod:`.wire`) are kept as the seed has them.  Pure functions of the rows;
the core calls them, the outbox delivers what they return.
"""

from __future__ import annotations

from datetime import datetime

from ._construct import builder
from .model import (
    Extension,
    JSONValue,
    MessageType,
    Notify,
    Participant,
    PushMessage,
    Session,
    TimeoutReason,
)
from .wire import js_date

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


# The hot path builds every field positionally (see ``_construct``) and reads
# the wire names once here rather than through ``Enum.value`` on every message.
_notify = builder(Notify)
_push = builder(PushMessage)
_CUSTOMER = Participant.CUSTOMER
_MITRA = Participant.MITRA
_REQUEST = MessageType.EXTENSION_REQUEST.value
_PAUSED = MessageType.SESSION_PAUSED.value
_RESPONSE = MessageType.EXTENSION_RESPONSE.value
_REQUEST_KEY = f":{MessageType.EXTENSION_REQUEST}:{Participant.MITRA}"
_PAUSED_KEY = f":{MessageType.SESSION_PAUSED}:{Participant.CUSTOMER}"
_RESPONSE_KEY = f":{MessageType.EXTENSION_RESPONSE}:{Participant.CUSTOMER}"
# The accepted body around its one field, split once: ``str.format`` parses it per call.
_ACCEPTED_HEAD, _ACCEPTED_TAIL = CUSTOMER_ACCEPTED[1].split("{duration_minutes}")


def dedupe_key(ext: Extension, kind: MessageType, to: Participant) -> str:
    """``extension id:message type:recipient``: what a receiver drops repeats by."""
    return f"{ext.id}:{kind!s}:{to!s}"  # a StrEnum's str is its value (and !s the quicker)


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
    key = f"{ext.id}{_REQUEST_KEY}"  # dedupe_key(ext, EXTENSION_REQUEST, MITRA)
    return _notify(session.id, _MITRA, session.mitra_id, message, key, push)


def session_paused(session: Session, ext: Extension) -> Notify:
    """To the customer: the chat is paused while the mitra decides."""
    message: dict[str, JSONValue] = {
        "type": _PAUSED,
        "session_id": session.id,
        "reason": "extension_pending",
    }
    key = f"{ext.id}{_PAUSED_KEY}"  # dedupe_key(ext, SESSION_PAUSED, CUSTOMER)
    return _notify(session.id, _CUSTOMER, session.customer_id, message, key, None)


def plain(session: Session, ext: Extension, to: Participant, kind: MessageType) -> Notify:
    """``session_resumed`` / ``session_closing``: just the type and the session."""
    return _notify(
        session.id,
        to,
        session.customer_id if to is _CUSTOMER else session.mitra_id,
        {"type": str(kind), "session_id": session.id},  # a StrEnum's str is its value
        f"{ext.id}:{kind!s}:{to!s}",
        None,
    )


def accepted_response(
    session: Session, ext: Extension, expires_at: datetime, via_timeout: bool
) -> Notify:
    """To the customer: accepted, with the new expiry so the ticker resumes at once."""
    message: dict[str, JSONValue] = {
        "type": _RESPONSE,
        "accepted": True,
        "duration_minutes": ext.duration_minutes,
        "expires_at": js_date(expires_at),  # the seed's Date, as JSON.stringify wrote it
        "via_timeout": via_timeout,
    }
    body = f"{_ACCEPTED_HEAD}{ext.duration_minutes}{_ACCEPTED_TAIL}"  # as str.format would
    return _customer_response(session, ext, message, CUSTOMER_ACCEPTED[0], body, True)


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
        "reason": str(reason),  # a StrEnum's str is its value
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
    key = f"{ext.id}{_RESPONSE_KEY}"  # dedupe_key(ext, EXTENSION_RESPONSE, CUSTOMER)
    return _notify(session.id, _CUSTOMER, session.customer_id, message, key, push)
