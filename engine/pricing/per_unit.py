"""Per-unit: every unit costs the same."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from engine.numbers import divide
from engine.pricing.base import PriceLine, check_price


class PerUnit(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="model",
    tag="per_unit",
):
    unit_price: Decimal

    def __post_init__(self) -> None:
        check_price("unit_price", self.unit_price)

    def amount(self, quantity: Decimal, events: int) -> Decimal:
        return quantity * self.unit_price

    def marginal(
        self, before: Decimal, after: Decimal, events_before: int, events_after: int
    ) -> Decimal:
        return (after - before) * self.unit_price

    def amount_in(self, quantity: Decimal, events: int, per: int) -> Decimal:
        """:meth:`amount` of ``quantity / per`` units, dividing once, at the end."""
        return divide(quantity * self.unit_price, per)

    def lines_in(self, quantity: Decimal, events: int, per: int) -> list[PriceLine]:
        return [
            PriceLine(
                key="units",
                description="units",
                quantity=divide(quantity, per),
                unit_price=self.unit_price,
                flat_amount=Decimal(0),
                amount=self.amount_in(quantity, events, per),
            )
        ]

    def lines(self, quantity: Decimal, events: int) -> list[PriceLine]:
        return [
            PriceLine(
                key="units",
                description="units",
                quantity=quantity,
                unit_price=self.unit_price,
                flat_amount=Decimal(0),
                amount=quantity * self.unit_price,
            )
        ]
