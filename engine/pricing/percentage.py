"""Percentage: a share of each transaction's amount plus a fixed fee per transaction.

The meter's quantity is the transaction amount (a ``sum`` meter); ``events`` counts the
transactions. Both parts are linear, so the period total is
``rate * sum(amounts) + fixed_fee * transactions``.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from engine.numbers import divide
from engine.pricing.base import PriceLine, check_price

_ZERO = Decimal(0)


class Percentage(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="model",
    tag="percentage",
):
    rate: Decimal
    fixed_fee: Decimal = _ZERO

    def __post_init__(self) -> None:
        check_price("rate", self.rate)
        if self.rate > 1:
            raise ValueError("rate: a share between 0 and 1 (0.029 is 2.9 %)")
        check_price("fixed_fee", self.fixed_fee)

    def amount(self, quantity: Decimal, events: int) -> Decimal:
        return quantity * self.rate + events * self.fixed_fee

    def marginal(
        self, before: Decimal, after: Decimal, events_before: int, events_after: int
    ) -> Decimal:
        return (after - before) * self.rate + (events_after - events_before) * self.fixed_fee

    def amount_in(self, quantity: Decimal, events: int, per: int) -> Decimal:
        """:meth:`amount` of ``quantity / per`` units, dividing once, at the end."""
        return divide(quantity * self.rate, per) + events * self.fixed_fee

    def lines_in(self, quantity: Decimal, events: int, per: int) -> list[PriceLine]:
        lines = self.lines(divide(quantity, per), events)
        share = msgspec.structs.replace(lines[0], amount=divide(quantity * self.rate, per))
        return [share, lines[1]]

    def lines(self, quantity: Decimal, events: int) -> list[PriceLine]:
        count = Decimal(events)
        return [
            PriceLine(
                key="percentage",
                description=f"{(self.rate * 100).normalize():f} % of {quantity}",
                quantity=quantity,
                unit_price=self.rate,
                flat_amount=_ZERO,
                amount=quantity * self.rate,
            ),
            PriceLine(
                key="transactions",
                description="fixed fee per transaction",
                quantity=count,
                unit_price=self.fixed_fee,
                flat_amount=_ZERO,
                amount=count * self.fixed_fee,
                unit="transaction",
            ),
        ]
