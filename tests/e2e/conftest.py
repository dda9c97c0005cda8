"""The example app, live, with a local FCM server and tokens for each party."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from examples.fastapi_app.app import create_app
from examples.fastapi_app.auth import mint_token
from examples.fastapi_app.settings import Settings
from extension_fsm import Participant, PaymentSession, PaymentStatus, Session, SessionStatus
from tests.e2e.live import LiveServer
from tests.fakes.fcm_server import FakeFcm, service_account_info

SECRET = "e2e-secret-" + "x" * 40


@dataclass
class Party:
    """A seeded session: its ids and each side's token."""

    session_id: str
    customer_id: str
    mitra_id: str
    payment_id: str
    customer: str
    mitra: str


@pytest.fixture(scope="module")
def fcm() -> Iterator[FakeFcm]:
    server = FakeFcm().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def live(fcm: FakeFcm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    creds = Path(tmp_path_factory.mktemp("fcm")) / "service-account.json"
    creds.write_text(json.dumps(service_account_info(fcm)))
    settings = Settings(
        jwt_secret=SECRET,
        fcm_credentials_file=str(creds),
        fcm_endpoint=fcm.url,
        timeout_seconds=30,
        sweep_interval=0.2,
    )
    server = LiveServer(create_app(settings)).start()
    yield server
    server.stop()


_counter = iter(range(1_000_000))


def seed_party(live: LiveServer, *, amount: int = 25000) -> Party:
    """A fresh active session with a confirmed extension payment."""
    n = next(_counter)
    party = Party(
        f"s-{n}",
        f"c-{n}",
        f"m-{n}",
        f"p-{n}",
        mint_token(Participant.CUSTOMER, f"c-{n}", SECRET),
        mint_token(Participant.MITRA, f"m-{n}", SECRET),
    )
    store = live.runtime.store
    expires = datetime.now(UTC) + timedelta(minutes=30)
    live.call(
        store.seed_session(
            Session(
                party.session_id,
                party.customer_id,
                party.mitra_id,
                SessionStatus.ACTIVE,
                expires,
                "Sari",
            )
        )
    )
    live.call(
        store.seed_payment(
            PaymentSession(party.payment_id, party.customer_id, PaymentStatus.CONFIRMED, amount)
        )
    )
    return party


@pytest.fixture
def party(live: LiveServer) -> Party:
    return seed_party(live)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
