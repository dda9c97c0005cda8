"""Rolling cutover: the old service's own SQL keeps working on the migrated tables.

During a rolling cutover the Node service and the library run side by side
on one database until traffic has moved.  The old service creates a request
with::

    INSERT INTO session_extensions (session_id, requested_duration_minutes,
        requested_price, status, payment_session_id) VALUES (…) RETURNING …

naming neither ``expires_at`` nor ``timeout_seconds``, which revision 0002
made ``NOT NULL``.  Under ``-x layout=seed`` on PostgreSQL this revision adds
a ``BEFORE INSERT`` trigger on ``session_extensions`` that fills what such an
INSERT leaves out: ``expires_at = requested_at + N seconds`` and
``timeout_seconds = Math.round(N)``, N being ``-x extension_timeout_seconds``
(default 10, the seed's default; pass the value the old service runs with, as
for revision 0002).  So the old service's request has the deadline its own
timer has, and the library's sweep resolves it at that deadline like one of
its own.  The library names both columns in its own INSERTs, so the trigger
never touches them; it is harmless after the old service is gone.

``requested_at + N seconds`` is computed in the inserting session: with a
``timestamp`` (without time zone) ``requested_at`` it is a local time, turned
into the ``timestamptz`` deadline in that session's zone, the zone the old
service's ``now()`` filled ``requested_at`` in.

Before the trigger is created the host's column types are checked again
(:mod:`extension_fsm.migrations.host_columns`), for databases that reached
revision 0004 before that check existed.

SQLite and the default layout: nothing (the old service ran on PostgreSQL;
the default layout has no old service).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from alembic import context, op
from extension_fsm.migrations.host_columns import refuse_unsafe_types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEED_DEFAULT_TIMEOUT_SECONDS = 10.0


def _x(key: str, default: str = "") -> str:
    return str(context.get_x_argument(as_dictionary=True).get(key, default))


def _n(key: str) -> str:
    return _x("table_prefix") + key


def _applies() -> bool:
    return _x("layout", "default") == "seed" and context.get_context().dialect.name == "postgresql"


def _timeout() -> float:
    raw = _x("extension_timeout_seconds", str(SEED_DEFAULT_TIMEOUT_SECONDS))
    seconds = float(raw)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"extension_timeout_seconds must be a positive number, not {raw!r}")
    return seconds


def _math_round(value: float) -> int:
    """``Math.round``, as the seed rounded the ``timeout_seconds`` it announced."""
    floor = math.floor(value)
    return floor + 1 if value - floor >= 0.5 else floor


def _function() -> str:
    return _n("session_extensions_fill_deadline")


def upgrade() -> None:
    if not _applies():
        return
    seconds = _timeout()
    refuse_unsafe_types(op.get_bind(), _n)
    x = _n("session_extensions")
    # ``seconds`` is a finite positive float: its repr is a numeric literal.
    op.execute(
        f"""
        CREATE FUNCTION {_function()}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.expires_at IS NULL THEN
                NEW.expires_at := NEW.requested_at + make_interval(secs => {seconds!r});
            END IF;
            IF NEW.timeout_seconds IS NULL THEN
                NEW.timeout_seconds := {_math_round(seconds)};
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        f"CREATE TRIGGER {x}_fill_deadline BEFORE INSERT ON {x}"
        f" FOR EACH ROW EXECUTE FUNCTION {_function()}()"
    )


def downgrade() -> None:
    if not _applies():
        return
    x = _n("session_extensions")
    op.execute(f"DROP TRIGGER IF EXISTS {x}_fill_deadline ON {x}")
    op.execute(f"DROP FUNCTION IF EXISTS {_function()}()")
