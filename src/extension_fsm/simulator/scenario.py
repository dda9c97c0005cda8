"""Scenario files for the timeline simulator: read, validate, and nothing else.

A scenario (``.json`` or ``.toml``) seeds one session, its payment sessions
and who is connected, then lists steps at seconds from the start.  The file's
shape is a set of pydantic models (:class:`ScenarioFile`; its JSON Schema is
``extension-fsm schema scenario``).  Validation is strict because a typo in a
timeline is a wrong timeline: an unknown key, an unknown ``do``, a missing or
ill-typed field or a decreasing ``at`` is a :class:`ScenarioError` whose
one-line message names the file, the step and the field.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

__all__ = [
    "RESULT_KEYS",
    "STEP_KINDS",
    "ConfigSpec",
    "CustomerSpec",
    "MitraSpec",
    "PaymentSpec",
    "Scenario",
    "ScenarioError",
    "ScenarioFile",
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


# ------------------------------------------------------------------ the models

Count = Annotated[int, Field(strict=True, ge=0)]
Seconds = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Text = Annotated[str, Field(strict=True, min_length=1)]
Flag = Annotated[bool, Field(strict=True)]
Whole = Annotated[int, Field(strict=True)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigSpec(_Spec):
    """The run-time configuration at the start (``set_config`` changes it)."""

    timeout_seconds: Count = 10
    timeout_action: Text = "auto_approve"
    grace_seconds: Count = 60


class SessionSpec(_Spec):
    """The one chat session of the timeline."""

    id: Text = "s1"
    customer_id: Text = "c1"
    customer_name: Text = "Rina"
    mitra_id: Text = "m1"
    status: Literal["active", "closing", "ended"] = "active"
    minutes_left: Seconds = 5


class PaymentSpec(_Spec):
    """A payment session the host holds; ``customer_id`` ``None`` means the session's."""

    id: Text
    customer_id: Text | None = None
    status: Literal["pending", "confirmed", "consumed", "failed"] = "confirmed"
    is_extension: Flag = True
    first_session_discount: Flag = False
    amount: Whole = 15000


class MitraSpec(_Spec):
    """The mitra's socket and presence flags at the start."""

    on_session_socket: Flag = True
    connected: Flag = True
    online: Flag = True


class CustomerSpec(_Spec):
    """The customer's socket flag at the start."""

    on_session_socket: Flag = True


class _Step(_Spec):
    at: Seconds
    note: Annotated[str, Field(strict=True)] | None = None


class RequestStep(_Step):
    """The customer asks for ``duration_minutes`` more at ``price``."""

    do: Literal["request"]
    duration_minutes: Whole
    price: Whole
    payment_id: Text | None
    customer_id: Text | None = None


class AnswerStep(_Step):
    """The mitra answers the ``extension``-th request (default: the latest)."""

    do: Literal["accept", "reject"]
    extension: Count | None = None
    mitra_id: Text | None = None
    session_id: Text | None = None


class MitraStep(_Step):
    """The mitra's flags change (at least one of them)."""

    do: Literal["mitra"]
    on_session_socket: Flag | None = None
    connected: Flag | None = None
    online: Flag | None = None


class CustomerStep(_Step):
    """The customer opens or leaves the session's socket."""

    do: Literal["customer"]
    on_session_socket: Flag


class SetConfigStep(_Step):
    """The configuration changes (at least one value)."""

    do: Literal["set_config"]
    timeout_seconds: Count | None = None
    timeout_action: Text | None = None
    grace_seconds: Count | None = None


class PlainStep(_Step):
    """A restart (every in-process timer lost), the host ending the session, or a sweep."""

    do: Literal["restart", "end_session", "sweep"]


AnyStep = Annotated[
    RequestStep | AnswerStep | MitraStep | CustomerStep | SetConfigStep | PlainStep,
    Field(discriminator="do"),
]

_STEP_MODELS: tuple[type[_Step], ...] = (
    RequestStep,
    AnswerStep,
    MitraStep,
    CustomerStep,
    SetConfigStep,
    PlainStep,
)
#: every ``do`` and the model of its step
STEP_KINDS: dict[str, type[_Step]] = {
    kind: model
    for model in _STEP_MODELS
    for kind in model.model_fields["do"].annotation.__args__  # type: ignore[union-attr]
}
_NEEDS_ONE = ("mitra", "set_config")
#: how alike an unknown key and a field must be to suggest the field (difflib's ratio)
_NEAR = 0.75


class ScenarioFile(_Spec):
    """A whole scenario file, as written."""

    description: Annotated[str, Field(strict=True)] | None = None
    config: ConfigSpec = ConfigSpec()
    session: SessionSpec = SessionSpec()
    payments: list[PaymentSpec] = []
    mitra: MitraSpec = MitraSpec()
    customer: CustomerSpec = CustomerSpec()
    steps: list[AnyStep]
    until: Seconds | None = None
    expect: dict[str, Any] | None = None


# ------------------------------------------------------------ what a run plays


@dataclass(frozen=True, slots=True)
class Step:
    """One step: ``do`` at ``at`` seconds with its given fields in ``args``."""

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
        text = raw.decode("utf-8")
        data: object = json.loads(text) if suffix == ".json" else tomllib.loads(text)
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
    try:
        doc = ScenarioFile.model_validate(data)
    except ValidationError as err:
        error, meant = _first(err.errors())
        where, problem = _explain(error, data, meant)
        raise ScenarioError(source, where, problem) from None
    seen: set[str] = set()
    for i, payment in enumerate(doc.payments):
        if payment.id in seen:
            raise ScenarioError(source, f"field 'payments[{i}].id'", f"duplicate id {payment.id!r}")
        seen.add(payment.id)
    steps = _steps(doc.steps, source)
    if doc.until is not None and steps and doc.until < steps[-1].at:
        raise ScenarioError(source, "field 'until'", "is before the last step's 'at'")
    for key in doc.expect or {}:
        if key not in RESULT_KEYS:
            known = ", ".join(RESULT_KEYS)
            raise ScenarioError(source, f"field 'expect.{key}'", f"unknown key (known: {known})")
    return Scenario(
        source=source,
        config=doc.config,
        session=doc.session,
        payments=tuple(doc.payments),
        mitra=doc.mitra,
        customer=doc.customer,
        steps=steps,
        until=doc.until,
        expect=doc.expect,
        description=doc.description,
    )


def _steps(items: Sequence[_Step], source: str) -> tuple[Step, ...]:
    """The checks that span steps: time moves forward, answers name earlier requests."""
    steps: list[Step] = []
    requests = 0
    last_at = 0.0
    for i, item in enumerate(items):
        do = item.model_dump()["do"]
        where = f"step {i} ({do})"
        if item.at < last_at:
            raise ScenarioError(
                source,
                f"{where}: field 'at'",
                f"{item.at:g} is before the previous step's {last_at:g}",
            )
        last_at = item.at
        args = item.model_dump(exclude={"at", "do", "note"}, exclude_unset=True)
        if do in _NEEDS_ONE and not args:
            fields = ", ".join(k for k in type(item).model_fields if k not in ("at", "do", "note"))
            raise ScenarioError(source, where, f"needs at least one of {fields}")
        if args.get("extension") is not None and args["extension"] >= requests:
            raise ScenarioError(
                source,
                f"{where}: field 'extension'",
                f"index {args['extension']} but only {requests} request step(s) before it",
            )
        if do == "request":
            requests += 1
        steps.append(Step(i, item.at, do, args, item.note))
    return tuple(steps)


def _first(errors: list[ErrorDetails]) -> tuple[ErrorDetails, str | None]:
    """The error to report, and the required field an unknown key next to it
    was probably meant to be: ``durration_minutes`` is reported as unknown,
    with its near miss, rather than ``duration_minutes`` as missing."""
    first = errors[0]
    if first["type"] == "missing":
        missing = str(first["loc"][-1])
        for error in errors:
            loc = error["loc"]
            if (
                error["type"] == "extra_forbidden"
                and loc[:-1] == first["loc"][:-1]
                and difflib.get_close_matches(str(loc[-1]), [missing], n=1, cutoff=_NEAR)
            ):
                return error, missing
    return first, None


def _unknown(key: object, known: Sequence[str], meant: str | None) -> str:
    """The problem of an unknown key: its near miss if there is one, else every known key."""
    if meant is not None:
        return f"unknown key; did you mean {meant!r}? ({meant!r} is required)"
    near = difflib.get_close_matches(str(key), known, n=1, cutoff=_NEAR)
    if near:
        return f"unknown key; did you mean {near[0]!r}?"
    return f"unknown key (known: {', '.join(known)})"


def _explain(
    error: ErrorDetails, data: Mapping[str, object], meant: str | None = None
) -> tuple[str, str]:
    """(where, problem) of a pydantic error, in the file's own words; ``meant``:
    the missing field an unknown key stands for (see :func:`_first`)."""
    loc = list(error["loc"])
    kind = error["type"]
    if loc[:1] == ["steps"] and len(loc) >= 2 and isinstance(loc[1], int):
        i = loc[1]
        if kind == "union_tag_not_found":
            return f"step {i}: field 'do'", "is required"
        if kind == "union_tag_invalid":
            do = error["input"].get("do") if isinstance(error["input"], dict) else None
            return f"step {i}: field 'do'", f"unknown {do!r} (one of {', '.join(STEP_KINDS)})"
        if len(loc) == 2:
            return f"step {i}", "must be an object/table"
        do, rest = loc[2], loc[3:]
        where = f"step {i} ({do})"
        if not rest:
            return where, _problem(error)
        if kind == "extra_forbidden":
            known = list(STEP_KINDS[str(do)].model_fields)
            return f"{where}: field '{rest[0]}'", _unknown(rest[0], known, meant)
        return f"{where}: field '{rest[0]}'", _problem(error)
    name = ".".join(f"[{part}]" if isinstance(part, int) else str(part) for part in loc)
    name = name.replace(".[", "[")
    if kind == "extra_forbidden":
        model: type[BaseModel] = ScenarioFile
        for part in loc[:-1]:
            if isinstance(part, str):
                annotation = model.model_fields[part].annotation
                model = annotation.__args__[0] if part == "payments" else annotation  # type: ignore[union-attr,assignment]
        return f"field '{name}'", _unknown(loc[-1], list(model.model_fields), meant)
    return f"field '{name}'", _problem(error)


def _problem(error: ErrorDetails) -> str:
    if error["type"] == "missing":
        return "is required"
    message = error["msg"]
    return f"{message[0].lower()}{message[1:]}, got {error['input']!r}"
