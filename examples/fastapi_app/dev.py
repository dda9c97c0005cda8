"""Dev-only helpers: mint tokens, seed a demo session.  Never wire these into
a production app: they bypass your login and your payment flow.

    python -m examples.fastapi_app.dev token mitra m-demo
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from extension_fsm import Participant, PaymentSession, PaymentStatus, Session, SessionStatus

from .auth import mint_token

if TYPE_CHECKING:
    from .wiring import Runtime

__all__ = ["seed_demo"]


async def seed_demo(runtime: Runtime) -> None:
    """A session ``s-demo`` (customer ``c-demo``, mitra ``m-demo``) and a
    confirmed payment ``p-demo`` of 25000 for one extension; logs tokens."""
    now = datetime.now(UTC)
    await runtime.store.seed_session(
        Session(
            "s-demo", "c-demo", "m-demo", SessionStatus.ACTIVE, now + timedelta(minutes=30), "Sari"
        )
    )
    await runtime.store.seed_payment(
        PaymentSession("p-demo", "c-demo", PaymentStatus.CONFIRMED, 25000)
    )
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
