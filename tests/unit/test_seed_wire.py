"""Byte for byte, what clients written for the replaced Node service receive.

The expected strings are what that service's ``JSON.stringify`` produced for
each payload (its key order, ``Date.toJSON()`` timestamps, ``Math.round``ed
``timeout_seconds``), plus the one additive key the outbox appends last,
``dedupe_key``.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from extension_fsm import messages
from extension_fsm.adapters.fcm import fcm_data
from extension_fsm.adapters.websocket import WebSocketHub
from extension_fsm.model import (
    Extension,
    ExtensionStatus,
    Participant,
    PendingExtensionInfo,
    TimeoutReason,
)
from extension_fsm.simulator import World, make_payment, make_session
from extension_fsm.wire import (
    js_date,
    js_round,
    js_stringify,
    seed_extension_json,
    whole_seconds,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SESSION = make_session(expires_at=T0 + timedelta(minutes=5))
EXT = Extension("e-1", "s1", 15, 15000, "p-1", ExtensionStatus.PENDING, T0, T0, 10)


# ------------------------------------------------------------------ values


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (datetime(2026, 1, 1, 0, 20, tzinfo=UTC), "2026-01-01T00:20:00.000Z"),
        # A JavaScript Date holds milliseconds: microseconds are cut, not rounded.
        (datetime(2026, 1, 1, 0, 20, 0, 999_999, tzinfo=UTC), "2026-01-01T00:20:00.999Z"),
        (datetime(2026, 1, 1, 0, 20, 0, 1_500, tzinfo=UTC), "2026-01-01T00:20:00.001Z"),
        # Another zone is the same instant, written in UTC.
        (
            datetime(2026, 1, 1, 7, 20, tzinfo=timezone(timedelta(hours=7))),
            "2026-01-01T00:20:00.000Z",
        ),
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.000Z"),
    ],
)
def test_timestamps_are_date_to_json(value: datetime, wire: str) -> None:
    assert js_date(value) == wire


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        js_date(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("value", "rounded"),
    [
        (6.5, 7),  # Python's round() gives 6 (to even), int() gives 6
        (2.5, 3),
        (7.5, 8),
        (9.4, 9),
        (-2.5, -2),  # Math.round: halves toward +infinity
        (0.49999999999999994, 0),  # floor(x + 0.5) would give 1
        (10, 10),
    ],
)
def test_whole_numbers_round_as_math_round(value: float, rounded: int) -> None:
    assert js_round(value) == rounded
    assert type(js_round(value)) is int


def test_a_configured_timeout_is_announced_as_the_seed_rounded_it() -> None:
    assert whole_seconds(6.5) == 7
    assert whole_seconds("10") == 10
    assert whole_seconds(10) == 10
    with pytest.raises(ValueError):
        whole_seconds(float("nan"))


# ------------------------------------------------------------ each payload


def test_extension_request_and_its_push_are_the_seeds_bytes() -> None:
    notify = messages.extension_request(SESSION, EXT)
    assert js_stringify(notify.message) == (
        '{"type":"extension_request","extension_id":"e-1","session_id":"s1",'
        '"duration_minutes":15,"price":15000,"topic_sensitivity":null,"timeout_seconds":10}'
    )
    assert notify.push is not None
    assert (notify.push.title, notify.push.body) == (
        "Permintaan Perpanjang",
        "Rina mau lanjut +15 menit",
    )
    assert js_stringify(notify.push.data) == (
        '{"type":"extension_request","session_id":"s1","extension_id":"e-1",'
        '"duration_minutes":15,"price":15000,"timeout_seconds":10,"action":"open_extension"}'
    )
    assert fcm_data(notify.push.data) == {
        "type": "extension_request",
        "session_id": "s1",
        "extension_id": "e-1",
        "duration_minutes": "15",
        "price": "15000",
        "timeout_seconds": "10",
        "action": "open_extension",
    }


def test_every_response_is_the_seeds_bytes() -> None:
    accepted = messages.accepted_response(SESSION, EXT, T0 + timedelta(minutes=20), True)
    assert js_stringify(accepted.message) == (
        '{"type":"extension_response","accepted":true,"duration_minutes":15,'
        '"expires_at":"2026-01-01T00:20:00.000Z","via_timeout":true}'
    )
    assert js_stringify(messages.rejected_response(SESSION, EXT).message) == (
        '{"type":"extension_response","accepted":false,"via_timeout":false}'
    )
    for reason in TimeoutReason:
        timed_out = messages.timed_out_response(SESSION, EXT, reason)
        assert js_stringify(timed_out.message) == (
            f'{{"type":"extension_response","accepted":false,"reason":"{reason.value}"}}'
        )
    assert js_stringify(messages.session_paused(SESSION, EXT).message) == (
        '{"type":"session_paused","session_id":"s1","reason":"extension_pending"}'
    )


def test_pending_extension_is_the_seeds_bytes() -> None:
    info = PendingExtensionInfo("e-1", 15, 15000, T0, T0 + timedelta(seconds=10), 10)
    wire = (
        '{"extension_id":"e-1","duration_minutes":15,"price":15000,'
        '"requested_at":"2026-01-01T00:00:00.000Z","expires_at":"2026-01-01T00:00:10.000Z",'
        '"timeout_seconds":10}'
    )
    assert js_stringify(info.to_json()) == wire
    assert js_stringify(info.to_payload()) == wire


# ---------------------------------------------------- through the service


async def _accepted_world(configured_timeout: float) -> World:
    ids = (f"id-{n}" for n in itertools.count(1))
    world = World(sweep_interval=None, new_id=lambda: next(ids))
    session = make_session(expires_at=world.clock.now() + timedelta(minutes=5))
    await world.add_session(session)
    await world.add_payment(make_payment())
    world.connect(session, Participant.MITRA, on_session_socket=True)
    world.connect(session, Participant.CUSTOMER, on_session_socket=True)
    world.config.timeout_seconds = configured_timeout  # type: ignore[assignment]  # a host's float
    await world.service.request_extension(
        session_id="s1",
        customer_id="c1",
        duration_minutes=15,
        price=15000,
        extension_payment_session_id="p1",
    )
    await world.service.respond_to_extension(
        extension_id="id-1", session_id="s1", mitra_id="m1", accepted=True
    )
    await world.settle()  # deliveries run in the background
    return world


async def test_delivered_frames_are_the_seeds_bytes_plus_dedupe_key() -> None:
    world = await _accepted_world(6.5)
    frames = [(d.participant.value, js_stringify(d.payload)) for d in world.sockets.sent]

    def by_recipient(sent: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return sorted(sent, key=lambda frame: frame[0])  # stable: each one's order kept

    # Each participant's frames in decision order (the two are not ordered
    # against each other).
    assert by_recipient(frames) == by_recipient(
        [
            (
                "mitra",
                '{"type":"extension_request","extension_id":"id-1","session_id":"s1",'
                '"duration_minutes":15,"price":15000,"topic_sensitivity":null,'
                '"timeout_seconds":7,"dedupe_key":"id-1:extension_request:mitra"}',
            ),
            (
                "customer",
                '{"type":"session_paused","session_id":"s1","reason":"extension_pending",'
                '"dedupe_key":"id-1:session_paused:customer"}',
            ),
            (
                "customer",
                '{"type":"extension_response","accepted":true,"duration_minutes":15,'
                '"expires_at":"2026-01-01T00:20:00.000Z","via_timeout":false,'
                '"dedupe_key":"id-1:extension_response:customer"}',
            ),
            (
                "customer",
                '{"type":"session_resumed","session_id":"s1",'
                '"dedupe_key":"id-1:session_resumed:customer"}',
            ),
            (
                "mitra",
                '{"type":"session_resumed","session_id":"s1",'
                '"dedupe_key":"id-1:session_resumed:mitra"}',
            ),
        ]
    )


class _TextSocket:
    def __init__(self) -> None:
        self.frames: list[str] = []

    async def send_text(self, data: str) -> None:
        self.frames.append(data)


async def test_a_text_socket_gets_json_stringify_text() -> None:
    hub = WebSocketHub()
    socket = _TextSocket()
    hub.register(socket, Participant.CUSTOMER, "c1", "s1")
    message = {**messages.cancelled_response(SESSION, EXT).message, "dedupe_key": "k"}
    message["note"] = "Sesi berakhir — tanpa biaya"
    assert await hub.send("s1", Participant.CUSTOMER, message)
    assert socket.frames == [
        '{"type":"extension_response","accepted":false,"via_timeout":false,'
        '"reason":"session_ended","dedupe_key":"k","note":"Sesi berakhir — tanpa biaya"}'
    ]


def test_the_returned_extension_in_the_seeds_shape() -> None:
    ext = Extension("e-1", "s1", 15, 15000, "p-1", ExtensionStatus.PENDING, T0, T0, 10)
    assert js_stringify(seed_extension_json(ext)) == (
        '{"id":"e-1","session_id":"s1","requested_duration_minutes":15,"requested_price":15000,'
        '"status":"pending","requested_at":"2026-01-01T00:00:00.000Z","payment_session_id":"p-1"}'
    )
    answered = Extension("e-1", "s1", 15, 15000, "p-1", ExtensionStatus.ACCEPTED, T0, T0, 10)
    assert js_stringify(seed_extension_json(answered, answered=True)) == (
        '{"id":"e-1","session_id":"s1","requested_duration_minutes":15,"requested_price":15000,'
        '"status":"accepted","payment_session_id":"p-1"}'
    )
