"""Input a call can take: ids a store can hold, and whole numbers as the
replaced service took them; checked before any store is touched.

Every store (memory included) refuses the same ids, so a host sees the same
``VALIDATION_ERROR`` (422) whichever store it runs on, instead of a database
error on PostgreSQL alone: an id is a ``str`` of at most :data:`ID_MAX_LENGTH`
characters, without NUL bytes (PostgreSQL text cannot hold them) and without
lone surrogates (not encodable as UTF-8).
"""

from __future__ import annotations

from .errors import ErrorCode, ExtensionError

__all__ = ["ID_MAX_LENGTH", "check_ids", "whole_number"]

#: the width of every id column of the SQL schema
ID_MAX_LENGTH = 64


def check_ids(**ids: object) -> None:
    """Raise ``ExtensionError(VALIDATION_ERROR)`` naming the first id (by
    keyword) a store cannot hold; ``None`` passes (an absent optional id)."""
    for name, value in ids.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise ExtensionError(ErrorCode.VALIDATION_ERROR, f"{name} must be a string")
        if len(value) > ID_MAX_LENGTH:
            raise ExtensionError(
                ErrorCode.VALIDATION_ERROR, f"{name} must be at most {ID_MAX_LENGTH} characters"
            )
        if "\x00" in value:
            raise ExtensionError(ErrorCode.VALIDATION_ERROR, f"{name} must not contain NUL")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ExtensionError(
                ErrorCode.VALIDATION_ERROR, f"{name} must be valid Unicode text"
            ) from None


def whole_number(value: object, name: str) -> int:
    """``value`` as a positive ``int``, or ``ExtensionError(VALIDATION_ERROR)``.

    A float that holds a whole number (``15000.0``, JSON's ``1.5e4``) counts:
    the replaced service ran on JavaScript numbers and took it.  A fraction,
    a boolean, a string, NaN or an infinity does not.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExtensionError(ErrorCode.VALIDATION_ERROR, f"{name} must be a whole number")
    if value <= 0:
        raise ExtensionError(ErrorCode.VALIDATION_ERROR, f"{name} must be positive")
    return value
