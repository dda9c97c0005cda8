"""The wire contract as pydantic models: every socket frame and push payload.

:mod:`extension_fsm.messages` builds what is sent; these models describe it,
field for field and in the order sent, so that a client developer has a JSON
Schema to check against (``extension-fsm schema messages``) and the tests can
hold every built message to its model byte for byte.  Fields are exactly the
ones the service this library replaces sent, plus ``dedupe_key`` on every
socket frame (the same message delivered twice carries the same key).

Timestamps are strings in JavaScript's ``Date.toJSON()`` form.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "CustomerResponseData",
    "ExtensionAccepted",
    "ExtensionCancelled",
    "ExtensionRejected",
    "ExtensionRequest",
    "ExtensionRequestData",
    "ExtensionTimedOut",
    "PendingExtension",
    "Push",
    "SessionClosing",
    "SessionPaused",
    "SessionResumed",
    "SocketFrame",
    "messages_schema",
]

Timestamp = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
        description="UTC, JavaScript Date.toJSON() form",
        examples=["2026-01-01T00:20:00.000Z"],
    ),
]
DedupeKey = Annotated[
    str,
    Field(description="`extension id:message type:recipient`; drop a frame seen before"),
]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# ------------------------------------------------------------- socket frames


class ExtensionRequest(_Wire):
    """To the mitra: the customer asks to extend (answer with accept or reject)."""

    type: Literal["extension_request"]
    extension_id: str
    session_id: str
    duration_minutes: int
    price: int
    topic_sensitivity: str | None
    timeout_seconds: int
    dedupe_key: DedupeKey


class SessionPaused(_Wire):
    """To the customer: the chat pauses while the mitra decides."""

    type: Literal["session_paused"]
    session_id: str
    reason: Literal["extension_pending"]
    dedupe_key: DedupeKey


class SessionResumed(_Wire):
    """To both: the extension was accepted; the chat goes on."""

    type: Literal["session_resumed"]
    session_id: str
    dedupe_key: DedupeKey


class SessionClosing(_Wire):
    """To both: the extension was not accepted; the closure grace runs."""

    type: Literal["session_closing"]
    session_id: str
    dedupe_key: DedupeKey


class ExtensionAccepted(_Wire):
    """To the customer: accepted, by the mitra or by the timeout policy."""

    type: Literal["extension_response"]
    accepted: Literal[True]
    duration_minutes: int
    expires_at: Timestamp
    via_timeout: bool
    dedupe_key: DedupeKey


class ExtensionRejected(_Wire):
    """To the customer: the mitra said no."""

    type: Literal["extension_response"]
    accepted: Literal[False]
    via_timeout: Literal[False]
    dedupe_key: DedupeKey


class ExtensionTimedOut(_Wire):
    """To the customer: no approval in time (``timeout``), the presence
    safeguard refused an automatic approval (``safeguard``), or the deadline
    was handled too long after it passed to approve (``stale``)."""

    type: Literal["extension_response"]
    accepted: Literal[False]
    reason: Literal["timeout", "safeguard", "stale"]
    dedupe_key: DedupeKey


class ExtensionCancelled(_Wire):
    """To the customer: the session ended under the pending request; no charge."""

    type: Literal["extension_response"]
    accepted: Literal[False]
    via_timeout: Literal[False]
    reason: Literal["session_ended"]
    dedupe_key: DedupeKey


SocketFrame = (
    ExtensionRequest
    | SessionPaused
    | SessionResumed
    | SessionClosing
    | ExtensionAccepted
    | ExtensionRejected
    | ExtensionTimedOut
    | ExtensionCancelled
)
"""Every frame the session socket carries."""


# --------------------------------------------------------------------- push


class ExtensionRequestData(_Wire):
    """The mitra's push data (every value a string once it reaches FCM)."""

    type: Literal["extension_request"]
    session_id: str
    extension_id: str
    duration_minutes: int
    price: int
    timeout_seconds: int
    action: Literal["open_extension"]


class CustomerResponseData(_Wire):
    """The customer's push data for the outcome of a request."""

    type: Literal["extension_response"]
    session_id: str
    extension_id: str
    accepted: bool
    action: Literal["open_chat"]


class Push(_Wire):
    """A push notification: Indonesian title and body, and its data."""

    title: str
    body: str
    data: ExtensionRequestData | CustomerResponseData


# ----------------------------------------------------------------- rehydrate


class PendingExtension(_Wire):
    """``pending_extension`` in the chat's info: what the accept/reject view needs."""

    extension_id: str
    duration_minutes: int
    price: int
    requested_at: Timestamp
    expires_at: Timestamp
    timeout_seconds: int


def messages_schema() -> dict[str, Any]:
    """One JSON Schema document for the socket frames, push payloads and
    ``pending_extension``."""
    schema = TypeAdapter(
        dict[
            Literal["socket_frame", "push", "pending_extension"],
            SocketFrame | Push | PendingExtension,
        ]
    ).json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "extension_fsm wire messages",
        "$defs": schema.get("$defs", {}),
        "properties": {
            "socket_frame": {"anyOf": _refs(SocketFrame)},
            "push": {"$ref": "#/$defs/Push"},
            "pending_extension": {"$ref": "#/$defs/PendingExtension"},
        },
    }


def _refs(union: Any) -> list[dict[str, str]]:
    return [{"$ref": f"#/$defs/{model.__name__}"} for model in union.__args__]
