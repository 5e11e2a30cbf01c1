"""Volume: all units are priced at the tier the period's total quantity reaches.

Crossing into a cheaper tier can lower the total; the marginal amount is then negative (a
credit), and that is the model's documented nature, not an error.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from engine.numbers import divide
from engine.pricing.base import PriceLine, Tier, check_tiers

_ZERO = Decimal(0)


class Volume(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="model",
    tag="volume",
):
    tiers: list[Tier]

    def __post_init__(self) -> None:
        check_tiers(self.tiers)

    def tier_reached(self, quantity: Decimal) -> tuple[int, Tier]:
        for number, tier in enumerate(self.tiers, start=1):
            if tier.up_to is None or quantity <= tier.up_to:
                return number, tier
        return len(self.tiers), self.tiers[-1]

    def amount(self, quantity: Decimal, events: int) -> Decimal:
        if quantity == 0:
            return _ZERO
        _, tier = self.tier_reached(quantity)
        return quantity * tier.unit_price + tier.flat_fee

    def marginal(
        self, before: Decimal, after: Decimal, events_before: int, events_after: int
    ) -> Decimal:
        return self.amount(after, events_after) - self.amount(before, events_before)

    def amount_in(self, quantity: Decimal, events: int, per: int) -> Decimal:
        """:meth:`amount` of ``quantity / per`` units, dividing once, at the end."""
        if quantity == 0:
            return _ZERO
        _, tier = self._tier_in(quantity, per)
        return divide(quantity * tier.unit_price, per) + tier.flat_fee

    def _tier_in(self, quantity: Decimal, per: int) -> tuple[int, Tier]:
        for number, tier in enumerate(self.tiers, start=1):
            if tier.up_to is None or quantity <= tier.up_to * per:
                return number, tier
        return len(self.tiers), self.tiers[-1]

    def lines_in(self, quantity: Decimal, events: int, per: int) -> list[PriceLine]:
        number, tier = self._tier_in(quantity, per)
        flat = tier.flat_fee if quantity > 0 else _ZERO
        return [
            PriceLine(
                key=f"tier-{number}",
                description=f"volume tier {number}",
                quantity=divide(quantity, per),
                unit_price=tier.unit_price,
                flat_amount=flat,
                amount=self.amount_in(quantity, events, per),
            )
        ]

    def lines(self, quantity: Decimal, events: int) -> list[PriceLine]:
        number, tier = self.tier_reached(quantity)
        flat = tier.flat_fee if quantity > 0 else _ZERO
        return [
            PriceLine(
                key=f"tier-{number}",
                description=f"volume tier {number}",
                quantity=quantity,
                unit_price=tier.unit_price,
                flat_amount=flat,
                amount=quantity * tier.unit_price + flat,
            )
        ]
