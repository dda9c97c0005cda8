"""The host's money side: what it hears of, and the default that only logs.

By the time a payment event reaches the host, the library has already moved
the payment session's row (``confirmed`` to ``consumed`` or ``failed``) in the
deciding commit; the host's :class:`~extension_fsm.ports.PaymentEvents`
handler runs only the side effects (earnings, receipt, refund, the
failed-pairings audit row), once per ``event.dedupe_key``.
"""

from __future__ import annotations

import logging

from .model import PaymentConsumed, PaymentFailed

__all__ = ["LoggingPaymentEvents"]

_log = logging.getLogger("extension_fsm.outbox")  # delivered by the outbox: logged there


class LoggingPaymentEvents:
    """The default :class:`~extension_fsm.ports.PaymentEvents`: only logs.

    A host that runs money side effects on payment events passes its own
    ``payment_events=`` to the service.
    """

    async def consumed(self, event: PaymentConsumed) -> None:
        _log.info(
            "payment %s consumed by extension %s (session %s, amount %s)",
            event.payment_session_id,
            event.extension_id,
            event.session_id,
            event.amount,
        )

    async def failed(self, event: PaymentFailed) -> None:
        _log.info(
            "payment %s failed for extension %s (session %s, cause %s)",
            event.payment_session_id,
            event.extension_id,
            event.session_id,
            event.cause.value,
        )
