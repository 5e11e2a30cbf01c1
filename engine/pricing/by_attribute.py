"""Attribute-based prices: the price depends on an event property (region, feature, tier of
service). Each value is rated on its own, so tiers count per value; values without a price of
their own use ``default`` or are rejected."""

from __future__ import annotations

from typing import Final

import msgspec

from engine.pricing.simple import SimplePrice

OTHER_VALUES: Final = "*"


class AttributePrice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    value: str
    price: SimplePrice


class ByAttribute(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="model",
    tag="by_attribute",
):
    property: str
    prices: tuple[AttributePrice, ...]
    default: SimplePrice | None = None

    def __post_init__(self) -> None:
        if not self.property:
            raise ValueError("property: must name an event property")
        if not self.prices:
            raise ValueError("prices: at least one value needs a price")
        values = [entry.value for entry in self.prices]
        if len(set(values)) != len(values):
            raise ValueError("prices: each value may appear once")
        if OTHER_VALUES in values:
            raise ValueError(f"prices: {OTHER_VALUES!r} is reserved; use default")

    def price_table(self) -> dict[str, SimplePrice]:
        table = {entry.value: entry.price for entry in self.prices}
        if self.default is not None:
            table[OTHER_VALUES] = self.default
        return table
