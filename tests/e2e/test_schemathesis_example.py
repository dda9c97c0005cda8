"""schemathesis over the example's OpenAPI: generated requests with valid
tokens of each role (and the seeded session's ids half of the time, so the
routes get past "not found"), a bounded number of examples per operation.
No answer is a 5xx, every answer matches its declared status, content type
and body schema, and a refused request writes no row."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.live import LiveServer
from tests.e2e.parties import Party, seed_party

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
_turn = itertools.count()
#: examples per operation (bounded: four operations, one live server)
EXAMPLES = 40


@pytest.fixture(scope="module")
def st_party(live: LiveServer) -> Party:
    return seed_party(live)


def rows(live: LiveServer) -> tuple[Any, ...]:
    """Every row a call could write; outbox rows by identity only (their delivery
    attempts move on in the background, which is not a write of the call)."""
    d = live.call(live.runtime.store.dump())
    outbox = [(m.id, m.kind, m.dedupe_key) for m, _ in d.outbox]
    return (d.sessions, d.payments, d.extensions, d.ledger, d.log, outbox)


def test_schemathesis_example_never_5xx_and_matches_its_schema(
    live: LiveServer, st_party: Party
) -> None:
    # Driven through hypothesis directly (schemathesis's lazy pytest fixture
    # loader does not run on this pytest).
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 4
    party = st_party
    seen: set[tuple[str, int]] = set()

    def check(case: Any) -> None:
        params = case.path_parameters
        if params and "session_id" in params and next(_turn) % 2 == 0:
            params["session_id"] = party.session_id
        token = party.mitra if case.operation.path.endswith("/respond") else party.customer
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
        before = rows(live)
        response = case.call(base_url=live.url, timeout=30)
        seen.add((case.operation.label, response.status_code))
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            assert rows(live) == before, (case.method, case.formatted_path, response.status_code)

    for operation in operations:
        run = settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )(given(case=operation.as_strategy())(check))
        run()
    # The generated requests reached past authentication and validation.
    assert {status for _, status in seen} & {200, 201, 204}, seen
