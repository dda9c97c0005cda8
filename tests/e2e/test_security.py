"""The example refuses what it must: no or forged tokens (401), the wrong
party (403), unauthenticated sockets; generated bodies never get a 5xx, and a
refused request writes no row."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.e2e.live import LiveServer
from tests.e2e.parties import SECRET, Party, auth, seed_party


def rows(live: LiveServer) -> tuple[Any, ...]:
    """Every row, without the outbox's delivery bookkeeping (the dispatcher moves
    that, in the background)."""
    d = live.call(live.runtime.store.dump())
    outbox = [(m.id, m.kind, m.dedupe_key, m.payload) for m, _ in d.outbox]
    return (d.sessions, d.payments, d.extensions, d.ledger, d.log, outbox)


def forged(role: str, user_id: str) -> list[str]:
    now = int(time.time())
    claims = {"sub": user_id, "role": role, "exp": now + 600}
    return [
        jwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256"),
        jwt.encode(claims, None, algorithm="none"),
        jwt.encode({**claims, "exp": now - 10}, SECRET, algorithm="HS256"),
        jwt.encode({**claims, "role": "admin"}, SECRET, algorithm="HS256"),
        jwt.encode({"role": role, "exp": now + 600}, SECRET, algorithm="HS256"),  # no sub
        "not.a.token",
    ]


def routes(party: Party) -> list[tuple[str, str, dict[str, Any] | None]]:
    s = party.session_id
    return [
        (
            "POST",
            f"/chat/{s}/extensions",
            {
                "duration_minutes": 30,
                "price": 25000,
                "extension_payment_session_id": party.payment_id,
            },
        ),
        ("POST", f"/chat/{s}/extensions/e-x/respond", {"accepted": True}),
        ("GET", f"/chat/{s}/info", None),
        ("PUT", "/devices/me", {"token": "t"}),
    ]


def test_no_or_forged_token_is_401_and_writes_nothing(live: LiveServer, party: Party) -> None:
    before = rows(live)
    with httpx.Client(base_url=live.url) as http:
        for method, path, body in routes(party):
            r = http.request(method, path, json=body)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["code"] == "UNAUTHORIZED"
            assert r.headers["www-authenticate"] == "Bearer"
            for token in forged("customer", party.customer_id):
                r = http.request(method, path, json=body, headers=auth(token))
                assert r.status_code == 401, (path, token, r.text)
    assert rows(live) == before


def test_wrong_party_is_403_and_writes_nothing(live: LiveServer, party: Party) -> None:
    other = seed_party(live)
    with httpx.Client(base_url=live.url) as http:
        created = http.post(
            f"/chat/{party.session_id}/extensions",
            json={
                "duration_minutes": 30,
                "price": 25000,
                "extension_payment_session_id": party.payment_id,
            },
            headers=auth(party.customer),
        )
        assert created.status_code == 201
        ext = created.json()["id"]
        before = rows(live)
        respond = f"/chat/{party.session_id}/extensions/{ext}/respond"
        # the customer answering as if mitra
        r = http.post(respond, json={"accepted": True}, headers=auth(party.customer))
        assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
        # the mitra of another session
        r = http.post(respond, json={"accepted": True}, headers=auth(other.mitra))
        assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
        # a mitra asking for an extension
        r = http.post(
            f"/chat/{party.session_id}/extensions",
            json={"duration_minutes": 30, "price": 25000},
            headers=auth(party.mitra),
        )
        assert r.status_code == 403
        # another session's customer paying with this customer's payment: told
        # what a payment that does not exist is told (its existence is not said)
        r = http.post(
            f"/chat/{other.session_id}/extensions",
            json={
                "duration_minutes": 30,
                "price": 25000,
                "extension_payment_session_id": party.payment_id,
            },
            headers=auth(other.customer),
        )
        assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
        # reading another session's info
        r = http.get(f"/chat/{party.session_id}/info", headers=auth(other.mitra))
        assert r.status_code == 404
        assert rows(live) == before
        # the extension is still pending, for its own mitra to answer
        r = http.post(respond, json={"accepted": False}, headers=auth(party.mitra))
        assert r.status_code == 200 and r.json()["status"] == "rejected"


@pytest.mark.parametrize("how", ["none", "forged", "other-session", "header-ok"])
async def test_websocket_needs_a_valid_token_of_a_participant(
    live: LiveServer, party: Party, how: str
) -> None:
    other = seed_party(live)
    assert (other.session_id, other.mitra_id) != (party.session_id, party.mitra_id)
    base = f"{live.ws_url}/ws/chat/{party.session_id}"
    if how == "header-ok":
        async with connect(base, additional_headers=auth(party.mitra)) as ws:
            await ws.send("ping")  # accepted: the header carries the token
        return
    url = {
        "none": base,
        "forged": f"{base}?token={forged('mitra', party.mitra_id)[0]}",
        "other-session": f"{base}?token={other.mitra}",
    }[how]
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    assert refused.value.response.status_code == 403


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
request_bodies = st.fixed_dictionaries(
    {},
    optional={
        "duration_minutes": json_values | st.integers(-(2**40), 2**40),
        "price": json_values | st.integers(-(2**40), 2**40),
        "extension_payment_session_id": json_values | st.sampled_from(["own", "p-0"]),
        "accepted": json_values,
        "token": json_values,
        "extra": json_values,
    },
)
bodies = request_bodies | json_values
path_ids = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#%"),
    min_size=1,
    max_size=30,
)


@pytest.fixture(scope="module")
def fuzz_party(live: LiveServer) -> Party:
    return seed_party(live)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    route=st.sampled_from(["request", "respond", "info", "device"]),
    body=bodies,
    session=st.one_of(st.just("own"), path_ids),
    extension=path_ids,
    caller=st.sampled_from(["customer", "mitra", "none", "forged"]),
)
def test_generated_requests_never_5xx_and_refusals_write_nothing(
    live: LiveServer,
    fuzz_party: Party,
    route: str,
    body: Any,
    session: str,
    extension: str,
    caller: str,
) -> None:
    party = fuzz_party
    sid = party.session_id if session == "own" else quote(session, safe="")
    extension = quote(extension, safe="")
    if isinstance(body, dict) and body.get("extension_payment_session_id") == "own":
        body = {**body, "extension_payment_session_id": party.payment_id}  # the party's own
    token = {
        "customer": party.customer,
        "mitra": party.mitra,
        "forged": forged("customer", party.customer_id)[0],
        "none": None,
    }[caller]
    method, path = {
        "request": ("POST", f"/chat/{sid}/extensions"),
        "respond": ("POST", f"/chat/{sid}/extensions/{extension}/respond"),
        "info": ("GET", f"/chat/{sid}/info"),
        "device": ("PUT", "/devices/me"),
    }[route]
    before = rows(live)
    with httpx.Client(base_url=live.url) as http:
        r = http.request(method, path, json=body, headers=auth(token) if token else {})
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert set(r.json()) == {"code", "message"}
        assert rows(live) == before
