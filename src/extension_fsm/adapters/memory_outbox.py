"""The in-memory store's outbox as the dispatcher sees it: rows with their
delivery bookkeeping, claimed with a lease (of each lane, the unbroken run of
its open rows from the oldest on), then marked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..ports import OutboxMessage

if TYPE_CHECKING:
    from .memory import MemoryStore

__all__ = ["MemoryOutboxStore", "OutboxRow"]


@dataclass(slots=True)
class OutboxRow:
    """An outbox row with its delivery bookkeeping."""

    message: OutboxMessage
    seq: int
    available_at: datetime
    delivered_at: datetime | None = None
    dead: bool = False
    attempts: int = 0
    last_error: str | None = None


class MemoryOutboxStore:
    """:class:`~extension_fsm.ports.OutboxStore` over a :class:`MemoryStore`."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        # lane -> its rows not yet known to be delivered or dead, oldest first
        self._lanes: dict[str, dict[int, OutboxRow]] = {}
        self._indexed_seq = 0

    def _index_new_rows(self) -> None:
        """Add rows committed since the last claim to their lanes (rows are kept
        in the order written, so the new ones are at the end)."""
        fresh: list[OutboxRow] = []
        for row in reversed(self._store.outbox_rows.values()):
            if row.seq <= self._indexed_seq:
                break
            fresh.append(row)
        for row in reversed(fresh):
            if row.message.lane is not None:
                self._lanes.setdefault(row.message.lane, {})[row.seq] = row
        if fresh:
            self._indexed_seq = fresh[0].seq

    def _open_in_lane(self, lane: str) -> list[OutboxRow]:
        """The open rows of ``lane``, oldest first (delivered, dead and gone
        ones are dropped from the index on the way: they never block again)."""
        rows = self._store.outbox_rows
        index = self._lanes.get(lane, {})
        open_rows = []
        for seq, row in list(index.items()):
            if row.delivered_at is None and not row.dead and rows.get(row.message.id) is row:
                open_rows.append(row)
            else:
                del index[seq]
        return open_rows

    async def claim(
        self, now: datetime, limit: int, lease_seconds: float, ids: Sequence[str] | None = None
    ) -> list[OutboxMessage]:
        """Rows without a lane, and of each lane the unbroken run of open rows
        from its oldest on that are available (and among ``ids``): the lowest
        ``limit`` by ``seq`` (which keeps every run unbroken)."""
        with self._store._lock:
            rows = self._store.outbox_rows
            self._index_new_rows()
            wanted = set(ids) if ids is not None else None
            candidates = [rows[i] for i in ids if i in rows] if ids is not None else rows.values()

            def takeable(r: OutboxRow) -> bool:
                return (
                    r.delivered_at is None
                    and not r.dead
                    and r.available_at <= now
                    and (wanted is None or r.message.id in wanted)
                )

            ready: list[OutboxRow] = []
            lanes: set[str] = set()
            for r in candidates:
                if not takeable(r):
                    continue
                if r.message.lane is None:
                    ready.append(r)
                elif r.message.lane not in lanes:
                    lanes.add(r.message.lane)
                    for row in self._open_in_lane(r.message.lane):
                        if not takeable(row):
                            break
                        ready.append(row)
            ready = sorted(ready, key=lambda r: r.seq)[:limit]
            for row in ready:
                row.available_at = now + timedelta(seconds=lease_seconds)
            return [replace(r.message, attempts=r.attempts) for r in ready]

    def _close_in_lane(self, row: OutboxRow) -> None:
        """``row`` is delivered or dead: it no longer holds its lane."""
        lane = row.message.lane
        rows = self._lanes.get(lane) if lane is not None else None
        if lane is None or rows is None:
            return
        rows.pop(row.seq, None)
        if not rows:
            del self._lanes[lane]

    async def mark_delivered(self, message_ids: Sequence[str], at: datetime) -> None:
        if isinstance(message_ids, str):
            raise TypeError("mark_delivered takes a list of message ids")
        with self._store._lock:
            for message_id in message_ids:
                row = self._store.outbox_rows[message_id]
                row.delivered_at = at
                self._close_in_lane(row)

    async def release(self, message_ids: Sequence[str], at: datetime) -> None:
        with self._store._lock:
            for message_id in message_ids:
                row = self._store.outbox_rows.get(message_id)
                if row is not None and row.delivered_at is None and not row.dead:
                    row.available_at = at

    async def mark_retry(self, message_id: str, available_at: datetime, error: str) -> None:
        with self._store._lock:
            row = self._store.outbox_rows[message_id]
            row.attempts += 1
            row.available_at = available_at
            row.last_error = error

    async def mark_dead(self, message_id: str, at: datetime, error: str) -> None:
        with self._store._lock:
            row = self._store.outbox_rows[message_id]
            row.attempts += 1
            row.dead = True
            row.last_error = error
            self._close_in_lane(row)

    def undelivered(self) -> list[OutboxMessage]:
        """Rows not yet delivered nor dead, in order (for tests and the simulator)."""
        rows = sorted(self._store.outbox_rows.values(), key=lambda r: r.seq)
        return [r.message for r in rows if r.delivered_at is None and not r.dead]
