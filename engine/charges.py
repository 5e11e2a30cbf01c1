"""A charge applies one price model to one meter, with free units, a minimum and a maximum per
period, and, for usage over time, a time basis (the unit of time and how durations round)."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated

import msgspec

from engine.meters import UNIT_SECONDS, Key, TimeUnit
from engine.pricing import Price
from engine.pricing.base import check_price, check_quantity


class DurationRounding(StrEnum):
    """How one usage's duration becomes billable seconds."""

    exact = "exact"
    started_unit = "started_unit"


class TimeBasis(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Usage over time priced per ``unit``: CPU per second, VM per started hour.

    A usage of ``duration_seconds`` is first raised to ``minimum_seconds``, then, with
    ``started_unit``, rounded up to whole units. The charge's quantity is the event's quantity
    times the billable time in units.
    """

    unit: TimeUnit
    rounding: DurationRounding = DurationRounding.exact
    minimum_seconds: Annotated[int, msgspec.Meta(ge=0, le=366 * 86_400)] = 0

    @property
    def unit_seconds(self) -> int:
        return UNIT_SECONDS[self.unit]

    def billable_seconds(self, duration_seconds: int) -> int:
        seconds = max(duration_seconds, self.minimum_seconds)
        if self.rounding is DurationRounding.started_unit:
            unit = self.unit_seconds
            seconds = -(-seconds // unit) * unit
        return seconds


class Charge(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: Key
    meter: Key
    price: Price
    name: str = ""
    free_units: Decimal = Decimal(0)
    minimum_amount: Decimal | None = None
    maximum_amount: Decimal | None = None
    time_basis: TimeBasis | None = None

    def __post_init__(self) -> None:
        check_quantity("free_units", self.free_units)
        if self.minimum_amount is not None:
            check_price("minimum_amount", self.minimum_amount)
        if self.maximum_amount is not None:
            check_price("maximum_amount", self.maximum_amount)
        if (
            self.minimum_amount is not None
            and self.maximum_amount is not None
            and self.minimum_amount > self.maximum_amount
        ):
            raise ValueError("minimum_amount: must not exceed maximum_amount")

    @property
    def label(self) -> str:
        return self.name or self.key
