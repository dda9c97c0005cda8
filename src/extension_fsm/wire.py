"""How values look on the wire: as the Node service this library replaces wrote them.

Clients written for that service parse its payloads, so the two value forms it
produced are reproduced exactly:

- a timestamp is what JavaScript's ``Date.prototype.toJSON()`` returns: UTC,
  exactly three fractional digits (truncated, a ``Date`` holds milliseconds),
  and a ``Z`` suffix, e.g. ``2026-01-01T00:20:00.000Z``;
- a whole number of seconds is rounded as ``Math.round`` does: halves go up
  (``2.5 -> 3``, ``-2.5 -> -2``), unlike Python's ``round`` (to even);
- a text frame is ``JSON.stringify`` output: no spaces, non-ASCII kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # model imports this module
    from .model import Extension

__all__ = ["js_date", "js_round", "js_stringify", "seed_extension_json", "whole_seconds"]


def js_date(value: datetime) -> str:
    """``value`` as ``Date.toJSON()`` writes it; a naive datetime is refused."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("naive datetime: the wire carries UTC instants only")
    if offset:
        value = value.astimezone(UTC)
    # ``timespec="milliseconds"`` truncates, as a Date built from microseconds does.
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def js_round(value: float) -> int:
    """``Math.round(value)``: the nearest integer, halves toward +infinity."""
    if isinstance(value, int):
        return value
    if not math.isfinite(value):
        raise ValueError(f"cannot round {value!r} to whole seconds")
    floor = math.floor(value)
    # ``floor(value + 0.5)`` would round 0.49999999999999994 up; comparing the
    # remainder does not (it is exact for every double).
    return floor + 1 if value - floor >= 0.5 else floor


def whole_seconds(configured: object) -> int:
    """The ``timeout_seconds`` a configured timeout is announced as.

    The seed computed ``Math.round(extension_timeout_seconds * 1000 / 1000)``;
    a host config that hands back a float (``7.5``) or a numeric string gets
    the same whole number here (``8``), where ``int()`` truncated (``7``).
    """
    if type(configured) is int:
        return configured
    return js_round(float(configured) * 1000 / 1000)  # type: ignore[arg-type]


def js_stringify(message: Mapping[str, object]) -> str:
    """The text ``JSON.stringify(message)`` sends for the flow's payloads."""
    return json.dumps(dict(message), separators=(",", ":"), ensure_ascii=False)


def seed_extension_json(ext: Extension, *, answered: bool = False) -> dict[str, object]:
    """The extension as the replaced service's calls returned it (its column names).

    A request returned ``id, session_id, requested_duration_minutes,
    requested_price, status, requested_at, payment_session_id``; an answer the
    same without ``requested_at`` (``answered=True``).  For a host whose HTTP
    routes must keep answering in that shape.
    """
    row: dict[str, object] = {
        "id": ext.id,
        "session_id": ext.session_id,
        "requested_duration_minutes": ext.duration_minutes,
        "requested_price": ext.price,
        "status": str(ext.status),
    }
    if not answered:
        row["requested_at"] = js_date(ext.requested_at)
    row["payment_session_id"] = ext.payment_session_id
    return row
