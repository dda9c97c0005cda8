"""The example's HTTP layer is as strict as the library: integers are JSON
integers and booleans JSON booleans, ids are strings a database can hold,
every error body is ``{code, message}`` (401 texts are ours), OpenAPI
declares every status a route answers with, and device tokens are bounded
per user."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest

from examples.fastapi_app.models import MAX_DEVICE_TOKENS
from extension_fsm import Participant
from tests.e2e.live import LiveServer
from tests.e2e.parties import SECRET, Party, auth, seed_party

# A float holding a whole number (15.0, 1e3) is a whole number: the Node service
# took it (tests/e2e/test_node_bodies.py).
NOT_INTEGERS: list[Any] = [True, False, "15", 15.5, 30.25, 1e-3, "15_000", "1e3", None, [30], {}]
NOT_BOOLEANS: list[Any] = [1, 0, "true", "false", None, 1.0, [True]]
BAD_IDS = ["p\x00", "\x00", "x" * 65]


def rows(live: LiveServer) -> tuple[Any, ...]:
    """Every row a call could write; outbox rows by identity only (their delivery
    attempts move on in the background, which is not a write of the call)."""
    d = live.call(live.runtime.store.dump())
    outbox = [(m.id, m.kind, m.dedupe_key) for m, _ in d.outbox]
    return (d.sessions, d.payments, d.extensions, d.ledger, d.log, outbox)


def is_error(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "message"}, body
    assert isinstance(body["message"], str) and body["message"]
    if code is not None:
        assert body["code"] == code, body


def request_body(party: Party, **changes: Any) -> dict[str, Any]:
    body = {
        "duration_minutes": 30,
        "price": 25000,
        "extension_payment_session_id": party.payment_id,
    }
    body.update(changes)
    return body


@pytest.fixture
def http(live: LiveServer) -> Any:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client


def test_integers_must_be_json_integers(live: LiveServer, http: httpx.Client) -> None:
    party = seed_party(live)
    before = rows(live)
    url = f"/chat/{party.session_id}/extensions"
    for field in ("duration_minutes", "price"):
        for value in NOT_INTEGERS:
            r = http.post(
                url, json=request_body(party, **{field: value}), headers=auth(party.customer)
            )
            is_error(r, 422, "VALIDATION_ERROR")
            assert field in r.json()["message"]
    assert rows(live) == before
    # A true integer passes (and is the library's to judge).
    r = http.post(url, json=request_body(party), headers=auth(party.customer))
    assert r.status_code == 201, r.text
    assert r.json()["duration_minutes"] == 30


def test_accepted_must_be_a_json_boolean(live: LiveServer, http: httpx.Client) -> None:
    party = seed_party(live)
    created = http.post(
        f"/chat/{party.session_id}/extensions",
        json=request_body(party),
        headers=auth(party.customer),
    )
    assert created.status_code == 201, created.text
    respond = f"/chat/{party.session_id}/extensions/{created.json()['id']}/respond"
    before = rows(live)
    for value in NOT_BOOLEANS:
        r = http.post(respond, json={"accepted": value}, headers=auth(party.mitra))
        is_error(r, 422, "VALIDATION_ERROR")
    assert rows(live) == before
    r = http.post(respond, json={"accepted": False}, headers=auth(party.mitra))
    assert r.status_code == 200 and r.json()["status"] == "rejected"


def test_ids_a_database_cannot_hold_are_422_and_write_nothing(
    live: LiveServer, http: httpx.Client
) -> None:
    party = seed_party(live)
    before = rows(live)
    s = party.session_id
    for bad in BAD_IDS:
        r = http.post(
            f"/chat/{s}/extensions",
            json=request_body(party, extension_payment_session_id=bad),
            headers=auth(party.customer),
        )
        is_error(r, 422, "VALIDATION_ERROR")
        p = quote(bad, safe="")
        for method, path, body, token in [
            ("POST", f"/chat/{p}/extensions", request_body(party), party.customer),
            ("POST", f"/chat/{p}/extensions/e-1/respond", {"accepted": True}, party.mitra),
            ("POST", f"/chat/{s}/extensions/{p}/respond", {"accepted": True}, party.mitra),
            ("GET", f"/chat/{p}/info", None, party.customer),
        ]:
            r = http.request(method, path, json=body, headers=auth(token))
            is_error(r, 422, "VALIDATION_ERROR")
    assert rows(live) == before


def test_every_error_body_is_code_and_message(live: LiveServer, http: httpx.Client) -> None:
    party = seed_party(live)
    is_error(http.get("/no/such/route"), 404, "NOT_FOUND")
    r = http.get("/devices/me", headers=auth(party.customer))
    is_error(r, 405, "METHOD_NOT_ALLOWED")
    assert r.headers["allow"] == "PUT"
    is_error(http.delete(f"/chat/{party.session_id}/info"), 405, "METHOD_NOT_ALLOWED")
    r = http.post(
        f"/chat/{party.session_id}/extensions",
        content=b"{not json",
        headers={**auth(party.customer), "content-type": "application/json"},
    )
    is_error(r, 422, "VALIDATION_ERROR")
    r = http.put(
        "/devices/me",
        content=b'{"\\ud800": 1}',  # a lone surrogate as a key: still a JSON body
        headers={**auth(party.customer), "content-type": "application/json"},
    )
    is_error(r, 422, "VALIDATION_ERROR")


def our_401_texts() -> set[str]:
    return {
        "missing bearer token",
        "invalid token",
        "token expired",
        "invalid token: unknown role",
        "invalid token: no subject",
    }


def test_401_messages_are_ours(live: LiveServer, http: httpx.Client) -> None:
    party = seed_party(live)
    now = int(time.time())
    claims = {"sub": party.customer_id, "role": "customer", "exp": now + 600}
    tokens = [
        jwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256"),
        jwt.encode(claims, None, algorithm="none"),
        jwt.encode({**claims, "exp": now - 10}, SECRET, algorithm="HS256"),
        jwt.encode({**claims, "role": "admin"}, SECRET, algorithm="HS256"),
        jwt.encode({"role": "customer", "exp": now + 600}, SECRET, algorithm="HS256"),
        jwt.encode({"sub": "c", "role": "customer"}, SECRET, algorithm="HS256"),  # no exp
        jwt.encode(claims, SECRET + "z" * 20, algorithm="HS512"),  # another algorithm
        "not.a.token",
        "x" * 5000,
    ]
    seen = set()
    for token in [None, *tokens]:
        r = http.get(f"/chat/{party.session_id}/info", headers=auth(token) if token else {})
        is_error(r, 401, "UNAUTHORIZED")
        assert r.headers["www-authenticate"] == "Bearer"
        seen.add(r.json()["message"])
    assert seen <= our_401_texts(), seen - our_401_texts()
    assert {"missing bearer token", "invalid token", "token expired"} <= seen


def test_device_tokens_are_bounded_per_user(live: LiveServer, http: httpx.Client) -> None:
    party = seed_party(live)
    key = (Participant.MITRA, party.mitra_id)
    for n in range(3 * MAX_DEVICE_TOKENS):
        r = http.put("/devices/me", json={"token": f"tok-{n}"}, headers=auth(party.mitra))
        assert r.status_code == 204, r.text
    kept = live.runtime.device_tokens.by_user[key]
    assert kept == [f"tok-{n}" for n in range(2 * MAX_DEVICE_TOKENS, 3 * MAX_DEVICE_TOKENS)]
    # Registering a kept token again makes it the most recent, not a duplicate.
    oldest = kept[0]
    assert http.put("/devices/me", json={"token": oldest}, headers=auth(party.mitra)).is_success
    kept = live.runtime.device_tokens.by_user[key]
    assert len(kept) == MAX_DEVICE_TOKENS and kept[-1] == oldest and kept.count(oldest) == 1
    for token in ["", "t" * 4097, 5, None]:
        r = http.put("/devices/me", json={"token": token}, headers=auth(party.mitra))
        is_error(r, 422, "VALIDATION_ERROR")
    assert len(live.runtime.device_tokens.by_user[key]) == MAX_DEVICE_TOKENS


# ------------------------------------------------------------------- OpenAPI


def declared(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op["responses"]
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }


def test_openapi_declares_every_status_each_route_answers(
    live: LiveServer, http: httpx.Client
) -> None:
    spec = http.get("/openapi.json").json()
    routes = declared(spec)
    assert set(routes) == {
        ("POST", "/chat/{session_id}/extensions"),
        ("POST", "/chat/{session_id}/extensions/{extension_id}/respond"),
        ("GET", "/chat/{session_id}/info"),
        ("PUT", "/devices/me"),
    }
    for (method, path), responses in routes.items():
        for status, response in responses.items():
            if int(status) >= 400:  # every error is the one error body
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ErrorBody", (method, path, status)
    error_body = spec["components"]["schemas"]["ErrorBody"]
    assert set(error_body["required"]) == {"code", "message"}

    # Drive each route to every answer it can give and check each is declared.
    party, other = seed_party(live), seed_party(live)
    discount = seed_party(live)
    live.call(_flag_discount(live, discount.payment_id))
    s, req = party.session_id, "/chat/{session_id}/extensions"
    resp, info = req + "/{extension_id}/respond", "/chat/{session_id}/info"
    observed: dict[tuple[str, str], set[int]] = {}

    def hit(route: tuple[str, str], url: str, token: str | None, body: Any = None) -> Any:
        r = http.request(route[0], url, json=body, headers=auth(token) if token else {})
        observed.setdefault(route, set()).add(r.status_code)
        return r

    post_req, post_resp, get_info = ("POST", req), ("POST", resp), ("GET", info)
    created = hit(post_req, f"/chat/{s}/extensions", party.customer, request_body(party))
    ext = created.json()["id"]
    hit(post_req, f"/chat/{s}/extensions", party.customer, request_body(party))  # 409
    hit(post_req, f"/chat/{s}/extensions", None, request_body(party))  # 401
    hit(post_req, f"/chat/{s}/extensions", party.mitra, request_body(party))  # 403
    hit(post_req, f"/chat/{s}/extensions", party.customer, {"price": 1})  # 422
    hit(
        post_req,
        f"/chat/{other.session_id}/extensions",
        other.customer,
        request_body(other, extension_payment_session_id="p-none"),
    )  # 404
    hit(
        post_req,
        f"/chat/{discount.session_id}/extensions",
        discount.customer,
        request_body(discount),
    )  # 400
    url = f"/chat/{s}/extensions/{ext}/respond"
    hit(post_resp, url, None, {"accepted": True})  # 401
    hit(post_resp, url, party.customer, {"accepted": True})  # 403
    hit(post_resp, f"/chat/{s}/extensions/nope/respond", party.mitra, {"accepted": True})  # 409
    hit(post_resp, url, party.mitra, {"accepted": "yes"})  # 422
    hit(post_resp, url, party.mitra, {"accepted": True})  # 200
    hit(post_resp, url, party.mitra, {"accepted": True})  # 409
    hit(get_info, f"/chat/{s}/info", party.customer)  # 200
    hit(get_info, f"/chat/{s}/info", None)  # 401
    hit(get_info, f"/chat/{s}/info", other.mitra)  # 404
    hit(get_info, f"/chat/{'x' * 65}/info", party.customer)  # 422
    put_dev = ("PUT", "/devices/me")
    hit(put_dev, "/devices/me", party.mitra, {"token": "t"})  # 204
    hit(put_dev, "/devices/me", None, {"token": "t"})  # 401
    hit(put_dev, "/devices/me", party.mitra, {"token": 1})  # 422
    assert observed[post_req] >= {201, 400, 401, 403, 404, 409, 422}
    assert observed[post_resp] >= {200, 401, 403, 409, 422}
    for route, statuses in observed.items():
        assert {str(x) for x in statuses} <= set(routes[route]), (route, statuses)
    # What the database answers when it is away (tests/e2e/test_db_trouble.py).
    for route in (post_req, post_resp, get_info):
        assert {"500", "503"} <= set(routes[route]), route


async def _flag_discount(live: LiveServer, payment_id: str) -> None:
    from dataclasses import replace

    store = live.runtime.store
    (payment,) = (await store.dump(session_ids=(), payment_ids=[payment_id])).payments
    await store.seed_payment(replace(payment, is_first_session_discount=True))
