"""Price models, one per module. Each simple model prices a period's total quantity:

- ``amount(quantity, events)``: the exact, unrounded amount for the period so far;
- ``marginal(before, after, events_before, events_after)``: ``amount(after) - amount(before)``,
  computed without walking what does not change;
- ``lines(quantity, events)``: the breakdown that a statement shows, summing to ``amount``.

Routing models (time of use, attribute-based) choose which simple model prices an event.
"""

from __future__ import annotations

from engine.pricing.base import PriceLine, Tier
from engine.pricing.by_attribute import OTHER_VALUES, AttributePrice, ByAttribute
from engine.pricing.graduated import Graduated
from engine.pricing.overage import Overage
from engine.pricing.package import Package
from engine.pricing.per_unit import PerUnit
from engine.pricing.percentage import Percentage
from engine.pricing.simple import SimplePrice
from engine.pricing.time_of_use import Schedule, TimeOfUse, TimeWindow, Weekday
from engine.pricing.volume import Volume

Price = PerUnit | Graduated | Volume | Package | Overage | Percentage | TimeOfUse | ByAttribute

__all__ = [
    "OTHER_VALUES",
    "AttributePrice",
    "ByAttribute",
    "Graduated",
    "Overage",
    "Package",
    "PerUnit",
    "Percentage",
    "Price",
    "PriceLine",
    "Schedule",
    "SimplePrice",
    "Tier",
    "TimeOfUse",
    "TimeWindow",
    "Volume",
    "Weekday",
]
