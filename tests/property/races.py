"""A hypothesis state machine that interleaves the races the invariants of
``docs/design.md`` must survive.

:class:`ExtensionRaces` drives a :class:`~extension_fsm.simulator.World`
(service, recording fakes, virtual clock, host timers, periodic sweep) plus a
second worker over the same store, and checks invariants 1-9 after every step:
the data-level ones with :func:`check_invariants` in an ``@invariant``, the
behavioural ones (5, 8, 9) inside the rules, where the facts are known.

It is a base class: override :meth:`make_store` / :meth:`close_store` to run
the same machine over another :class:`InspectableStore` (SQLite, ...), then
expose ``YourSubclass.TestCase`` in a ``test_*.py`` module.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Coroutine
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from extension_fsm import (
    DeliveryError,
    Extension,
    ExtensionError,
    ExtensionService,
    ExtensionStatus,
    FailureCause,
    Participant,
    PaymentStatus,
    SessionStatus,
    TimeoutAction,
    TimeoutReason,
)
from extension_fsm.adapters.memory import MemoryStore
from extension_fsm.invariants import check_invariants
from extension_fsm.ports import InspectableStore, StoreDump
from extension_fsm.simulator import World, make_payment, make_session
from tests.unit._support import VirtualTimeLoop, YieldingStore

T = TypeVar("T")

# session id -> (customer, mitra, seconds until expiry)
SESSIONS = {
    "s1": ("c1", "m1", 1200),
    "s2": ("c2", "m2", 40),
    "s3": ("c1", "m3", 600),
    "s4": ("c3", "m1", 900),
}
CUSTOMERS = ("c1", "c2", "c3")
MITRAS = ("m1", "m2", "m3", "m4")
# payment id -> (customer, amount, status, is_extension, is_first_session_discount)
PAYMENTS = {
    **{f"p{i}": ("c1", 10000 + 1000 * i, PaymentStatus.CONFIRMED, True, False) for i in range(8)},
    **{f"q{i}": ("c2", 20000 + 1000 * i, PaymentStatus.CONFIRMED, True, False) for i in range(4)},
    **{f"r{i}": ("c3", 30000 + 1000 * i, PaymentStatus.CONFIRMED, True, False) for i in range(4)},
    "p_discount": ("c1", 5000, PaymentStatus.CONFIRMED, True, True),
    "p_plain": ("c1", 5000, PaymentStatus.CONFIRMED, False, False),
    "p_unpaid": ("c1", 5000, PaymentStatus.PENDING, True, False),
}
SWEEP_INTERVAL = 1.0

durations = st.one_of(
    st.integers(1, 1440),
    st.sampled_from([1, 1440, 0, -1, 1441, 10**6, True, "30", 2.5, None]),
)


def _by_id(rows: Any) -> dict[str, Any]:
    return {row.id: row for row in rows}


def _free_payments(dump: StoreDump, customer: str) -> list[str]:
    """The customer's usable extension payments that back no extension yet."""
    used = {e.payment_session_id for e in dump.extensions}
    return sorted(
        p.id
        for p in dump.payments
        if p.customer_id == customer
        and p.status is PaymentStatus.CONFIRMED
        and p.is_extension
        and not p.is_first_session_discount
        and p.id not in used
    )


class ExtensionRaces(RuleBasedStateMachine):
    """Interleave requests, answers, timers, sweeps, restarts, ends and config."""

    # ------------------------------------------------------------ hooks

    async def make_store(self) -> InspectableStore:
        """The store under test (override for another backend)."""
        return YieldingStore(MemoryStore())

    async def close_store(self, store: InspectableStore) -> None:
        """Release what :meth:`make_store` made."""

    async def concurrently(self, *calls: Awaitable[Any]) -> list[Any]:
        """Run ``calls`` at once (results or exceptions, in order).  A backend
        whose driver adds real threads overrides this to keep runs replayable."""
        return list(await asyncio.gather(*calls, return_exceptions=True))

    # ------------------------------------------------------------ set-up

    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeLoop()
        self.store = self.run(self.make_store())
        # Ids from a counter, not uuid4: a store that lists rows by id (SQL)
        # must list them in the same order when hypothesis replays a run.
        ids = itertools.count(1)
        self.new_id = lambda: f"id{next(ids):06d}"
        self.world = World(self.store, sweep_interval=SWEEP_INTERVAL, new_id=self.new_id)
        self.initial_expiry: dict[str, datetime] = {}
        self.ends = 0
        self.run(self._seed())
        self.worker = self._second_worker()

    async def _seed(self) -> None:
        now = self.world.clock.now()
        for sid, (customer, mitra, seconds) in SESSIONS.items():
            session = make_session(
                sid,
                customer_id=customer,
                mitra_id=mitra,
                expires_at=now + timedelta(seconds=seconds),
                customer_display_name=f"name-{customer}",
            )
            self.initial_expiry[sid] = session.expires_at
            await self.world.add_session(session)
            self.world.connect(session, Participant.CUSTOMER, on_session_socket=True)
        for pid, (customer, amount, status, is_ext, discount) in PAYMENTS.items():
            await self.world.add_payment(
                make_payment(
                    pid,
                    customer_id=customer,
                    amount=amount,
                    status=status,
                    is_extension=is_ext,
                    is_first_session_discount=discount,
                )
            )

    def _second_worker(self) -> ExtensionService:
        w = self.world
        return ExtensionService(
            w.store,
            clock=w.clock,
            config=w.config,
            sockets=w.sockets,
            presence=w.presence,
            push=w.push,
            session_timer=w.session_timer,
            new_id=self.new_id,
        )

    def teardown(self) -> None:
        try:
            self.run(self.close_store(self.store))
        finally:
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one coroutine on this machine's private loop, then every delivery
        it started in the background (so each step's effects are all in)."""
        return self.loop.run_until_complete(self._settled(coro))

    async def _settled(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return await coro
        finally:
            for service in (getattr(self, "world", None), getattr(self, "worker", None)):
                if isinstance(service, World):
                    await service.settle()
                elif service is not None:
                    await service.dispatcher.drain()

    # ------------------------------------------------------------ helpers

    def dump(self) -> StoreDump:
        return self.run(self.store.dump())

    def _reachable(self, mitra: str) -> bool:
        w = self.world
        return w.sockets.connected.get((Participant.MITRA, mitra), False) and w.presence.online.get(
            mitra, False
        )

    def step(self, coro: Awaitable[T], *, late_reject: str | None = None) -> T | ExtensionError:
        """Run ``coro``; check every resolution it caused against the facts of
        this moment (invariant 5 and the timeout policy), and that a refusal
        wrote nothing (invariant 9) but, for a late reject of ``late_reject``,
        that extension's uncharged timeout."""
        before = self.dump()
        try:
            result: T | ExtensionError = self.run(_awaited(coro))
        except ExtensionError as err:
            after = self.dump()
            if late_reject is not None and after != before:
                ext = _by_id(after.extensions)[late_reject]
                assert (ext.status, ext.reason, ext.failure_cause) == (
                    ExtensionStatus.TIMEOUT,
                    TimeoutReason.TIMEOUT,
                    FailureCause.EXTENSION_REJECTED,
                ), ext
                assert after.ledger == before.ledger, "a late reject was charged"
                return err
            assert after == before, f"{err!r} but rows were written"
            return err
        after = self.dump()
        self._check_resolutions(before, after)
        return result

    def _check_resolutions(self, before: StoreDump, after: StoreDump) -> None:
        old = _by_id(before.extensions)
        sessions = _by_id(after.sessions)
        payments = _by_id(after.payments)
        action = TimeoutAction.parse(self.world.config.timeout_action)
        for ext in after.extensions:
            prev = old.get(ext.id)
            if prev is None or prev.status is not ExtensionStatus.PENDING:
                continue
            if ext.status is ExtensionStatus.PENDING:
                continue
            reachable = self._reachable(sessions[ext.session_id].mitra_id)
            if ext.status is ExtensionStatus.ACCEPTED and ext.via_timeout:
                # Invariant 5: only under auto_approve with the mitra connected and online.
                assert action is TimeoutAction.AUTO_APPROVE and reachable, ext
            if ext.status is ExtensionStatus.TIMEOUT:
                assert ext.responded_at is not None and ext.responded_at >= ext.expires_at
                late_no = (ext.reason, ext.failure_cause) == (
                    TimeoutReason.TIMEOUT,
                    FailureCause.EXTENSION_REJECTED,
                )
                if action is TimeoutAction.AUTO_REJECT:
                    assert late_no, ext
                elif not late_no:  # a late reject times out as auto_reject does
                    # The host's payment status: not chargeable, whoever is reachable.
                    host_moved = payments[ext.payment_session_id].status is PaymentStatus.UNKNOWN
                    assert not reachable or host_moved
                    assert (ext.reason, ext.failure_cause) == (
                        TimeoutReason.SAFEGUARD,
                        FailureCause.EXTENSION_SAFEGUARD_TRIPPED,
                    )

    def _pick_extension(self, data: st.DataObject) -> Extension | None:
        extensions = sorted(self.dump().extensions, key=lambda e: e.requested_at)
        if not extensions:
            return None
        pending = [e for e in extensions if e.status is ExtensionStatus.PENDING]
        prefer = bool(pending) and data.draw(st.booleans(), label="prefer pending")
        pool = pending if prefer else extensions
        return data.draw(st.sampled_from(pool), label="extension")

    # ------------------------------------------------------------ rules

    @initialize(seed=st.integers(0, 2**32 - 1))
    def schedule(self, seed: int) -> None:
        """Seed the interleaving: how long each storage call lets others run."""
        if isinstance(self.store, YieldingStore):
            self.store.rng = random.Random(seed)

    @rule(
        sid=st.sampled_from(sorted(SESSIONS)),
        pid=st.sampled_from([*sorted(PAYMENTS), "missing"]),
        duration=durations,
        price_delta=st.sampled_from([0, 0, 0, 1, -1, "bad"]),
        wrong_customer=st.booleans(),
    )
    def request(
        self, sid: str, pid: str, duration: object, price_delta: object, wrong_customer: bool
    ) -> None:
        owner = SESSIONS[sid][0]
        customer = next(c for c in CUSTOMERS if c != owner) if wrong_customer else owner
        amount = PAYMENTS[pid][1] if pid in PAYMENTS else 1000
        price: object = str(amount) if price_delta == "bad" else amount + int(price_delta)  # type: ignore[call-overload]
        dump = self.dump()
        session = _by_id(dump.sessions)[sid]
        payment = _by_id(dump.payments).get(pid)
        live = [
            e
            for e in dump.extensions
            if e.payment_session_id == pid
            and e.status in (ExtensionStatus.PENDING, ExtensionStatus.ACCEPTED)
        ]
        valid = (
            customer == owner
            and session.status in (SessionStatus.ACTIVE, SessionStatus.CLOSING)
            and payment is not None
            and payment.customer_id == customer
            and payment.status is PaymentStatus.CONFIRMED
            and payment.is_extension
            and not payment.is_first_session_discount
            and type(duration) is int
            and 1 <= duration <= 1440
            and price_delta == 0
            and not live
        )
        result = self.step(
            self.world.service.request_extension(
                session_id=sid,
                customer_id=customer,
                duration_minutes=duration,  # type: ignore[arg-type]
                price=price,  # type: ignore[arg-type]
                extension_payment_session_id=None if pid == "missing" else pid,
            )
        )
        if valid:
            assert isinstance(result, Extension), result
            assert result.status is ExtensionStatus.PENDING
            assert result.expires_at == result.requested_at + timedelta(
                seconds=self.world.config.timeout_seconds
            )
        else:
            # Invariants 8 and 9: refused with a code and a status, nothing written.
            assert isinstance(result, ExtensionError), (sid, customer, pid, duration, price)
            if customer != owner:
                assert result.code.value == "SESSION_NOT_ACTIVE"
            assert result.status_code in (400, 403, 404, 409, 422)

    @rule(data=st.data(), sid=st.sampled_from(sorted(SESSIONS)), duration=st.integers(1, 1440))
    def request_valid(self, data: st.DataObject, sid: str, duration: int) -> None:
        """A well-formed request with a payment of the session's customer not yet used."""
        free = _free_payments(self.dump(), SESSIONS[sid][0])
        if not free:
            return
        pid = data.draw(st.sampled_from(free), label="payment")
        self.request(sid, pid, duration, 0, wrong_customer=False)

    @rule(data=st.data(), accepted=st.booleans(), who=st.sampled_from(["mitra", "other", "sid"]))
    def respond(self, data: st.DataObject, accepted: bool, who: str) -> None:
        ext = self._pick_extension(data)
        if ext is None:
            return
        sid, mitra = ext.session_id, SESSIONS[ext.session_id][1]
        if who == "other":
            mitra = data.draw(st.sampled_from([m for m in MITRAS if m != mitra]))
        elif who == "sid":  # the right mitra of another session names this extension
            sid = data.draw(st.sampled_from([s for s in SESSIONS if s != ext.session_id]))
            mitra = SESSIONS[sid][1]
        service = data.draw(st.sampled_from([self.world.service, self.worker]), label="worker")
        current = _by_id(self.dump().extensions)[ext.id]
        payment = _by_id(self.dump().payments)[ext.payment_session_id]
        result = self.step(
            service.respond_to_extension(
                extension_id=ext.id, session_id=sid, mitra_id=mitra, accepted=accepted
            ),
            late_reject=ext.id if who == "mitra" and not accepted else None,
        )
        if who == "other":
            assert isinstance(result, ExtensionError) and result.code.value == "FORBIDDEN"
        elif who == "sid":
            assert isinstance(result, ExtensionError) and result.code.value == "EXTENSION_RESOLVED"
        elif (
            current.status is ExtensionStatus.PENDING
            and self.world.clock.now() < current.expires_at
            and accepted
            and payment.status is PaymentStatus.UNKNOWN
        ):  # the host refunded the payment: nothing to charge
            assert isinstance(result, ExtensionError) and result.code.value == "INVALID_STATE"
        elif (
            current.status is ExtensionStatus.PENDING
            and self.world.clock.now() < current.expires_at
        ):
            assert isinstance(result, Extension), result
            want = ExtensionStatus.ACCEPTED if accepted else ExtensionStatus.REJECTED
            assert result.status is want and not result.via_timeout
            # Invariant 4: accepted -> active, rejected -> closing.
            session = _by_id(self.dump().sessions)[ext.session_id]
            moved = SessionStatus.ACTIVE if accepted else SessionStatus.CLOSING
            assert session.status is moved, session
        else:
            assert isinstance(result, ExtensionError), result
            assert result.code.value == "EXTENSION_RESOLVED"

    @rule(data=st.data(), with_end=st.booleans())
    def race(self, data: st.DataObject, with_end: bool) -> None:
        """Accept vs reject vs two sweeps (vs the session's end), all at once."""
        ext = self._pick_extension(data)
        if ext is None:
            return
        mitra = SESSIONS[ext.session_id][1]
        w = self.world
        calls: list[tuple[str, Awaitable[Any]]] = [
            (
                "accept",
                w.service.respond_to_extension(
                    extension_id=ext.id, session_id=ext.session_id, mitra_id=mitra, accepted=True
                ),
            ),
            (
                "reject",
                self.worker.respond_to_extension(
                    extension_id=ext.id, session_id=ext.session_id, mitra_id=mitra, accepted=False
                ),
            ),
            ("sweep", w.service.sweep_due()),
            ("sweep", self.worker.sweep_due()),
        ]
        if with_end:
            calls.append(("end", self.worker.end_session(ext.session_id)))
        order = data.draw(st.permutations(range(len(calls))), label="order")
        calls = [calls[i] for i in order]

        async def together() -> list[Any]:
            return await self.concurrently(*(c for _, c in calls))

        results = self.step(together())
        assert isinstance(results, list)
        answered = [
            r for (kind, _), r in zip(calls, results, strict=True) if kind in ("accept", "reject")
        ]
        refunded = _by_id(self.dump().payments)[ext.payment_session_id].status is (
            PaymentStatus.UNKNOWN
        )
        for r in answered:
            assert isinstance(r, Extension | ExtensionError), r
            if isinstance(r, ExtensionError):
                allowed = {"EXTENSION_RESOLVED"} | ({"INVALID_STATE"} if refunded else set())
                assert r.code.value in allowed, r
        swept = [e.id for (kind, _), r in zip(calls, results, strict=True) if kind == "sweep"
                 for e in r]  # fmt: skip
        assert len(swept) == len(set(swept)), "two workers resolved one extension"
        winners = [r.id for r in answered if isinstance(r, Extension)]
        assert len(winners) <= 1, "accept and reject both won (invariant 1)"
        assert not set(winners) & set(swept), "answered and swept (invariant 1)"
        if with_end:
            ended = results[order.index(4)]
            assert not isinstance(ended, BaseException), repr(ended)
            final = _by_id(self.dump().extensions)[ext.id]
            assert final.status is not ExtensionStatus.PENDING

    @rule(data=st.data(), sid=st.sampled_from(sorted(SESSIONS)), accepted=st.booleans())
    def race_requests(self, data: st.DataObject, sid: str, accepted: bool) -> None:
        """Two requests on one session at once, one of them answered at once."""
        customer, mitra, _ = SESSIONS[sid]
        free = _free_payments(self.dump(), customer)
        if len(free) < 2:
            return
        first, second = data.draw(st.permutations(free), label="payments")[:2]
        service, worker = self.world.service, self.worker

        def ask(svc: ExtensionService, pid: str) -> Awaitable[Extension]:
            return svc.request_extension(
                session_id=sid,
                customer_id=customer,
                duration_minutes=30,
                price=PAYMENTS[pid][1],
                extension_payment_session_id=pid,
            )

        async def ask_and_answer() -> Extension:
            ext = await ask(worker, second)
            return await worker.respond_to_extension(
                extension_id=ext.id, session_id=sid, mitra_id=mitra, accepted=accepted
            )

        async def together() -> list[Any]:
            return await self.concurrently(ask(service, first), ask_and_answer())

        results = self.step(together())
        assert isinstance(results, list)
        for r in results:
            if isinstance(r, BaseException):
                assert isinstance(r, ExtensionError) and r.status_code in (409,), r

    @rule(seconds=st.sampled_from([0.25, 1.0, 2.5, 4.0, 10.0, 30.0, 65.0]))
    def advance(self, seconds: float) -> None:
        """Time passes: deadline timers, host expiry/grace and periodic sweeps fire."""
        self.step(self.world.clock.advance(seconds))

    @rule()
    def sweep_two_workers(self) -> None:
        async def both() -> tuple[list[Extension], list[Extension]]:
            a, b = await self.concurrently(self.world.service.sweep_due(), self.worker.sweep_due())
            assert not isinstance(a, BaseException) and not isinstance(b, BaseException), (a, b)
            return a, b

        result = self.step(both())
        assert isinstance(result, tuple)
        ids = [e.id for e in (*result[0], *result[1])]
        assert len(ids) == len(set(ids)), "two workers resolved one extension"
        now = self.world.clock.now()
        overdue = [
            e.id
            for e in self.dump().extensions
            if e.status is ExtensionStatus.PENDING and e.expires_at <= now
        ]
        assert overdue == [], "sweep_due left due extensions pending"

    @rule()
    def restart(self) -> None:
        """A crash: every in-process timer is lost; storage alone rebuilds."""
        self.run(self.world.restart())
        self.worker = self._second_worker()

    # Hypothesis favours argument-light rules; without a cap every session would
    # be ended in the first few steps and the rest of the run would test little.
    @precondition(lambda self: self.ends < 2)
    @rule(sid=st.sampled_from(sorted(SESSIONS)))
    def end_session(self, sid: str) -> None:
        self.ends += 1
        before = self.dump()
        pending = [
            e
            for e in before.extensions
            if e.session_id == sid and e.status is ExtensionStatus.PENDING
        ]
        result = self.step(self.world.service.end_session(sid))
        assert not isinstance(result, ExtensionError), result
        after = self.dump()
        assert _by_id(after.sessions)[sid].status is SessionStatus.ENDED
        if _by_id(before.sessions)[sid].status is SessionStatus.ENDED:
            assert after == before  # idempotent
        for ext in pending:
            done = _by_id(after.extensions)[ext.id]
            assert (done.status, done.failure_cause) == (
                ExtensionStatus.REJECTED,
                FailureCause.SESSION_ENDED,
            )
            paid = _by_id(after.payments)[ext.payment_session_id].status
            assert paid in (PaymentStatus.FAILED, PaymentStatus.UNKNOWN)  # the host's stays

    @rule(pid=st.sampled_from(sorted(PAYMENTS)))
    def host_refunds(self, pid: str) -> None:
        """The host writes a payment status of its own, whatever the payment backs."""
        payment = _by_id(self.dump().payments)[pid]
        refunded = replace(payment, status=PaymentStatus.UNKNOWN, unknown_status="refunded")
        self.run(self.world.add_payment(refunded))

    @rule(mitra=st.sampled_from(MITRAS[:3]), connected=st.booleans(), online=st.booleans())
    def presence(self, mitra: str, connected: bool, online: bool) -> None:
        self.world.sockets.connected[(Participant.MITRA, mitra)] = connected
        self.world.presence.online[mitra] = online

    @rule(
        sid=st.sampled_from(sorted(SESSIONS)),
        who=st.sampled_from(list(Participant)),
        on=st.booleans(),
    )
    def socket(self, sid: str, who: Participant, on: bool) -> None:
        self.world.sockets.on_session[(sid, who)] = on

    @rule(
        seconds=st.integers(1, 30),
        action=st.sampled_from(["auto_approve", "auto_reject", "whatever", ""]),
    )
    def config(self, seconds: int, action: str) -> None:
        self.world.config.timeout_seconds = seconds
        self.world.config.timeout_action = action

    @rule(retryable=st.booleans())
    def push_fails(self, retryable: bool) -> None:
        self.world.push.failures.append(DeliveryError("injected", retryable=retryable))

    @rule()
    def dispatch(self) -> None:
        self.step(self.world.service.dispatcher.dispatch_due())

    # ------------------------------------------------------------ invariants

    @invariant()
    def data_invariants(self) -> None:
        """Invariants 1-4, 6 and 7 over every committed row."""
        dump = self.dump()
        violations = check_invariants(
            dump,
            now=self.world.clock.now(),
            sweep_interval=SWEEP_INTERVAL,
            initial_expiry=self.initial_expiry,
        )
        assert violations == [], violations

    @invariant()
    def only_committed_transitions_are_delivered(self) -> None:
        """Invariant 7: every socket message and push stands for a committed outbox row."""
        keys = {m.dedupe_key for m, _ in self.dump().outbox}
        for sent in self.world.sockets.sent:
            assert sent.payload.get("dedupe_key") in keys, sent
        for push in self.world.push.sent:
            data = push.payload["data"]
            assert isinstance(data, dict)
            key = f"{data['extension_id']}:{data['type']}:{push.participant.value}"
            assert key in keys, push


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable
