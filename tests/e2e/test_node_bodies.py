"""A client written for the Node service keeps working against the example
app over real HTTP: its request body's field names (``requested_duration_minutes``,
``requested_price``, ``payment_session_id``) are taken next to ours, and a
whole number written as a float (``15000.0``, as JavaScript may send it) is
taken as the Node service took it.  One field under both of its names, or a
fraction, is a 422 that writes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.live import LiveServer
from tests.e2e.parties import Party, auth, seed_party


def _rows(live: LiveServer) -> tuple[Any, ...]:
    d = live.call(live.runtime.store.dump())
    return (d.sessions, d.payments, d.extensions, d.ledger)


@pytest.fixture
def http(live: LiveServer) -> Any:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client


def _node_body(party: Party, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "requested_duration_minutes": 30,
        "requested_price": 25000,
        "payment_session_id": party.payment_id,
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    "body",
    [
        {"requested_duration_minutes": 30, "requested_price": 25000},
        {"requested_duration_minutes": 30.0, "requested_price": 25000.0},
        {"duration_minutes": 30, "requested_price": 25000},
        {"duration_minutes": 30.0, "price": 25000.0},
    ],
    ids=["node-names", "node-names-floats", "mixed", "our-names-floats"],
)
def test_a_node_service_client_body_is_taken(
    live: LiveServer, http: httpx.Client, body: dict[str, Any]
) -> None:
    party = seed_party(live)
    key = "payment_session_id" if "requested_price" in body else "extension_payment_session_id"
    r = http.post(
        f"/chat/{party.session_id}/extensions",
        json={**body, key: party.payment_id},
        headers=auth(party.customer),
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert (created["duration_minutes"], created["price"]) == (30, 25000)
    assert created["payment_session_id"] == party.payment_id
    (ext,) = [e for e in live.call(live.runtime.store.dump()).extensions if e.id == created["id"]]
    assert (ext.duration_minutes, ext.price) == (30, 25000)
    assert type(ext.price) is int and type(ext.duration_minutes) is int


@pytest.mark.parametrize(
    "changes",
    [
        {"duration_minutes": 30},  # both names of one field
        {"price": 25000},
        {"extension_payment_session_id": "p-other"},
        {"requested_price": 25000.5},  # a fraction
        {"requested_duration_minutes": "30"},
        {"requested_duration_minutes": True},
    ],
)
def test_a_node_body_that_is_ambiguous_or_not_whole_is_422(
    live: LiveServer, http: httpx.Client, changes: dict[str, Any]
) -> None:
    party = seed_party(live)
    before = _rows(live)
    r = http.post(
        f"/chat/{party.session_id}/extensions",
        json=_node_body(party, **changes),
        headers=auth(party.customer),
    )
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "VALIDATION_ERROR"
    assert _rows(live) == before
