"""``ExtensionService``: the async shell around the pure core.

Each call: gather facts (config, presence, time) → load a snapshot in one
unit of work → ``decide`` → write rows compare-and-set, the ledger, the audit
log and the outbox in that same unit of work → commit → arm or drop the
in-process timer → hand the outbox rows to a background delivery and return.
A lost race at commit re-runs the call from the top, so every decision is made
on fresh state.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from . import core, metrics
from .core import Undecidable
from .errors import ConcurrencyConflict, ErrorCode, ExtensionError
from .model import (
    EndSession,
    Event,
    Extension,
    ExtensionStatus,
    Facts,
    Participant,
    PendingExtensionInfo,
    RequestExtension,
    RespondToExtension,
    Session,
    TimeoutAction,
    TimeoutExtension,
)
from .outbox import OutboxDispatcher, encode_effects
from .ports import (
    Clock,
    ConfigSource,
    PaymentEvents,
    Presence,
    PushSender,
    Scheduler,
    SessionSockets,
    SessionTimer,
    Store,
    TimerHandle,
    UnitOfWork,
)
from .validation import check_ids
from .wire import whole_seconds

__all__ = ["ExtensionService"]

_log = logging.getLogger("extension_fsm")
T = TypeVar("T")


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _log_set_aside(extension_id: str, times: int, error: str) -> None:
    """Logged once per row (its first time); later retries only at debug level."""
    if times == 1:
        _log.error("sweep set extension %s aside (retried with backoff): %s", extension_id, error)
    else:
        _log.debug("sweep set extension %s aside again (%d): %s", extension_id, times, error)


def _uuid() -> str:
    return str(uuid.uuid4())


async def _claimed(uow: UnitOfWork, extension_id: str) -> core.Snapshot:
    """The extension claimed, with its session and payment; ``session=None``
    alone unless it is a pending extension this unit of work now holds."""
    snapshot = await uow.snapshots.for_timeout(extension_id)  # claim and read at once
    ext = snapshot.extension
    if ext is None or ext.status is not ExtensionStatus.PENDING:
        return core.Snapshot(session=None)
    return snapshot


class _Fire:
    """The timer callback of one pending extension.

    A two-slot object rather than a closure or a partial: one is held per
    pending extension, so its size is the timer's memory cost (bench/).
    """

    __slots__ = ("extension_id", "service")

    def __init__(self, service: ExtensionService, extension_id: str) -> None:
        self.service = service
        self.extension_id = extension_id

    def __call__(self) -> Awaitable[None]:
        return self.service._fire(self.extension_id)


class ExtensionService:
    """Run the extension flow for a chat backend.

    The five public coroutines are the whole API; everything they need comes
    in through the ports.  ``scheduler`` is the in-process fast path for
    deadlines; without it, deadlines are met by :meth:`sweep_due` alone (run
    it periodically, e.g. with :func:`extension_fsm.run_sweeper`).
    Every store claims whole due batches, which keeps several sweeping workers
    apart; when a batch cannot be read and due rows are taken one by one,
    ``sweep_spread=True`` starts each worker's pass at a random row of the list.
    ``presence_timeout`` bounds each presence question (seconds) a timeout asks
    before its unit of work opens; no answer in time is "not reachable".
    """

    presence_timeout: float = 0.5

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        config: ConfigSource,
        sockets: SessionSockets,
        presence: Presence,
        push: PushSender,
        session_timer: SessionTimer,
        payment_events: PaymentEvents | None = None,
        scheduler: Scheduler | None = None,
        dispatcher: OutboxDispatcher | None = None,
        new_id: Callable[[], str] = _uuid,
        max_attempts: int = 8,
        sweep_batch: int = 100,
        sweep_spread: bool = False,
    ) -> None:
        self._store = store
        self._clock = clock
        self._config = config
        self._sockets = sockets
        self._presence = presence
        self._scheduler = scheduler
        self._new_id = new_id
        self._max_attempts = max_attempts
        self._sweep_batch = sweep_batch
        self._sweep_spread = random.Random() if sweep_spread else None
        self._timers: dict[str, TimerHandle] = {}
        # ``payment_events``: the host's money side effects (default: logged only).
        self._dispatcher = dispatcher or OutboxDispatcher(
            store.outbox,
            clock=clock,
            sockets=sockets,
            push=push,
            session_timer=session_timer,
            payment_events=payment_events,
        )

    @property
    def dispatcher(self) -> OutboxDispatcher:
        """The outbox dispatcher this service delivers through.

        A call returns once its decision is committed; its outbox rows are
        delivered in the background (``await service.dispatcher.drain()`` waits
        for them), and whatever that misses by :meth:`OutboxDispatcher.dispatch_due`.
        """
        return self._dispatcher

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Stop: cancel in-process deadline timers; let background deliveries
        finish for up to ``grace`` seconds, then cancel them.

        Nothing is lost: deadlines are data (the sweep meets them) and
        undelivered rows stay in the outbox for the next dispatch pass.
        """
        for extension_id in list(self._timers):
            self._disarm(extension_id)
        await self._dispatcher.aclose(grace=grace)

    # ------------------------------------------------------------- public API

    async def request_extension(
        self,
        *,
        session_id: str,
        customer_id: str,
        duration_minutes: int,
        price: int,
        extension_payment_session_id: str | None,
    ) -> Extension:
        """The customer asks to extend; the session pauses and the mitra is asked.

        The payment session is only checked here; it is consumed on approval.
        """
        check_ids(
            session_id=session_id,
            customer_id=customer_id,
            extension_payment_session_id=extension_payment_session_id,
        )
        event = RequestExtension(
            session_id, customer_id, duration_minutes, price, extension_payment_session_id
        )
        timeout_seconds = whole_seconds(await self._config.extension_timeout_seconds())
        extension_id = self._new_id()

        async def load(uow: UnitOfWork) -> core.Snapshot:
            return await uow.snapshots.for_request(session_id, extension_payment_session_id)

        def facts() -> Facts:
            return Facts(
                now=self._clock.now(),
                timeout_seconds=timeout_seconds,
                new_extension_id=extension_id,
            )

        decision = await self._run(event, load, facts)
        assert decision.extension is not None
        return decision.extension.row

    async def respond_to_extension(
        self, *, extension_id: str, session_id: str, mitra_id: str, accepted: bool
    ) -> Extension:
        """The session's mitra accepts or rejects; a second answer is ``EXTENSION_RESOLVED``."""
        check_ids(extension_id=extension_id, session_id=session_id, mitra_id=mitra_id)
        event = RespondToExtension(extension_id, session_id, mitra_id, bool(accepted))
        grace = int(await self._config.closure_grace_seconds())

        async def load(uow: UnitOfWork) -> core.Snapshot:
            snapshot = await uow.snapshots.for_response(session_id, extension_id)
            if snapshot.session is None or snapshot.session.mitra_id != mitra_id:
                return core.Snapshot(session=None)
            return snapshot

        try:
            decision = await self._run(
                event, load, lambda: Facts(now=self._clock.now(), grace_seconds=grace)
            )
        except ExtensionError as err:
            if err.code is ErrorCode.EXTENSION_RESOLVED:
                if accepted:
                    self._hurry(extension_id)  # a late yes: let the deadline decide now
                else:
                    # A late no is never overruled into a charge: the extension
                    # times out now as under auto_reject (uncharged); the answer
                    # itself is still refused as too late (docs/late-answers.md).
                    await self._late_reject(extension_id)
            raise
        assert decision.extension is not None
        return decision.extension.row

    async def pending_extension(self, session_id: str) -> PendingExtensionInfo | None:
        """What the chat screen needs to rehydrate; ``None`` once the window has passed."""
        check_ids(session_id=session_id)
        async with self._store.unit_of_work() as uow:
            ext = await uow.extensions.pending_for_session(session_id)
        if ext is None or self._clock.now() >= ext.expires_at:
            return None
        return PendingExtensionInfo(
            extension_id=ext.id,
            duration_minutes=ext.duration_minutes,
            price=ext.price,
            requested_at=ext.requested_at,
            expires_at=ext.expires_at,
            timeout_seconds=ext.timeout_seconds,
        )

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

    async def end_session(self, session_id: str) -> Session:
        """End the session (final); a pending extension is rejected, its payment failed."""
        check_ids(session_id=session_id)
        grace = int(await self._config.closure_grace_seconds())

        async def load(uow: UnitOfWork) -> core.Snapshot:
            pending = await uow.extensions.pending_for_session(session_id)
            if pending is not None:
                claimed = await uow.extensions.claim(pending.id)
                if claimed is not None and claimed.status is not ExtensionStatus.PENDING:
                    # Resolved between the look-up and the lock (READ COMMITTED):
                    # start over on fresh rows rather than cancel a final extension.
                    raise ConcurrencyConflict(f"extension {pending.id} resolved meanwhile")
                pending = claimed or pending
            payment = await uow.payments.get(pending.payment_session_id) if pending else None
            return core.Snapshot(
                session=await uow.sessions.get(session_id), pending=pending, payment=payment
            )

        decision = await self._run(
            EndSession(session_id), load, lambda: Facts(now=self._clock.now(), grace_seconds=grace)
        )
        if decision.session is not None:
            return decision.session.row
        async with self._store.unit_of_work() as uow:
            session = await uow.sessions.get(session_id)
        assert session is not None
        return session

    # --------------------------------------------------------------- timeouts

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
                            decision = self._decide_timeout(item, action, grace, asked or {})
                        except Exception as err:  # one bad row must not stall the rest
                            assert item.extension is not None
                            ext_id, error = item.extension.id, _describe(err)
                            times = await uow.extensions.set_aside(ext_id, now, error)
                            aside.append((ext_id, times, error))
                            continue
                        if decision is not None and not decision.is_empty:
                            done.append((decision, await self._write(uow, decision)))
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
        asked: dict[str, tuple[bool, bool]],
    ) -> core.Decision | None:
        """One claimed extension's timeout decision, on presence gathered before."""
        ext = snapshot.extension
        assert ext is not None
        reachable = self._mitra_reachable(snapshot.session, action, asked)
        facts = self._timeout_facts(action, grace, reachable, snapshot.now)
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
            lambda: self._timeout_facts(action, grace, reachable, None),
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
        reachable: tuple[bool, bool],
        now: datetime | None,
    ) -> Facts:
        return Facts(
            now=now if now is not None else self._clock.now(),
            timeout_action=action,
            grace_seconds=grace,
            mitra_connected=reachable[0],
            mitra_online=reachable[1],
        )

    def _arm(self, extension_id: str, when: datetime) -> None:
        if self._scheduler is None:
            return
        self._disarm(extension_id)
        self._timers[extension_id] = self._scheduler.call_at(when, _Fire(self, extension_id))

    async def _fire(self, extension_id: str) -> None:
        self._timers.pop(extension_id, None)
        try:
            await self._time_out(extension_id)
        except Exception:  # the sweep is the safety net; never crash the loop
            _log.exception("timeout of extension %s failed", extension_id)

    def _disarm(self, extension_id: str) -> None:
        handle = self._timers.pop(extension_id, None)
        if handle is not None:
            handle.cancel()

    def _hurry(self, extension_id: str) -> None:
        self._arm(extension_id, self._clock.now())

    # ------------------------------------------------------------- the shell

    async def _run(
        self,
        event: Event,
        load: Callable[[UnitOfWork], Awaitable[core.Snapshot]],
        facts: Callable[[], Facts],
    ) -> core.Decision:
        """Load, decide, write, commit; re-run on a lost race; then deliver."""
        since = metrics.started()
        for attempt in range(self._max_attempts):
            try:
                async with self._store.unit_of_work() as uow:
                    snapshot = await load(uow)
                    known = facts()
                    if snapshot.now is not None:  # the store's clock judges deadlines
                        known = replace(known, now=snapshot.now)
                    decision = core.decide(snapshot, event, known)
                    if decision.is_empty:
                        metrics.decided(event, decision, since, self._clock.now())
                        return decision
                    outbox_ids = await self._write(uow, decision)
                    await uow.commit()
            except ConcurrencyConflict:
                metrics.conflict(event)
                await asyncio.sleep(0.001 * 2**attempt)
                continue
            except ExtensionError as err:
                metrics.refused(event, err, since)
                raise
            await self._after_commit(decision, outbox_ids)
            metrics.decided(event, decision, since, self._clock.now())
            return decision
        raise ExtensionError(ErrorCode.CONFLICT, "Too much contention; try again")

    async def _write(self, uow: UnitOfWork, decision: core.Decision) -> list[str]:
        """Every write of ``decision`` in ``uow``; the ids of the outbox rows it adds."""
        rows = encode_effects(decision.effects, self._clock.now(), self._new_id)
        await uow.write_batch(
            decision.extension,
            decision.session,
            decision.payment,
            decision.ledger,
            decision.log,
            rows,
        )
        return [row.id for row in rows]

    async def _after_commit(self, decision: core.Decision, outbox_ids: list[str]) -> None:
        if decision.resolved is not None:
            self._disarm(decision.resolved)
        if decision.timer is not None:
            self._arm(*decision.timer)
        # Committed is committed: delivery runs in the background (a hanging push
        # provider must not hold the caller), and the dispatch loop retries.
        self._dispatcher.deliver_soon(outbox_ids)
