"""Seeded parties for the end-to-end tests: a session, its payment and tokens.

A regular module, imported once as ``tests.e2e.parties``.  The helpers used to
live in ``conftest.py``, which pytest imports under its own name while the
tests imported it again as ``tests.e2e.conftest``: two copies, two id counters,
and a "fresh" party from one copy could be the very party of the fixture from
the other.  Ids are now random as well, so no two parties ever share one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from examples.fastapi_app.auth import mint_token
from extension_fsm import Participant, PaymentSession, PaymentStatus, Session, SessionStatus
from tests.e2e.live import LiveServer

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


def new_party() -> Party:
    """Fresh random ids for a session, its customer, mitra and payment, and tokens."""
    n = uuid.uuid4().hex[:12]
    return Party(
        f"s-{n}",
        f"c-{n}",
        f"m-{n}",
        f"p-{n}",
        mint_token(Participant.CUSTOMER, f"c-{n}", SECRET),
        mint_token(Participant.MITRA, f"m-{n}", SECRET),
    )


def party_rows(party: Party, *, amount: int = 25000) -> tuple[Session, PaymentSession]:
    """The party's rows: an active session for 30 more minutes, a confirmed payment."""
    expires = datetime.now(UTC) + timedelta(minutes=30)
    session = Session(
        party.session_id, party.customer_id, party.mitra_id, SessionStatus.ACTIVE, expires, "Sari"
    )
    payment = PaymentSession(party.payment_id, party.customer_id, PaymentStatus.CONFIRMED, amount)
    return session, payment


def seed_party(live: LiveServer, *, amount: int = 25000) -> Party:
    """A fresh active session with a confirmed extension payment, its own ids."""
    party = new_party()
    session, payment = party_rows(party, amount=amount)
    store = live.runtime.store
    live.call(store.seed_session(session))
    live.call(store.seed_payment(payment))
    return party


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
