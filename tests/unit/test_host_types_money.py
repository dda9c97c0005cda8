"""Money from a host's exact numeric columns: whole units, exactly, never through
float; in the column type (SQLite ``NUMERIC(12,2)`` here, PostgreSQL in
``tests/integration/test_host_types.py``) and in the outbox's JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from extension_fsm.adapters.sqlalchemy.schema import Money
from extension_fsm.model import FailureCause, PaymentConsumed, PaymentFailed
from extension_fsm.money import whole_money
from extension_fsm.outbox_codec import decode_effect, encode_effects

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (15000, 15000),
        (Decimal("15000.00"), 15000),
        (Decimal("15000"), 15000),
        (Decimal("9999999999.00"), 9999999999),  # numeric(12,2)'s largest whole amount
        (Decimal("12345678901234567890.00"), 12345678901234567890),  # beyond float's 2**53
        (15000.0, 15000),
    ],
)
def test_host_types_whole_money_is_exact(value: object, want: int) -> None:
    got = whole_money(value)
    assert got == want and type(got) is int


@pytest.mark.parametrize(
    "value",
    [
        Decimal("15000.50"),
        Decimal("0.01"),
        Decimal("NaN"),
        Decimal("Infinity"),
        15000.5,
        float(2**60),
        True,
        "15000",
        None,
    ],
)
def test_host_types_whole_money_refuses_what_is_not_a_whole_amount(value: object) -> None:
    with pytest.raises(ValueError, match="amount"):
        whole_money(value)


def _payment_effects(amount: Any) -> list[PaymentConsumed | PaymentFailed]:
    return [
        PaymentConsumed("s1", "x1", "p1", "c1", amount, 15, False, AT),
        PaymentFailed("s1", "x1", "p1", "c1", amount, FailureCause.EXTENSION_REJECTED, AT),
    ]


def test_host_types_outbox_json_holds_a_numeric_amount_exactly() -> None:
    # What a numeric(12,2) column's driver value would have made of an event
    # before the column type converted it: still written exactly.
    rows = encode_effects(_payment_effects(Decimal("15000.00")), AT, lambda: "id")
    for row in rows:
        text = json.dumps(row.payload)  # the JSON column's own serialiser
        assert '"amount": 15000,' in text
        decoded = decode_effect(row)
        assert isinstance(decoded, PaymentConsumed | PaymentFailed)
        assert decoded.amount == 15000 and type(decoded.amount) is int


def test_host_types_outbox_refuses_a_fraction_of_a_unit() -> None:
    for effect in _payment_effects(Decimal("15000.50")):
        with pytest.raises(ValueError, match=r"15000\.50"):
            encode_effects([effect], AT, lambda: "id")


def test_host_types_money_column_reads_and_writes_numeric_exactly() -> None:
    engine = sa.create_engine("sqlite://")
    table = sa.Table("m", sa.MetaData(), sa.Column("id", sa.Integer), sa.Column("amount", Money()))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE m (id INTEGER, amount NUMERIC(12, 2))")
            conn.execute(sa.insert(table), [{"id": 1, "amount": 15000}])
            conn.execute(
                sa.insert(table), [{"id": 2, "amount": Decimal("9000.00")}]
            )  # a whole Decimal is taken as its int
            conn.exec_driver_sql("INSERT INTO m VALUES (3, 9999999999.00), (4, 15000.5)")
            stored = conn.exec_driver_sql("SELECT id, typeof(amount) FROM m ORDER BY id").all()
            assert stored == [(1, "integer"), (2, "integer"), (3, "integer"), (4, "real")]
            whole = conn.execute(sa.select(table.c.amount).where(table.c.id < 4).order_by("id"))
            assert [(v, type(v)) for (v,) in whole] == [
                (15000, int),
                (9000, int),
                (9999999999, int),
            ]
            # a stored fraction is refused when read, never rounded
            with pytest.raises(ValueError, match="not a whole number"):
                conn.execute(sa.select(table.c.amount).where(table.c.id == 4)).all()
            with pytest.raises(sa.exc.StatementError, match="not a whole number"):
                conn.execute(sa.insert(table), [{"id": 5, "amount": Decimal("1.50")}])
    finally:
        engine.dispose()
