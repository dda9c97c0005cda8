"""Driver errors, translated at the edge into the library's exceptions.

A uniqueness violation becomes the :class:`~extension_fsm.errors.ExtensionError`
(409) it stands for, or a :class:`~extension_fsm.errors.ConcurrencyConflict`
for a second charge of one extension.  A lost race (PostgreSQL's
serialization failures, deadlocks and lock timeouts; SQLite's busy or
locked database) is a ``ConcurrencyConflict``: the service re-runs the call
on fresh state.  No connection, no answer in time (connect, statement or
pool timeout), a refused or dropped connection, or a server shutting down is
a :class:`~extension_fsm.errors.StorageError` with ``retryable`` set (code
``STORAGE_UNAVAILABLE``, 503); anything else a plain ``StorageError``.

:func:`lost_connection` is the one place that decides whether an error means
the connection itself is gone (dropped, reset, silent past its timeout): the
engine retries on that, and only where a retry cannot double an effect (see
:mod:`.engine`).
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ...errors import ConcurrencyConflict, ErrorCode, ExtensionError, StorageError
from .schema import Tables

__all__ = ["FAILED_MESSAGE", "UNAVAILABLE_MESSAGE", "lost_connection", "translate", "unavailable"]

#: serialization_failure, deadlock_detected, lock_not_available
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}
#: SQLSTATE classes and codes that mean "the database is not there right now":
#: connection exceptions, insufficient resources (too many connections),
#: operator intervention (shutdown, statement or idle timeouts), system errors
_UNAVAILABLE_SQLSTATES = ("08", "53", "57", "58", "25P03")

UNAVAILABLE_MESSAGE = "The database is unavailable or did not answer in time; try again later"
FAILED_MESSAGE = "The database failed the request"


def unavailable(err: BaseException) -> StorageError:
    """The retryable :class:`StorageError` for ``err`` (chain it with ``from``)."""
    failure = StorageError(UNAVAILABLE_MESSAGE, retryable=True)
    failure.__cause__ = err
    return failure


def lost_connection(err: BaseException) -> bool:
    """Whether ``err`` means the connection it happened on is gone: the driver
    saw a disconnect (SQLAlchemy then invalidates the connection and the pool's
    older ones), or the socket failed or stayed silent past its timeout."""
    if isinstance(err, DBAPIError):
        return bool(err.connection_invalidated)
    return isinstance(err, OSError)  # TimeoutError and ConnectionError included


def translate(
    err: DBAPIError | OSError | PoolTimeout, tables: Tables, *, is_postgres: bool
) -> Exception:
    """The library's exception for a driver error on ``tables``' database."""
    if not isinstance(err, DBAPIError):  # no connection, or no answer in time
        return unavailable(err)
    message = str(err.orig)
    if isinstance(err, IntegrityError):
        t = tables
        x, ledger = t.extensions.name, t.ledger.name
        if t.pending_session_index in message or f"{x}.session_id" in message:
            return ExtensionError(
                ErrorCode.EXTENSION_PENDING, "An extension request is already pending"
            )
        if t.live_payment_index in message or f"{x}.payment_session_id" in message:
            return ExtensionError(
                ErrorCode.PAYMENT_IN_USE, "Payment session already backs another extension"
            )
        if t.ledger_extension_index in message or f"{ledger}.extension_id" in message:
            return ConcurrencyConflict(f"extension already charged: {message}")
    sqlstate = getattr(err.orig, "sqlstate", None) or getattr(err.orig, "pgcode", None)
    if sqlstate == "22P02" or "invalid input for query argument" in message:
        # An id that is no uuid, on a host's uuid column (the seed layout).
        return ExtensionError(ErrorCode.VALIDATION_ERROR, "Malformed id")
    if sqlstate in _RETRYABLE_SQLSTATES:
        return ConcurrencyConflict(message)
    lowered = message.lower()
    if not is_postgres and ("locked" in lowered or "busy" in lowered):
        return ConcurrencyConflict(message)
    if is_postgres and _unreachable(err, sqlstate):
        return unavailable(err)
    failure = StorageError(FAILED_MESSAGE)
    failure.__cause__ = err
    return failure


def _unreachable(err: DBAPIError, sqlstate: str | None) -> bool:
    """Whether a PostgreSQL driver error means the server is away, not a fault."""
    if err.connection_invalidated:
        return True
    if sqlstate:
        return sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
    # No SQLSTATE: the driver failed before the server answered (psycopg's
    # connection failures, asyncpg's closed-connection interface errors).
    return isinstance(err, OperationalError) or "connection is closed" in str(err.orig)
