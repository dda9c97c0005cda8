"""The kit's strategies draw rows a store accepts as they are, and scenarios
the simulator runs."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings

from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.model import PaymentSession, Session
from extension_fsm.simulator.scenario import Scenario
from extension_fsm.testing import check_invariants, payments, scenarios, sessions


@settings(max_examples=50)
@given(session=sessions(), payment=payments())
def test_drawn_rows_seed_and_read_back(session: Session, payment: PaymentSession) -> None:
    async def seeded() -> tuple[list[Session], list[PaymentSession]]:
        store = MemoryStore()
        await store.seed_session(session)
        await store.seed_payment(payment)
        dump = await store.dump()
        assert check_invariants(dump, now=session.expires_at) == []
        return list(dump.sessions), list(dump.payments)

    assert asyncio.run(seeded()) == ([session], [payment])


@settings(max_examples=20)
@given(scenario=scenarios())
def test_drawn_scenarios_parse(scenario: Scenario) -> None:
    assert isinstance(scenario, Scenario) and scenario.steps
