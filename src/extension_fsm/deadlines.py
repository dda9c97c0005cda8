"""The deadline half of :class:`~extension_fsm.service.ExtensionService`:
timeouts fired by the in-process timer, the sweep that is their source of
truth, and the presence questions an auto-approve asks first.

Presence (network) is always asked before the unit of work that claims a row
is opened, never inside it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from . import core, metrics
from .core import Undecidable
from .errors import ConcurrencyConflict, ErrorCode, ExtensionError
from .model import (
    Event,
    Extension,
    ExtensionStatus,
    Facts,
    Participant,
    Session,
    TimeoutAction,
    TimeoutExtension,
)
from .ports import (
    Clock,
    ConfigSource,
    Presence,
    SessionSockets,
    Store,
    UnitOfWork,
    stale_after_seconds,
)

__all__ = ["Deadlines"]

_log = logging.getLogger("extension_fsm")


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _log_set_aside(extension_id: str, times: int, error: str) -> None:
    """Logged once per row (its first time); later retries only at debug level."""
    if times == 1:
        _log.error("sweep set extension %s aside (retried with backoff): %s", extension_id, error)
    else:
        _log.debug("sweep set extension %s aside again (%d): %s", extension_id, times, error)


async def _claimed(uow: UnitOfWork, extension_id: str) -> core.Snapshot:
    """The extension claimed, with its session and payment; ``session=None``
    alone unless it is a pending extension this unit of work now holds."""
    snapshot = await uow.snapshots.for_timeout(extension_id)  # claim and read at once
    ext = snapshot.extension
    if ext is None or ext.status is not ExtensionStatus.PENDING:
        return core.Snapshot(session=None)
    return snapshot


class Deadlines(ABC):
    """Timeouts and the sweep, on the shell :class:`ExtensionService` provides
    (its ``_run``, ``_write`` and ``_after_commit``) and the ports it holds."""

    presence_timeout: float = 0.5

    _store: Store
    _clock: Clock
    _config: ConfigSource
    _sockets: SessionSockets
    _presence: Presence
    _max_attempts: int
    _sweep_batch: int
    _sweep_spread: random.Random | None

    @abstractmethod
    async def _run(
        self,
        event: Event,
        load: Callable[[UnitOfWork], Awaitable[core.Snapshot]],
        facts: Callable[[], Facts],
    ) -> core.Decision:
        """Load, decide, write, commit; re-run on a lost race; then deliver."""

    @abstractmethod
    async def _write(
        self, uow: UnitOfWork, decision: core.Decision, now: datetime | None = None
    ) -> list[str]:
        """Every write of ``decision`` in ``uow``; the ids of the outbox rows it adds."""

    @abstractmethod
    async def _after_commit(self, decision: core.Decision, outbox_ids: list[str]) -> None:
        """Arm or drop timers and hand the outbox rows to a background delivery."""

    async def sweep_due(self) -> list[Extension]:
        """Resolve every pending extension whose deadline has passed.

        The source of truth for timeouts: safe at any time and from many
        workers at once (rows are claimed; another worker's are skipped).
        Each claimed batch (``for_due``) is resolved in one unit of work; a
        batch that cannot even be read is resolved row by row, each in its own.
        Presence is gathered before any unit of work is opened; a row that
        cannot be decided is set aside (retried later, with backoff) and the
        pass goes on to the rows behind it.
        """
        resolved: list[Extension] = []
        while True:
            try:
                batch = await self._sweep_claimed_batch()
            except ConcurrencyConflict:  # a busy database: the next sweep picks them up
                return resolved
            except (ExtensionError, ValueError, TypeError):
                # A batch that cannot even be read (a value the driver cannot
                # convert): row by row, the culprit is found and set aside.
                _log.exception("sweep batch unreadable; resolving due rows one by one")
                break
            done, claimed, progressed = batch
            resolved.extend(done)
            if claimed < self._sweep_batch or not progressed:  # drained, or stuck
                return resolved
        while True:
            try:
                async with self._store.unit_of_work() as uow:
                    due = await uow.extensions.due(self._clock.now(), self._sweep_batch)
            except ConcurrencyConflict:  # a busy database: the next sweep picks them up
                return resolved
            if not due:
                return resolved
            if self._sweep_spread is not None:
                # Several workers list the same oldest rows: each starts at its own
                # place in the batch instead of queueing behind the others' locks.
                start = self._sweep_spread.randrange(len(due))
                due = due[start:] + due[:start]
            progressed = False
            for extension_id in due:
                try:
                    outcome = await self._time_out(extension_id)
                except (ConcurrencyConflict, ExtensionError) as err:
                    if isinstance(err, ExtensionError) and err.code is not ErrorCode.CONFLICT:
                        progressed |= await self._set_aside(extension_id, _describe(err))
                    continue  # contention: the next pass retries it
                except Exception as err:  # one bad row must not stall the rest
                    progressed |= await self._set_aside(extension_id, _describe(err))
                    continue
                if outcome is not None:
                    resolved.append(outcome)
                    progressed = True
            if not progressed or len(due) < self._sweep_batch:
                return resolved

    async def _sweep_claimed_batch(self) -> tuple[list[Extension], int, bool]:
        """Claim up to a batch of due extensions and resolve them in one unit of
        work: ``(resolved, how many were claimed, whether any row was written)``.
        Workers never
        claim the same row, so none spends a unit of work on a row another
        already resolved.

        Presence (network) is asked before the claiming unit of work opens, for
        the mitras of the rows it is about to claim; a claimed row whose mitra
        was not asked (it became due, or another worker's lock hid it, meanwhile)
        is left pending for the next batch.  A row that cannot be read or decided
        is set aside in the same unit of work."""
        action = TimeoutAction.parse(await self._config.extension_timeout_action())
        grace = int(await self._config.closure_grace_seconds())
        stale_after = await stale_after_seconds(self._config)
        for attempt in range(self._max_attempts):
            asked: dict[str, tuple[bool, bool]] | None = None
            if action is TimeoutAction.AUTO_APPROVE:
                async with self._store.unit_of_work() as uow:  # unlocked read, closed below
                    mitras = await uow.snapshots.mitras_due(self._clock.now(), self._sweep_batch)
                asked = await self._gather_presence(mitras)
            done: list[tuple[core.Decision, list[str]]] = []
            aside: list[tuple[str, int, str]] = []
            try:
                async with self._store.unit_of_work() as uow:
                    now = self._clock.now()
                    snapshots = await uow.snapshots.for_due(now, self._sweep_batch)
                    for item in snapshots:
                        if isinstance(item, Undecidable):
                            times = await uow.extensions.set_aside(
                                item.extension_id, now, item.error
                            )
                            aside.append((item.extension_id, times, item.error))
                            continue
                        session = item.session
                        if asked is not None and session and session.mitra_id not in asked:
                            continue  # not asked about: the next batch asks first
                        try:
                            decision = self._decide_timeout(
                                item, action, grace, stale_after, asked or {}
                            )
                        except Exception as err:  # one bad row must not stall the rest
                            assert item.extension is not None
                            ext_id, error = item.extension.id, _describe(err)
                            times = await uow.extensions.set_aside(ext_id, now, error)
                            aside.append((ext_id, times, error))
                            continue
                        if decision is not None and not decision.is_empty:
                            done.append((decision, await self._write(uow, decision, item.now)))
                    if done or aside:
                        await uow.commit()
            except ConcurrencyConflict:
                await asyncio.sleep(0.001 * 2**attempt)
                continue
            for extension_id, times, error in aside:
                _log_set_aside(extension_id, times, error)
            for decision, outbox_ids in done:
                await self._after_commit(decision, outbox_ids)
            resolved = [d.extension.row for d, _ in done if d.extension]
            metrics.swept(resolved, self._clock.now())
            return resolved, len(snapshots), bool(done or aside)
        raise ConcurrencyConflict("sweep batch kept losing races")

    def _decide_timeout(
        self,
        snapshot: core.Snapshot,
        action: TimeoutAction,
        grace: int,
        stale_after: float,
        asked: dict[str, tuple[bool, bool]],
    ) -> core.Decision | None:
        """One claimed extension's timeout decision, on presence gathered before."""
        ext = snapshot.extension
        assert ext is not None
        reachable = self._mitra_reachable(snapshot.session, action, asked)
        facts = self._timeout_facts(action, grace, stale_after, reachable, snapshot.now)
        return core.decide(snapshot, TimeoutExtension(ext.id), facts)

    async def _time_out(
        self, extension_id: str, action: TimeoutAction | None = None
    ) -> Extension | None:
        """The timeout path shared by the timer and the sweep (``action``: the
        configured one unless given).  Presence is asked before the unit of work
        that claims the row is opened, never inside it."""
        if action is None:
            action = TimeoutAction.parse(await self._config.extension_timeout_action())
        grace = int(await self._config.closure_grace_seconds())
        stale_after = await stale_after_seconds(self._config)
        asked: dict[str, tuple[bool, bool]] = {}
        if action is TimeoutAction.AUTO_APPROVE:
            mitra = await self._pending_mitra(extension_id)
            if mitra is None:
                return None  # resolved already, or no such extension
            asked = await self._gather_presence([mitra])
        reachable = (False, False)

        async def load(uow: UnitOfWork) -> core.Snapshot:
            nonlocal reachable
            snapshot = await _claimed(uow, extension_id)
            reachable = self._mitra_reachable(snapshot.session, action, asked)
            return snapshot

        decision = await self._run(
            TimeoutExtension(extension_id),
            load,
            lambda: self._timeout_facts(action, grace, stale_after, reachable, None),
        )
        return decision.extension.row if decision.extension else None

    async def _pending_mitra(self, extension_id: str) -> str | None:
        """The mitra of a pending extension's session, read without a lock in a unit
        of work closed before anyone is asked; ``""`` when the session is gone."""
        async with self._store.unit_of_work() as uow:
            ext = await uow.extensions.get(extension_id)
            if ext is None or ext.status is not ExtensionStatus.PENDING:
                return None
            session = await uow.sessions.get(ext.session_id)
        return session.mitra_id if session is not None else ""

    async def _late_reject(self, extension_id: str) -> None:
        try:
            await self._time_out(extension_id, TimeoutAction.AUTO_REJECT)
        except Exception:  # the sweep is the safety net; the answer still gets its 409
            _log.exception("late reject of extension %s could not time it out", extension_id)

    async def _set_aside(self, extension_id: str, error: str) -> bool:
        """Set a row the sweep could not decide aside (own unit of work); whether it was."""
        try:
            async with self._store.unit_of_work() as uow:
                times = await uow.extensions.set_aside(extension_id, self._clock.now(), error)
                if times:
                    await uow.commit()
        except Exception:
            _log.exception("sweep could not set extension %s aside", extension_id)
            return False
        if times:
            _log_set_aside(extension_id, times, error)
        return bool(times)

    async def _gather_presence(self, mitra_ids: Iterable[str]) -> dict[str, tuple[bool, bool]]:
        """(on a socket, online) of each mitra, asked concurrently, each answer
        bounded by ``presence_timeout``; no unit of work is open meanwhile."""
        ids = [m for m in dict.fromkeys(mitra_ids) if m]
        answers = await asyncio.gather(*(self._ask_presence(m) for m in ids))
        return dict(zip(ids, answers, strict=True))

    async def _ask_presence(self, mitra_id: str) -> tuple[bool, bool]:
        """Seed: never use "in-session" as a proxy for "online"; ask both, now.
        A timeout, an error or anything but ``True`` is "not reachable", which
        never approves."""
        try:
            async with asyncio.timeout(self.presence_timeout):
                connected, online = await asyncio.gather(
                    self._sockets.is_connected(Participant.MITRA, mitra_id),
                    self._presence.is_online(mitra_id),
                )
        except Exception as err:  # TimeoutError included
            _log.warning("presence of mitra %s unknown (%s): not reachable", mitra_id, err)
            return False, False
        return connected is True, online is True

    def _mitra_reachable(
        self,
        session: Session | None,
        action: TimeoutAction,
        asked: dict[str, tuple[bool, bool]],
    ) -> tuple[bool, bool]:
        """(on a socket, online) for an auto-approve, as gathered before the unit
        of work; a mitra not asked about (the host reassigned the session
        meanwhile) is not reachable."""
        if session is None or action is not TimeoutAction.AUTO_APPROVE:
            return False, False
        return asked.get(session.mitra_id, (False, False))

    def _timeout_facts(
        self,
        action: TimeoutAction,
        grace: int,
        stale_after: float,
        reachable: tuple[bool, bool],
        now: datetime | None,
    ) -> Facts:
        return Facts(
            now=now if now is not None else self._clock.now(),
            timeout_action=action,
            grace_seconds=grace,
            mitra_connected=reachable[0],
            mitra_online=reachable[1],
            stale_after_seconds=stale_after,
        )
