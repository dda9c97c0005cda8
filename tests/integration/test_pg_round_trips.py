"""Each decision call is at most two round trips on PostgreSQL, counted on the
wire: a loopback proxy in front of the server counts the client's simple
queries and syncs (``bench/pg_calls.py``), after an uncounted warm-up of the
same calls.  The joined read, then the one guarded write; no ``BEGIN``, no
``COMMIT``, no lock taken in a round trip of its own."""

from __future__ import annotations

import pytest

from bench.pg_calls import CALLS, DELIVERED, count_on

pytestmark = pytest.mark.postgres


@pytest.mark.timeout(120)
async def test_request_accept_reject_timeout_and_end_are_two_round_trips_each(
    pg_url: str,
) -> None:
    found = await count_on(pg_url)
    assert set(CALLS) <= set(found)
    for call in CALLS:
        counts = found[call]
        assert counts.round_trips <= 2, (call, counts)
        assert counts.round_trips >= 1, (call, counts)  # the proxy did see the call
        assert counts.connections == 0, (call, counts)  # the pool's connection, reused
    # with its outbox delivered the accept does more, but never less than the call
    assert found[DELIVERED].round_trips > found["accept"].round_trips
