"""Every port in memory: a store whose units of work are atomic like a
database's, and recording fakes of the delivery ports.

The delivery fakes live in :mod:`.memory_delivery` and are re-exported here.

The store is optimistic: a unit of work reads one consistent state of the
committed rows (a read of a row written after its first read aborts it),
stages its writes, and at commit checks that no row or index entry it read
moved and that the uniqueness rules still hold; then it applies everything at
once or raises (``ConcurrencyConflict`` / ``ExtensionError`` 409) and applies
nothing.  So races between interleaved calls play out as they would on a
database; the service re-runs a call that lost one.  Lookups by session and
by payment session go through indexes, so a call costs the same with ten rows
stored or a hundred thousand.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import datetime

from ..errors import ConcurrencyConflict, ErrorCode, ExtensionError
from ..model import (
    Extension,
    ExtensionStatus,
    LedgerEntry,
    PaymentSession,
    Session,
    TransitionRecord,
)
from ..ports import StoreDump
from .memory_delivery import (
    Delivery,
    MemoryDeviceTokens,
    MemoryPaymentEvents,
    MemoryPresence,
    MemoryPush,
    MemorySessionTimer,
    MemorySockets,
)
from .memory_outbox import MemoryOutboxStore, OutboxRow
from .memory_unit import EXTENSION, LIVE, LIVE_PAYMENT, PAYMENT, PENDING, SESSION, MemoryUnitOfWork

__all__ = [
    "Delivery",
    "MemoryDeviceTokens",
    "MemoryPaymentEvents",
    "MemoryPresence",
    "MemoryPush",
    "MemorySessionTimer",
    "MemorySockets",
    "MemoryStore",
    "MemoryUnitOfWork",
    "OutboxRow",
]


class MemoryStore:
    """Rows in dicts; see the module docstring for the transaction model."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.payments: dict[str, PaymentSession] = {}
        self.extensions: dict[str, Extension] = {}
        self.ledger: list[LedgerEntry] = []
        self.log: list[TransitionRecord] = []
        self.outbox_rows: dict[str, OutboxRow] = {}
        #: pending extensions the sweep set aside: id -> (until, times, reason)
        self.set_aside: dict[str, tuple[datetime, int, str]] = {}
        #: units of work entered and not yet finished (tests: nothing slow runs inside one)
        self.open_units = 0
        # The partial unique indexes: session -> its pending extension, payment
        # session -> the pending or accepted extension it backs.
        self._pending_by_session: dict[str, str] = {}
        self._live_by_payment: dict[str, str] = {}
        # Commit counter, and for every row or index entry the commit that last
        # wrote it (table -> key -> epoch; nested to spare a tuple per row).  A
        # version matters only to a unit of work whose snapshot is older, so
        # versions no open snapshot predates are dropped (see ``_release``).
        self._epoch = 0
        self._next_epoch = 1  # the epoch the commit being applied stamps
        self._changed: dict[str, dict[str, int]] = {}
        self._open: dict[int, int] = {}  # snapshot epoch -> units of work reading at it
        self._prune_at = _PRUNE_MIN
        self._seq = 0
        self._lock = threading.Lock()
        self.commits = 0
        #: test hook: the next ``n`` commits raise ``ConcurrencyConflict``
        self.fail_commits = 0
        self._outbox = MemoryOutboxStore(self)

    # host-side seeding (the host owns sessions and payments)
    def add_session(self, session: Session) -> None:
        """Seed a host session."""
        with self._lock:
            self._next_epoch = self._epoch + 1
            self.sessions[session.id] = session
            self._stamp(SESSION, session.id)
            self._epoch += 1

    def add_payment(self, payment: PaymentSession) -> None:
        """Seed a host payment session."""
        with self._lock:
            self._next_epoch = self._epoch + 1
            self.payments[payment.id] = payment
            self._stamp(PAYMENT, payment.id)
            self._epoch += 1

    async def seed_session(self, session: Session) -> None:
        """Seed a host session (the ``InspectableStore`` port)."""
        self.add_session(session)

    async def seed_payment(self, payment: PaymentSession) -> None:
        """Seed a host payment session (the ``InspectableStore`` port)."""
        self.add_payment(payment)

    async def dump(
        self, *, session_ids: Collection[str] | None = None, payment_ids: Collection[str] = ()
    ) -> StoreDump:
        """Every committed row; or only the rows of ``session_ids`` (see
        :meth:`~extension_fsm.ports.InspectableStore.dump`)."""
        with self._lock:
            rows = sorted(self.outbox_rows.values(), key=lambda r: r.seq)
            whole = StoreDump(
                sessions=list(self.sessions.values()),
                payments=list(self.payments.values()),
                extensions=list(self.extensions.values()),
                ledger=list(self.ledger),
                log=list(self.log),
                outbox=[(r.message, r.delivered_at is not None) for r in rows],
            )
        return whole if session_ids is None else _only(whole, set(session_ids), set(payment_ids))

    def unit_of_work(self) -> MemoryUnitOfWork:
        """A new unit of work."""
        return MemoryUnitOfWork(self)

    @property
    def outbox(self) -> MemoryOutboxStore:
        """The outbox as the dispatcher sees it."""
        return self._outbox

    @property
    def epoch(self) -> int:
        """How many commits (and seeds) this store has seen."""
        return self._epoch

    def changed_at(self, table: str, key: str) -> int:
        """The epoch of the last commit that wrote this row or index entry."""
        return self._changed.get(table, {}).get(key, 0)

    def _stamp(self, table: str, key: str) -> None:
        self._changed.setdefault(table, {})[key] = self._next_epoch

    def _snapshot(self) -> int:
        """Open a read snapshot at the current epoch (release it with ``_release``)."""
        with self._lock:
            epoch = self._epoch
            self._open[epoch] = self._open.get(epoch, 0) + 1
            return epoch

    def _release(self, snapshot: int) -> None:
        with self._lock:
            left = self._open.pop(snapshot) - 1
            if left:
                self._open[snapshot] = left
            elif not self._open:  # no unit of work can ask about the past any more
                self._changed.clear()

    def _prune(self) -> None:
        """Drop versions no open snapshot predates (while snapshots stay open)."""
        if sum(map(len, self._changed.values())) <= self._prune_at:
            return
        floor = min(self._open, default=self._epoch)
        for versions in self._changed.values():
            for key in [k for k, v in versions.items() if v <= floor]:
                del versions[key]
        self._prune_at = max(_PRUNE_MIN, 2 * sum(map(len, self._changed.values())))

    def _apply(self, uow: MemoryUnitOfWork) -> None:
        with self._lock:
            if self.fail_commits > 0:
                self.fail_commits -= 1
                raise ConcurrencyConflict("injected commit failure")
            snapshot = uow.snapshot if uow.snapshot is not None else self._epoch
            for table, key in uow.reads:
                if self.changed_at(table, key) > snapshot:
                    raise ConcurrencyConflict(f"{table} {key} changed under this unit of work")
            for ext in uow.staged_extensions.values():
                _check_unique(self, ext, uow.staged_extensions)
            self._next_epoch = self._epoch + 1  # one int shared by this commit's versions
            for session in uow.staged_sessions.values():
                self.sessions[session.id] = session
                self._stamp(SESSION, session.id)
            for payment in uow.staged_payments.values():
                self.payments[payment.id] = payment
                self._stamp(PAYMENT, payment.id)
            for ext in uow.staged_extensions.values():
                self._write_extension(ext)
            for ext_id, aside in uow.staged_set_aside.items():
                row = self.extensions.get(ext_id)
                if row is not None and row.status is ExtensionStatus.PENDING:
                    self.set_aside[ext_id] = aside
            self.ledger.extend(uow.staged_ledger)
            self.log.extend(uow.staged_log)
            for message in uow.staged_outbox:
                self._seq += 1
                numbered = replace(message, seq=self._seq)
                self.outbox_rows[message.id] = OutboxRow(numbered, self._seq, message.created_at)
            self._epoch += 1
            self.commits += 1
            self._prune()

    def _write_extension(self, ext: Extension) -> None:
        old = self.extensions.get(ext.id)
        for row in (old, ext):
            if row is not None:  # index membership may change on either side
                self._stamp(PENDING, row.session_id)
                self._stamp(LIVE_PAYMENT, row.payment_session_id)
        if old is not None:
            if self._pending_by_session.get(old.session_id) == old.id:
                del self._pending_by_session[old.session_id]
            if self._live_by_payment.get(old.payment_session_id) == old.id:
                del self._live_by_payment[old.payment_session_id]
        self.extensions[ext.id] = ext
        if ext.status is not ExtensionStatus.PENDING:  # decided: no longer set aside
            self.set_aside.pop(ext.id, None)
        self._stamp(EXTENSION, ext.id)
        if ext.status is ExtensionStatus.PENDING:
            self._pending_by_session[ext.session_id] = ext.id
        if ext.status in LIVE:
            self._live_by_payment[ext.payment_session_id] = ext.id

    def pending_ids(self) -> list[str]:
        """Ids of every committed pending extension."""
        return list(self._pending_by_session.values())


_PRUNE_MIN = 4096


def _check_unique(store: MemoryStore, ext: Extension, staged: Mapping[str, Extension]) -> None:
    """The partial unique indexes, against committed rows this commit leaves alone."""
    if ext.status is ExtensionStatus.PENDING:
        other = store._pending_by_session.get(ext.session_id)
        if other is not None and other != ext.id and other not in staged:
            raise ExtensionError(
                ErrorCode.EXTENSION_PENDING, "An extension request is already pending"
            )
    if ext.status in LIVE:
        other = store._live_by_payment.get(ext.payment_session_id)
        if other is not None and other != ext.id and other not in staged:
            raise ExtensionError(
                ErrorCode.PAYMENT_IN_USE, "Payment session already backs another extension"
            )


def _only(d: StoreDump, sids: set[str], pids: set[str]) -> StoreDump:
    """The rows of ``d`` that belong to the sessions ``sids`` (and payments ``pids``)."""
    exts = [e for e in d.extensions if e.session_id in sids]
    pids = pids | {e.payment_session_id for e in exts}
    ids = {("session", s) for s in sids} | {("payment", p) for p in pids}
    ids |= {("extension", e.id) for e in exts}
    return StoreDump(
        sessions=[s for s in d.sessions if s.id in sids],
        payments=[p for p in d.payments if p.id in pids],
        extensions=exts,
        ledger=[e for e in d.ledger if e.session_id in sids],
        log=[r for r in d.log if (r.entity, r.entity_id) in ids],
        outbox=[(m, ok) for m, ok in d.outbox if m.payload.get("session_id") in sids],
    )
