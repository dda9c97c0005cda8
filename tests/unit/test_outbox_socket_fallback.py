"""The dispatcher's choice when the socket layer cannot say whether the
recipient took a message: whatever the failure (a retryable or final
``DeliveryError``, an unreachable instance, an adapter bug, a send that
outlives ``call_timeout``), a message with a push is pushed at once and the
row is delivered; a message without one is kept for a retry (never marked
delivered), since nothing else can reach its recipient.

Every wait is bounded (a hang fails the test); nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import pytest

from extension_fsm import DeliveryError, DispatchReport, OutboxDispatcher, Participant
from extension_fsm.adapters.clock import VirtualClock
from extension_fsm.adapters.memory import MemoryPush, MemorySessionTimer, MemoryStore
from extension_fsm.errors import SocketUnreachable
from extension_fsm.model import JSONValue, Notify, PushMessage
from extension_fsm.outbox import encode_effects
from extension_fsm.testing.samples import add_outbox

BOUND = 10.0
CALL_TIMEOUT = 0.2  # the hanging socket is cut off after this (a real wait)


class _DownSockets:
    """A socket layer that fails every send in one way (``hang``: never answers)."""

    def __init__(self, failure: BaseException | None) -> None:
        self.failure = failure
        self.attempts = 0

    async def send(
        self, session_id: str, participant: Participant, message: Mapping[str, JSONValue]
    ) -> bool:
        self.attempts += 1
        if self.failure is None:
            await asyncio.Event().wait()
        assert self.failure is not None
        raise self.failure

    async def is_connected(self, participant: Participant, user_id: str) -> bool:
        return False


FAILURES = {
    "redis_down": DeliveryError("Redis unreachable: ConnectionError", retryable=True),
    "final_error": DeliveryError("the socket layer refused the frame", retryable=False),
    "instance_unreachable": SocketUnreachable("not listening"),
    "adapter_bug": RuntimeError("a bug in the socket adapter"),
    "hang": None,
}


def _notify(*, push: bool) -> Notify:
    return Notify(
        session_id="s1",
        recipient=Participant.MITRA,
        user_id="m1",
        message={"type": "extension_request", "session_id": "s1"},
        dedupe_key="e1:extension_request:mitra",
        push=PushMessage("Permintaan Perpanjang", "Sari mau lanjut +30 menit", {"n": 1})
        if push
        else None,
    )


async def _rig(
    failure: BaseException | None, *, push: bool
) -> tuple[MemoryStore, OutboxDispatcher, _DownSockets, MemoryPush, str]:
    clock = VirtualClock()
    store = MemoryStore()
    sockets = _DownSockets(failure)
    pusher = MemoryPush()
    dispatcher = OutboxDispatcher(
        store.outbox,
        clock=clock,
        sockets=sockets,
        push=pusher,
        session_timer=MemorySessionTimer(),
        call_timeout=CALL_TIMEOUT,
        lease_seconds=30.0,
    )
    (row,) = encode_effects([_notify(push=push)], clock.now(), lambda: "row-1")
    await add_outbox(store, row)
    return store, dispatcher, sockets, pusher, row.id


@pytest.mark.parametrize("failure", FAILURES, ids=list(FAILURES))
async def test_socket_layer_down_pushes_at_once(
    failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    store, dispatcher, sockets, pusher, row_id = await _rig(FAILURES[failure], push=True)
    async with asyncio.timeout(BOUND):
        report = await dispatcher.deliver([row_id])
    assert report == DispatchReport(delivered=1)
    assert sockets.attempts == 1
    [pushed] = pusher.sent
    assert (pushed.participant, pushed.user_id) == (Participant.MITRA, "m1")
    assert pushed.payload["title"] == "Permintaan Perpanjang"
    assert store.outbox_rows[row_id].delivered_at is not None
    assert "pushing" in caplog.text  # the fallback is logged with its row


@pytest.mark.parametrize("failure", FAILURES, ids=list(FAILURES))
async def test_the_push_fallback_is_logged_once_naming_the_row_and_why(
    failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A socket layer that said why (a ``DeliveryError``, or a send cut off at
    ``call_timeout``) is a WARNING quoting it; an adapter bug is an ERROR with
    its traceback."""
    _, dispatcher, _, _, row_id = await _rig(FAILURES[failure], push=True)
    with caplog.at_level(logging.DEBUG, logger="extension_fsm.outbox"):
        async with asyncio.timeout(BOUND):
            await dispatcher.deliver([row_id])
    (record,) = [r for r in caplog.records if r.name == "extension_fsm.outbox"]
    error = FAILURES[failure]
    if isinstance(error, RuntimeError):
        assert record.levelno == logging.ERROR
        assert record.getMessage() == f"outbox row {row_id}: socket send failed; pushing"
        assert record.exc_info is not None and record.exc_info[1] is error
        return
    why = error if error is not None else f"socket send did not answer within {CALL_TIMEOUT} s"
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"outbox row {row_id}: socket layer cannot say ({why}); pushing"
    assert not record.exc_info


@pytest.mark.parametrize("failure", FAILURES, ids=list(FAILURES))
async def test_socket_layer_down_without_a_push_keeps_the_row(failure: str) -> None:
    store, dispatcher, _, pusher, row_id = await _rig(FAILURES[failure], push=False)
    async with asyncio.timeout(BOUND):
        report = await dispatcher.deliver([row_id])
    final = failure == "final_error"
    assert report == (DispatchReport(dead=1) if final else DispatchReport(retried=1))
    assert pusher.sent == []
    row = store.outbox_rows[row_id]
    assert row.delivered_at is None


async def test_socket_layer_down_and_a_failing_push_retry_the_row() -> None:
    store, dispatcher, _, pusher, row_id = await _rig(FAILURES["redis_down"], push=True)
    pusher.failures.append(DeliveryError("fake UNAVAILABLE", retryable=True))
    async with asyncio.timeout(BOUND):
        assert await dispatcher.deliver([row_id]) == DispatchReport(retried=1)
    assert pusher.sent == [] and store.outbox_rows[row_id].delivered_at is None
