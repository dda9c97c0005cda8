"""Every message the library builds is an instance of its wire model, and the
model serialises it byte for byte as it is sent (keys, order, values)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from extension_fsm import messages, payloads
from extension_fsm.adapters.fcm import fcm_data
from extension_fsm.model import (
    Extension,
    ExtensionStatus,
    MessageType,
    Notify,
    Participant,
    PendingExtensionInfo,
    TimeoutReason,
)
from extension_fsm.simulator import make_session

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SESSION = make_session(expires_at=T0 + timedelta(minutes=5))
EXT = Extension("e-1", SESSION.id, 15, 15000, "p-1", ExtensionStatus.PENDING, T0, T0, 10)
FRAME = TypeAdapter(payloads.SocketFrame)


def built() -> list[Notify]:
    return [
        messages.extension_request(SESSION, EXT),
        messages.session_paused(SESSION, EXT),
        messages.accepted_response(SESSION, EXT, T0, False),
        messages.accepted_response(SESSION, EXT, T0, True),
        messages.rejected_response(SESSION, EXT),
        messages.timed_out_response(SESSION, EXT, TimeoutReason.SAFEGUARD),
        messages.timed_out_response(SESSION, EXT, TimeoutReason.TIMEOUT),
        messages.cancelled_response(SESSION, EXT),
        *[
            messages.plain(SESSION, EXT, to, kind)
            for kind in (MessageType.SESSION_RESUMED, MessageType.SESSION_CLOSING)
            for to in Participant
        ],
    ]


def _same_bytes(model: BaseModel, sent: object) -> bool:
    return json.dumps(model.model_dump(mode="json")) == json.dumps(sent)


@pytest.mark.parametrize("notify", built(), ids=lambda n: n.dedupe_key)
def test_every_socket_frame_is_its_model_byte_for_byte(notify: Notify) -> None:
    frame = {**notify.message, "dedupe_key": notify.dedupe_key}  # as the dispatcher sends it
    model = FRAME.validate_python(frame)
    assert _same_bytes(model, frame)


@pytest.mark.parametrize("notify", [n for n in built() if n.push], ids=lambda n: n.dedupe_key)
def test_every_push_is_its_model_byte_for_byte(notify: Notify) -> None:
    assert notify.push is not None
    # As FCM carries it: every data value a string.
    data = fcm_data(notify.push.data)
    sent = {"title": notify.push.title, "body": notify.push.body, "data": data}
    assert _same_bytes(payloads.Push.model_validate(sent), sent)


@pytest.mark.parametrize(
    "data",
    [
        {"type": "extension_request", "session_id": "s", "extension_id": "e",
         "duration_minutes": 15, "price": "15000", "timeout_seconds": "10",
         "action": "open_extension"},
        {"type": "extension_request", "session_id": "s", "extension_id": "e",
         "duration_minutes": "15", "price": "15000.0", "timeout_seconds": "10",
         "action": "open_extension"},
        {"type": "extension_response", "session_id": "s", "extension_id": "e",
         "accepted": True, "action": "open_chat"},
    ],
)  # fmt: skip
def test_push_data_values_are_strings_on_the_wire(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        payloads.Push.model_validate({"title": "t", "body": "b", "data": data})


def test_every_frame_model_describes_something_the_library_sends() -> None:
    used = {type(FRAME.validate_python({**n.message, "dedupe_key": n.dedupe_key})) for n in built()}
    assert used == set(payloads.SocketFrame.__args__)  # type: ignore[attr-defined]


def test_pending_extension_is_its_model_byte_for_byte() -> None:
    info = PendingExtensionInfo("e-1", 15, 15000, T0, T0 + timedelta(seconds=10), 10)
    payload = info.to_payload()
    assert _same_bytes(payloads.PendingExtension.model_validate(payload), payload)


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "session_paused", "session_id": "s", "reason": "other", "dedupe_key": "k"},
        {"type": "session_resumed", "session_id": "s"},  # no dedupe_key
        {"type": "session_resumed", "session_id": "s", "dedupe_key": "k", "extra": 1},
        {"type": "extension_response", "accepted": "true", "via_timeout": False, "dedupe_key": "k"},
    ],
)
def test_the_models_refuse_what_the_library_never_sends(frame: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FRAME.validate_python(frame)


def test_the_schema_names_every_model() -> None:
    schema = payloads.messages_schema()
    names = {m.__name__ for m in payloads.SocketFrame.__args__}  # type: ignore[attr-defined]
    assert names | {"Push", "PendingExtension"} <= set(schema["$defs"])
    json.dumps(schema)  # plain JSON


def test_timestamps_must_be_in_the_date_tojson_form() -> None:
    good = {"type": "extension_response", "accepted": True, "duration_minutes": 15,
            "via_timeout": False, "dedupe_key": "k"}  # fmt: skip
    FRAME.validate_python({**good, "expires_at": "2026-01-01T00:20:00.000Z"})
    for other in ("2026-01-01T00:20:00+00:00", "2026-01-01T00:20:00Z", "2026-01-01 00:20:00"):
        with pytest.raises(ValidationError):
            FRAME.validate_python({**good, "expires_at": other})
