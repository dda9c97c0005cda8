"""Transactional outbox: effects become rows in the deciding commit, and a
dispatcher delivers them after it, at least once; a receiver drops repeats by
the ``dedupe_key`` every delivered message carries.

Every row travels in a *lane* of its session: one for its timer commands, one
for its payment events, one per participant for its messages.  A row is
delivered only once every older row of its lane is delivered or given up on
(dead), so each participant, the host's session timer and its payment side
see a session's rows in decision order, even while an earlier one is being
retried.  A notification is given up on after ``notification_max_attempts``,
so a frame that cannot get through holds the frames behind it only briefly.

Each session-timer command and payment event is told its row's ``seq`` (its
place in commit order within the session), so a receiver can drop a stale
command that arrives after a newer one (a write held up on its way).

Every call to a dependency runs under ``call_timeout``; the outbox lease is
longer than the worst case of one row's calls, so a row is never taken by a
second dispatcher while the first may still be delivering it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TypeVar

from . import metrics
from .errors import DeliveryError, StoreClosed
from .loop import run_every
from .model import (
    ClearClosureGrace,
    Notify,
    PaymentConsumed,
    PaymentFailed,
    SessionExpiryExtended,
    StartClosureGrace,
)
from .outbox_codec import KIND_NOTIFY, decode_effect, encode_effects
from .payment_events import LoggingPaymentEvents
from .ports import (
    Clock,
    OutboxMessage,
    OutboxStore,
    PaymentEvents,
    PushSender,
    SessionSockets,
    SessionTimer,
)

__all__ = [
    "DispatchReport",
    "LoggingPaymentEvents",
    "OutboxDispatcher",
    "decode_effect",
    "encode_effects",
]

_log = logging.getLogger("extension_fsm.outbox")
T = TypeVar("T")


#: the name of every background delivery task (hosts and tests can find them)
BACKGROUND_TASK_NAME = "extension_fsm.deliver"

#: the most dependency calls one row makes (a notification: socket, then push)
CALLS_PER_ROW = 2


@dataclass(frozen=True, slots=True)
class DispatchReport:
    """What one dispatch pass did (``deferred``: claimed but left for later, as
    too little of the lease was left to try it safely)."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0

    def __add__(self, other: DispatchReport) -> DispatchReport:
        return DispatchReport(
            self.delivered + other.delivered,
            self.retried + other.retried,
            self.dead + other.dead,
            self.deferred + other.deferred,
        )

    @property
    def handled(self) -> int:
        """Rows this pass took (delivered, retried, dead or deferred)."""
        return self.delivered + self.retried + self.dead + self.deferred


_OK, _RETRY, _DEAD = "ok", "retry", "dead"
#: the outcome of a row claimed behind a row of its lane that was not delivered
_BEHIND = ("behind", "")


class OutboxDispatcher:
    """Delivers outbox rows: socket first, push when no socket took it or the
    socket layer cannot say (it raised or outlived ``call_timeout``).

    A retryable :class:`DeliveryError`, a call that outlives ``call_timeout``
    (or any unexpected error) puts the row back with exponential backoff; a
    final one marks it dead.  Nothing here ever touches extension, session or
    payment state.

    Rows of one claim are delivered concurrently across sessions and one after
    another within a session; a claim may hold a run of a lane's rows, and the
    lane stops at its first row not delivered (the rest are handed back).
    ``lease_seconds`` must exceed the worst case of one row (``CALLS_PER_ROW *
    call_timeout``); a row whose turn comes when less of the lease is left than
    that is not tried: its lease runs out and it is claimed again, never sent
    twice at once.
    """

    def __init__(
        self,
        outbox: OutboxStore,
        *,
        clock: Clock,
        sockets: SessionSockets,
        push: PushSender,
        session_timer: SessionTimer,
        payment_events: PaymentEvents | None = None,
        lease_seconds: float = 30.0,
        call_timeout: float = 10.0,
        base_backoff: float = 1.0,
        max_backoff: float = 300.0,
        max_attempts: int = 20,
        notification_max_attempts: int = 6,
    ) -> None:
        if not call_timeout > 0:
            raise ValueError(f"call_timeout must be positive, got {call_timeout}")
        if not lease_seconds > CALLS_PER_ROW * call_timeout:
            raise ValueError(
                f"lease_seconds ({lease_seconds}) must exceed the worst case of one row's "
                f"calls ({CALLS_PER_ROW} x call_timeout {call_timeout} s), or a row still "
                "being delivered could be claimed and sent again"
            )
        self._outbox = outbox
        self._clock = clock
        self._sockets = sockets
        self._push = push
        self._timer = session_timer
        self._payments: PaymentEvents = payment_events or LoggingPaymentEvents()
        self._lease = lease_seconds
        self._call_timeout = call_timeout
        self._base = base_backoff
        self._max = max_backoff
        self._max_attempts = max_attempts
        self._notification_max_attempts = notification_max_attempts
        self._background: set[asyncio.Task[DispatchReport]] = set()

    # ------------------------------------------------------------ entry points

    async def deliver(self, ids: Sequence[str]) -> DispatchReport:
        """Deliver exactly these rows now (the fast path right after a commit).

        One claim takes every lane's rows among ``ids`` in order, so when all
        goes through this is one claim and one mark.  Rows left behind a
        failed row of their lane are handed back and claimed again in a
        further round (behind a row given up on) or left for their lane's retry.
        """
        report = DispatchReport()
        left = list(ids)
        while left:
            claimed = await self._outbox.claim(self._clock.now(), len(left), self._lease, left)
            if not claimed:
                break
            done, released = await self._deliver_all(claimed)
            report += done
            taken = {m.id for m in claimed} - released
            left = [i for i in left if i not in taken]
            if done.delivered + done.dead == 0:
                break  # nothing moved on: no lane can have opened up
        return report

    async def dispatch_due(self, limit: int = 100) -> DispatchReport:
        """Deliver up to ``limit`` rows that are due (left over, or up for retry).

        Rows that became due because this pass delivered the row before them in
        their lane are taken in further rounds of the same pass.
        """
        report = DispatchReport()
        while report.handled < limit:
            claimed = await self._outbox.claim(
                self._clock.now(), limit - report.handled, self._lease
            )
            if not claimed:
                break
            done, _ = await self._deliver_all(claimed)
            report += done
            if done.delivered + done.dead == 0:
                break  # nothing moved on: no lane can have opened up
        return report

    async def run(self, interval: float = 1.0, *, limit: int = 100) -> None:
        """Dispatch forever, every ``interval`` seconds, at once again while passes
        come back full (cancel the task to stop); a failed pass is logged."""

        async def dispatch() -> bool:
            report = await self.dispatch_due(limit)
            return report.handled >= limit

        await run_every("outbox dispatch", dispatch, interval, log=_log)

    # ------------------------------------------------------------- background

    def deliver_soon(self, ids: Sequence[str]) -> None:
        """Deliver these rows in a background task and return at once.

        The task is kept until it ends; an error is logged and the rows stay in
        the outbox for :meth:`dispatch_due`.  :meth:`drain` waits for every
        such task; :meth:`aclose` cancels them.
        """
        if not ids:
            return
        task = asyncio.get_running_loop().create_task(
            self.deliver(list(ids)), name=BACKGROUND_TASK_NAME
        )
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[DispatchReport]) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        err = task.exception()
        if isinstance(err, StoreClosed):
            # The store closed first: the rows are handed back, as on a crash.
            _log.info("store closed before a post-commit delivery; left in the outbox")
        elif err is not None:
            _log.error(
                "post-commit delivery failed; left in the outbox",
                exc_info=(type(err), err, err.__traceback__),
            )

    @property
    def in_flight(self) -> int:
        """Background deliveries not finished yet."""
        return sum(1 for t in self._background if not t.done())

    async def drain(self) -> None:
        """Wait until every background delivery started so far (and any started
        while waiting) has finished."""
        while True:
            live = [t for t in self._background if not t.done()]
            if not live:
                return
            await asyncio.wait(live)

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Let background deliveries finish for up to ``grace`` seconds, then
        cancel the rest (their rows stay in the outbox, leased until the lease
        runs out) and wait for them to stop."""
        live = [t for t in self._background if not t.done()]
        if live and grace > 0:
            _, live_set = await asyncio.wait(live, timeout=grace)
            live = list(live_set)
        for task in live:
            task.cancel()
        if live:
            await asyncio.gather(*live, return_exceptions=True)

    # --------------------------------------------------------------- delivery

    async def _deliver_all(self, rows: Sequence[OutboxMessage]) -> tuple[DispatchReport, set[str]]:
        """Deliver a claim's rows; the report and the ids handed back untried."""
        loop = asyncio.get_running_loop()
        # Past this moment a row's worst case would outlive the lease: leave it.
        cutoff = loop.time() + self._lease - CALLS_PER_ROW * self._call_timeout
        by_session: dict[str, list[OutboxMessage]] = {}
        group_of_lane: dict[str, str] = {}  # a lane's rows go in one group, in order
        for row in rows:
            group = _session_of(row)
            if row.lane is not None:
                group = group_of_lane.setdefault(row.lane, group)
            by_session.setdefault(group, []).append(row)
        groups = await asyncio.gather(
            *(self._deliver_in_order(group, cutoff) for group in by_session.values())
        )
        outcomes = {m.id: o for group in groups for m, o in group}
        # A claim may hold a run of a lane's rows; each lane stops at its first
        # row not delivered, so the delivered rows of a lane are the oldest of
        # its run and are marked together (one statement: all or none).  A row
        # that failed is marked after them, the rows behind it are handed back
        # (never tried) last: a crash between marks leaves rows leased, to be
        # claimed again in order when the lease runs out.
        done = [row.id for row in rows if outcomes[row.id] == (_OK, "")]
        if done:
            await self._outbox.mark_delivered(done, self._clock.now())
            for row in rows:
                if outcomes[row.id] == (_OK, ""):
                    metrics.delivery(row.kind, "delivered")
        delivered, retried, dead, deferred = len(done), 0, 0, 0
        released: list[str] = []
        for row in rows:
            outcome = outcomes[row.id]
            if outcome is None:
                deferred += 1
            elif outcome == _BEHIND:
                released.append(row.id)
            elif outcome[0] == _OK:
                continue
            elif outcome[0] == _RETRY:
                await self._retry(row, outcome[1])
                retried += 1
                metrics.delivery(row.kind, "retried")
            else:
                await self._outbox.mark_dead(row.id, self._clock.now(), outcome[1])
                dead += 1
                metrics.delivery(row.kind, "dead")
        release = getattr(self._outbox, "release", None)  # optional: see OutboxStore
        if released and release is not None:
            await release(released, self._clock.now())
        return DispatchReport(delivered, retried, dead, deferred), set(released)

    async def _deliver_in_order(
        self, rows: Sequence[OutboxMessage], cutoff: float
    ) -> list[tuple[OutboxMessage, tuple[str, str] | None]]:
        """One session's rows one after another; a lane stops at its first
        row not delivered (the rest of it are :data:`_BEHIND`)."""
        loop = asyncio.get_running_loop()
        out: list[tuple[OutboxMessage, tuple[str, str] | None]] = []
        stopped: set[str] = set()
        for row in rows:
            if row.lane is not None and row.lane in stopped:
                out.append((row, _BEHIND))
                continue
            if loop.time() > cutoff:
                out.append((row, None))
                continue
            outcome = await self._attempt(row)
            if outcome[0] != _OK and row.lane is not None:
                stopped.add(row.lane)
            out.append((row, outcome))
        return out

    async def _attempt(self, row: OutboxMessage) -> tuple[str, str]:
        """``(outcome, error text)`` of one delivery attempt; never raises."""
        try:
            await self._deliver_one(row)
        except DeliveryError as err:
            if err.retryable and row.attempts + 1 < self._budget(row):
                return _RETRY, f"{type(err).__name__}: {err}"
            return _DEAD, str(err)
        except Exception as err:  # an adapter bug must not lose the row
            _log.exception("outbox row %s failed", row.id)
            if row.attempts + 1 < self._budget(row):
                return _RETRY, f"{type(err).__name__}: {err}"
            return _DEAD, f"{type(err).__name__}: {err}"
        return _OK, ""

    def _budget(self, row: OutboxMessage) -> int:
        """How many attempts ``row`` gets before it is given up on."""
        if row.kind == KIND_NOTIFY:
            return min(self._max_attempts, self._notification_max_attempts)
        return self._max_attempts

    async def _retry(self, row: OutboxMessage, error: str) -> None:
        delay = min(self._max, self._base * 2**row.attempts)
        available = self._clock.now() + timedelta(seconds=delay)
        await self._outbox.mark_retry(row.id, available, error)

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        """``call`` under the per-call timeout; outliving it is a retryable failure."""
        try:
            async with asyncio.timeout(self._call_timeout):
                return await call
        except TimeoutError:
            raise DeliveryError(
                f"{what} did not answer within {self._call_timeout} s", retryable=True
            ) from None

    async def _deliver_one(self, row: OutboxMessage) -> None:
        effect = decode_effect(row)
        if row.seq is None and not isinstance(effect, Notify):
            raise DeliveryError(
                f"outbox row {row.id} has no seq: the outbox store must number its rows",
                retryable=False,
            )
        seq = row.seq or 0
        match effect:
            case Notify():
                taken = await self._send_to_socket(row, effect)
                if not taken and effect.push is not None:
                    await self._call(
                        "push", self._push.send(effect.recipient, effect.user_id, effect.push)
                    )
            case StartClosureGrace():
                await self._call(
                    "session timer",
                    self._timer.start_closure_grace(effect.session_id, effect.deadline, seq=seq),
                )
            case ClearClosureGrace():
                await self._call(
                    "session timer", self._timer.clear_closure_grace(effect.session_id, seq=seq)
                )
            case SessionExpiryExtended():
                await self._call(
                    "session timer",
                    self._timer.expiry_extended(effect.session_id, effect.expires_at, seq=seq),
                )
            case PaymentConsumed():
                consumed = replace(effect, seq=seq)
                await self._call("payment events", self._payments.consumed(consumed))
            case PaymentFailed():
                failed = replace(effect, seq=seq)
                await self._call("payment events", self._payments.failed(failed))

    async def _send_to_socket(self, row: OutboxMessage, effect: Notify) -> bool:
        """Whether a socket took the message; "no" when the socket layer cannot
        say and there is a push to send instead (the replaced service pushed
        when its socket send failed).  Without a push, the failure is raised."""
        message = {**effect.message, "dedupe_key": effect.dedupe_key}
        try:
            return await self._call(
                "socket send", self._sockets.send(effect.session_id, effect.recipient, message)
            )
        except Exception as err:
            if effect.push is None:
                raise
            if not isinstance(err, DeliveryError):  # an adapter bug: keep its traceback
                _log.exception("outbox row %s: socket send failed; pushing", row.id)
            else:
                _log.warning("outbox row %s: socket layer cannot say (%s); pushing", row.id, err)
            return False


def _session_of(row: OutboxMessage) -> str:
    session = row.payload.get("session_id")
    return session if isinstance(session, str) else row.id
