"""Scenario files for the timeline simulator: read, validate, and nothing else.

A scenario (``.json`` or ``.toml``) seeds one session, its payment sessions
and who is connected, then lists steps at seconds from the start.  Validation
is strict because a typo in a timeline is a wrong timeline: an unknown key, an
unknown ``do``, a missing or ill-typed field or a decreasing ``at`` is a
:class:`ScenarioError` whose one-line message names the file, the step index
and the field.  The format is documented in the README and in issue #4.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .model import PaymentStatus

__all__ = [
    "RESULT_KEYS",
    "STEP_KINDS",
    "ConfigSpec",
    "CustomerSpec",
    "MitraSpec",
    "PaymentSpec",
    "Scenario",
    "ScenarioError",
    "SessionSpec",
    "Step",
    "load_scenario",
    "parse_scenario",
]

#: the top-level keys of the result document (what ``expect`` may name)
RESULT_KEYS = (
    "extensions",
    "session",
    "payments",
    "transactions",
    "deliveries",
    "errors",
    "invariants",
)


class ScenarioError(Exception):
    """A scenario file that cannot be played; ``str()`` is one line."""

    def __init__(self, source: str, where: str, problem: str) -> None:
        self.source = source
        self.where = where
        self.problem = problem
        super().__init__(f"bad scenario {source}: {where}: {problem}")


@dataclass(frozen=True, slots=True)
class ConfigSpec:
    """The run-time configuration at the start (``set_config`` changes it)."""

    timeout_seconds: int = 10
    timeout_action: str = "auto_approve"
    grace_seconds: int = 60


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """The one chat session of the timeline."""

    id: str = "s1"
    customer_id: str = "c1"
    customer_name: str = "Rina"
    mitra_id: str = "m1"
    status: str = "active"
    minutes_left: float = 5


@dataclass(frozen=True, slots=True)
class PaymentSpec:
    """A payment session the host holds; ``customer_id`` ``None`` means the session's."""

    id: str
    customer_id: str | None = None
    status: str = "confirmed"
    is_extension: bool = True
    first_session_discount: bool = False
    amount: int = 15000


@dataclass(frozen=True, slots=True)
class MitraSpec:
    """The mitra's socket and presence flags at the start."""

    on_session_socket: bool = True
    connected: bool = True
    online: bool = True


@dataclass(frozen=True, slots=True)
class CustomerSpec:
    """The customer's socket flag at the start."""

    on_session_socket: bool = True


@dataclass(frozen=True, slots=True)
class Step:
    """One step: ``do`` at ``at`` seconds with its validated fields in ``args``."""

    index: int
    at: float
    do: str
    args: Mapping[str, Any] = field(default_factory=dict)
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario file."""

    source: str
    config: ConfigSpec
    session: SessionSpec
    payments: tuple[PaymentSpec, ...]
    mitra: MitraSpec
    customer: CustomerSpec
    steps: tuple[Step, ...]
    until: float | None = None
    expect: Mapping[str, Any] | None = None
    description: str | None = None


# ------------------------------------------------------------------ field kinds
# A kind is (name for messages, check); a check returns the value or raises ValueError.

Kind = tuple[str, Callable[[object], object]]


def _int(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError
    return value


def _non_negative_int(value: object) -> object:
    if _int(value) < 0:  # type: ignore[operator]
        raise ValueError
    return value


def _seconds(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError
    if value < 0:
        raise ValueError
    return float(value)


def _str(value: object) -> object:
    if not isinstance(value, str) or not value:
        raise ValueError
    return value


def _str_or_null(value: object) -> object:
    return None if value is None else _str(value)


def _bool(value: object) -> object:
    if not isinstance(value, bool):
        raise ValueError
    return value


def _one_of(*choices: str) -> Kind:
    def check(value: object) -> object:
        if value not in choices:
            raise ValueError
        return value

    return (f"one of {', '.join(choices)}", check)


INT: Kind = ("an integer", _int)
COUNT: Kind = ("an integer >= 0", _non_negative_int)
SECONDS: Kind = ("a number of seconds >= 0", _seconds)
STR: Kind = ("a non-empty string", _str)
STR_OR_NULL: Kind = ("a string or null", _str_or_null)
BOOL: Kind = ("true or false", _bool)

_REQUIRED = object()

_CONFIG: dict[str, tuple[Kind, object]] = {
    "timeout_seconds": (COUNT, 10),
    "timeout_action": (STR, "auto_approve"),
    "grace_seconds": (COUNT, 60),
}
_SESSION: dict[str, tuple[Kind, object]] = {
    "id": (STR, "s1"),
    "customer_id": (STR, "c1"),
    "customer_name": (STR, "Rina"),
    "mitra_id": (STR, "m1"),
    "status": (_one_of("active", "closing", "ended"), "active"),
    "minutes_left": (SECONDS, 5.0),
}
_PAYMENT: dict[str, tuple[Kind, object]] = {
    "id": (STR, _REQUIRED),
    "customer_id": (STR, None),
    "status": (_one_of(*(s.value for s in PaymentStatus)), "confirmed"),
    "is_extension": (BOOL, True),
    "first_session_discount": (BOOL, False),
    "amount": (INT, 15000),
}
_MITRA: dict[str, tuple[Kind, object]] = {
    "on_session_socket": (BOOL, True),
    "connected": (BOOL, True),
    "online": (BOOL, True),
}
_CUSTOMER: dict[str, tuple[Kind, object]] = {"on_session_socket": (BOOL, True)}
_ANSWER: dict[str, tuple[Kind, object]] = {
    "extension": (COUNT, None),
    "mitra_id": (STR, None),
    "session_id": (STR, None),
}

#: every ``do`` and its fields: (kind, default or required); ``None`` default = absent
STEP_KINDS: dict[str, dict[str, tuple[Kind, object]]] = {
    "request": {
        "duration_minutes": (INT, _REQUIRED),
        "price": (INT, _REQUIRED),
        "payment_id": (STR_OR_NULL, _REQUIRED),
        "customer_id": (STR, None),
    },
    "accept": _ANSWER,
    "reject": _ANSWER,
    "mitra": {k: (kind, None) for k, (kind, _) in _MITRA.items()},
    "customer": {"on_session_socket": (BOOL, _REQUIRED)},
    "restart": {},
    "set_config": {k: (kind, None) for k, (kind, _) in _CONFIG.items()},
    "end_session": {},
    "sweep": {},
}
_NEEDS_ONE = ("mitra", "set_config")
_TOP = ("description", "config", "session", "payments", "mitra", "customer", "steps", "until")
_TOP_ALL = (*_TOP, "expect")


# --------------------------------------------------------------------- parsing


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a ``.json`` or ``.toml`` scenario file."""
    source = str(path)
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ScenarioError(source, "file", "must end in .json or .toml")
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise ScenarioError(source, "file", f"cannot read it ({err.strerror})") from None
    try:
        data: object = (
            json.loads(raw.decode("utf-8"))
            if suffix == ".json"
            else tomllib.loads(raw.decode("utf-8"))
        )
    except UnicodeDecodeError:
        raise ScenarioError(source, "file", "is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ScenarioError(
            source, "file", f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(source, "file", f"invalid TOML: {err}") from None
    return parse_scenario(data, source)


def parse_scenario(data: object, source: str = "<scenario>") -> Scenario:
    """Validate an already-decoded scenario document."""
    if not isinstance(data, dict):
        raise ScenarioError(source, "file", "the document must be an object/table")
    _no_unknown(data, _TOP_ALL, source, "")
    config = ConfigSpec(**_section(data, "config", _CONFIG, source))
    session = SessionSpec(**_section(data, "session", _SESSION, source))
    payments = tuple(
        PaymentSpec(**_fields(item, _PAYMENT, source, f"payments[{i}]"))
        for i, item in enumerate(_list(data, "payments", source))
    )
    seen: set[str] = set()
    for i, payment in enumerate(payments):
        if payment.id in seen:
            raise ScenarioError(source, f"field 'payments[{i}].id'", f"duplicate id {payment.id!r}")
        seen.add(payment.id)
    mitra = MitraSpec(**_section(data, "mitra", _MITRA, source))
    customer = CustomerSpec(**_section(data, "customer", _CUSTOMER, source))
    if "steps" not in data:
        raise ScenarioError(source, "field 'steps'", "is required (a list, may be empty)")
    steps = _steps(_list(data, "steps", source), source)
    until = _value(data, "until", SECONDS, source, "field 'until'") if "until" in data else None
    if until is not None and steps and until < steps[-1].at:  # type: ignore[operator]
        raise ScenarioError(source, "field 'until'", "is before the last step's 'at'")
    expect = data.get("expect")
    if expect is not None:
        if not isinstance(expect, dict):
            raise ScenarioError(source, "field 'expect'", "must be an object")
        _no_unknown(expect, RESULT_KEYS, source, "expect.")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise ScenarioError(source, "field 'description'", "must be a string")
    return Scenario(
        source=source,
        config=config,
        session=session,
        payments=payments,
        mitra=mitra,
        customer=customer,
        steps=steps,
        until=until,  # type: ignore[arg-type]
        expect=expect,
        description=description,
    )


def _steps(items: list[object], source: str) -> tuple[Step, ...]:
    steps: list[Step] = []
    requests = 0
    last_at = 0.0
    for i, item in enumerate(items):
        where = f"step {i}"
        if not isinstance(item, dict):
            raise ScenarioError(source, where, "must be an object/table")
        do = item.get("do")
        if do is None:
            raise ScenarioError(source, f"{where}: field 'do'", "is required")
        if do not in STEP_KINDS:
            raise ScenarioError(
                source, f"{where}: field 'do'", f"unknown {do!r} (one of {', '.join(STEP_KINDS)})"
            )
        where = f"step {i} ({do})"
        if "at" not in item:
            raise ScenarioError(source, f"{where}: field 'at'", "is required")
        at = float(_value(item, "at", SECONDS, source, f"{where}: field 'at'"))  # type: ignore[arg-type]
        if at < last_at:
            raise ScenarioError(
                source, f"{where}: field 'at'", f"{at:g} is before the previous step's {last_at:g}"
            )
        last_at = at
        note = item.get("note")
        if note is not None and not isinstance(note, str):
            raise ScenarioError(source, f"{where}: field 'note'", "must be a string")
        body = {k: v for k, v in item.items() if k not in ("at", "do", "note")}
        spec = STEP_KINDS[do]
        args = _fields(body, spec, source, where, in_step=True, drop_none=True)
        if do in _NEEDS_ONE and not args:
            raise ScenarioError(source, where, f"needs at least one of {', '.join(spec)}")
        if args.get("extension") is not None and args["extension"] >= requests:
            raise ScenarioError(
                source,
                f"{where}: field 'extension'",
                f"index {args['extension']} but only {requests} request step(s) before it",
            )
        if do == "request":
            requests += 1
        steps.append(Step(i, at, do, args, note))
    return tuple(steps)


def _section(
    data: Mapping[str, object], name: str, spec: dict[str, tuple[Kind, object]], source: str
) -> dict[str, Any]:
    return _fields(data.get(name, {}), spec, source, name)


def _list(data: Mapping[str, object], name: str, source: str) -> list[object]:
    value = data.get(name, [])
    if not isinstance(value, list):
        raise ScenarioError(source, f"field '{name}'", "must be a list")
    return value


def _fields(
    obj: object,
    spec: dict[str, tuple[Kind, object]],
    source: str,
    where: str,
    *,
    in_step: bool = False,
    drop_none: bool = False,
) -> dict[str, Any]:
    """Check ``obj`` against ``spec``: known keys only, required ones present, kinds right.

    ``where`` is a section name (``config``, ``payments[1]``) or, with
    ``in_step``, a step label (``step 3 (request)``).
    """

    def name(key: str) -> str:
        return f"{where}: field '{key}'" if in_step else f"field '{where}.{key}'"

    if not isinstance(obj, dict):
        raise ScenarioError(source, where if in_step else f"field '{where}'", "must be an object")
    for key in obj:
        if key not in spec:
            known = (*(("at", "do", "note") if in_step else ()), *spec)
            raise ScenarioError(source, name(key), f"unknown key (known: {', '.join(known)})")
    out: dict[str, Any] = {}
    for key, (kind, default) in spec.items():
        if key in obj:
            out[key] = _value(obj, key, kind, source, name(key))
        elif default is _REQUIRED:
            raise ScenarioError(source, name(key), "is required")
        elif not drop_none or default is not None:
            out[key] = default
    return out


def _value(obj: Mapping[str, object], key: str, kind: Kind, source: str, name: str) -> object:
    what, check = kind
    try:
        return check(obj[key])
    except ValueError:
        raise ScenarioError(source, name, f"must be {what}, got {obj[key]!r}") from None


def _no_unknown(
    obj: Mapping[str, object], known: tuple[str, ...], source: str, prefix: str
) -> None:
    for key in obj:
        if key not in known:
            raise ScenarioError(
                source, f"field '{prefix}{key}'", f"unknown key (known: {', '.join(known)})"
            )
