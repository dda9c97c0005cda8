"""The ``expect`` section of a scenario: a partial result document to compare.

Objects match when every key named in the expectation matches (other keys
are ignored); lists match element by element and must have the same length;
anything else must be equal.  So ``{"errors": []}`` says "no call was
refused" and ``{"extensions": [{"status": "accepted"}]}`` says "exactly one
extension, accepted".
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["mismatches"]


def mismatches(expected: object, actual: object, path: str = "") -> list[str]:
    """Every place where ``actual`` differs from the partial ``expected``."""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return [f"{path or '.'}: want an object, got {actual!r}"]
        out: list[str] = []
        for key, want in expected.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                out.append(f"{where}: missing")
            else:
                out += mismatches(want, actual[key], where)
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: want a list, got {actual!r}"]
        if len(expected) != len(actual):
            return [f"{path}: want {len(expected)} items, got {len(actual)}"]
        return [m for i, w in enumerate(expected) for m in mismatches(w, actual[i], f"{path}[{i}]")]
    if expected != actual or isinstance(expected, bool) != isinstance(actual, bool):
        return [f"{path}: want {expected!r}, got {actual!r}"]
    return []
