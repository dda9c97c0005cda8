"""The example as a person follows ``docs/example.md`` by hand: the route
table's request body is one the dev seed accepts, the seed has several
payments and a 60 s answer window, and a setup without push says so once at
start-up and reports no failure after a good flow.  (Settings, the dev
answer window and a bad setting under uvicorn: ``tests/e2e/test_settings.py``.)"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.fastapi_app.app import create_app
from examples.fastapi_app.auth import mint_token
from examples.fastapi_app.dev import DEMO_AMOUNT, DEMO_PAYMENTS
from examples.fastapi_app.settings import Settings
from extension_fsm import Participant
from tests.e2e.live import LiveServer
from tests.fakes.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
SECRET = "dev-secret-" + "x" * 32
PAGE = ROOT / "docs" / "example.md"


def _documented_request_body() -> dict[str, Any]:
    row = next(
        line
        for line in PAGE.read_text().splitlines()
        if "`POST /chat/{session_id}/extensions`" in line
    )
    body = re.search(r"`(\{.*?\})`", row)
    assert body is not None, row
    return dict(json.loads(body.group(1)))


@dataclass
class DevServer:
    server: LiveServer
    printed: str  # what the app printed at start-up
    started: list[logging.LogRecord]  # what it logged at start-up


@pytest.fixture
def dev(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> Iterator[DevServer]:
    caplog.set_level(logging.INFO, logger="fastapi_app")
    env = {"EXTENSION_FSM_JWT_SECRET": SECRET, "EXTENSION_FSM_DEV_SEED": "1"}
    settings = Settings.from_env(
        {**env, "EXTENSION_FSM_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}"}
    )
    server = LiveServer(create_app(settings)).start()
    yield DevServer(server, capsys.readouterr().out, list(caplog.records))
    server.stop()


def _post(server: LiveServer, path: str, who: Participant, user: str, body: Any) -> httpx.Response:
    token = mint_token(who, user, SECRET)
    return httpx.post(
        f"{server.url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_the_documented_body_is_the_dev_seeds() -> None:
    body = _documented_request_body()
    assert body["extension_payment_session_id"] in DEMO_PAYMENTS
    assert body["price"] == DEMO_AMOUNT
    assert len(DEMO_PAYMENTS) > 1


def test_a_good_flow_by_hand_leaves_no_failure_without_push(
    dev: DevServer, caplog: pytest.LogCaptureFixture
) -> None:
    dev_server, printed = dev.server, dev.printed
    assert f"payments {', '.join(DEMO_PAYMENTS)} ({DEMO_AMOUNT} each)" in printed
    assert "the mitra then has 60 s to answer" in printed
    notices = [r for r in dev.started if "push is not configured" in r.getMessage()]
    assert len(notices) == 1 and notices[0].levelno == logging.WARNING

    made = _post(
        dev_server,
        "/chat/s-demo/extensions",
        Participant.CUSTOMER,
        "c-demo",
        _documented_request_body(),
    )
    assert made.status_code == 201, made.text
    ext = made.json()
    assert ext["status"] == "pending" and ext["price"] == DEMO_AMOUNT
    answered = _post(
        dev_server,
        f"/chat/s-demo/extensions/{ext['id']}/respond",
        Participant.MITRA,
        "m-demo",
        {"accepted": True},
    )
    assert answered.status_code == 200 and answered.json()["status"] == "accepted"
    again = {**_documented_request_body(), "extension_payment_session_id": DEMO_PAYMENTS[1]}
    second = _post(dev_server, "/chat/s-demo/extensions", Participant.CUSTOMER, "c-demo", again)
    assert second.status_code == 201, second.text  # another seeded payment pays for another

    async def settled() -> bool:
        health = await asyncio.to_thread(httpx.get, f"{dev_server.url}/healthz", timeout=30)
        outbox = health.json()["checks"]["database"]["outbox"]
        return bool(health.status_code == 200 and outbox["waiting"] == outbox["retrying"] == 0)

    asyncio.run(eventually(settled, within=60))
    health = httpx.get(f"{dev_server.url}/healthz", timeout=30).json()
    assert health["ok"] is True and health["checks"]["database"]["outbox"]["dead"] == 0
    pushed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("push not sent")]
    assert any("m-demo: Permintaan Perpanjang" in m for m in pushed)
