"""Play one timeline on a virtual clock (placeholder until the full CLI lands)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from extension_fsm import Participant
from extension_fsm.simulation import World, make_payment, make_session


async def main() -> None:
    world = World()
    session = make_session(expires_at=world.clock.now() + timedelta(minutes=5))
    await world.add_session(session)
    await world.add_payment(make_payment())
    world.connect(session, Participant.MITRA, on_session_socket=True, connected=True, online=True)
    world.connect(session, Participant.CUSTOMER, on_session_socket=True)
    ext = await world.service.request_extension(
        "s1", "c1", duration_minutes=15, price=15000, extension_payment_session_id="p1"
    )
    await world.clock.advance(5)
    await world.service.respond_to_extension(ext.id, "s1", "m1", True)
    for d in world.sockets.sent + world.push.sent:
        print(d.channel, d.participant.value, d.payload.get("type", d.payload.get("title")))


if __name__ == "__main__":
    asyncio.run(main())
