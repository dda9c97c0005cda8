"""The example end to end: uvicorn on loopback, real HTTP (httpx) and
WebSocket (websockets) clients, push at a local FCM server."""

from __future__ import annotations

import json
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from extension_fsm import Participant
from extension_fsm.adapters.websocket import SessionKey
from tests.e2e.live import LiveServer
from tests.e2e.parties import Party, auth
from tests.fakes.fcm_server import FakeFcm
from tests.fakes.waiting import eventually


async def open_socket(live: LiveServer, party: Party, role: Participant) -> ClientConnection:
    token = party.customer if role is Participant.CUSTOMER else party.mitra
    ws = await connect(f"{live.ws_url}/ws/chat/{party.session_id}?token={token}")

    async def registered() -> bool:
        return live.runtime.hub.holds(SessionKey(party.session_id, role))

    await eventually(registered)
    return ws


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.recv(decode=True))
    return frame


async def test_request_answered_over_sockets_and_http(live: LiveServer, party: Party) -> None:
    async with (
        await open_socket(live, party, Participant.CUSTOMER) as customer_ws,
        await open_socket(live, party, Participant.MITRA) as mitra_ws,
        httpx.AsyncClient(base_url=live.url) as http,
    ):
        created = await http.post(
            f"/chat/{party.session_id}/extensions",
            json={
                "duration_minutes": 30,
                "price": 25000,
                "extension_payment_session_id": party.payment_id,
            },
            headers=auth(party.customer),
        )
        assert created.status_code == 201, created.text
        extension_id = created.json()["id"]

        request = await next_frame(mitra_ws)
        assert request["type"] == "extension_request"
        assert request["extension_id"] == extension_id
        assert request["duration_minutes"] == 30 and request["price"] == 25000
        assert request["dedupe_key"]
        assert (await next_frame(customer_ws))["type"] == "session_paused"

        info = await http.get(f"/chat/{party.session_id}/info", headers=auth(party.mitra))
        assert info.status_code == 200
        assert info.json()["status"] == "extending"
        assert info.json()["pending_extension"]["extension_id"] == extension_id

        answered = await http.post(
            f"/chat/{party.session_id}/extensions/{extension_id}/respond",
            json={"accepted": True},
            headers=auth(party.mitra),
        )
        assert answered.status_code == 200, answered.text
        assert answered.json()["status"] == "accepted"

        response = await next_frame(customer_ws)
        assert response["type"] == "extension_response"
        assert response["accepted"] is True and response["duration_minutes"] == 30
        assert (await next_frame(customer_ws))["type"] == "session_resumed"
        assert (await next_frame(mitra_ws))["type"] == "session_resumed"

        again = await http.post(
            f"/chat/{party.session_id}/extensions/{extension_id}/respond",
            json={"accepted": False},
            headers=auth(party.mitra),
        )
        assert again.status_code == 409
        assert again.json() == {
            "code": "EXTENSION_RESOLVED",
            "message": again.json()["message"],
        }

        info = await http.get(f"/chat/{party.session_id}/info", headers=auth(party.customer))
        assert info.json()["status"] == "active"
        assert info.json()["pending_extension"] is None


async def test_a_mitra_without_a_socket_gets_a_push(
    live: LiveServer, party: Party, fcm: FakeFcm
) -> None:
    device = f"fcm-token-of-{party.mitra_id}"
    async with httpx.AsyncClient(base_url=live.url) as http:
        put = await http.put("/devices/me", json={"token": device}, headers=auth(party.mitra))
        assert put.status_code == 204
        created = await http.post(
            f"/chat/{party.session_id}/extensions",
            json={
                "duration_minutes": 15,
                "price": 25000,
                "extension_payment_session_id": party.payment_id,
            },
            headers=auth(party.customer),
        )
        assert created.status_code == 201, created.text

    def pushes() -> list[dict[str, Any]]:
        return [r.body["message"] for r in fcm.sends() if r.body["message"]["token"] == device]

    async def pushed() -> bool:
        return bool(pushes())

    await eventually(pushed)
    [message] = pushes()
    assert message["notification"] == {
        "title": "Permintaan Perpanjang",
        "body": "Sari mau lanjut +15 menit",
    }
    assert message["data"] == {
        "type": "extension_request",
        "session_id": party.session_id,
        "extension_id": created.json()["id"],
        "duration_minutes": "15",
        "price": "25000",
        "timeout_seconds": "30",
        "action": "open_extension",
    }
    assert message["android"]["priority"] == "high"
