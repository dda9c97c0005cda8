"""Where the rows live, as the decisions see them: a unit of work's joined
reads (one per kind of call) and its one write of a decision, the sweep's
set-aside, and the outbox as the dispatcher sees it."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from ..core import Change, Snapshot, Undecidable
from ..model import (
    Extension,
    JSONValue,
    LedgerEntry,
    PaymentSession,
    Session,
    TransitionRecord,
)

__all__ = [
    "DecisionWriter",
    "InspectableStore",
    "OutboxMessage",
    "OutboxStore",
    "SnapshotLoader",
    "Store",
    "StoreDump",
    "UnitOfWork",
]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """An effect waiting to be delivered after the commit that recorded it."""

    id: str
    kind: str
    dedupe_key: str
    payload: Mapping[str, JSONValue]
    created_at: datetime
    attempts: int = 0
    #: the ordering lane: rows of one lane are delivered one at a time, in the
    #: order written (a row waits while an older one of its lane is neither
    #: delivered nor dead); ``None``: no order.  Each session has one lane for
    #: its session-timer commands, one for its payment events and one per
    #: participant for its messages, so each sees them in commit order.
    lane: str | None = None
    #: the row's place in commit order, given by the store when the row is
    #: written (``None`` until then); it grows with commit order within a
    #: session, so the session-timer commands and payment events carry it as
    #: their ``seq`` and a receiver can tell a stale command from a newer one;
    #: bookkeeping of the store, so not compared
    seq: int | None = field(default=None, compare=False)


class DecisionWriter(Protocol):
    """A unit of work's ``write_batch``: every write of one decision at once (one
    statement where the store can), compare-and-set kept: a stale expected
    status raises ``ConcurrencyConflict``, here or from the unit of work's
    ``commit`` (a store may run its writes there, as the SQL store does), and
    nothing of the decision is written.  ``expected=None`` inserts (only
    extensions are inserted)."""

    async def __call__(
        self,
        extension: Change[Extension] | None,
        session: Change[Session] | None,
        payment: Change[PaymentSession] | None,
        ledger: LedgerEntry | None,
        log: Sequence[TransitionRecord],
        outbox: Sequence[OutboxMessage],
    ) -> None: ...


class SnapshotLoader(Protocol):
    """A unit of work's ``snapshots``: the rows one call decides on, read together
    (one statement, one round trip where the store can).  Each method returns
    committed rows as of the read (a store built on per-table reads can use
    :class:`extension_fsm.adapters.rowwise.RowSnapshots`)."""

    async def for_request(self, session_id: str, payment_id: str | None) -> Snapshot:
        """The session, the payment session (none when ``payment_id`` is empty), the
        session's pending extension and the payment's live one; ``session=None``
        alone when the session does not exist."""
        ...

    async def for_response(self, session_id: str, extension_id: str) -> Snapshot:
        """The session, the extension and the extension's payment session;
        ``session=None`` alone when the session does not exist.

        The rows an answer decides on.  Nothing is locked: the decision's
        write (:class:`DecisionWriter`) is guarded by what was read here, so
        if another worker resolved the extension meanwhile the write does
        nothing, raises ``ConcurrencyConflict``, and the answer is decided
        again on what that worker wrote."""
        ...

    async def for_end(self, session_id: str) -> Snapshot:
        """The session, its pending extension (``pending``) and that extension's
        payment session, read as :meth:`for_response` reads (nothing locked; the
        write is guarded).  ``session=None`` alone when the session does not exist."""
        ...

    async def for_timeout(self, extension_id: str) -> Snapshot:
        """The extension, its session and its payment session (nothing locked:
        two workers timing one extension out both decide, and the guarded
        write lets one of them write); ``session=None`` alone when the
        extension does not exist.  One no longer pending may come back as it
        is (the SQL store) or as ``session=None`` alone (the memory store):
        either way the timeout decides nothing on it."""
        ...

    async def for_due(
        self, now: datetime, limit: int, mitras: Collection[str] | None = None
    ) -> list[Snapshot | Undecidable]:
        """Up to ``limit`` pending extensions due at ``now`` (or at the store's own
        clock, which then wins), oldest first, not set aside beyond then, with
        each one's session and payment session: a sweep's whole batch.  A
        store shared by several workers *claims* the batch (PostgreSQL: a
        lease written with the read, so another sweep skips the rows until it
        runs out), and with ``mitras`` claims only rows whose session's mitra
        is one of them (those whose presence the sweep gathered) or whose
        session is gone; a store that claims nothing (SQLite: the unit of work
        holds the one write lock) may return other mitras' rows too, which the
        sweep leaves for its next pass.  The decisions' writes stay guarded
        all the same.  A row whose columns do not read into the
        model comes back as :class:`Undecidable`."""
        ...

    async def mitras_due(self, now: datetime, limit: int) -> set[str]:
        """The mitras of the sessions of the extensions :meth:`for_due` would
        return, read without claiming anything: whose presence to gather before
        the claiming unit of work is opened."""
        ...

    async def due_ids(self, now: datetime, limit: int) -> list[str]:
        """The ids :meth:`for_due` would read, oldest first, reading nothing else
        and claiming nothing: the sweep's row-by-row pass over a batch that
        cannot be read (each id is then read by :meth:`for_timeout`)."""
        ...


class UnitOfWork(Protocol):
    """One call's access to the rows, shaped like the decisions it serves: the
    joined reads (:attr:`snapshots`), the write of a decision
    (:attr:`write_batch`), the sweep's set-aside, and :meth:`commit`.
    Everything written commits together or nothing does.

    How a store reaches its tables (repositories, statements, a driver) is its
    own business and not part of this port."""

    @property
    def snapshots(self) -> SnapshotLoader:
        """The joined reads each call decides on."""
        ...

    @property
    def write_batch(self) -> DecisionWriter:
        """The write of one decision, all of it at once."""
        ...

    async def set_aside(self, extension_id: str, now: datetime, reason: str) -> int:
        """Put a pending extension the sweep could not decide aside: the due reads
        (:meth:`SnapshotLoader.for_due`, :meth:`SnapshotLoader.due_ids`) skip it
        until ``now + set_aside_delay(times)``, ``reason`` kept for operators.
        Returns ``times``, how often it has been set aside (1 the first time);
        0 when no such pending extension exists.  Written by :meth:`commit`."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Roll back unless committed."""
        ...

    async def commit(self) -> None:
        """Make every write durable at once; raise ``ConcurrencyConflict`` on a lost race."""
        ...


class OutboxStore(Protocol):
    """The outbox as the dispatcher sees it: claim, deliver, mark.

    A store whose claims take runs of a lane may also offer ``async def
    release(message_ids, at)``: messages claimed but never tried (an older
    message of their lane failed first) become available again from ``at``,
    still behind their lane's older open messages.  Without it such messages
    wait for their lease to run out."""

    async def claim(
        self, now: datetime, limit: int, lease_seconds: float, ids: Sequence[str] | None = None
    ) -> list[OutboxMessage]:
        """Undelivered messages available at ``now`` (only ``ids`` when given), in the
        order they were written, each with its ``seq``, leased to the caller for
        ``lease_seconds``.  A
        message with a ``lane`` is taken only when every older message of its
        lane still undelivered and not dead (leased, backing off or available)
        is taken by the same claim: a claim may hold a run of a lane's messages
        from its oldest open one on, which no other claim can hold any of."""
        ...

    async def mark_delivered(self, message_ids: Sequence[str], at: datetime) -> None:
        """Delivered: never claimed again.  Every id of the list at once (the
        dispatcher marks a claim's delivered rows together: one statement)."""
        ...

    async def mark_retry(self, message_id: str, available_at: datetime, error: str) -> None: ...

    async def mark_dead(self, message_id: str, at: datetime, error: str) -> None:
        """Final failure: never retried, kept for people to read."""
        ...


class Store(Protocol):
    """Where the rows live."""

    def unit_of_work(self) -> UnitOfWork: ...

    @property
    def outbox(self) -> OutboxStore: ...


@dataclass(frozen=True, slots=True)
class StoreDump:
    """Every row a store holds, for tests, the simulator and invariant checks."""

    sessions: Sequence[Session]
    payments: Sequence[PaymentSession]
    extensions: Sequence[Extension]
    ledger: Sequence[LedgerEntry]
    log: Sequence[TransitionRecord]
    #: (message, delivered) in the order written
    outbox: Sequence[tuple[OutboxMessage, bool]]


class InspectableStore(Store, Protocol):
    """A store a harness can seed with host rows and read back, whole or in part."""

    async def seed_session(self, session: Session) -> None: ...

    async def seed_payment(self, payment: PaymentSession) -> None: ...

    async def dump(
        self, *, session_ids: Collection[str] | None = None, payment_ids: Collection[str] = ()
    ) -> StoreDump:
        """Every committed row, in one consistent snapshot; or, given
        ``session_ids``, only the rows of those sessions: the sessions, their
        extensions, the payments in ``payment_ids`` and those their extensions
        name, their ledger rows, the outbox rows whose payload names one of
        them, and the log rows of all of these.  Same order as the whole dump."""
        ...
