"""Overage: an included quantity per period, then a price for every unit above it."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from engine.numbers import divide
from engine.pricing.base import PriceLine, check_price, check_quantity

_ZERO = Decimal(0)


class Overage(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="model",
    tag="overage",
):
    included: Decimal
    unit_price: Decimal

    def __post_init__(self) -> None:
        check_quantity("included", self.included)
        check_price("unit_price", self.unit_price)

    def over(self, quantity: Decimal) -> Decimal:
        return quantity - self.included if quantity > self.included else _ZERO

    def amount(self, quantity: Decimal, events: int) -> Decimal:
        return self.over(quantity) * self.unit_price

    def marginal(
        self, before: Decimal, after: Decimal, events_before: int, events_after: int
    ) -> Decimal:
        return (self.over(after) - self.over(before)) * self.unit_price

    def amount_in(self, quantity: Decimal, events: int, per: int) -> Decimal:
        """:meth:`amount` of ``quantity / per`` units, dividing once, at the end."""
        over = quantity - self.included * per
        return divide(over * self.unit_price, per) if over > 0 else _ZERO

    def lines_in(self, quantity: Decimal, events: int, per: int) -> list[PriceLine]:
        over = max(_ZERO, quantity - self.included * per)
        return [
            PriceLine(
                key="included",
                description=f"included (up to {self.included})",
                quantity=divide(quantity - over, per),
                unit_price=_ZERO,
                flat_amount=_ZERO,
                amount=_ZERO,
            ),
            PriceLine(
                key="overage",
                description=f"above {self.included}",
                quantity=divide(over, per),
                unit_price=self.unit_price,
                flat_amount=_ZERO,
                amount=self.amount_in(quantity, events, per),
            ),
        ]

    def lines(self, quantity: Decimal, events: int) -> list[PriceLine]:
        over = self.over(quantity)
        return [
            PriceLine(
                key="included",
                description=f"included (up to {self.included})",
                quantity=quantity - over,
                unit_price=_ZERO,
                flat_amount=_ZERO,
                amount=_ZERO,
            ),
            PriceLine(
                key="overage",
                description=f"above {self.included}",
                quantity=over,
                unit_price=self.unit_price,
                flat_amount=_ZERO,
                amount=over * self.unit_price,
            ),
        ]
