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

__all__ = ["DEMO_AMOUNT", "DEMO_PAYMENTS", "seed_demo"]

_SEED_ATTEMPTS = 8
#: the confirmed extension payments of the demo customer, one per extension
DEMO_PAYMENTS = ("p-demo", "p-demo-2", "p-demo-3", "p-demo-4", "p-demo-5")
#: each demo payment's amount: the ``price`` a request must name
DEMO_AMOUNT = 25000


async def seed_demo(runtime: Runtime) -> None:
    """A session ``s-demo`` (customer ``c-demo``, mitra ``m-demo``) and the
    confirmed payments :data:`DEMO_PAYMENTS` of :data:`DEMO_AMOUNT` each (one
    per extension: try several); prints what to send and the tokens.

    Idempotent: rows that exist are left as they are (a restart does not
    re-confirm a consumed payment), and safe when several instances start at
    once (one that loses the race to insert reads again and finds them)."""
    store = runtime.store
    for attempt in range(_SEED_ATTEMPTS):
        try:
            held = await store.dump(session_ids=["s-demo"], payment_ids=DEMO_PAYMENTS)
            has_session = bool(held.sessions)
            found = {p.id for p in held.payments}
            missing = [p for p in DEMO_PAYMENTS if p not in found]
            if not has_session:
                expires = datetime.now(UTC) + timedelta(minutes=30)
                await store.seed_session(
                    Session("s-demo", "c-demo", "m-demo", SessionStatus.ACTIVE, expires, "Sari")
                )
            for payment in missing:
                await store.seed_payment(
                    PaymentSession(payment, "c-demo", PaymentStatus.CONFIRMED, DEMO_AMOUNT)
                )
            break
        except ConcurrencyConflict:  # another instance seeds the same rows right now
            await asyncio.sleep(0.01 * 2**attempt)
    else:
        raise RuntimeError("dev seed kept colliding with another instance")
    secret = runtime.settings.jwt_secret
    window = runtime.settings.timeout_seconds
    print(f"dev seed: session s-demo, payments {', '.join(DEMO_PAYMENTS)} ({DEMO_AMOUNT} each)")
    print(
        "request body: "
        f'{{"duration_minutes": 15, "price": {DEMO_AMOUNT}, '
        f'"extension_payment_session_id": "{DEMO_PAYMENTS[0]}"}}'
        f" (the mitra then has {window} s to answer)"
    )
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
