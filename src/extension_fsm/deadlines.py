"""The deadline sweep :class:`~extension_fsm.service.ExtensionService` owns:
every timeout, whoever asks for it, is resolved here, through one path.

:meth:`DeadlineSweep.sweep_due` claims the due extensions a batch at a time;
:meth:`DeadlineSweep.time_out` (the in-process timer, a late "no") claims a
batch of one.  Both run :meth:`DeadlineSweep._resolve`: presence asked first,
then one unit of work that claims, decides, writes and commits the batch,
setting aside a row that cannot be decided; then the service's after-commit
hook.  Presence (network) is always asked before the unit of work that claims
a row is opened, never inside it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from . import core, metrics
from .core import Undecidable
from .errors import ConcurrencyConflict, ErrorCode, ExtensionError
from .model import (
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

__all__ = ["AfterCommit", "DeadlineSweep", "DecisionWriter"]

_log = logging.getLogger("extension_fsm")

#: every write of a decision in a unit of work; the ids of the outbox rows it adds
DecisionWriter = Callable[[UnitOfWork, core.Decision, datetime | None], Awaitable[list[str]]]
#: what follows a commit: timers armed or dropped, the outbox rows handed to delivery
AfterCommit = Callable[[core.Decision, list[str]], Awaitable[None]]


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


class DeadlineSweep:
    """Resolve pending extensions whose deadline has passed.

    ``write`` is the service's writer of a decision in a unit of work and
    ``after_commit`` what the service does once it is committed (timers,
    delivery); the sweep calls nothing else of the service.  ``batch`` rows
    are claimed per unit of work; ``spread`` (a random source) starts each
    worker's row-by-row pass over an unreadable batch at a random row.
    ``presence_timeout`` bounds each presence question (seconds).
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        config: ConfigSource,
        sockets: SessionSockets,
        presence: Presence,
        write: DecisionWriter,
        after_commit: AfterCommit,
        max_attempts: int,
        batch: int,
        spread: random.Random | None,
        presence_timeout: float = 0.5,
    ) -> None:
        self._store = store
        self._clock = clock
        self._config = config
        self._sockets = sockets
        self._presence = presence
        self._write = write
        self._after_commit = after_commit
        self._max_attempts = max_attempts
        self._sweep_batch = batch
        self._sweep_spread = spread
        self.presence_timeout = presence_timeout

    async def sweep_due(self) -> list[Extension]:
        """Resolve every pending extension whose deadline has passed.

        The source of truth for timeouts: safe at any time and from many
        workers at once (rows are claimed; another worker's are skipped).
        Each claimed batch (``for_due``) is resolved in one unit of work; when
        a batch cannot even be read, the due rows are taken as batches of one
        (the same path), so the culprit is found and set aside.  Presence is
        gathered before any unit of work is opened; a row that cannot be
        decided is set aside (retried later, with backoff) and the pass goes
        on to the rows behind it.
        """
        resolved: list[Extension] = []
        while True:
            try:
                done, claimed, progressed = await self._resolve(None, None, "sweep")
            except ConcurrencyConflict:  # a busy database: the next sweep picks them up
                return resolved
            except (ExtensionError, ValueError, TypeError):
                # A batch that cannot even be read (a value the driver cannot
                # convert): one row at a time, the culprit is found and set aside.
                _log.exception("sweep batch unreadable; resolving due rows one by one")
                return resolved + await self._sweep_one_by_one()
            resolved.extend(done)
            if claimed < self._sweep_batch or not progressed:  # drained, or stuck
                return resolved

    async def time_out(
        self, extension_id: str, action: TimeoutAction | None = None
    ) -> Extension | None:
        """Resolve one extension now if it is due, as a batch of one (``action``:
        the configured one unless given); the resolved row, or ``None`` when
        there was nothing to do.  A row that cannot be decided is set aside as
        the sweep would; one that cannot be read raises."""
        done, _, _ = await self._resolve(extension_id, action, "timer")
        return done[0] if done else None

    async def _sweep_one_by_one(self) -> list[Extension]:
        """The due rows, each claimed and resolved as a batch of one, a listed
        batch at a time: a row that cannot be read is set aside in its own unit
        of work, one under contention is left for the next sweep."""
        resolved: list[Extension] = []
        while True:
            try:
                async with self._store.unit_of_work() as uow:
                    due = await uow.snapshots.due_ids(self._clock.now(), self._sweep_batch)
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
                    done, _, moved = await self._resolve(extension_id, None, "sweep")
                except (ConcurrencyConflict, ExtensionError) as err:
                    if isinstance(err, ExtensionError) and err.code is not ErrorCode.CONFLICT:
                        progressed |= await self._set_aside(extension_id, _describe(err))
                    continue  # contention: the next pass retries it
                except Exception as err:  # one bad row must not stall the rest
                    progressed |= await self._set_aside(extension_id, _describe(err))
                    continue
                resolved.extend(done)
                progressed |= moved
            if not progressed or len(due) < self._sweep_batch:
                return resolved

    async def _resolve(
        self, extension_id: str | None, action: TimeoutAction | None, path: str
    ) -> tuple[list[Extension], int, bool]:
        """The one timeout path: claim the due batch (``extension_id=None``) or
        that one extension, decide each row and write them in one unit of work:
        ``(resolved, how many were claimed, whether any row was written)``;
        ``path`` (timer | sweep) labels its metrics.
        Workers never claim the same row, so none spends a unit of work on a
        row another already resolved.

        Presence (network) is asked before the claiming unit of work opens, for
        the mitras of the rows it is about to claim; a claimed row whose mitra
        was not asked (it became due, another worker's lock hid it, or the host
        handed its session to another mitra meanwhile) is left pending for the
        next pass, which asks first.  A row that cannot be decided is set aside
        in the same unit of work."""
        since = metrics.started()
        if action is None:
            action = TimeoutAction.parse(await self._config.extension_timeout_action())
        grace = int(await self._config.closure_grace_seconds())
        stale_after = await stale_after_seconds(self._config)
        for attempt in range(self._max_attempts):
            asked: dict[str, tuple[bool, bool]] | None = None
            if action is TimeoutAction.AUTO_APPROVE:
                mitras = await self._mitras_to_ask(extension_id)
                if mitras is None:
                    return [], 0, False  # resolved already, or no such extension
                asked = await self._gather_presence(mitras)
            done: list[tuple[core.Decision, list[str]]] = []
            noops = 0
            aside: list[tuple[str, int, str]] = []
            claimed: list[str] = []
            try:
                async with self._store.unit_of_work() as uow:
                    now = self._clock.now()
                    snapshots: list[core.Snapshot | Undecidable]
                    if extension_id is None:
                        snapshots = await uow.snapshots.for_due(
                            now, self._sweep_batch, None if asked is None else set(asked)
                        )
                        claimed = [
                            item.extension.id
                            for item in snapshots
                            if isinstance(item, core.Snapshot) and item.extension is not None
                        ]
                    else:
                        snapshots = [await _claimed(uow, extension_id)]
                    for item in snapshots:
                        if isinstance(item, Undecidable):
                            times = await uow.set_aside(item.extension_id, now, item.error)
                            aside.append((item.extension_id, times, item.error))
                            continue
                        session = item.session
                        if asked is not None and session and session.mitra_id not in asked:
                            continue  # not asked about: the next pass asks first
                        if item.extension is None:
                            noops += 1  # resolved already, or another worker holds it
                            continue
                        try:
                            decision = self._decide_timeout(
                                item, action, grace, stale_after, asked or {}
                            )
                        except Exception as err:  # one bad row must not stall the rest
                            if isinstance(err, ExtensionError):
                                metrics.refused(TimeoutExtension(item.extension.id), err)
                            ext_id, error = item.extension.id, _describe(err)
                            times = await uow.set_aside(ext_id, now, error)
                            aside.append((ext_id, times, error))
                            continue
                        if decision.is_empty:
                            noops += 1
                        else:
                            done.append((decision, await self._write(uow, decision, item.now)))
                    if done or aside:
                        await uow.commit()
            except ConcurrencyConflict:
                metrics.conflict("TimeoutExtension")
                if claimed:
                    # A row of the batch moved under it (an answer came first).
                    # The batch's claim keeps other sweeps off its rows, this one
                    # included: each is resolved on its own, read by its id.
                    return await self._each_of(claimed, action, path), len(claimed), True
                await asyncio.sleep(0.001 * 2**attempt)
                continue
            for ext_id, times, error in aside:
                _log_set_aside(ext_id, times, error)
            for decision, outbox_ids in done:
                await self._after_commit(decision, outbox_ids)
            resolved = [d.extension.row for d, _ in done if d.extension]
            metrics.timed_out(resolved, noops, since, self._clock.now(), path)
            return resolved, len(snapshots), bool(done or aside)
        raise ConcurrencyConflict("timeout batch kept losing races")

    async def _each_of(
        self, extension_ids: list[str], action: TimeoutAction, path: str
    ) -> list[Extension]:
        """Each of a claimed batch's rows resolved as a batch of one; one that
        still loses its race or is refused is left to the next sweep."""
        resolved: list[Extension] = []
        for ext_id in extension_ids:
            try:
                done, _, _ = await self._resolve(ext_id, action, path)
            except (ConcurrencyConflict, ExtensionError):
                continue
            resolved.extend(done)
        return resolved

    def _decide_timeout(
        self,
        snapshot: core.Snapshot,
        action: TimeoutAction,
        grace: int,
        stale_after: float,
        asked: dict[str, tuple[bool, bool]],
    ) -> core.Decision:
        """One claimed extension's timeout decision, on presence gathered before."""
        ext = snapshot.extension
        assert ext is not None
        reachable = self._mitra_reachable(snapshot.session, action, asked)
        facts = self._timeout_facts(action, grace, stale_after, reachable, snapshot.now)
        return core.decide(snapshot, TimeoutExtension(ext.id), facts)

    async def _mitras_to_ask(self, extension_id: str | None) -> set[str] | None:
        """Whose presence to gather before the claiming unit of work opens: the
        mitras of the due batch, or of that one extension's session (none when
        the session is gone; ``None`` when it is not pending), read without a
        lock in a unit of work closed before anyone is asked."""
        if extension_id is None:
            async with self._store.unit_of_work() as uow:
                return await uow.snapshots.mitras_due(self._clock.now(), self._sweep_batch)
        mitra = await self._pending_mitra(extension_id)
        if mitra is None:
            return None
        return {mitra} if mitra else set()

    async def _pending_mitra(self, extension_id: str) -> str | None:
        """The mitra of a pending extension's session, read without a lock in a unit
        of work closed before anyone is asked (one joined read); ``""`` when
        the session is gone."""
        async with self._store.unit_of_work() as uow:
            snapshot = await uow.snapshots.for_timeout(extension_id)
        ext, session = snapshot.extension, snapshot.session
        if ext is None or ext.status is not ExtensionStatus.PENDING:
            return None
        return session.mitra_id if session is not None else ""

    async def _set_aside(self, extension_id: str, error: str) -> bool:
        """Set a row the sweep could not decide aside (own unit of work); whether it was."""
        try:
            async with self._store.unit_of_work() as uow:
                times = await uow.set_aside(extension_id, self._clock.now(), error)
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
        of work; a mitra not asked about is not reachable."""
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
