"""Graduated tiers: each unit is priced by the tier it falls in; a tier's flat fee is charged
once, when usage first enters the tier."""

from __future__ import annotations

from bisect import bisect_right
from decimal import Decimal
from functools import cached_property

import msgspec

from engine.numbers import divide
from engine.pricing.base import PriceLine, Tier, check_tiers, tier_bounds

_ZERO = Decimal(0)


class Graduated(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="model",
    tag="graduated",
    dict=True,
):
    tiers: list[Tier]

    def __post_init__(self) -> None:
        check_tiers(self.tiers)

    @cached_property
    def uppers(self) -> list[Decimal]:
        """The bounded tiers' upper bounds, for finding a quantity's tier by bisection."""
        return [tier.up_to for tier in self.tiers if tier.up_to is not None]

    @cached_property
    def bands(self) -> tuple[tuple[Decimal, Decimal | None, Decimal, Decimal], ...]:
        """Each tier as ``(lower, upper, unit_price, flat_fee)``, computed once."""
        return tuple(
            (lower, upper, tier.unit_price, tier.flat_fee)
            for (lower, upper), tier in zip(tier_bounds(self.tiers), self.tiers, strict=True)
        )

    def amount(self, quantity: Decimal, events: int) -> Decimal:
        return self.marginal(_ZERO, quantity, 0, events)

    def marginal(
        self, before: Decimal, after: Decimal, events_before: int, events_after: int
    ) -> Decimal:
        """The price of the units in ``(before, after]``, walking only the tiers they touch."""
        if after < before:
            return -self.marginal(after, before, events_after, events_before)
        bands = self.bands
        index = bisect_right(self.uppers, before)
        lower, upper, unit_price, flat_fee = bands[index]
        if upper is None or after <= upper:
            # The common case: the units stay within the tier the quantity is in.
            amount = (after - before) * unit_price
            if before <= lower < after:
                amount += flat_fee
            return amount
        total = _ZERO
        for lower, upper, unit_price, flat_fee in bands[index:]:
            if lower >= after:
                break
            top = after if upper is None or after < upper else upper
            total += (top - (before if before > lower else lower)) * unit_price
            if before <= lower:
                total += flat_fee
        return total

    def amount_in(self, quantity: Decimal, events: int, per: int) -> Decimal:
        """:meth:`amount` of ``quantity / per`` units: each tier's part is divided once."""
        return sum((line.amount for line in self.lines_in(quantity, events, per)), _ZERO)

    def lines_in(self, quantity: Decimal, events: int, per: int) -> list[PriceLine]:
        lines: list[PriceLine] = []
        for number, (lower, upper, unit_price, flat_fee) in enumerate(self.bands, start=1):
            low = lower * per
            if quantity <= low and number > 1:
                break
            top = quantity if upper is None or quantity < upper * per else upper * per
            in_tier = top - low if top > low else _ZERO
            flat = flat_fee if in_tier > 0 else _ZERO
            span = f"above {lower}" if upper is None else f"{lower} to {upper}"
            lines.append(
                PriceLine(
                    key=f"tier-{number}",
                    description=f"tier {number}: {span}",
                    quantity=divide(in_tier, per),
                    unit_price=unit_price,
                    flat_amount=flat,
                    amount=divide(in_tier * unit_price, per) + flat,
                )
            )
            if upper is None:
                break
        return lines

    def lines(self, quantity: Decimal, events: int) -> list[PriceLine]:
        lines: list[PriceLine] = []
        lower = _ZERO
        for number, tier in enumerate(self.tiers, start=1):
            if quantity <= lower and number > 1:
                break
            upper = tier.up_to
            top = quantity if upper is None or quantity < upper else upper
            in_tier = top - lower if top > lower else _ZERO
            flat = tier.flat_fee if in_tier > 0 else _ZERO
            span = f"above {lower}" if upper is None else f"{lower} to {upper}"
            lines.append(
                PriceLine(
                    key=f"tier-{number}",
                    description=f"tier {number}: {span}",
                    quantity=in_tier,
                    unit_price=tier.unit_price,
                    flat_amount=flat,
                    amount=in_tier * tier.unit_price + flat,
                )
            )
            if upper is None:
                break
            lower = upper
        return lines
