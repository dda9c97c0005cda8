"""Every message the flow sends, in one place: the seed's WebSocket payloads,
its FCM fallback for the mitra, and our push fallback for the customer.

These are the wire contract (``extension.service.js``): keys, key order, values,
the Indonesian texts and the timestamp form (``Date.toJSON()``, see
:mod:`.wire`) are kept as the seed has them.  Pure functions of the rows;
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
#: the name the mitra's push uses for a customer without one (a NULL or empty
#: display name, or no customer row): the replaced service wrote "null" there
UNNAMED_CUSTOMER = "Pelanggan"
CUSTOMER_ACCEPTED = ("Perpanjangan Diterima", "Sesi kamu diperpanjang +{duration_minutes} menit")
CUSTOMER_REJECTED = ("Perpanjangan Ditolak", "Mitra tidak bisa melanjutkan sesi ini.")
CUSTOMER_TIMED_OUT = ("Perpanjangan Tidak Dijawab", "Mitra belum merespons permintaanmu.")
CUSTOMER_CANCELLED = (
    "Perpanjangan Dibatalkan",
    "Sesi sudah berakhir, perpanjangan dibatalkan tanpa biaya.",
)


def dedupe_key(ext: Extension, kind: MessageType, to: Participant) -> str:
    """``extension id:message type:recipient``: what a receiver drops repeats by."""
    return f"{ext.id}:{kind}:{to}"  # a StrEnum formats as its value


def extension_request(session: Session, ext: Extension) -> Notify:
    """To the mitra: the request, with the seed's FCM fallback when no socket takes it."""
    message: dict[str, JSONValue] = {
        "type": MessageType.EXTENSION_REQUEST.value,
        "extension_id": ext.id,
        "session_id": session.id,
        "duration_minutes": ext.duration_minutes,
        "price": ext.price,
        "topic_sensitivity": session.topic_sensitivity,
        "timeout_seconds": ext.timeout_seconds,
    }
    # Seed: the mitra on Home/Undangan or backgrounded gets FCM instead.
    push = PushMessage(
        title=MITRA_REQUEST_TITLE,
        body=MITRA_REQUEST_BODY.format(
            customer_display_name=session.customer_display_name.strip() or UNNAMED_CUSTOMER,
            duration_minutes=ext.duration_minutes,
        ),
        data={
            "type": MessageType.EXTENSION_REQUEST.value,
            "session_id": session.id,
            "extension_id": ext.id,
            "duration_minutes": ext.duration_minutes,
            "price": ext.price,
            "timeout_seconds": ext.timeout_seconds,
            "action": "open_extension",
        },
    )
    return _notify(session, ext, Participant.MITRA, MessageType.EXTENSION_REQUEST, message, push)


def session_paused(session: Session, ext: Extension) -> Notify:
    """To the customer: the chat is paused while the mitra decides."""
    message: dict[str, JSONValue] = {
        "type": MessageType.SESSION_PAUSED.value,
        "session_id": session.id,
        "reason": "extension_pending",
    }
    return _notify(session, ext, Participant.CUSTOMER, MessageType.SESSION_PAUSED, message)


def plain(session: Session, ext: Extension, to: Participant, kind: MessageType) -> Notify:
    """``session_resumed`` / ``session_closing``: just the type and the session."""
    return _notify(session, ext, to, kind, {"type": kind.value, "session_id": session.id})


def accepted_response(
    session: Session, ext: Extension, expires_at: datetime, via_timeout: bool
) -> Notify:
    """To the customer: accepted, with the new expiry so the ticker resumes at once."""
    message: dict[str, JSONValue] = {
        "type": MessageType.EXTENSION_RESPONSE.value,
        "accepted": True,
        "duration_minutes": ext.duration_minutes,
        "expires_at": js_date(expires_at),  # the seed's Date, as JSON.stringify wrote it
        "via_timeout": via_timeout,
    }
    title, body = CUSTOMER_ACCEPTED
    body = body.format(duration_minutes=ext.duration_minutes)
    return _customer_response(session, ext, message, title, body, True)


def rejected_response(session: Session, ext: Extension) -> Notify:
    """To the customer: the mitra said no."""
    message: dict[str, JSONValue] = {
        "type": MessageType.EXTENSION_RESPONSE.value,
        "accepted": False,
        "via_timeout": False,
    }
    return _customer_response(session, ext, message, *CUSTOMER_REJECTED, False)


def timed_out_response(session: Session, ext: Extension, reason: TimeoutReason) -> Notify:
    """To the customer: no answer in time (``timeout``) or the safeguard tripped."""
    message: dict[str, JSONValue] = {
        "type": MessageType.EXTENSION_RESPONSE.value,
        "accepted": False,
        "reason": reason.value,
    }
    return _customer_response(session, ext, message, *CUSTOMER_TIMED_OUT, False)


def cancelled_response(session: Session, ext: Extension) -> Notify:
    """To the customer: the session ended under the pending request; no charge."""
    message: dict[str, JSONValue] = {
        "type": MessageType.EXTENSION_RESPONSE.value,
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
        "type": MessageType.EXTENSION_RESPONSE.value,
        "session_id": session.id,
        "extension_id": ext.id,
        "accepted": accepted,
        "action": "open_chat",
    }
    push = PushMessage(title=title, body=body, data=data)
    kind = MessageType.EXTENSION_RESPONSE
    return _notify(session, ext, Participant.CUSTOMER, kind, message, push)


def _notify(
    session: Session,
    ext: Extension,
    to: Participant,
    kind: MessageType,
    message: dict[str, JSONValue],
    push: PushMessage | None = None,
) -> Notify:
    """``message`` (and ``push``) of ``kind`` to ``to``, keyed for dropping repeats."""
    return Notify(
        session_id=session.id,
        recipient=to,
        user_id=session.customer_id if to is Participant.CUSTOMER else session.mitra_id,
        message=message,
        dedupe_key=dedupe_key(ext, kind, to),
        push=push,
    )
