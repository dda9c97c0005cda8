"""Bounded inputs over real HTTP (uvicorn on loopback).

A request with a body and no valid token is 401 before any of the body is
read; one whose body is over ``EXTENSION_FSM_MAX_BODY_BYTES`` is 413 before it
is read (or, without a length, as soon as it passes the limit).  The proof that
nothing was read: the client announces 100 MB, sends one kilobyte and gets its
answer anyway (a server reading the body would wait for the rest).  Sockets
per user are capped: one more is closed with 4429.  OpenAPI documents the 400
FastAPI answers to a body it cannot decode, on every route with a body.
"""

from __future__ import annotations

import json
import socket
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from examples.fastapi_app.app import TOO_MANY_SOCKETS_CLOSE
from examples.fastapi_app.limits import SocketSlots
from examples.fastapi_app.settings import Settings
from extension_fsm import Participant
from tests.e2e.live import LiveServer
from tests.e2e.parties import Party, auth
from tests.fakes.waiting import eventually

ANNOUNCED = 100 * 1024 * 1024
LIMIT = Settings(jwt_secret="x" * 32).max_body_bytes  # the documented default


def _raw(live: LiveServer, head: list[str], body: bytes) -> tuple[int, dict[str, Any]]:
    """Send ``head`` and ``body`` (however much the head announces) and read the
    answer: status and JSON body.  Bounded: 20 s for the answer."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=20) as conn:
        conn.sendall(("\r\n".join([*head, f"Host: 127.0.0.1:{live.port}", "", ""])).encode())
        conn.sendall(body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            assert chunk, f"closed without an answer: {data!r}"
            data += chunk
        header, _, rest = data.partition(b"\r\n\r\n")
        lines = header.decode().split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(fields.get("content-length", "0"))
        while len(rest) < length:
            chunk = conn.recv(65536)
            assert chunk, "closed mid-answer"
            rest += chunk
    return status, json.loads(rest[:length]) if length else {}


def _post(path: str, *extra: str) -> list[str]:
    return [f"POST {path} HTTP/1.1", "Content-Type: application/json", *extra]


@pytest.mark.parametrize("token", [None, "not.a.token"])
def test_bounded_inputs_no_valid_token_is_401_before_the_body_is_read(
    live: LiveServer, party: Party, token: str | None
) -> None:
    authz = [f"Authorization: Bearer {token}"] if token else []
    path = f"/chat/{party.session_id}/extensions"
    status, body = _raw(live, _post(path, f"Content-Length: {ANNOUNCED}", *authz), b" " * 1024)
    assert status == 401 and body["code"] == "UNAUTHORIZED"
    # without a length (chunked): the same, nothing read either
    status, body = _raw(
        live, _post(path, "Transfer-Encoding: chunked", *authz), b"400\r\n" + b" " * 1024
    )
    assert status == 401 and body["code"] == "UNAUTHORIZED"


def test_bounded_inputs_an_announced_body_over_the_limit_is_413_unread(
    live: LiveServer, party: Party
) -> None:
    head = _post(
        f"/chat/{party.session_id}/extensions/e-x/respond",
        f"Content-Length: {ANNOUNCED}",
        f"Authorization: Bearer {party.mitra}",
    )
    status, body = _raw(live, head, b" " * 1024)
    assert status == 413 and body["code"] == "PAYLOAD_TOO_LARGE"
    assert str(LIMIT) in body["message"]


def test_bounded_inputs_a_chunked_body_is_cut_at_the_limit(live: LiveServer, party: Party) -> None:
    head = _post(
        "/devices/me", "Transfer-Encoding: chunked", f"Authorization: Bearer {party.mitra}"
    )
    head[0] = "PUT /devices/me HTTP/1.1"
    chunk = b"1000\r\n" + b" " * 4096 + b"\r\n"  # 4 KiB chunks, never a last one
    status, body = _raw(live, head, chunk * (LIMIT // 4096 + 2))
    assert status == 413 and body["code"] == "PAYLOAD_TOO_LARGE"


def test_bounded_inputs_a_body_at_the_limit_reaches_the_route(
    live: LiveServer, party: Party
) -> None:
    """The limit is what the docs say: a body of exactly that size is read and
    answered by the route (here: registered), one byte more is not."""
    doc = json.dumps({"token": "fcm-token"}).encode()
    at_limit = doc + b" " * (LIMIT - len(doc))
    with httpx.Client(base_url=live.url, timeout=20) as http:
        headers = {**auth(party.customer), "Content-Type": "application/json"}
        assert http.put("/devices/me", content=at_limit, headers=headers).status_code == 204
        over = http.put("/devices/me", content=at_limit + b" ", headers=headers)
    assert over.status_code == 413 and over.json()["code"] == "PAYLOAD_TOO_LARGE"


def test_bounded_inputs_openapi_documents_the_undecodable_body_400(
    live: LiveServer, party: Party
) -> None:
    undecodable = b'{"accepted": "\xff"}'  # not UTF-8: FastAPI cannot even parse it
    with httpx.Client(base_url=live.url, timeout=20) as http:
        paths = http.get("/openapi.json").json()["paths"]
        for path, method in (
            ("/chat/{session_id}/extensions/{extension_id}/respond", "post"),
            ("/devices/me", "put"),
            ("/chat/{session_id}/extensions", "post"),
        ):
            documented = paths[path][method]["responses"]
            assert "There was an error parsing the body" in documented["400"]["description"]
            assert "413" in documented
        headers = {**auth(party.mitra), "Content-Type": "application/json"}
        for url, send in (
            (f"/chat/{party.session_id}/extensions/e-x/respond", http.post),
            ("/devices/me", http.put),
        ):
            r = send(url, content=undecodable, headers=headers)
            assert r.status_code == 400, r.text
            assert r.json() == {
                "code": "BAD_REQUEST",
                "message": "There was an error parsing the body",
            }


async def _held(slots: SocketSlots, party: Party, n: int) -> bool:
    return slots.held(Participant.MITRA, party.mitra_id) == n


async def _closed_with(ws: ClientConnection) -> int | None:
    try:
        await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    return None


@pytest.mark.timeout(120)
async def test_bounded_inputs_sockets_per_user_are_capped_with_4429(
    live: LiveServer, party: Party
) -> None:
    cap = live.runtime.settings.max_sockets_per_user
    url = f"{live.ws_url}/ws/chat/{party.session_id}"
    async with AsyncExitStack() as stack:
        held = [
            await stack.enter_async_context(
                connect(url, additional_headers=auth(party.mitra), open_timeout=20)
            )
            for _ in range(cap)
        ]
        for ws in held:
            await ws.send("ping")  # each one open and served
        async with connect(url, additional_headers=auth(party.mitra), open_timeout=20) as extra:
            assert await _closed_with(extra) == TOO_MANY_SOCKETS_CLOSE
        # the customer of the same session has slots of their own
        async with connect(url, additional_headers=auth(party.customer), open_timeout=20) as ws:
            await ws.send("ping")
        slots = live.runtime.socket_slots
        assert slots.held(Participant.MITRA, party.mitra_id) == cap  # the extra took none
        await held[0].close()
        await eventually(lambda: _held(slots, party, cap - 1))
        # a closed socket gives its slot back: one more takes it and is served
        async with connect(url, additional_headers=auth(party.mitra), open_timeout=20) as again:
            await eventually(lambda: _held(slots, party, cap))
            await again.send("ping")
