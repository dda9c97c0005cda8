"""The three machines: every row, every named guard, every move that must not
exist, and that each move is made by the ``transitions`` Machine itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from extension_fsm import ExtensionStatus, PaymentStatus, SessionStatus, TimeoutAction
from extension_fsm.machine import (
    EXTENSION_MACHINE,
    EXTENSION_TRANSITIONS,
    PAYMENT_MACHINE,
    PAYMENT_TRANSITIONS,
    SESSION_MACHINE,
    SESSION_TRANSITIONS,
    Guard,
    InvalidMove,
    StateMachine,
    handled_in_time,
    mitra_reachable,
    payment_chargeable,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEADLINE = T0 + timedelta(seconds=10)
BEFORE = Guard(now=T0, deadline=DEADLINE)
AT = Guard(now=DEADLINE, deadline=DEADLINE)
E = ExtensionStatus
S = SessionStatus
P = PaymentStatus

# (state, trigger) -> destination with guards that all pass; everything else is invalid.
EXTENSION_MOVES = {
    (E.PENDING, "accept"): E.ACCEPTED,
    (E.PENDING, "reject"): E.REJECTED,
    (E.PENDING, "time_out"): E.TIMEOUT,  # default guard: mitra unreachable
    (E.PENDING, "cancel"): E.REJECTED,
}
SESSION_MOVES = {
    (S.ACTIVE, "pause"): S.EXTENDING,
    (S.CLOSING, "pause"): S.EXTENDING,
    (S.EXTENDING, "resume"): S.ACTIVE,
    (S.EXTENDING, "close"): S.CLOSING,
    (S.ACTIVE, "expire"): S.CLOSING,
    (S.ACTIVE, "end"): S.ENDED,
    (S.CLOSING, "end"): S.ENDED,
    (S.EXTENDING, "end"): S.ENDED,
}

PAYMENT_MOVES = {
    (P.CONFIRMED, "consume"): P.CONSUMED,
    (P.CONFIRMED, "fail"): P.FAILED,
}


def _guard_for(trigger: str) -> Guard:
    return AT if trigger == "time_out" else BEFORE


def test_the_tables_are_exactly_the_designed_rows() -> None:
    ext = {
        (src, r.trigger, r.dest, r.conditions) for r in EXTENSION_TRANSITIONS for src in r.source
    }
    assert ext == {
        ("pending", "accept", "accepted", ("within_window",)),
        ("pending", "reject", "rejected", ("within_window",)),
        (
            "pending",
            "time_out",
            "accepted",
            (
                "is_due",
                "auto_approve_policy",
                "handled_in_time",
                "payment_chargeable",
                "mitra_reachable",
            ),
        ),
        ("pending", "time_out", "timeout", ("is_due",)),
        ("pending", "cancel", "rejected", ()),
    }
    ses = {(src, r.trigger, r.dest) for r in SESSION_TRANSITIONS for src in r.source}
    assert ses == {(s.value, t, d.value) for (s, t), d in SESSION_MOVES.items()}
    pay = {(src, r.trigger, r.dest, r.conditions) for r in PAYMENT_TRANSITIONS for src in r.source}
    assert pay == {(s.value, t, d.value, ()) for (s, t), d in PAYMENT_MOVES.items()}


@pytest.mark.parametrize("state", list(E))
@pytest.mark.parametrize("trigger", EXTENSION_MACHINE.triggers)
def test_every_extension_move(state: ExtensionStatus, trigger: str) -> None:
    want = EXTENSION_MOVES.get((state, trigger))
    if want is None:
        assert not EXTENSION_MACHINE.can_fire(state, trigger)
        with pytest.raises(InvalidMove) as info:
            EXTENSION_MACHINE.fire(state, trigger, _guard_for(trigger))
        assert not info.value.guarded
        assert (info.value.trigger, info.value.state) == (trigger, state.value)
    else:
        assert EXTENSION_MACHINE.can_fire(state, trigger)
        assert EXTENSION_MACHINE.fire(state, trigger, _guard_for(trigger)) is want


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("trigger", SESSION_MACHINE.triggers)
def test_every_session_move(state: SessionStatus, trigger: str) -> None:
    want = SESSION_MOVES.get((state, trigger))
    if want is None:
        assert not SESSION_MACHINE.can_fire(state, trigger)
        with pytest.raises(InvalidMove):
            SESSION_MACHINE.fire(state, trigger, BEFORE)
    else:
        assert SESSION_MACHINE.fire(state, trigger, BEFORE) is want


@pytest.mark.parametrize("state", list(P))
@pytest.mark.parametrize("trigger", PAYMENT_MACHINE.triggers)
def test_every_payment_move(state: PaymentStatus, trigger: str) -> None:
    """Only a confirmed payment is charged or failed, once; a pending one (not
    paid yet), a consumed or failed one, or a status the host wrote that the
    library does not know, never moves."""
    want = PAYMENT_MOVES.get((state, trigger))
    if want is None:
        assert not PAYMENT_MACHINE.can_fire(state, trigger)
        with pytest.raises(InvalidMove) as info:
            PAYMENT_MACHINE.fire(state, trigger, BEFORE)
        assert str(info.value) == f"payment: {trigger} from {state.value}: no such move"
    else:
        assert PAYMENT_MACHINE.fire(state, trigger, BEFORE) is want


def test_final_states_have_no_way_out() -> None:
    assert EXTENSION_MACHINE.final == {E.ACCEPTED, E.REJECTED, E.TIMEOUT}
    assert SESSION_MACHINE.final == {S.ENDED}
    assert PAYMENT_MACHINE.final == {P.CONSUMED, P.FAILED}
    for state in PAYMENT_MACHINE.final:
        assert not any(PAYMENT_MACHINE.can_fire(state, t) for t in PAYMENT_MACHINE.triggers)
    for state in EXTENSION_MACHINE.final:
        assert not any(EXTENSION_MACHINE.can_fire(state, t) for t in EXTENSION_MACHINE.triggers)
    for trigger in SESSION_MACHINE.triggers:
        assert not SESSION_MACHINE.can_fire(S.ENDED, trigger)
        with pytest.raises(InvalidMove):
            SESSION_MACHINE.fire(S.ENDED, trigger, BEFORE)


@pytest.mark.parametrize("trigger", ["accept", "reject"])
def test_an_answer_counts_only_before_the_deadline(trigger: str) -> None:
    with pytest.raises(InvalidMove) as info:
        EXTENSION_MACHINE.fire(E.PENDING, trigger, AT)
    assert info.value.guarded
    just_before = Guard(now=DEADLINE - timedelta(microseconds=1), deadline=DEADLINE)
    assert EXTENSION_MACHINE.fire(E.PENDING, trigger, just_before) in (E.ACCEPTED, E.REJECTED)
    assert EXTENSION_MACHINE.fire(E.PENDING, trigger, Guard(now=T0)) in (E.ACCEPTED, E.REJECTED)


def test_time_out_is_refused_before_the_deadline() -> None:
    reachable = Guard(now=T0, deadline=DEADLINE, mitra_connected=True, mitra_online=True)
    with pytest.raises(InvalidMove) as info:
        EXTENSION_MACHINE.fire(E.PENDING, "time_out", reachable)
    assert info.value.guarded
    with pytest.raises(InvalidMove):
        EXTENSION_MACHINE.fire(E.PENDING, "time_out", Guard(now=DEADLINE))  # no deadline known


@pytest.mark.parametrize(
    ("action", "connected", "online", "chargeable", "want"),
    [
        (TimeoutAction.AUTO_APPROVE, True, True, True, E.ACCEPTED),
        (TimeoutAction.AUTO_APPROVE, True, True, False, E.TIMEOUT),
        (TimeoutAction.AUTO_APPROVE, True, False, True, E.TIMEOUT),
        (TimeoutAction.AUTO_APPROVE, False, True, True, E.TIMEOUT),
        (TimeoutAction.AUTO_APPROVE, False, False, True, E.TIMEOUT),
        (TimeoutAction.AUTO_REJECT, True, True, True, E.TIMEOUT),
        (TimeoutAction.AUTO_REJECT, False, False, True, E.TIMEOUT),
    ],
)
def test_time_out_approves_only_under_policy_with_the_mitra_reachable_and_payment_chargeable(
    action: TimeoutAction, connected: bool, online: bool, chargeable: bool, want: ExtensionStatus
) -> None:
    guard = Guard(
        now=DEADLINE + timedelta(seconds=3),
        deadline=DEADLINE,
        timeout_action=action,
        mitra_connected=connected,
        mitra_online=online,
        chargeable=chargeable,
    )
    assert EXTENSION_MACHINE.fire(E.PENDING, "time_out", guard) is want


def test_the_named_guards_each_say_one_thing() -> None:
    """``mitra_reachable`` is presence only; ``payment_chargeable`` is the rows
    only; ``handled_in_time`` is the clock only."""
    assert mitra_reachable(Guard(now=T0, mitra_connected=True, mitra_online=True))
    assert not mitra_reachable(Guard(now=T0, mitra_connected=True, chargeable=True))
    assert payment_chargeable(Guard(now=T0, chargeable=True))
    assert not payment_chargeable(Guard(now=T0, mitra_connected=True, mitra_online=True))
    bound = timedelta(seconds=60)
    assert handled_in_time(Guard(now=DEADLINE + bound, deadline=DEADLINE, stale_after=bound))
    late = DEADLINE + bound + timedelta(microseconds=1)
    assert not handled_in_time(Guard(now=late, deadline=DEADLINE, stale_after=bound))
    assert not handled_in_time(Guard(now=late))  # no deadline known: never in time


@pytest.mark.parametrize(
    ("late", "want"), [(60, E.ACCEPTED), (61, E.TIMEOUT), (3 * 3600, E.TIMEOUT)]
)
def test_stale_deadline_a_timeout_handled_past_the_bound_never_approves(
    late: int, want: ExtensionStatus
) -> None:
    guard = Guard(
        now=DEADLINE + timedelta(seconds=late),
        deadline=DEADLINE,
        mitra_connected=True,
        mitra_online=True,
        chargeable=True,
        stale_after=timedelta(seconds=60),
    )
    assert EXTENSION_MACHINE.fire(E.PENDING, "time_out", guard) is want


def test_every_move_is_made_by_the_transitions_machine() -> None:
    """A callback on the underlying Machine sees each fire: the move is the
    Machine's own, with the guard passed to its conditions and callbacks."""
    machine = StateMachine("extension", ExtensionStatus, EXTENSION_TRANSITIONS)
    seen: list[tuple[Guard, Any]] = []
    machine.machine.after_state_change = [lambda guard: seen.append(guard)]
    assert machine.fire(E.PENDING, "accept", BEFORE) is E.ACCEPTED
    assert seen == [BEFORE]
    with pytest.raises(InvalidMove):
        machine.fire(E.PENDING, "accept", AT)  # refused: no state change to call back
    assert seen == [BEFORE]


def test_cancel_needs_no_guard() -> None:
    assert EXTENSION_MACHINE.fire(E.PENDING, "cancel", AT) is E.REJECTED
    assert EXTENSION_MACHINE.fire(E.PENDING, "cancel", BEFORE) is E.REJECTED


def test_one_machine_is_shared_and_never_holds_a_model() -> None:
    before = list(EXTENSION_MACHINE.machine.models)
    for _ in range(3):
        EXTENSION_MACHINE.fire(E.PENDING, "accept", BEFORE)
    assert list(EXTENSION_MACHINE.machine.models) == before
    assert EXTENSION_MACHINE.triggers == ("accept", "reject", "time_out", "cancel")
    assert SESSION_MACHINE.triggers == ("pause", "resume", "close", "expire", "end")
    assert PAYMENT_MACHINE.triggers == ("consume", "fail")


@pytest.mark.parametrize(
    ("machine", "name"),
    [(EXTENSION_MACHINE, "extension"), (SESSION_MACHINE, "session"), (PAYMENT_MACHINE, "payment")],
)
def test_a_refused_move_says_which_machine_trigger_state_and_why(
    machine: StateMachine[Any], name: str
) -> None:
    """The text hosts see in their logs, on both paths: no such move, or the
    guards refused it (an answer after the window)."""
    refusals: list[tuple[Any, str, Guard, bool]] = [
        (state, trigger, _guard_for(trigger), False)
        for state in machine.states
        for trigger in machine.triggers
        if not machine.can_fire(state, trigger)
    ]
    if machine is EXTENSION_MACHINE:
        refusals.append((E.PENDING, "accept", AT, True))
        refusals.append((E.PENDING, "time_out", BEFORE, True))
    assert refusals
    for state, trigger, guard, guarded in refusals:
        with pytest.raises(InvalidMove) as info:
            machine.fire(state, trigger, guard)
        why = "guards refused" if guarded else "no such move"
        assert str(info.value) == f"{name}: {trigger} from {state.value}: {why}"
        assert (info.value.trigger, info.value.state) == (trigger, state.value)
        assert info.value.guarded is guarded


@pytest.mark.parametrize(
    ("machine", "final"),
    [
        (EXTENSION_MACHINE, {E.ACCEPTED, E.REJECTED, E.TIMEOUT}),
        (SESSION_MACHINE, {S.ENDED}),
        (PAYMENT_MACHINE, {P.CONSUMED, P.FAILED}),
    ],
)
def test_the_underlying_machine_marks_exactly_the_final_states(
    machine: StateMachine[Any], final: set[Any]
) -> None:
    """``.machine`` is there for inspection: its states say which are final."""
    assert machine.final == final
    marked = {s for s in machine.states if machine.machine.get_state(s).final}
    assert marked == final
