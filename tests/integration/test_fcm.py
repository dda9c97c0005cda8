"""FcmPushSender through the real firebase_admin HTTP path, against a local
FCM v1 server on 127.0.0.1 (service-account credential with a local key and
a local token endpoint: no traffic leaves the machine)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import firebase_admin
import pytest

from extension_fsm import DeliveryError, Participant, PushMessage
from extension_fsm.adapters.fcm import FcmPushSender, fcm_data
from extension_fsm.adapters.memory import MemoryDeviceTokens
from tests.fakes.fcm_server import (
    ACCESS_TOKEN,
    INVALID_TOKEN,
    QUOTA_EXCEEDED,
    UNAVAILABLE,
    UNREGISTERED,
    FakeFcm,
    firebase_app,
)

REQUEST_PUSH = PushMessage(
    title="Permintaan Perpanjang",
    body="Sari mau lanjut +30 menit",
    data={
        "type": "extension_request",
        "session_id": "s-1",
        "extension_id": "e-1",
        "duration_minutes": 30,
        "price": 25000,
        "timeout_seconds": 10,
        "action": "open_extension",
    },
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeFcm]:
    server = FakeFcm().start()
    yield server
    server.stop()


@pytest.fixture
def app(fake: FakeFcm) -> Iterator[Any]:
    fake.requests.clear()
    fake.script.clear()
    app = firebase_app(fake, f"fcm-test-{uuid.uuid4().hex}")
    yield app
    firebase_admin.delete_app(app)


def sender(app: Any, fake: FakeFcm, tokens: MemoryDeviceTokens) -> FcmPushSender:
    return FcmPushSender(app, tokens, endpoint=fake.url)


def tokens_for(*tokens: str) -> MemoryDeviceTokens:
    return MemoryDeviceTokens({(Participant.MITRA, "m-1"): list(tokens)})


async def test_the_wire_carries_the_seed_push(app: Any, fake: FakeFcm) -> None:
    await sender(app, fake, tokens_for("tok-a")).send(Participant.MITRA, "m-1", REQUEST_PUSH)

    [sent] = fake.sends()
    assert sent.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    message = sent.body["message"]
    assert message["token"] == "tok-a"
    assert message["notification"] == {
        "title": "Permintaan Perpanjang",
        "body": "Sari mau lanjut +30 menit",
    }
    assert message["data"] == {
        "type": "extension_request",
        "session_id": "s-1",
        "extension_id": "e-1",
        "duration_minutes": "30",
        "price": "25000",
        "timeout_seconds": "10",
        "action": "open_extension",
    }
    assert all(isinstance(v, str) for v in message["data"].values())
    assert message["android"]["priority"] == "high"
    aps = message["apns"]["payload"]["aps"]
    assert aps["alert"] == {"title": "Permintaan Perpanjang", "body": "Sari mau lanjut +30 menit"}
    assert message["apns"]["headers"]["apns-priority"] == "10"


async def test_every_device_of_the_user_gets_it(app: Any, fake: FakeFcm) -> None:
    await sender(app, fake, tokens_for("tok-a", "tok-b")).send(
        Participant.MITRA, "m-1", REQUEST_PUSH
    )
    assert sorted(r.body["message"]["token"] for r in fake.sends()) == ["tok-a", "tok-b"]


async def test_unregistered_token_is_removed_and_not_retried(app: Any, fake: FakeFcm) -> None:
    tokens = tokens_for("dead")
    fake.fail("dead", UNREGISTERED)
    with pytest.raises(DeliveryError) as caught:
        await sender(app, fake, tokens).send(Participant.MITRA, "m-1", REQUEST_PUSH)
    assert caught.value.retryable is False
    assert await tokens.tokens(Participant.MITRA, "m-1") == []
    assert len(fake.sends()) == 1


async def test_invalid_token_is_removed(app: Any, fake: FakeFcm) -> None:
    tokens = tokens_for("garbled")
    fake.fail("garbled", INVALID_TOKEN)
    with pytest.raises(DeliveryError) as caught:
        await sender(app, fake, tokens).send(Participant.MITRA, "m-1", REQUEST_PUSH)
    assert caught.value.retryable is False
    assert await tokens.tokens(Participant.MITRA, "m-1") == []


async def test_a_dead_token_beside_a_live_one_is_a_success(app: Any, fake: FakeFcm) -> None:
    tokens = tokens_for("dead", "live")
    fake.fail("dead", UNREGISTERED)
    await sender(app, fake, tokens).send(Participant.MITRA, "m-1", REQUEST_PUSH)
    assert await tokens.tokens(Participant.MITRA, "m-1") == ["live"]


async def test_quota_exceeded_is_retryable_and_keeps_the_token(app: Any, fake: FakeFcm) -> None:
    tokens = tokens_for("busy")
    fake.fail("busy", QUOTA_EXCEEDED)
    with pytest.raises(DeliveryError) as caught:
        await sender(app, fake, tokens).send(Participant.MITRA, "m-1", REQUEST_PUSH)
    assert caught.value.retryable is True
    assert await tokens.tokens(Participant.MITRA, "m-1") == ["busy"]
    # the outbox's retry then goes through
    await sender(app, fake, tokens).send(Participant.MITRA, "m-1", REQUEST_PUSH)
    assert len(fake.sends()) == 2


async def test_unavailable_is_retryable_after_the_sdk_own_retries(app: Any, fake: FakeFcm) -> None:
    tokens = tokens_for("down")
    fake.fail("down", *([UNAVAILABLE] * 5))
    with pytest.raises(DeliveryError) as caught:
        await sender(app, fake, tokens).send(Participant.MITRA, "m-1", REQUEST_PUSH)
    assert caught.value.retryable is True
    # firebase_admin's transport retried the 503 itself (1 + 4) before giving up
    assert len(fake.sends()) == 5
    assert await tokens.tokens(Participant.MITRA, "m-1") == ["down"]


async def test_a_provider_that_does_not_answer_is_a_retryable_failure(
    app: Any, fake: FakeFcm
) -> None:
    """The SDK's own HTTP timeout is 120 s (the issue saw one push go out 4 times
    because the outbox lease ran out first); the adapter gives up after its own
    timeout, below the outbox's per-call timeout, and the row is retried."""
    tokens = tokens_for("silent")
    fake.hanging.add("silent")
    try:
        with pytest.raises(DeliveryError) as caught:
            await FcmPushSender(app, tokens, endpoint=fake.url, timeout=0.5).send(
                Participant.MITRA, "m-1", REQUEST_PUSH
            )
        assert caught.value.retryable is True
        assert "did not answer" in str(caught.value)
        assert await tokens.tokens(Participant.MITRA, "m-1") == ["silent"]
    finally:
        fake.hanging.clear()
        fake.release.set()


def test_the_timeout_must_be_positive(app: Any, fake: FakeFcm) -> None:
    with pytest.raises(ValueError, match="timeout"):
        FcmPushSender(app, tokens_for("t"), endpoint=fake.url, timeout=0)


async def test_no_device_token_is_a_final_failure(app: Any, fake: FakeFcm) -> None:
    with pytest.raises(DeliveryError) as caught:
        await sender(app, fake, tokens_for()).send(Participant.MITRA, "m-1", REQUEST_PUSH)
    assert caught.value.retryable is False
    assert fake.sends() == []


def test_data_values_become_strings() -> None:
    assert fcm_data({"a": "x", "b": True, "c": 3, "d": None, "e": 1.5, "f": [1]}) == {
        "a": "x",
        "b": "true",
        "c": "3",
        "d": "",
        "e": "1.5",
        "f": "[1]",
    }
