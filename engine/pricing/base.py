"""What every price model shares: the line it produces and the checks on its numbers."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from engine.numbers import (
    MAGNITUDE_MAX,
    ONE,
    PRICE_DECIMALS_MAX,
    QUANTITY_DECIMALS_MAX,
    decimals_of,
)


class PriceLine(msgspec.Struct, frozen=True, kw_only=True):
    """One part of a rated amount, before rounding: a tier, a package count, an overage.

    ``amount == quantity * unit_price + flat_amount`` exactly, unless the model says otherwise
    (a percentage line carries the transaction total as its quantity).
    """

    key: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    flat_amount: Decimal
    amount: Decimal
    unit: str | None = None
    """What ``quantity`` counts when it is not the charge's own unit (packages, transactions)."""


def check_price(field: str, value: Decimal, *, allow_negative: bool = False) -> None:
    """Reject non-finite, negative, too large or too finely divided prices, naming the field."""
    if not value.is_finite():
        raise ValueError(f"{field}: must be a finite number")
    if value < 0 and not allow_negative:
        raise ValueError(f"{field}: must not be negative")
    if value.copy_abs() >= MAGNITUDE_MAX:
        raise ValueError(f"{field}: must be less than {MAGNITUDE_MAX:f}")
    if decimals_of(value) > PRICE_DECIMALS_MAX:
        raise ValueError(f"{field}: at most {PRICE_DECIMALS_MAX} decimal places")


def check_quantity(field: str, value: Decimal, *, positive: bool = False) -> None:
    if value is ONE:  # the default quantity of every command and request: valid as it is
        return
    if not value.is_finite():
        raise ValueError(f"{field}: must be a finite number")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{field}: must be {'greater than zero' if positive else 'non-negative'}")
    if value >= MAGNITUDE_MAX:
        raise ValueError(f"{field}: must be less than {MAGNITUDE_MAX:f}")
    if decimals_of(value) > QUANTITY_DECIMALS_MAX:
        raise ValueError(f"{field}: at most {QUANTITY_DECIMALS_MAX} decimal places")


class Tier(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A band of quantity ``(previous up_to, up_to]``; ``up_to=None`` is unbounded and last."""

    up_to: Decimal | None
    unit_price: Decimal
    flat_fee: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if self.up_to is not None:
            check_quantity("up_to", self.up_to, positive=True)
        check_price("unit_price", self.unit_price)
        check_price("flat_fee", self.flat_fee)


def check_tiers(tiers: list[Tier]) -> None:
    """Tiers are sorted by strictly increasing ``up_to`` and only the last is unbounded."""
    if not tiers:
        raise ValueError("tiers: at least one tier is required")
    previous = Decimal(0)
    for position, tier in enumerate(tiers):
        last = position == len(tiers) - 1
        if tier.up_to is None:
            if not last:
                raise ValueError(f"tiers[{position}].up_to: only the last tier may be unbounded")
            continue
        if tier.up_to <= previous:
            raise ValueError(
                f"tiers[{position}].up_to: tiers must be sorted and must not overlap "
                f"({tier.up_to} after {previous})"
            )
        previous = tier.up_to
    if tiers[-1].up_to is not None:
        raise ValueError(
            f"tiers[{len(tiers) - 1}].up_to: the last tier must be unbounded (null), so that "
            "every quantity has a price"
        )


def tier_bounds(tiers: list[Tier]) -> list[tuple[Decimal, Decimal | None]]:
    """Each tier's ``(lower, upper)`` bound; the lower bound is exclusive."""
    bounds: list[tuple[Decimal, Decimal | None]] = []
    lower = Decimal(0)
    for tier in tiers:
        bounds.append((lower, tier.up_to))
        if tier.up_to is not None:
            lower = tier.up_to
    return bounds
