"""Billing periods: half-open intervals of instants, laid out in a tenant's time zone.

A :class:`PeriodSpec` says how time is cut into periods; a :class:`Period` is one of them.
Periods are half-open, ``[start, end)``, and contiguous: the period after ``p`` starts at
``p.end`` and has index ``p.index + 1``. The index counts periods from an alignment origin and
may be negative.

Calendar units (day, week, month, quarter, year) are wall-clock arithmetic in the tenant's IANA
time zone. Days begin at local midnight, so a local day lasts 23 or 25 hours on a day when the
clocks change (23.5 or 24.5 in Australia/Lord_Howe). Weeks begin on Monday 00:00, months on the
1st, quarters on the 1st of January, April, July and October, years on the 1st of January.
Without an anchor, periods of ``count`` units are aligned to an origin: local 2000-01-03 00:00
(a Monday) for days and weeks, January 2000 for months, quarters and years. So two-monthly
periods are January–February, March–April, and so on.

With an anchor, period ``k`` starts at ``anchor + k * count`` units of local wall time. Months
are always counted from the anchor, never from the previous period, and the day is clamped to
the length of the month: an anchor on 31 January gives 29 (or 28) February, then 31 March and
30 April, without drifting. Quarters and years follow the same rule, so an anchor on 29 February
gives 28 February in years that are not leap years.

A local start time that does not exist, because it falls in the gap when clocks spring forward,
is read with the offset in force before the gap, as zoneinfo does for ``fold=0``. The period
then starts as far after the end of the gap as the wall time lies after its beginning: 02:30 on
2024-03-31 in Europe/Berlin becomes 03:30 CEST, and in a zone that springs forward at midnight
the local day starts at the transition. An ambiguous local time, one that occurs twice when
clocks fall back, means its first occurrence, the one still on summer time, so a daily period
anchored at 02:30 in Europe/Berlin lasts 25 hours from 02:30 CEST on 2024-10-27. Where a whole
local day was skipped, as in Pacific/Apia on 2011-12-30, that day's period is empty,
``start == end``. It keeps its index, so indexes stay consecutive, but
:func:`period_containing` never returns it and :func:`periods_overlapping` leaves it out.

Sub-day units (second, minute, hour) are absolute SI durations: every period lasts exactly
``count`` units, hours stay 3,600 seconds long across clock changes, and boundaries fall on
whole multiples of the period length counted from the origin instant, which is local
2000-01-03 00:00 in the tenant's zone or the anchor read as an instant. Hours in Asia/Kolkata
therefore begin at local :00. Where the zone's offset now differs from the origin's by a
fraction of the period length, boundaries are not on round local times: hourly periods in
Australia/Lord_Howe begin at :00 in summer, as on the origin date, and at :30 in winter.

The rules come from the tz database this process loads. A change to the rules moves the
boundaries of future periods, so a closed period's instants should be stored, not recomputed.
"""

from __future__ import annotations

import calendar
import functools
from collections.abc import Iterator
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from engine.instants import HOUR, MINUTE, SECOND, Instant, from_datetime, to_datetime

COUNT_MAX: Final = 10_000

_WEEK_ORIGIN_LOCAL: Final = datetime(2000, 1, 3)
_MONTH_ORIGIN_LOCAL: Final = datetime(2000, 1, 1)

# The index estimate is off by at most one period, plus one for a skipped empty day, so a
# correction that needs more steps than this is a bug.
_CORRECTION_STEPS_MAX: Final = 4

# "localtime" names whatever zone the host is configured with, so two hosts would disagree.
_HOST_DEPENDENT_ZONE_NAMES: Final = frozenset({"localtime"})


class UnknownTimeZone(ValueError):
    """The name is not an IANA time zone in the tz database this process loads."""


class PeriodUnit(StrEnum):
    second = "second"
    minute = "minute"
    hour = "hour"
    day = "day"
    week = "week"
    month = "month"
    quarter = "quarter"
    year = "year"


_SECONDS_PER_UNIT: Final[dict[PeriodUnit, int]] = {
    PeriodUnit.second: SECOND,
    PeriodUnit.minute: MINUTE,
    PeriodUnit.hour: HOUR,
}
_DAYS_PER_UNIT: Final[dict[PeriodUnit, int]] = {PeriodUnit.day: 1, PeriodUnit.week: 7}
_MONTHS_PER_UNIT: Final[dict[PeriodUnit, int]] = {
    PeriodUnit.month: 1,
    PeriodUnit.quarter: 3,
    PeriodUnit.year: 12,
}


class PeriodSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How time is cut into periods: ``count`` units each, aligned to ``anchor`` if given.

    ``anchor`` is a local ISO 8601 date-time without an offset, such as
    ``"2024-01-31T00:00:00"``, read in the tenant's time zone. ``None`` aligns periods to the
    calendar.
    """

    unit: PeriodUnit
    count: Annotated[int, msgspec.Meta(ge=1, le=COUNT_MAX)] = 1
    anchor: str | None = None

    def __post_init__(self) -> None:
        # Decoding checks the bounds on count, but direct construction does not.
        if not 1 <= self.count <= COUNT_MAX:
            raise ValueError(f"count: must be between 1 and {COUNT_MAX}, got {self.count}")
        if self.anchor is not None:
            _parse_anchor(self.anchor)


class Period(msgspec.Struct, frozen=True, kw_only=True):
    """The half-open interval ``[start, end)``, the ``index``-th period from the origin."""

    start: Instant
    end: Instant
    index: int

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"end: must not be before start, got [{self.start}, {self.end})")

    @property
    def duration_seconds(self) -> int:
        return self.end - self.start


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The time zone with this IANA name, such as ``"Europe/Berlin"``."""
    if name in _HOST_DEPENDENT_ZONE_NAMES:
        raise UnknownTimeZone(f"time zone {name!r} depends on the host; use an IANA name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        message = f"unknown time zone {name!r}: expected an IANA name such as 'Europe/Berlin'"
        raise UnknownTimeZone(message) from error


def period_containing(spec: PeriodSpec, time_zone: str, instant: Instant) -> Period:
    """The period with ``start <= instant < end``."""
    tz = zone(time_zone)
    if spec.unit in _SECONDS_PER_UNIT:
        index = (instant - _fixed_origin(spec, tz)) // _fixed_length_seconds(spec)
        return _period(spec, tz, index)
    estimate = _estimate_calendar_index(spec, _local_of(instant, tz))
    return _correct_calendar_index(spec, tz, instant, estimate)


def period_at_index(spec: PeriodSpec, time_zone: str, index: int) -> Period:
    return _period(spec, zone(time_zone), index)


def next_period(spec: PeriodSpec, time_zone: str, period: Period) -> Period:
    following = period_at_index(spec, time_zone, period.index + 1)
    if following.start != period.end:
        raise ValueError(f"period {period} does not belong to {spec} in {time_zone}")
    return following


def periods_overlapping(
    spec: PeriodSpec, time_zone: str, start: Instant, end: Instant
) -> Iterator[Period]:
    """Every non-empty period that intersects ``[start, end)``, in order.

    The spec and zone are checked at the call, not at the first ``next``. The iterator is
    lazy; the caller bounds ``[start, end)``.
    """
    if start >= end:
        return iter(())
    first = period_containing(spec, time_zone, start)
    return _periods_from(spec, time_zone, first, end)


def _periods_from(
    spec: PeriodSpec, time_zone: str, period: Period, end: Instant
) -> Iterator[Period]:
    while period.start < end:
        if period.duration_seconds > 0:
            yield period
        period = next_period(spec, time_zone, period)


def _period(spec: PeriodSpec, tz: ZoneInfo, index: int) -> Period:
    return Period(start=_start(spec, tz, index), end=_start(spec, tz, index + 1), index=index)


def _start(spec: PeriodSpec, tz: ZoneInfo, index: int) -> Instant:
    if spec.unit in _SECONDS_PER_UNIT:
        return _fixed_origin(spec, tz) + index * _fixed_length_seconds(spec)
    return _local_to_instant(_calendar_start_local(spec, index), tz)


def _fixed_length_seconds(spec: PeriodSpec) -> int:
    return spec.count * _SECONDS_PER_UNIT[spec.unit]


# Sub-day periods sit on the hot path of per-second billing, so their origin is computed once.
@functools.lru_cache(maxsize=1024)
def _fixed_origin(spec: PeriodSpec, tz: ZoneInfo) -> Instant:
    return _local_to_instant(_origin_local(spec), tz)


def _origin_local(spec: PeriodSpec) -> datetime:
    if spec.anchor is not None:
        return _parse_anchor(spec.anchor)
    if spec.unit in _MONTHS_PER_UNIT:
        return _MONTH_ORIGIN_LOCAL
    return _WEEK_ORIGIN_LOCAL


def _calendar_start_local(spec: PeriodSpec, index: int) -> datetime:
    origin = _origin_local(spec)
    try:
        if spec.unit in _DAYS_PER_UNIT:
            return origin + timedelta(days=index * _step_days(spec))
        return _add_months(origin, index * _step_months(spec))
    except (OverflowError, ValueError) as error:
        message = f"period {index} of {spec} lies outside the years 1 to 9999"
        raise ValueError(message) from error


def _estimate_calendar_index(spec: PeriodSpec, local: datetime) -> int:
    """The index of the period whose local start is the last at or before ``local``.

    It can be one off, because clock changes move the starts relative to wall time.
    """
    origin = _origin_local(spec)
    if spec.unit in _DAYS_PER_UNIT:
        return (local - origin) // timedelta(days=_step_days(spec))
    return (_month_number(local) - _month_number(origin)) // _step_months(spec)


def _correct_calendar_index(spec: PeriodSpec, tz: ZoneInfo, instant: Instant, index: int) -> Period:
    # Starts never decrease with the index, so stepping towards the instant converges.
    for _ in range(_CORRECTION_STEPS_MAX):
        period = _period(spec, tz, index)
        if instant < period.start:
            index -= 1
        elif instant >= period.end:
            index += 1
        else:
            return period
    raise AssertionError(f"no period of {spec} in {tz.key} found near {instant}")


def _step_days(spec: PeriodSpec) -> int:
    return spec.count * _DAYS_PER_UNIT[spec.unit]


def _step_months(spec: PeriodSpec) -> int:
    return spec.count * _MONTHS_PER_UNIT[spec.unit]


def _month_number(moment: datetime) -> int:
    return moment.year * 12 + moment.month - 1


def _add_months(moment: datetime, months: int) -> datetime:
    """``moment`` moved by whole months, with the day clamped to the target month's length."""
    year, month_zero_based = divmod(_month_number(moment) + months, 12)
    month = month_zero_based + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _local_to_instant(local: datetime, tz: ZoneInfo) -> Instant:
    # A naive datetime has fold=0, so gaps and folds resolve as the module docstring says.
    return from_datetime(local.replace(tzinfo=tz))


def _local_of(instant: Instant, tz: ZoneInfo) -> datetime:
    try:
        return to_datetime(instant).astimezone(tz).replace(tzinfo=None)
    except (OverflowError, ValueError, OSError) as error:
        raise ValueError(f"instant {instant} lies outside the years 1 to 9999") from error


@functools.lru_cache(maxsize=1024)
def _parse_anchor(text: str) -> datetime:
    """The anchor as a naive local datetime, or a ValueError that names the field."""
    example = "e.g. '2024-01-31T00:00:00'"
    try:
        local = datetime.fromisoformat(text)
    except ValueError as error:
        raise ValueError(f"anchor: {text!r} is not an ISO 8601 date-time, {example}") from error
    if local.tzinfo is not None:
        raise ValueError(f"anchor: {text!r} must be local time without an offset, {example}")
    if local.microsecond != 0:
        raise ValueError(f"anchor: {text!r} must be whole seconds, {example}")
    return local
