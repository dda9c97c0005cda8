"""Amounts of money: whole currency units (rupiah), held exactly.

The library's amounts (a price, a payment's amount, a ledger row) are
``int``.  A host's database may hold them in any exact numeric column, and
its driver hands back an ``int`` or a ``Decimal`` (``numeric(12,2)`` gives
``Decimal("15000.00")``); :func:`whole_money` turns either into the ``int``
exactly, never through ``float``, and refuses what is not a whole amount.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["whole_money"]


def whole_money(value: object) -> int:
    """``value`` as a whole number of currency units, exactly, or a ``ValueError``.

    Takes what a driver returns for an exact numeric column (``int``, or a
    ``Decimal`` from ``numeric(12,2)``: ``Decimal("15000.00")`` is ``15000``)
    and never goes through ``float``: a ``Decimal`` is compared with its own
    integral value.  A SQLite ``NUMERIC`` column hands back a ``float`` only
    for a value it could not store as an integer, so a fractional one; a
    whole ``float`` is taken as it is exact.  A fraction of a unit (the
    library's amounts are whole rupiah) or anything else is refused.
    """
    if isinstance(value, bool):
        raise ValueError(f"not an amount: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        raise ValueError(f"amount {value} is not a whole number of currency units")
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    raise ValueError(f"amount {value!r} is not a whole number of currency units")
