"""A hypothesis state machine that interleaves the races of the extension flow.

:class:`ExtensionRaces` checks the invariants after every step: the
data-level ones with :func:`~extension_fsm.invariants.check_invariants` in an
``@invariant``, the behavioural ones (an auto-approve only with the mitra
reachable, a refusal writes nothing) inside the rules, where the facts are
known.  Besides requests, answers, timers and sweeps it injects faults: a
socket, push or presence dependency that hangs, refuses or fails once, a late
answer, a crash and restart.

It is a base class: override ``make_store`` / ``close_store`` (and, if you
wish, ``make_clock`` / ``make_world``) to run it over your store, then expose
``YourSubclass.TestCase`` in a ``test_*.py`` module.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from ..errors import DeliveryError, ExtensionError
from ..invariants import check_invariants
from ..model import (
    Extension,
    ExtensionStatus,
    FailureCause,
    Participant,
    PaymentStatus,
    SessionStatus,
)
from ..service import ExtensionService
from .harness import SWEEP_INTERVAL, RaceHarness, _by_id, _free_payments
from .loop import YieldingStore
from .strategies import CUSTOMERS, MITRAS, PAYMENTS, SESSIONS, durations

__all__ = ["ExtensionRaces"]


class ExtensionRaces(RaceHarness):
    """Interleave requests, answers, timers, sweeps, restarts, ends, config and faults."""

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
        # Drawn before any call is made: a draw can end the example (hypothesis
        # stops it when its data runs out), and coroutines made before it would
        # be left never awaited.
        order = data.draw(st.permutations(range(5 if with_end else 4)), label="order")
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
