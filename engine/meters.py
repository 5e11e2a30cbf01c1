"""Meters (what is counted and how it aggregates) and usage events.

A meter turns the events of a period into one quantity:

- ``count``: the number of occurrences: an event counts once, or ``quantity`` times when it
  carries a whole quantity (a batch of 3 calls);
- ``sum``: the sum of the event values;
- ``max``: the largest value;
- ``latest``: the value of the event with the latest time (ties: the one recorded last);
- ``unique_count``: the number of distinct values of ``unique_property`` (active users);
- ``time_weighted``: a gauge integrated over time to the second, in ``time_unit``s
  (GB stored for 36 hours at 2 GB is 3 GB-days).

An event's value is ``quantity``, or the numeric property ``value_property`` when the meter
names one. ``filters`` keep only events whose properties have one of the listed values;
``group_by`` rates each combination of the listed properties on its own.
"""

from __future__ import annotations

import decimal
from bisect import bisect_right
from decimal import Decimal, InvalidOperation
from enum import Enum, StrEnum
from typing import Annotated, Final, Protocol

import msgspec

from engine.instants import Instant
from engine.numbers import MAGNITUDE_MAX, QUANTITY_DECIMALS_MAX, ZERO, divide
from engine.rejections import Rejection

KEY_PATTERN: Final = r"^[a-z0-9][a-z0-9_.:-]{0,63}$"
Key = Annotated[str, msgspec.Meta(pattern=KEY_PATTERN)]
PropertyName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
PropertyValue = Annotated[str, msgspec.Meta(max_length=256)]
EVENT_ID_LENGTH_MAX: Final = 128
# A value with more decimals than the engine carries has a fraction left after this scaling.
QUANTUM_INVERSE: Final = Decimal(10) ** QUANTITY_DECIMALS_MAX


class Aggregation(Enum):
    # A plain Enum, not StrEnum: ``count`` would shadow ``str.count``.
    count = "count"
    sum = "sum"
    max = "max"
    latest = "latest"
    unique_count = "unique_count"
    time_weighted = "time_weighted"


class TimeUnit(StrEnum):
    second = "second"
    minute = "minute"
    hour = "hour"
    day = "day"


class GaugeUnit(StrEnum):
    """The unit of time a gauge is integrated in. ``period`` averages over the billing period:
    100 GB kept for half of a month is 50 GB-months, whatever the month's length."""

    second = "second"
    minute = "minute"
    hour = "hour"
    day = "day"
    period = "period"


UNIT_SECONDS: Final = {
    TimeUnit.second: 1,
    TimeUnit.minute: 60,
    TimeUnit.hour: 3_600,
    TimeUnit.day: 86_400,
}


class Meter(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: Key
    unit: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    aggregation: Aggregation
    name: str = ""
    value_property: PropertyName | None = None
    unique_property: PropertyName | None = None
    time_unit: GaugeUnit | None = None
    filters: dict[PropertyName, tuple[PropertyValue, ...]] = {}
    group_by: tuple[PropertyName, ...] = ()

    def __post_init__(self) -> None:
        if self.aggregation is Aggregation.unique_count and self.unique_property is None:
            raise ValueError("unique_property: required for a unique_count meter")
        if self.aggregation is not Aggregation.unique_count and self.unique_property:
            raise ValueError("unique_property: only a unique_count meter counts distinct values")
        if self.aggregation is Aggregation.time_weighted and self.time_unit is None:
            raise ValueError("time_unit: required for a time_weighted meter (e.g. day)")
        if self.aggregation is not Aggregation.time_weighted and self.time_unit is not None:
            raise ValueError("time_unit: only a time_weighted meter integrates over time")
        if self.aggregation is Aggregation.count and self.value_property:
            raise ValueError("value_property: a count meter has no value")
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("group_by: each property may appear once")

    def matches(self, properties: dict[str, str]) -> bool:
        return all(properties.get(name) in allowed for name, allowed in self.filters.items())

    def group(self, properties: dict[str, str]) -> str:
        """The group-by bucket of an event: ``region=eu,tier=pro`` (empty without group_by)."""
        if not self.group_by:
            return ""
        return ",".join(f"{name}={properties.get(name, '')}" for name in self.group_by)


class Event(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """One usage record. ``duration_seconds`` > 0 marks usage over ``[time, time + duration)``.

    ``quantity`` is exact; for usage over time it is the rate (4 vCPUs for an hour: quantity 4,
    duration 3600).
    """

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=EVENT_ID_LENGTH_MAX)]
    meter: Key
    time: Instant
    quantity: Decimal = Decimal(1)
    duration_seconds: Annotated[int, msgspec.Meta(ge=0, le=366 * 86_400)] = 0
    properties: dict[PropertyName, PropertyValue] = {}


class Usage(Protocol):
    """What rating reads from an event. :class:`Event` is one; so is a usage command, whose
    usage time is its time."""

    @property
    def meter(self) -> str: ...
    @property
    def time(self) -> Instant: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def duration_seconds(self) -> int: ...
    @property
    def properties(self) -> dict[str, str]: ...


def event_value(meter: Meter, event: Usage) -> Decimal | Rejection:
    """The number an event contributes, or why it cannot be rated."""
    if meter.value_property is None:
        value = event.quantity
        field = "quantity"
    else:
        field = f"properties.{meter.value_property}"
        text = event.properties.get(meter.value_property)
        if text is None:
            return Rejection.of("missing_property", field, "the meter's value property is missing")
        try:
            value = Decimal(text)
        except InvalidOperation:
            return Rejection.of("invalid_value", field, f"{text!r} is not a number")
    if not (value.is_finite() and ZERO <= value < MAGNITUDE_MAX):
        return Rejection.of("invalid_value", field, "must be a non-negative number below 1e15")
    try:
        fraction = (value * QUANTUM_INVERSE) % 1
    except decimal.Inexact:  # under the strict context: more digits than the engine carries
        fraction = Decimal(1)
    if fraction:
        return Rejection.of(
            "invalid_value", field, f"at most {QUANTITY_DECIMALS_MAX} decimal places"
        )
    if meter.aggregation is Aggregation.count and value % 1:
        return Rejection.of("invalid_value", field, "a count meter counts whole occurrences")
    return value


# Aggregation states. Each is a mutable Struct so that an account snapshot encodes it as is.
# ``quantity(as_of)`` is the period-to-date quantity; it never reads the clock.


class SumState(msgspec.Struct, tag="sum", kw_only=True):
    events: int = 0
    total: Decimal = ZERO

    def add(self, value: Decimal, time: Instant, unique: str | None) -> None:
        self.events += 1
        self.total += value

    def quantity(self, as_of: Instant) -> Decimal:
        return self.total


class CountState(SumState, tag="count", kw_only=True):
    """Occurrences: the sum of the events' whole quantities (``event_value`` checks them)."""


class MaxState(msgspec.Struct, tag="max", kw_only=True):
    events: int = 0
    highest: Decimal = ZERO

    def add(self, value: Decimal, time: Instant, unique: str | None) -> None:
        self.events += 1
        if value > self.highest:
            self.highest = value

    def quantity(self, as_of: Instant) -> Decimal:
        return self.highest


class LatestState(msgspec.Struct, tag="latest", kw_only=True):
    events: int = 0
    time: Instant | None = None
    value: Decimal = ZERO

    def add(self, value: Decimal, time: Instant, unique: str | None) -> None:
        self.events += 1
        if self.time is None or time >= self.time:
            self.time = time
            self.value = value

    def quantity(self, as_of: Instant) -> Decimal:
        return self.value


class UniqueState(msgspec.Struct, tag="unique_count", kw_only=True):
    """Distinct values seen in the period. Memory grows with the number of distinct values
    (about 60 bytes each): a million active users in a period cost about 60 MB."""

    events: int = 0
    values: set[str] = msgspec.field(default_factory=set)

    def add(self, value: Decimal, time: Instant, unique: str | None) -> None:
        assert unique is not None
        self.events += 1
        self.values.add(unique)

    def quantity(self, as_of: Instant) -> Decimal:
        return Decimal(len(self.values))


class TimeWeightedState(msgspec.Struct, tag="time_weighted", kw_only=True):
    """A gauge: the value holds from each change on. The integral is exact in value-seconds.

    ``times``/``values`` are the change points of the period in time order, so that a late
    change is inserted where it belongs; ``integral`` covers ``[start, until)``.
    """

    start: Instant
    unit_seconds: int
    events: int = 0
    opening: Decimal = ZERO
    times: list[Instant] = msgspec.field(default_factory=list)
    values: list[Decimal] = msgspec.field(default_factory=list)
    until: Instant = 0
    integral: Decimal = ZERO

    def __post_init__(self) -> None:
        if self.until < self.start:
            self.until = self.start

    def value_at(self, time: Instant) -> Decimal:
        position = bisect_right(self.times, time)
        return self.values[position - 1] if position else self.opening

    def advance(self, as_of: Instant) -> None:
        if as_of > self.until:
            self.integral += self.value_at(self.until) * (as_of - self.until)
            self.until = as_of

    def add(self, value: Decimal, time: Instant, unique: str | None) -> None:
        self.events += 1
        time = max(time, self.start)
        self.advance(time)
        position = bisect_right(self.times, time)
        previous = self.values[position - 1] if position else self.opening
        following_time = self.times[position] if position < len(self.times) else self.until
        # The new value holds from ``time`` until the next change (or until ``until``).
        self.integral += (value - previous) * (following_time - time)
        self.times.insert(position, time)
        self.values.insert(position, value)

    def quantity(self, as_of: Instant) -> Decimal:
        self.advance(as_of)
        return divide(self.integral, self.unit_seconds)

    def closing_value(self) -> Decimal:
        return self.values[-1] if self.values else self.opening


AggregateState = CountState | SumState | MaxState | LatestState | UniqueState | TimeWeightedState


def new_state(
    meter: Meter, start: Instant, period_seconds: int, opening: Decimal = ZERO
) -> AggregateState:
    """A fresh state for a period from ``start`` on; a gauge carries its value over from the
    last period as ``opening``."""
    match meter.aggregation:
        case Aggregation.count:
            return CountState()
        case Aggregation.sum:
            return SumState()
        case Aggregation.max:
            return MaxState()
        case Aggregation.latest:
            return LatestState()
        case Aggregation.unique_count:
            return UniqueState()
        case Aggregation.time_weighted:
            unit = meter.time_unit
            assert unit is not None
            seconds = period_seconds if unit is GaugeUnit.period else UNIT_SECONDS[TimeUnit(unit)]
            return TimeWeightedState(start=start, unit_seconds=seconds, opening=opening)
