"""What a decision reads (:class:`Snapshot`) and what it returns (:class:`Decision`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from ..model import Effect, Extension, LedgerEntry, PaymentSession, Session, TransitionRecord

__all__ = [
    "MAX_DURATION_MINUTES",
    "MIN_DURATION_MINUTES",
    "NOTHING",
    "Change",
    "Decision",
    "Snapshot",
    "Undecidable",
]

MIN_DURATION_MINUTES = 1
MAX_DURATION_MINUTES = 1440

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The rows an event is decided on, as loaded in one unit of work.

    ``extension`` is the extension the event names (respond, timeout);
    ``pending`` is the session's pending extension (request, end);
    ``payment_live`` a pending or accepted extension the payment already backs;
    ``now`` the store's own clock when it has one (PostgreSQL), read with these
    rows: deadlines are then judged by it rather than by each worker's clock.
    """

    session: Session | None
    extension: Extension | None = None
    payment: PaymentSession | None = None
    pending: Extension | None = None
    payment_live: Extension | None = None
    now: datetime | None = None


@dataclass(frozen=True, slots=True)
class Undecidable:
    """A due extension whose rows could not even be read into a snapshot (what
    the host wrote does not parse): the sweep sets it aside instead of deciding."""

    extension_id: str
    error: str


@dataclass(frozen=True, slots=True)
class Change(Generic[R]):
    """Write ``row`` only where the stored status is still ``expected`` (``None``: insert)."""

    expected: str | None
    row: R


@dataclass(frozen=True, slots=True)
class Decision:
    """Everything one event changes; an empty decision changes nothing."""

    extension: Change[Extension] | None = None
    session: Change[Session] | None = None
    payment: Change[PaymentSession] | None = None
    ledger: LedgerEntry | None = None
    log: tuple[TransitionRecord, ...] = ()
    effects: tuple[Effect, ...] = ()
    #: when set, the shell arms an in-process timer for this extension at this time
    timer: tuple[str, datetime] | None = None
    #: the extension whose in-process timer can be dropped
    resolved: str | None = None

    @property
    def is_empty(self) -> bool:
        """True when nothing is to be written."""
        return self.extension is None and self.session is None and self.payment is None


NOTHING = Decision()
