"""The library's own error: a stable ``code`` and an HTTP-style ``status_code``.

The codes and statuses are the seed service's contract
(``extension.service.js``), plus a few for the fixes we add on top of it.
Third-party errors (database, Redis, Firebase) are translated into these at
the adapter edge, never leaked.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ConcurrencyConflict",
    "DeliveryError",
    "ErrorCode",
    "ExtensionError",
    "SocketUnreachable",
    "StorageError",
    "StoreClosed",
]


class ErrorCode(StrEnum):
    """Every code an :class:`ExtensionError` can carry, with its HTTP status."""

    SESSION_NOT_ACTIVE = "SESSION_NOT_ACTIVE"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    NOT_FOUND = "NOT_FOUND"
    FORBIDDEN = "FORBIDDEN"
    INVALID_STATE = "INVALID_STATE"
    FIRST_SESSION_DISCOUNT_NOT_ALLOWED = "FIRST_SESSION_DISCOUNT_NOT_ALLOWED"
    EXTENSION_RESOLVED = "EXTENSION_RESOLVED"
    # Ours: the uniqueness rules the database enforces (one pending per session,
    # one live extension per payment session).
    EXTENSION_PENDING = "EXTENSION_PENDING"
    PAYMENT_IN_USE = "PAYMENT_IN_USE"
    # Ours: a storage conflict that did not settle within the retry budget.
    CONFLICT = "CONFLICT"
    # Ours: the database could not be reached or did not answer in time
    # (retry later), or failed in a way retrying cannot fix (a bug, no schema).
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    STORAGE_ERROR = "STORAGE_ERROR"

    @property
    def status_code(self) -> int:
        """The HTTP-style status the seed (or our fix) answers with."""
        return _STATUS[self]


_STATUS: dict[ErrorCode, int] = {
    ErrorCode.SESSION_NOT_ACTIVE: 409,
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.FIRST_SESSION_DISCOUNT_NOT_ALLOWED: 400,
    ErrorCode.EXTENSION_RESOLVED: 409,
    ErrorCode.EXTENSION_PENDING: 409,
    ErrorCode.PAYMENT_IN_USE: 409,
    ErrorCode.CONFLICT: 409,
    ErrorCode.STORAGE_UNAVAILABLE: 503,
    ErrorCode.STORAGE_ERROR: 500,
}


class ExtensionError(Exception):
    """A refused call: nothing was written (for the database's own failures
    see :class:`StorageError`).

    ``code`` is one of :class:`ErrorCode`; ``status_code`` is the HTTP status a
    host should answer with; ``message`` is for people.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status_code = code.status_code
        self.message = message

    def __repr__(self) -> str:
        return f"ExtensionError({self.code.value!r}, {self.status_code}, {self.message!r})"

    def to_dict(self) -> dict[str, str | int]:
        """The ``{code, message, status_code}`` body a host returns."""
        return {"code": self.code.value, "message": self.message, "status_code": self.status_code}


class StorageError(ExtensionError):
    """The database failed the call: a lost race is not this (that is retried
    inside the service), nor is a refused request.

    ``retryable`` (code ``STORAGE_UNAVAILABLE``, status 503): the database was
    unreachable, dropped the connection or did not answer within its timeout;
    try again later.  Otherwise (code ``STORAGE_ERROR``, status 500) it is a
    fault retrying cannot fix, such as a missing table.  The driver's error is
    chained.  Unlike other refusals, a failure while committing can leave the
    caller unsure whether the commit landed; every public call is safe to
    repeat (a repeated request or answer is refused as already done).
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        code = ErrorCode.STORAGE_UNAVAILABLE if retryable else ErrorCode.STORAGE_ERROR
        super().__init__(code, message)
        self.retryable = retryable


class StoreClosed(StorageError):
    """The store was closed before this call reached it (a background delivery
    that outlived its store): nothing was read or written."""

    def __init__(self, message: str = "the store is closed") -> None:
        super().__init__(message)


class ConcurrencyConflict(Exception):
    """A unit of work lost a race at commit (stale row, serialization failure,
    busy database).  Internal: the service retries the whole call, then gives
    up with ``ExtensionError(CONFLICT)``."""


class DeliveryError(Exception):
    """A notification could not be delivered.

    ``retryable`` errors (quota, unavailable, internal, a dropped Redis link)
    are retried by the outbox with backoff; the others (an unregistered
    device token) are final for that message.  Never rolls back state.
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class SocketUnreachable(DeliveryError):
    """The recipient has a socket, but on an instance that could not be asked:
    it is not listening (it crashed, or it is cut off from Redis).  Retryable.

    The dispatcher pushes instead when the message has a push; a message
    without one is retried, so it reaches the socket once that instance is
    back, or ends "not taken" once the instance's registry entry lapses."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)
