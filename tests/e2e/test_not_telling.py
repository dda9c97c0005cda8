"""The example's answers never tell a caller whether someone else's session or
payment session exists (over real HTTP): another customer's session or payment
id gets exactly the answer (status, code, text) of an id that does not exist,
on every route; what ``docs/example.md`` says about it is what the app does."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.live import LiveServer
from tests.e2e.parties import Party, auth, seed_party

DOC = Path(__file__).resolve().parents[2] / "docs" / "example.md"


def _answer(r: httpx.Response) -> tuple[int, object]:
    return r.status_code, r.json()


def test_not_telling_another_customers_session_answers_as_a_missing_one(
    live: LiveServer, party: Party
) -> None:
    other = seed_party(live)
    body = {
        "duration_minutes": 30,
        "price": 25000,
        "extension_payment_session_id": party.payment_id,
    }
    with httpx.Client(base_url=live.url, timeout=20) as http:
        requests = [
            _answer(http.post(f"/chat/{sid}/extensions", json=body, headers=auth(party.customer)))
            for sid in (other.session_id, "s-does-not-exist")
        ]
        infos = [
            _answer(http.get(f"/chat/{sid}/info", headers=auth(party.customer)))
            for sid in (other.session_id, "s-does-not-exist")
        ]
        answers = [
            _answer(
                http.post(
                    f"/chat/{sid}/extensions/e-x/respond",
                    json={"accepted": True},
                    headers=auth(party.mitra),
                )
            )
            for sid in (other.session_id, "s-does-not-exist")
        ]
    assert (
        requests[0]
        == requests[1]
        == (
            409,
            {"code": "SESSION_NOT_ACTIVE", "message": "Session not found or already ended"},
        )
    )
    assert infos[0] == infos[1] == (404, {"code": "NOT_FOUND", "message": "Session not found"})
    assert answers[0] == answers[1] == (403, {"code": "FORBIDDEN", "message": "Session not found"})
    # and the page says so, code for code
    text = " ".join(DOC.read_text().split())
    assert "another customer's session is `409 SESSION_NOT_ACTIVE`" in text
    assert "`/info` on it is `404`" in text
    assert "an answer on it is `403 FORBIDDEN`" in text


def test_not_telling_another_customers_payment_answers_as_a_missing_one(
    live: LiveServer, party: Party
) -> None:
    other = seed_party(live)
    with httpx.Client(base_url=live.url, timeout=20) as http:
        answers = [
            _answer(
                http.post(
                    f"/chat/{party.session_id}/extensions",
                    json={
                        "duration_minutes": 30,
                        "price": 25000,
                        "extension_payment_session_id": payment_id,
                    },
                    headers=auth(party.customer),
                )
            )
            for payment_id in (other.payment_id, "p-does-not-exist")
        ]
    assert (
        answers[0]
        == answers[1]
        == (
            404,
            {"code": "NOT_FOUND", "message": "Payment session not found"},
        )
    )
    text = " ".join(DOC.read_text().split())
    assert "another customer's payment session is `404`" in text
