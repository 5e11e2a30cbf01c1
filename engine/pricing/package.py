"""Package: a price per block of ``package_size`` units; a started block counts as a whole one
unless ``round_up`` is false."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from engine.numbers import ceil_div, divide, floor_div
from engine.pricing.base import PriceLine, check_price, check_quantity


class Package(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="model",
    tag="package",
):
    package_size: Decimal
    package_price: Decimal
    round_up: bool = True

    def __post_init__(self) -> None:
        check_quantity("package_size", self.package_size, positive=True)
        check_price("package_price", self.package_price)

    def packages(self, quantity: Decimal) -> int:
        if self.round_up:
            return ceil_div(quantity, self.package_size)
        return floor_div(quantity, self.package_size)

    def amount(self, quantity: Decimal, events: int) -> Decimal:
        return self.packages(quantity) * self.package_price

    def marginal(
        self, before: Decimal, after: Decimal, events_before: int, events_after: int
    ) -> Decimal:
        return (self.packages(after) - self.packages(before)) * self.package_price

    def amount_in(self, quantity: Decimal, events: int, per: int) -> Decimal:
        """:meth:`amount` of ``quantity / per`` units: whole packages need no division."""
        return self._packages_in(quantity, per) * self.package_price

    def _packages_in(self, quantity: Decimal, per: int) -> int:
        size = self.package_size * per
        return ceil_div(quantity, size) if self.round_up else floor_div(quantity, size)

    def lines_in(self, quantity: Decimal, events: int, per: int) -> list[PriceLine]:
        count = Decimal(self._packages_in(quantity, per))
        used = divide(quantity, per)
        return [
            PriceLine(
                key="packages",
                description=f"packages of {self.package_size} units ({used} units used)",
                quantity=count,
                unit_price=self.package_price,
                flat_amount=Decimal(0),
                amount=count * self.package_price,
                unit="package",
            )
        ]

    def lines(self, quantity: Decimal, events: int) -> list[PriceLine]:
        count = Decimal(self.packages(quantity))
        return [
            PriceLine(
                key="packages",
                description=f"packages of {self.package_size} units ({quantity} units used)",
                quantity=count,
                unit_price=self.package_price,
                flat_amount=Decimal(0),
                amount=count * self.package_price,
                unit="package",
            )
        ]
