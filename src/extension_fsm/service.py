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
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Self, TypeVar

from . import core, metrics
from .deadlines import DeadlineSweep
from .errors import ConcurrencyConflict, ErrorCode, ExtensionError
from .model import (
    EndSession,
    Event,
    Extension,
    ExtensionStatus,
    Facts,
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

#: what to write instead when the core refuses an event (see ``ExtensionService._run``)
T = TypeVar("T")


def _uuid() -> str:
    return str(uuid.uuid4())


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
    in through the ports.  Deadlines are met by the
    :class:`~extension_fsm.deadlines.DeadlineSweep` the service owns:
    :meth:`sweep_due` (run it periodically, e.g. with
    :func:`extension_fsm.run_sweeper`) claims due batches, and ``scheduler``,
    the in-process fast path, resolves one extension as a batch of one when
    its deadline passes.  Every store claims whole due batches, which keeps
    several sweeping workers apart; when a batch cannot be read and due rows
    are taken one by one, ``sweep_spread=True`` starts each worker's pass at a
    random row of the list.  ``presence_timeout`` bounds each presence
    question (seconds) a timeout asks before its unit of work opens; no answer
    in time is "not reachable".
    ``async with ExtensionService(...) as service:`` closes it on exit
    (:meth:`aclose`).
    """

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
        self._scheduler = scheduler
        self._new_id = new_id
        self._max_attempts = max_attempts
        self._timers: dict[str, TimerHandle] = {}
        self._sweep = DeadlineSweep(
            store,
            clock=clock,
            config=config,
            sockets=sockets,
            presence=presence,
            write=self._write,
            after_commit=self._after_commit,
            max_attempts=max_attempts,
            batch=sweep_batch,
            spread=random.Random() if sweep_spread else None,
        )
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

    @property
    def presence_timeout(self) -> float:
        """How long (seconds) each presence question a timeout asks may take."""
        return self._sweep.presence_timeout

    @presence_timeout.setter
    def presence_timeout(self, seconds: float) -> None:
        self._sweep.presence_timeout = seconds

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

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
        late: list[ExtensionError] = []

        async def load(uow: UnitOfWork) -> core.Snapshot:
            # One joined read, nothing locked: the write is guarded by what
            # was read, so an answer decided on a row another worker resolved
            # meanwhile writes nothing and is decided again on what it wrote.
            snapshot = await uow.snapshots.for_response(session_id, extension_id)
            if snapshot.session is None or snapshot.session.mitra_id != mitra_id:
                return core.Snapshot(session=None)
            return snapshot

        def decide(snapshot: core.Snapshot, facts: Facts) -> core.Decision:
            late.clear()
            try:
                return core.decide(snapshot, event, facts)
            except ExtensionError as err:
                ext = snapshot.extension
                if (
                    accepted
                    or err.code is not ErrorCode.EXTENSION_RESOLVED
                    or ext is None
                    or ext.session_id != session_id
                    or ext.status is not ExtensionStatus.PENDING
                ):
                    raise  # a yes, or an extension already resolved: told so
                # A late no (still pending, past its window) is never overruled
                # into a charge: the extension times out now as under
                # auto_reject, uncharged, in this call's one guarded write (an
                # approval written first makes it write nothing, and the answer
                # is decided again: already resolved); the answer is still
                # refused as too late (docs/late-answers.md).
                late.append(err)
                no = Facts(  # (the stale bound is auto_approve's alone)
                    now=facts.now,
                    timeout_action=TimeoutAction.AUTO_REJECT,
                    grace_seconds=grace,
                    mitra_connected=False,
                    mitra_online=False,
                )
                return core.decide(snapshot, TimeoutExtension(ext.id), no)

        try:
            decision = await self._run(
                event, load, lambda: Facts(now=self._clock.now(), grace_seconds=grace), decide
            )
        except ExtensionError as err:
            if err.code is ErrorCode.EXTENSION_RESOLVED and accepted:
                self._hurry(extension_id)  # a late yes: let the deadline decide now
            raise
        if late:
            raise late[0]
        assert decision.extension is not None
        return decision.extension.row

    async def pending_extension(self, session_id: str) -> PendingExtensionInfo | None:
        """What the chat screen needs to rehydrate; ``None`` once the window has passed.

        "Passed" is judged by the clock that judges the answer: the store's
        (the database's ``now()`` on PostgreSQL, read with the row) when it has
        one, so an instance whose clock runs fast never hides an extension the
        mitra can still answer."""
        check_ids(session_id=session_id)
        async with self._store.unit_of_work() as uow:
            snapshot = await uow.snapshots.for_request(session_id, None)
        ext = snapshot.pending
        now = snapshot.now if snapshot.now is not None else self._clock.now()
        if ext is None or now >= ext.expires_at:
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
        """Resolve every pending extension whose deadline has passed (see
        :meth:`DeadlineSweep.sweep_due <extension_fsm.deadlines.DeadlineSweep.sweep_due>`):
        the source of truth for timeouts, safe at any time and from many workers."""
        return await self._sweep.sweep_due()

    async def end_session(self, session_id: str) -> Session:
        """End the session (final); a pending extension is rejected, its payment failed."""
        check_ids(session_id=session_id)
        grace = int(await self._config.closure_grace_seconds())

        async def load(uow: UnitOfWork) -> core.Snapshot:
            # The session and its pending extension, nothing locked: an approval
            # written between this read and the end's write makes the write do
            # nothing, and the end is decided again on what it wrote.  The
            # store's clock, when it has one, stamps the end and its outbox rows.
            return await uow.snapshots.for_end(session_id)

        decision = await self._run(
            EndSession(session_id), load, lambda: Facts(now=self._clock.now(), grace_seconds=grace)
        )
        if decision.session is not None:
            return decision.session.row
        session = await self.session(session_id)
        assert session is not None
        return session

    async def session(self, session_id: str) -> Session | None:
        """The chat session as stored now (one read, nothing locked); ``None``
        when there is no such session."""
        check_ids(session_id=session_id)
        async with self._store.unit_of_work() as uow:
            return (await uow.snapshots.for_request(session_id, None)).session

    def _arm(self, extension_id: str, when: datetime) -> None:
        if self._scheduler is None:
            return
        self._disarm(extension_id)
        self._timers[extension_id] = self._scheduler.call_at(when, _Fire(self, extension_id))

    async def _fire(self, extension_id: str) -> None:
        self._timers.pop(extension_id, None)
        try:
            await self._sweep.time_out(extension_id)
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
        decide: Callable[[core.Snapshot, Facts], core.Decision] | None = None,
    ) -> core.Decision:
        """Load, decide (``core.decide`` of ``event`` unless ``decide`` is
        given), write, commit; re-run on a lost race; then deliver."""
        since = metrics.started()
        for attempt in range(self._max_attempts):
            try:
                async with self._store.unit_of_work() as uow:
                    snapshot = await load(uow)
                    known = facts()
                    if snapshot.now is not None:  # the store's clock judges deadlines
                        known = replace(known, now=snapshot.now)
                    if decide is None:
                        decision = core.decide(snapshot, event, known)
                    else:
                        decision = decide(snapshot, known)
                    if decision.is_empty:
                        metrics.decided(event, decision, since)
                        return decision
                    outbox_ids = await self._write(uow, decision, snapshot.now)
                    await uow.commit()
            except ConcurrencyConflict:
                metrics.conflict(event)
                await asyncio.sleep(0.001 * 2**attempt)
                continue
            except ExtensionError as err:
                metrics.refused(event, err, since)
                raise
            await self._after_commit(decision, outbox_ids)
            metrics.decided(event, decision, since)
            return decision
        raise ExtensionError(ErrorCode.CONFLICT, "Too much contention; try again")

    async def _write(
        self, uow: UnitOfWork, decision: core.Decision, now: datetime | None = None
    ) -> list[str]:
        """Every write of ``decision`` in ``uow``; the ids of the outbox rows it adds.

        ``now``: the store's clock read with the rows, when it has one; the
        outbox rows are stamped with it, so every dispatcher (whose leases
        that clock judges) sees them available at once."""
        at = now if now is not None else self._clock.now()
        rows = encode_effects(decision.effects, at, self._new_id)
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
        """Arm or drop timers and hand the outbox rows to a background delivery."""
        if decision.resolved is not None:
            self._disarm(decision.resolved)
        if decision.timer is not None:
            self._arm(*decision.timer)
        # Committed is committed: delivery runs in the background (a hanging push
        # provider must not hold the caller), and the dispatch loop retries.
        self._dispatcher.deliver_soon(outbox_ids)
