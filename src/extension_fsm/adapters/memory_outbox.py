"""The in-memory store's outbox as the dispatcher sees it: rows with their
delivery bookkeeping, claimed with a lease, then marked."""

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

    async def claim(
        self, now: datetime, limit: int, lease_seconds: float, ids: Sequence[str] | None = None
    ) -> list[OutboxMessage]:
        with self._store._lock:
            rows = self._store.outbox_rows
            candidates = [rows[i] for i in ids if i in rows] if ids is not None else rows.values()
            ready = sorted(
                (
                    r
                    for r in candidates
                    if r.delivered_at is None and not r.dead and r.available_at <= now
                ),
                key=lambda r: r.seq,
            )[:limit]
            for row in ready:
                row.available_at = now + timedelta(seconds=lease_seconds)
            return [replace(r.message, attempts=r.attempts) for r in ready]

    async def mark_delivered(self, message_id: str, at: datetime) -> None:
        with self._store._lock:
            self._store.outbox_rows[message_id].delivered_at = at

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

    def undelivered(self) -> list[OutboxMessage]:
        """Rows not yet delivered nor dead, in order (for tests and the simulator)."""
        rows = sorted(self._store.outbox_rows.values(), key=lambda r: r.seq)
        return [r.message for r in rows if r.delivered_at is None and not r.dead]
