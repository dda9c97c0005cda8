"""What a decision asks of the world once it is committed: messages to the
participants, the host's session-timer commands and payment events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

from .values import FailureCause, JSONValue, Participant, PaymentStatus

__all__ = [
    "ClearClosureGrace",
    "Effect",
    "Notify",
    "PaymentConsumed",
    "PaymentFailed",
    "PushMessage",
    "SessionExpiryExtended",
    "StartClosureGrace",
]


@dataclass(frozen=True, slots=True)
class PushMessage:
    """A push notification (FCM) to every device of one user."""

    title: str
    body: str
    data: Mapping[str, JSONValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notify:
    """Send ``message`` to one participant's socket on the session; if no socket
    takes it and ``push`` is set, push it instead."""

    session_id: str
    recipient: Participant
    user_id: str
    message: Mapping[str, JSONValue]
    dedupe_key: str
    push: PushMessage | None = None


@dataclass(frozen=True, slots=True)
class StartClosureGrace:
    """Tell the host's session timer to start the closure grace period."""

    session_id: str
    deadline: datetime


@dataclass(frozen=True, slots=True)
class ClearClosureGrace:
    """Tell the host's session timer to cancel a running closure grace period."""

    session_id: str


@dataclass(frozen=True, slots=True)
class SessionExpiryExtended:
    """Tell the host's session timer about the session's new expiry."""

    session_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class PaymentConsumed:
    """Tell the host an extension's payment session was consumed (the seed's
    ``consumePaymentSession``).  The deciding commit already moved the row to
    ``consumed``: the host runs only the money side effects of a charge."""

    session_id: str
    extension_id: str
    payment_session_id: str
    customer_id: str
    amount: int
    duration_minutes: int
    via_timeout: bool
    at: datetime
    #: the event's place in commit order among the session's session-timer
    #: commands and payment events, set when the outbox delivers it (``None``
    #: before); not part of the event's identity (``dedupe_key`` is)
    seq: int | None = field(default=None, compare=False)

    @property
    def dedupe_key(self) -> str:
        """The same for every delivery of this event: the host drops repeats by it."""
        return f"{self.extension_id}:payment_consumed:{self.payment_session_id}"

    @property
    def previous_status(self) -> PaymentStatus:
        """The payment session's status before the decision (only a confirmed
        payment is ever consumed)."""
        return PaymentStatus.CONFIRMED

    @property
    def new_status(self) -> PaymentStatus:
        """The status the deciding commit wrote: the host's row already has it."""
        return PaymentStatus.CONSUMED


@dataclass(frozen=True, slots=True)
class PaymentFailed:
    """Tell the host an extension's payment session was failed (the seed's
    ``failPaymentSession``; the deciding commit already moved the row to
    ``failed``), with the cause the seed wrote on its
    failed-pairings audit row: ``extension_rejected`` (the mitra said no, or
    the configured timeout action is to reject), ``extension_safeguard_tripped``
    (an auto-approve found the mitra unreachable) or ``session_ended``."""

    session_id: str
    extension_id: str
    payment_session_id: str
    customer_id: str
    amount: int
    cause: FailureCause
    at: datetime
    #: the event's place in commit order among the session's session-timer
    #: commands and payment events, set when the outbox delivers it (``None``
    #: before); not part of the event's identity (``dedupe_key`` is)
    seq: int | None = field(default=None, compare=False)

    @property
    def dedupe_key(self) -> str:
        """The same for every delivery of this event: the host drops repeats by it."""
        return f"{self.extension_id}:payment_failed:{self.payment_session_id}"

    @property
    def previous_status(self) -> PaymentStatus:
        """The payment session's status before the decision (only a confirmed
        payment is ever failed by the flow)."""
        return PaymentStatus.CONFIRMED

    @property
    def new_status(self) -> PaymentStatus:
        """The status the deciding commit wrote: the host's row already has it."""
        return PaymentStatus.FAILED


Effect: TypeAlias = (
    Notify
    | StartClosureGrace
    | ClearClosureGrace
    | SessionExpiryExtended
    | PaymentConsumed
    | PaymentFailed
)
