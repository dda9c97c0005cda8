"""Dev-only helpers: mint tokens, seed a demo session.  Never wire these into
a production app: they bypass your login and your payment flow.

    python -m examples.fastapi_app.dev token mitra m-demo
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from extension_fsm import (
    ConcurrencyConflict,
    Participant,
    PaymentSession,
    PaymentStatus,
    Session,
    SessionStatus,
)

from .auth import mint_token

if TYPE_CHECKING:
    from .wiring import Runtime

__all__ = ["seed_demo"]

_SEED_ATTEMPTS = 8


async def seed_demo(runtime: Runtime) -> None:
    """A session ``s-demo`` (customer ``c-demo``, mitra ``m-demo``) and a
    confirmed payment ``p-demo`` of 25000 for one extension; logs tokens.

    Idempotent: rows that exist are left as they are (a restart does not
    re-confirm a consumed payment), and safe when several instances start at
    once (one that loses the race to insert reads again and finds them)."""
    store = runtime.store
    for attempt in range(_SEED_ATTEMPTS):
        try:
            async with store.unit_of_work() as uow:
                has_session = await uow.sessions.get("s-demo") is not None
                has_payment = await uow.payments.get("p-demo") is not None
            if not has_session:
                expires = datetime.now(UTC) + timedelta(minutes=30)
                await store.seed_session(
                    Session("s-demo", "c-demo", "m-demo", SessionStatus.ACTIVE, expires, "Sari")
                )
            if not has_payment:
                await store.seed_payment(
                    PaymentSession("p-demo", "c-demo", PaymentStatus.CONFIRMED, 25000)
                )
            break
        except ConcurrencyConflict:  # another instance seeds the same rows right now
            await asyncio.sleep(0.01 * 2**attempt)
    else:
        raise RuntimeError("dev seed kept colliding with another instance")
    secret = runtime.settings.jwt_secret
    print("dev seed: session s-demo, payment p-demo (25000)")
    print("customer token:", mint_token(Participant.CUSTOMER, "c-demo", secret))
    print("mitra token:   ", mint_token(Participant.MITRA, "m-demo", secret))


def main(argv: list[str]) -> int:
    """``token ROLE USER_ID``: print a token signed with EXTENSION_FSM_JWT_SECRET."""
    from .settings import Settings

    if len(argv) != 3 or argv[0] != "token":
        print(__doc__)
        return 2
    print(mint_token(argv[1], argv[2], Settings.from_env().jwt_secret))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
