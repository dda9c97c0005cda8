"""Ids a store can hold: checked before any store is touched.

Every store (memory included) refuses the same ids, so a host sees the same
``VALIDATION_ERROR`` (422) whichever store it runs on, instead of a database
error on PostgreSQL alone: an id is a ``str`` of at most :data:`ID_MAX_LENGTH`
characters, without NUL bytes (PostgreSQL text cannot hold them) and without
lone surrogates (not encodable as UTF-8).
"""

from __future__ import annotations

from .errors import ErrorCode, ExtensionError

__all__ = ["ID_MAX_LENGTH", "check_ids"]

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
