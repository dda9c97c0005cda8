"""Play a scenario on a :class:`~extension_fsm.simulator.World` and build its result.

The runner seeds the scenario's session and payments, plays each step at its
``at`` on the virtual clock (timers due before a step fire first, each at its
own moment), then keeps advancing until no extension is pending (or until
``until``).  Along the way it records a timeline row for every step and every
timer that changed something, and checks the invariants of ``docs/design.md``:
the row invariants of
:func:`~extension_fsm.invariants.check_invariants` after every row, plus the
behaviour only a run can see (who was refused, what presence and policy said
when a timeout approved, that a refused call wrote and sent nothing).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from ..adapters.memory import MemoryStore
from ..errors import ExtensionError
from ..invariants import check_invariants
from ..model import (
    JSONValue,
    Participant,
    PaymentStatus,
    SessionStatus,
    TransitionRecord,
)
from ..ports import InspectableStore, StoreDump
from .results import DeliveryView, request_problems, result_document, timeout_problems
from .rows import (
    ACTOR,
    TimelineRow,
    change_lines,
    delivery_view,
    describe,
    presence_line,
    states_line,
)
from .scenario import Scenario, Step
from .simulation import StampedDelivery, World, make_payment, make_session

__all__ = ["AlreadyInStore", "DeliveryView", "RunResult", "TimelineRow", "run_scenario"]

#: after the last step, how many sweep intervals past the latest deadline to keep going
_DRAIN_SWEEPS = 10


class AlreadyInStore(Exception):
    """The store already holds a row the scenario seeds (an earlier run's): the
    scenario is fine, the store is not fresh.  ``str()`` is one line."""

    def __init__(self, source: str, row: str) -> None:
        super().__init__(
            f"the database already holds {row}, which {source} seeds (an earlier run?): "
            "play it on an empty database"
        )


@dataclass(slots=True)
class RunResult:
    """What a run produced: the rows, the result document and the violations."""

    scenario: Scenario
    rows: list[TimelineRow]
    document: dict[str, JSONValue]
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every checked invariant held."""
        return not self.violations


async def run_scenario(scenario: Scenario, store: InspectableStore | None = None) -> RunResult:
    """Play ``scenario`` on ``store`` (a fresh in-memory one by default)."""
    return await _Runner(scenario, store or MemoryStore()).run()


def _deterministic_ids(seed: str) -> Any:
    # Same scenario, same ids (reproducible output); seeded by the session id so
    # timelines sharing one database never collide.
    rng = random.Random(seed)

    def new_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    return new_id


class _Runner:
    def __init__(self, scenario: Scenario, store: InspectableStore) -> None:
        self.sc = scenario
        self.world = World(
            store, new_id=_deterministic_ids(scenario.session.id), sessions=[scenario.session.id]
        )
        self.start = self.world.clock.now()
        spec = scenario.session
        self.session = make_session(
            spec.id,
            customer_id=spec.customer_id,
            mitra_id=spec.mitra_id,
            status=SessionStatus(spec.status),
            expires_at=self.start + timedelta(minutes=spec.minutes_left),
            customer_display_name=spec.customer_name,
        )
        self.payment_ids = {p.id for p in scenario.payments}
        self.flags = {
            "on_session_socket": scenario.mitra.on_session_socket,
            "connected": scenario.mitra.connected,
            "online": scenario.mitra.online,
        }
        self.customer_socket = scenario.customer.on_session_socket
        self.timeout_action = scenario.config.timeout_action
        #: created extensions in order; and what each request step created (None: refused)
        self.extension_ids: list[str] = []
        self.by_request: list[str | None] = []
        self.rows: list[TimelineRow] = []
        self.errors: list[dict[str, JSONValue]] = []
        self.violations: list[str] = []
        self._seen_violations: set[str] = set()
        self._log_seen = 0
        self._deliveries_seen = 0
        #: the rows as last read after anything that may have written them
        self._latest = StoreDump([], [], [], [], [], [])

    # ----------------------------------------------------------------- helpers

    def rel(self, t: datetime) -> float:
        return round((t - self.start).total_seconds(), 3)

    def violate(self, message: str) -> None:
        if message not in self._seen_violations:
            self._seen_violations.add(message)
            self.violations.append(f"at {self.rel(self.world.clock.now()):g}s: {message}")

    async def dump(self) -> StoreDump:
        """Only this timeline's rows, read as such (filtered selects on SQL): a
        database shared with other timelines is never read whole here."""
        return await self.world.store.dump(
            session_ids=(self.session.id,), payment_ids=self.payment_ids
        )

    # ---------------------------------------------------------------- the run

    async def run(self) -> RunResult:
        await self._seed()
        self.rows.append(await self._row(0.0, "host", "start", [], [], None, self._latest))
        for step in self.sc.steps:
            await self._advance_to(step.at)
            await self._play(step)
        await self._drain()
        final = await self.dump()
        self._check(final)
        document = result_document(
            final,
            extension_ids=self.extension_ids,
            payment_order=[p.id for p in self.sc.payments],
            deliveries=[d for row in self.rows for d in row.deliveries if d.taken],
            errors=self.errors,
            violations=self.violations,
            rel=self.rel,
        )
        return RunResult(self.sc, self.rows, document, self.violations)

    async def _seed(self) -> None:
        world, sc = self.world, self.sc
        if await world.session(self.session.id) is not None:
            raise AlreadyInStore(sc.source, f"session {self.session.id!r}")
        session = self.session
        if session.status is SessionStatus.CLOSING:
            deadline = self.start + timedelta(seconds=sc.config.grace_seconds)
            session = replace(session, closure_deadline=deadline)
        await world.add_session(session)
        if session.closure_deadline is not None:
            world.session_timer.arm_grace(session.id, session.closure_deadline)
        for p in sc.payments:
            held = await world.store.dump(session_ids=(), payment_ids=[p.id])
            if held.payments:
                raise AlreadyInStore(sc.source, f"payment session {p.id!r}")
            await world.add_payment(
                make_payment(
                    p.id,
                    customer_id=p.customer_id or session.customer_id,
                    amount=p.amount,
                    status=PaymentStatus(p.status),
                    is_extension=p.is_extension,
                    is_first_session_discount=p.first_session_discount,
                )
            )
        world.config.timeout_seconds = sc.config.timeout_seconds
        world.config.timeout_action = sc.config.timeout_action
        world.config.grace_seconds = sc.config.grace_seconds
        world.connect(session, Participant.MITRA, **self.flags)
        world.connect(
            session, Participant.CUSTOMER, on_session_socket=sc.customer.on_session_socket
        )
        self._latest = await self.dump()
        self._log_seen = len(self._latest.log)

    async def _advance_to(self, at: float) -> None:
        """Fire every timer due up to ``at``, each at its own moment, observing each."""
        target = self.start + timedelta(seconds=at)
        clock = self.world.clock
        while (due := clock.next_due()) is not None and due <= target:
            activity = self.world.activity
            try:
                await clock.advance_to(due)
            except Exception as err:  # a library bug, reported as such, not a traceback
                self.violate(f"crash: a timer raised {type(err).__name__}: {err}")
                activity = -1
            # A periodic sweep that found nothing to do wrote nothing: no read.
            if self.world.activity != activity or self._deliveries_seen < len(
                self.world.deliveries
            ):
                await self._observe()
        await clock.advance_to(target)

    async def _drain(self) -> None:
        if self.sc.until is not None:
            await self._advance_to(self.sc.until)
            return
        pending = [e for e in self._latest.extensions if e.status.value == "pending"]
        if not pending:
            return
        interval = self.world.sweep_interval or 1.0
        cap = max(self.rel(e.expires_at) for e in pending) + _DRAIN_SWEEPS * interval
        cap = max(cap, self.world.clock.elapsed)
        # ``_latest`` stays current: every timer that may have written is observed
        while any(e.status.value == "pending" for e in self._latest.extensions):
            due = self.world.clock.next_due()
            if due is None or self.rel(due) > cap:
                break
            await self._advance_to(self.rel(due))

    async def _observe(self) -> None:
        """A row for whatever the timers just did, if anything."""
        dump = self._latest = await self.dump()
        records = list(dump.log[self._log_seen :])
        deliveries = self._new_deliveries()
        if not records and not deliveries:
            return
        self._log_seen = len(dump.log)
        self._check_timeout_policy(records)
        actor = ", ".join(dict.fromkeys(r.actor for r in records)) or "system"
        event = "timers: " + (", ".join(dict.fromkeys(r.event for r in records)) or "delivery")
        self.rows.append(
            await self._row(self.world.clock.elapsed, actor, event, records, deliveries, None, dump)
        )
        self._check(dump)

    # ------------------------------------------------------------------ steps

    async def _play(self, step: Step) -> None:
        before = self._latest  # current: whatever wrote since it was read was observed
        self._new_deliveries()  # anything earlier belongs to earlier rows
        error_text = None
        try:
            await self._do(step, before)
        except ExtensionError as err:
            error_text = f"{err.code.value} {err.status_code}: {err.message}"
            self.errors.append(
                {
                    "at": self.world.clock.elapsed,
                    "step": step.index,
                    "code": err.code.value,
                    "status_code": err.status_code,
                }
            )
            if await self.dump() != before:
                self.violate(
                    f"9: step {step.index} was refused ({err.code.value}) yet rows changed"
                )
            if self.world.deliveries[self._deliveries_seen :]:
                self.violate(f"7: step {step.index} was refused yet something was delivered")
        except Exception as err:  # a library bug, reported as such, not a traceback
            error_text = f"crash: {type(err).__name__}: {err}"
            self.violate(f"crash: step {step.index} ({step.do}) raised {type(err).__name__}: {err}")
        await self.world.settle()  # the step's deliveries run in the background
        dump = self._latest = await self.dump()
        records = list(dump.log[self._log_seen :])
        self._log_seen = len(dump.log)
        self._check_timeout_policy(records)
        self.rows.append(
            await self._row(
                step.at,
                ACTOR[step.do],
                describe(step) + (f" ({step.note})" if step.note else ""),
                records,
                self._new_deliveries(),
                error_text,
                dump,
            )
        )
        self._check(dump)

    async def _do(self, step: Step, before: StoreDump) -> None:
        world, session, a = self.world, self.session, step.args
        if step.do == "request":
            self.by_request.append(None)
            customer = a.get("customer_id", session.customer_id)
            ext = await world.service.request_extension(
                session_id=session.id,
                customer_id=customer,
                duration_minutes=a["duration_minutes"],
                price=a["price"],
                extension_payment_session_id=a["payment_id"],
            )
            self.extension_ids.append(ext.id)
            self.by_request[-1] = ext.id
            for problem in request_problems(self.session, customer, a, before):
                self.violate(f"8: a request was accepted though {problem}")
        elif step.do in ("accept", "reject"):
            if "extension" in a:  # a refused request step created nothing to answer
                ext_id = self.by_request[a["extension"]] or "none"
            else:
                ext_id = self.extension_ids[-1] if self.extension_ids else "none"
            mitra = a.get("mitra_id", session.mitra_id)
            sid = a.get("session_id", session.id)
            await world.service.respond_to_extension(
                extension_id=ext_id, session_id=sid, mitra_id=mitra, accepted=step.do == "accept"
            )
            if mitra != session.mitra_id or sid != session.id:
                self.violate(f"8: {step.do} by mitra {mitra} on session {sid} was allowed")
        elif step.do == "mitra":
            self.flags.update(a)
            world.connect(session, Participant.MITRA, **a)
        elif step.do == "customer":
            self.customer_socket = a["on_session_socket"]
            world.connect(session, Participant.CUSTOMER, **a)
        elif step.do == "restart":
            await world.restart()
        elif step.do == "set_config":
            for key, value in a.items():
                setattr(world.config, key, value)
            self.timeout_action = a.get("timeout_action", self.timeout_action)
        elif step.do == "end_session":
            await world.service.end_session(session.id)
        elif step.do == "sweep":
            await world.service.sweep_due()
            await world.service.dispatcher.dispatch_due()

    # ----------------------------------------------------------- behaviour

    def _check_timeout_policy(self, records: list[TransitionRecord]) -> None:
        reachable = self.flags["connected"] and self.flags["online"]
        for problem in timeout_problems(records, self.timeout_action, reachable, self._name):
            self.violate(problem)

    def _check(self, dump: StoreDump) -> None:
        initial = {self.session.id: self.session.expires_at}
        for message in check_invariants(
            dump,
            now=self.world.clock.now(),
            sweep_interval=self.world.sweep_interval,
            initial_expiry=initial,
            require_delivered=True,
        ):
            self.violate(message)

    # ---------------------------------------------------------------- output

    def _new_deliveries(self) -> list[DeliveryView]:
        fresh = self.world.deliveries[self._deliveries_seen :]
        self._deliveries_seen = len(self.world.deliveries)
        return [self._view(d) for d in fresh]

    def _view(self, stamped: StampedDelivery) -> DeliveryView:
        return delivery_view(stamped, self.rel)

    def _name(self, extension_id: str) -> str:
        if extension_id in self.by_request:
            return f"#{self.by_request.index(extension_id)}"
        return extension_id[:8]

    async def _row(
        self,
        at: float,
        actor: str,
        event: str,
        records: list[TransitionRecord],
        deliveries: list[DeliveryView],
        error: str | None,
        dump: StoreDump | None = None,
    ) -> TimelineRow:
        dump = dump or await self.dump()
        changes = change_lines(records, self._name)
        presence = presence_line(self.flags, self.customer_socket)
        states = states_line(dump, self.extension_ids, self._name, presence)
        return TimelineRow(at, actor, event, changes, states, deliveries, error)
