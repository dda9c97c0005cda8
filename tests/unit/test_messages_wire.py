"""The wire names ``messages`` precomputes agree with the public helpers and templates."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from extension_fsm import messages
from extension_fsm.model import (
    Extension,
    ExtensionStatus,
    MessageType,
    Notify,
    Participant,
    TimeoutReason,
)
from extension_fsm.simulator import make_session

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SESSION = make_session(expires_at=T0 + timedelta(minutes=5))


def _ext(minutes: int) -> Extension:
    return Extension("e-1", SESSION.id, minutes, 15000, "p-1", ExtensionStatus.PENDING, T0, T0, 10)


def _all(ext: Extension) -> list[tuple[Notify, MessageType]]:
    return [
        (messages.extension_request(SESSION, ext), MessageType.EXTENSION_REQUEST),
        (messages.session_paused(SESSION, ext), MessageType.SESSION_PAUSED),
        (messages.accepted_response(SESSION, ext, T0, False), MessageType.EXTENSION_RESPONSE),
        (messages.rejected_response(SESSION, ext), MessageType.EXTENSION_RESPONSE),
        (
            messages.timed_out_response(SESSION, ext, TimeoutReason.SAFEGUARD),
            MessageType.EXTENSION_RESPONSE,
        ),
        (messages.cancelled_response(SESSION, ext), MessageType.EXTENSION_RESPONSE),
        *[
            (messages.plain(SESSION, ext, to, kind), kind)
            for kind in (MessageType.SESSION_RESUMED, MessageType.SESSION_CLOSING)
            for to in Participant
        ],
    ]


def test_every_dedupe_key_is_what_dedupe_key_says() -> None:
    for notify, kind in _all(_ext(15)):
        assert notify.dedupe_key == messages.dedupe_key(_ext(15), kind, notify.recipient)
        assert notify.dedupe_key == f"e-1:{kind.value}:{notify.recipient.value}"
        assert notify.message["type"] == kind.value
        assert type(notify.message["type"]) is str  # the wire value, not the enum member
        if notify.push is not None:
            assert notify.push.data["type"] == kind.value


@pytest.mark.parametrize("minutes", [1, 15, 1440])
def test_the_accepted_body_is_its_template_formatted(minutes: int) -> None:
    notify = messages.accepted_response(SESSION, _ext(minutes), T0, True)
    assert notify.push is not None
    title, body = messages.CUSTOMER_ACCEPTED
    assert (notify.push.title, notify.push.body) == (
        title,
        body.format(duration_minutes=minutes),
    )


@pytest.mark.parametrize("name", ["", "   "])
def test_a_customer_without_a_display_name_is_pelanggan_in_the_mitras_push(name: str) -> None:
    """A NULL name (read as empty), an empty one or no customer row at all:
    never ``null mau lanjut`` (the replaced service) nor `` mau lanjut``."""
    unnamed = replace(SESSION, customer_display_name=name)
    push = messages.extension_request(unnamed, _ext(15)).push
    assert push is not None and push.body == "Pelanggan mau lanjut +15 menit"


def test_a_named_customer_is_named_in_the_mitras_push() -> None:
    named = replace(SESSION, customer_display_name="Rina")
    push = messages.extension_request(named, _ext(15)).push
    assert push is not None and push.body == "Rina mau lanjut +15 menit"
