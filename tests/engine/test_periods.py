"""Billing periods: hand-checked boundaries in real time zones, and the invariants of the layout."""

from __future__ import annotations

import zoneinfo
from datetime import date, datetime
from itertools import pairwise

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.instants import parse
from engine.periods import (
    Period,
    PeriodSpec,
    PeriodUnit,
    UnknownTimeZone,
    next_period,
    period_at_index,
    period_containing,
    periods_overlapping,
    zone,
)

DAILY = PeriodSpec(unit=PeriodUnit.day)
WEEKLY = PeriodSpec(unit=PeriodUnit.week)
MONTHLY = PeriodSpec(unit=PeriodUnit.month)
QUARTERLY = PeriodSpec(unit=PeriodUnit.quarter)
HOURLY = PeriodSpec(unit=PeriodUnit.hour)

HOUR_SECONDS = 3_600
DAY_SECONDS = 86_400

# Zones whose local days since 1970 last 23, 24 or 25 hours and nothing else.
COMMON_ZONES = [
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "Europe/Paris",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Africa/Johannesburg",
]
ALL_ZONES = sorted(zoneinfo.available_timezones() - {"localtime"})


def days_since_origin(day: date) -> int:
    return (day - date(2000, 1, 3)).days


def span(start: str, end: str, index: int) -> Period:
    return Period(start=parse(start), end=parse(end), index=index)


# Calendar periods, checked by hand against published offsets.


@pytest.mark.parametrize(
    ("time_zone", "start", "end", "duration_seconds"),
    [
        ("Europe/Berlin", "2024-03-31T00:00+01:00", "2024-04-01T00:00+02:00", 82_800),
        ("Europe/Berlin", "2024-10-27T00:00+02:00", "2024-10-28T00:00+01:00", 90_000),
        ("Europe/Berlin", "2024-06-12T00:00+02:00", "2024-06-13T00:00+02:00", 86_400),
        ("America/New_York", "2024-03-10T00:00-05:00", "2024-03-11T00:00-04:00", 82_800),
        ("America/New_York", "2024-11-03T00:00-04:00", "2024-11-04T00:00-05:00", 90_000),
        ("Australia/Lord_Howe", "2024-10-06T00:00+10:30", "2024-10-07T00:00+11:00", 84_600),
        ("Australia/Lord_Howe", "2024-04-07T00:00+11:00", "2024-04-08T00:00+10:30", 88_200),
        # Clocks in São Paulo sprang from 00:00 to 01:00, so the day starts at the transition.
        ("America/Sao_Paulo", "2018-11-04T01:00-02:00", "2018-11-05T00:00-02:00", 82_800),
    ],
)
def test_local_days_start_at_local_midnight(
    time_zone: str, start: str, end: str, duration_seconds: int
) -> None:
    index = days_since_origin(date.fromisoformat(start[:10]))
    expected = span(start, end, index)
    assert period_containing(DAILY, time_zone, parse(start)) == expected
    assert period_containing(DAILY, time_zone, parse(end) - 1) == expected
    assert period_at_index(DAILY, time_zone, index) == expected
    assert expected.duration_seconds == duration_seconds


def test_days_before_the_origin_have_negative_indexes() -> None:
    period = period_containing(DAILY, "UTC", parse("1999-12-31T12:00:00Z"))
    assert period == span("1999-12-31T00:00:00Z", "2000-01-01T00:00:00Z", -3)


def test_months_start_at_local_midnight_on_the_first() -> None:
    february = period_containing(MONTHLY, "Europe/Berlin", parse("2024-02-15T12:00:00Z"))
    assert february == span("2024-02-01T00:00:00+01:00", "2024-03-01T00:00:00+01:00", 24 * 12 + 1)
    march = next_period(MONTHLY, "Europe/Berlin", february)
    assert march == span("2024-03-01T00:00:00+01:00", "2024-04-01T00:00:00+02:00", 24 * 12 + 2)
    assert march.duration_seconds == 31 * DAY_SECONDS - HOUR_SECONDS


def test_the_first_local_second_of_a_month_belongs_to_it() -> None:
    # 2024-02-01T00:00 in Berlin is still 2024-01-31 in UTC.
    period = period_containing(MONTHLY, "Europe/Berlin", parse("2024-01-31T23:00:00Z"))
    assert period.start == parse("2024-02-01T00:00:00+01:00")
    previous = period_containing(MONTHLY, "Europe/Berlin", parse("2024-01-31T22:59:59Z"))
    assert previous.end == period.start


def test_anchored_months_clamp_to_month_length_without_drift() -> None:
    spec = PeriodSpec(unit=PeriodUnit.month, anchor="2024-01-31T00:00:00")
    starts = [period_at_index(spec, "Europe/Berlin", k).start for k in range(-1, 5)]
    assert starts == [
        parse("2023-12-31T00:00:00+01:00"),
        parse("2024-01-31T00:00:00+01:00"),
        parse("2024-02-29T00:00:00+01:00"),
        parse("2024-03-31T00:00:00+01:00"),
        parse("2024-04-30T00:00:00+02:00"),
        parse("2024-05-31T00:00:00+02:00"),
    ]
    march_15 = period_containing(spec, "Europe/Berlin", parse("2024-03-15T00:00:00Z"))
    assert march_15.index == 1


def test_anchored_years_on_february_29_fall_back_to_february_28() -> None:
    spec = PeriodSpec(unit=PeriodUnit.year, anchor="2024-02-29T00:00:00")
    assert period_at_index(spec, "UTC", 0) == span(
        "2024-02-29T00:00:00Z", "2025-02-28T00:00:00Z", 0
    )
    assert period_at_index(spec, "UTC", 1).end == parse("2026-02-28T00:00:00Z")
    assert period_at_index(spec, "UTC", 4).start == parse("2028-02-29T00:00:00Z")
    assert period_at_index(spec, "UTC", -1).start == parse("2023-02-28T00:00:00Z")


def test_anchored_quarters_clamp_like_months() -> None:
    spec = PeriodSpec(unit=PeriodUnit.quarter, anchor="2023-11-30T09:00:00")
    assert period_at_index(spec, "UTC", 1).start == parse("2024-02-29T09:00:00Z")
    assert period_at_index(spec, "UTC", 2).start == parse("2024-05-30T09:00:00Z")


@pytest.mark.parametrize(
    ("instant", "start", "end", "index"),
    [
        ("2024-05-10T12:00:00Z", "2024-04-01T00:00:00+02:00", "2024-07-01T00:00:00+02:00", 97),
        ("2024-12-31T22:59:59Z", "2024-10-01T00:00:00+02:00", "2025-01-01T00:00:00+01:00", 99),
        ("2024-12-31T23:00:00Z", "2025-01-01T00:00:00+01:00", "2025-04-01T00:00:00+02:00", 100),
    ],
)
def test_quarters_start_in_january_april_july_october(
    instant: str, start: str, end: str, index: int
) -> None:
    assert period_containing(QUARTERLY, "Europe/Berlin", parse(instant)) == span(start, end, index)


def test_weeks_start_on_monday() -> None:
    wednesday = parse("2024-01-03T12:00:00Z")
    index = days_since_origin(date(2024, 1, 1)) // 7
    assert period_containing(WEEKLY, "Europe/Berlin", wednesday) == span(
        "2024-01-01T00:00:00+01:00", "2024-01-08T00:00:00+01:00", index
    )


def test_a_week_with_a_clock_change_is_an_hour_short() -> None:
    sunday_night = parse("2024-03-31T23:59:59+02:00")
    week = period_containing(WEEKLY, "Europe/Berlin", sunday_night)
    assert week.start == parse("2024-03-25T00:00:00+01:00")
    assert week.end == parse("2024-04-01T00:00:00+02:00")
    assert week.duration_seconds == 7 * DAY_SECONDS - HOUR_SECONDS


@pytest.mark.parametrize(
    ("instant", "start", "end", "index"),
    [
        ("2024-04-15T00:00:00Z", "2024-03-01T00:00:00Z", "2024-05-01T00:00:00Z", 145),
        ("2024-02-29T23:59:59Z", "2024-01-01T00:00:00Z", "2024-03-01T00:00:00Z", 144),
        ("1999-12-15T00:00:00Z", "1999-11-01T00:00:00Z", "2000-01-01T00:00:00Z", -1),
    ],
)
def test_two_monthly_periods_are_aligned_to_january_2000(
    instant: str, start: str, end: str, index: int
) -> None:
    spec = PeriodSpec(unit=PeriodUnit.month, count=2)
    assert period_containing(spec, "UTC", parse(instant)) == span(start, end, index)


def test_fourteen_day_periods_are_aligned_to_monday_2000_01_03() -> None:
    spec = PeriodSpec(unit=PeriodUnit.day, count=14)
    period = period_containing(spec, "UTC", parse("2000-01-20T00:00:00Z"))
    assert period == span("2000-01-17T00:00:00Z", "2000-01-31T00:00:00Z", 1)


def test_anchor_in_the_spring_gap_starts_after_the_gap() -> None:
    spec = PeriodSpec(unit=PeriodUnit.day, anchor="2024-03-30T02:30:00")
    assert period_at_index(spec, "Europe/Berlin", 1) == span(
        "2024-03-31T03:30:00+02:00", "2024-04-01T02:30:00+02:00", 1
    )


def test_anchor_in_the_autumn_fold_means_its_first_occurrence() -> None:
    spec = PeriodSpec(unit=PeriodUnit.day, anchor="2024-10-26T02:30:00")
    day = period_at_index(spec, "Europe/Berlin", 1)
    assert day == span("2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00", 1)
    assert day.duration_seconds == 25 * HOUR_SECONDS


def test_a_skipped_local_day_is_an_empty_period_that_is_never_returned() -> None:
    # Samoa moved across the date line: 2011-12-29 was followed by 2011-12-31.
    december_29 = period_containing(DAILY, "Pacific/Apia", parse("2011-12-29T12:00:00-10:00"))
    december_30 = period_at_index(DAILY, "Pacific/Apia", december_29.index + 1)
    assert december_30.duration_seconds == 0
    december_31 = next_period(DAILY, "Pacific/Apia", december_30)
    assert period_containing(DAILY, "Pacific/Apia", december_30.start) == december_31
    listed = periods_overlapping(DAILY, "Pacific/Apia", december_29.start, december_31.end)
    assert list(listed) == [december_29, december_31]


def test_far_away_instants_are_found_directly() -> None:
    period = period_containing(MONTHLY, "Europe/Berlin", parse("9000-06-15T00:00:00Z"))
    assert period.start == parse("9000-06-01T00:00:00+02:00")
    assert period.index == 7_000 * 12 + 5


# Sub-day periods are SI durations aligned to the origin instant.


def test_hours_in_kolkata_start_at_local_full_hours() -> None:
    period = period_containing(HOURLY, "Asia/Kolkata", parse("2024-06-01T10:45:00+05:30"))
    assert period.start == parse("2024-06-01T10:00:00+05:30")
    assert period.end == parse("2024-06-01T11:00:00+05:30")


def test_hours_stay_an_hour_long_across_a_clock_change() -> None:
    period = period_containing(HOURLY, "Europe/Berlin", parse("2024-03-31T01:30:00Z"))
    assert period.start == parse("2024-03-31T03:00:00+02:00")
    assert period.duration_seconds == HOUR_SECONDS


@pytest.mark.parametrize(
    ("time_zone", "instant", "start"),
    [
        ("UTC", "2024-01-01T00:20:00Z", "2024-01-01T00:15:00Z"),
        ("Asia/Kolkata", "2024-06-01T10:44:59+05:30", "2024-06-01T10:30:00+05:30"),
        ("Asia/Kathmandu", "2024-06-01T10:45:00+05:45", "2024-06-01T10:45:00+05:45"),
    ],
)
def test_quarter_hours_start_at_local_quarter_hours(
    time_zone: str, instant: str, start: str
) -> None:
    spec = PeriodSpec(unit=PeriodUnit.minute, count=15)
    period = period_containing(spec, time_zone, parse(instant))
    assert period.start == parse(start)
    assert period.duration_seconds == 15 * 60


def test_seconds_are_one_second_long_and_counted_from_the_origin() -> None:
    spec = PeriodSpec(unit=PeriodUnit.second)
    instant = parse("2024-06-01T10:45:07Z")
    origin = parse("2000-01-03T00:00:00+01:00")
    period = period_containing(spec, "Europe/Berlin", instant)
    assert period == Period(start=instant, end=instant + 1, index=instant - origin)


def test_anchored_hours_are_counted_from_the_anchor() -> None:
    spec = PeriodSpec(unit=PeriodUnit.hour, anchor="2024-01-01T00:15:00")
    period = period_containing(spec, "UTC", parse("2024-01-01T05:20:00Z"))
    assert period == span("2024-01-01T05:15:00Z", "2024-01-01T06:15:00Z", 5)


# Iteration, and rejected inputs.


def test_periods_overlapping_lists_every_period_that_intersects() -> None:
    listed = periods_overlapping(
        MONTHLY, "UTC", parse("2024-01-15T00:00:00Z"), parse("2024-04-01T00:00:00Z")
    )
    assert [period.start for period in listed] == [
        parse("2024-01-01T00:00:00Z"),
        parse("2024-02-01T00:00:00Z"),
        parse("2024-03-01T00:00:00Z"),
    ]


def test_periods_overlapping_an_empty_interval_is_empty() -> None:
    instant = parse("2024-01-15T00:00:00Z")
    assert list(periods_overlapping(MONTHLY, "UTC", instant, instant)) == []


def test_periods_overlapping_checks_the_zone_at_the_call() -> None:
    with pytest.raises(UnknownTimeZone):
        periods_overlapping(MONTHLY, "Mars/Olympus", 0, 1)


def test_next_period_rejects_a_period_of_another_spec() -> None:
    weekly = period_containing(WEEKLY, "UTC", parse("2024-01-03T00:00:00Z"))
    with pytest.raises(ValueError, match="does not belong"):
        next_period(DAILY, "UTC", weekly)


def test_periods_beyond_the_calendar_are_rejected() -> None:
    spec = PeriodSpec(unit=PeriodUnit.year, count=10_000)
    with pytest.raises(ValueError, match="outside the years"):
        period_at_index(spec, "UTC", 0)
    with pytest.raises(ValueError, match="outside the years"):
        period_containing(DAILY, "UTC", 10**15)


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "", "Europe", "europe/berlin", "../etc/passwd", "localtime"]
)
def test_unknown_time_zones_are_rejected(name: str) -> None:
    with pytest.raises(UnknownTimeZone, match="time zone"):
        zone(name)
    with pytest.raises(ValueError):
        period_containing(DAILY, name, 0)


def test_zones_are_cached() -> None:
    assert zone("Europe/Berlin") is zone("Europe/Berlin")


@pytest.mark.parametrize(
    "anchor",
    ["not a date", "2024-02-30T00:00:00", "2024-01-31T00:00:00+01:00", "2024-01-31T00:00:00.5"],
)
def test_an_invalid_anchor_is_a_validation_error_naming_the_field(anchor: str) -> None:
    document = msgspec.json.encode({"unit": "month", "anchor": anchor})
    with pytest.raises(msgspec.ValidationError, match="anchor"):
        msgspec.json.decode(document, type=PeriodSpec)


def test_a_valid_spec_decodes() -> None:
    document = b'{"unit": "month", "count": 2, "anchor": "2024-01-31T00:00:00"}'
    spec = msgspec.json.decode(document, type=PeriodSpec)
    assert spec == PeriodSpec(unit=PeriodUnit.month, count=2, anchor="2024-01-31T00:00:00")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b'{"unit": "month", "every": 2}', "unknown field"),
        (b'{"unit": "month", "count": 0}', "count"),
        (b'{"unit": "month", "count": 10001}', "count"),
        (b'{"unit": "fortnight"}', "unit"),
    ],
)
def test_invalid_specs_are_rejected_on_decode(document: bytes, message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.json.decode(document, type=PeriodSpec)


def test_count_is_checked_on_construction_too() -> None:
    with pytest.raises(ValueError, match="count"):
        PeriodSpec(unit=PeriodUnit.day, count=0)


# Properties.

# Counts stay small enough that every period near the drawn instants lies within years 1 to 9999.
COUNT_MAX_BY_UNIT = {
    PeriodUnit.second: 10_000,
    PeriodUnit.minute: 10_000,
    PeriodUnit.hour: 10_000,
    PeriodUnit.day: 400,
    PeriodUnit.week: 60,
    PeriodUnit.month: 36,
    PeriodUnit.quarter: 12,
    PeriodUnit.year: 10,
}
anchors = st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2050, 1, 1)).map(
    lambda moment: moment.replace(microsecond=0).isoformat()
)
instants = st.integers(
    min_value=parse("1900-01-01T00:00:00Z"), max_value=parse("2100-01-01T00:00:00Z")
)

ANY_UNIT = st.sampled_from(PeriodUnit)


@st.composite
def specs(draw: st.DrawFn, units: st.SearchStrategy[PeriodUnit] = ANY_UNIT) -> PeriodSpec:
    unit = draw(units)
    count = draw(st.integers(min_value=1, max_value=COUNT_MAX_BY_UNIT[unit]))
    return PeriodSpec(unit=unit, count=count, anchor=draw(st.none() | anchors))


@settings(max_examples=300, deadline=None)
@given(spec=specs(), time_zone=st.sampled_from(ALL_ZONES), instant=instants)
def test_the_containing_period_contains_the_instant(
    spec: PeriodSpec, time_zone: str, instant: int
) -> None:
    period = period_containing(spec, time_zone, instant)
    assert period.start <= instant < period.end
    assert period.duration_seconds > 0
    assert period_at_index(spec, time_zone, period.index) == period
    assert period_containing(spec, time_zone, period.start) == period
    assert period_containing(spec, time_zone, period.end - 1) == period


@settings(max_examples=200, deadline=None)
@given(spec=specs(), time_zone=st.sampled_from(ALL_ZONES), instant=instants)
def test_periods_are_contiguous_with_consecutive_indexes(
    spec: PeriodSpec, time_zone: str, instant: int
) -> None:
    period = period_containing(spec, time_zone, instant)
    following = next_period(spec, time_zone, period)
    assert following.start == period.end
    assert following.index == period.index + 1
    assert following.duration_seconds >= 0
    previous = period_at_index(spec, time_zone, period.index - 1)
    assert previous.end == period.start


@settings(max_examples=200, deadline=None)
@given(
    spec=specs(st.sampled_from([PeriodUnit.second, PeriodUnit.minute, PeriodUnit.hour])),
    time_zone=st.sampled_from(ALL_ZONES),
    instant=instants,
)
def test_sub_day_periods_last_exactly_count_units(
    spec: PeriodSpec, time_zone: str, instant: int
) -> None:
    unit_seconds = {PeriodUnit.second: 1, PeriodUnit.minute: 60, PeriodUnit.hour: 3_600}
    period = period_containing(spec, time_zone, instant)
    assert period.duration_seconds == spec.count * unit_seconds[spec.unit]


@settings(max_examples=200, deadline=None)
@given(
    anchor=st.none() | anchors,
    time_zone=st.sampled_from(COMMON_ZONES),
    instant=st.integers(
        min_value=parse("1971-01-01T00:00:00Z"), max_value=parse("2100-01-01T00:00:00Z")
    ),
)
def test_local_days_last_23_24_or_25_hours_in_common_zones(
    anchor: str | None, time_zone: str, instant: int
) -> None:
    spec = PeriodSpec(unit=PeriodUnit.day, anchor=anchor)
    period = period_containing(spec, time_zone, instant)
    assert period.duration_seconds in {82_800, 86_400, 90_000}


@settings(max_examples=100, deadline=None)
@given(
    spec=specs(),
    time_zone=st.sampled_from(COMMON_ZONES),
    instant=instants,
    extra_periods=st.integers(min_value=0, max_value=5),
)
def test_periods_overlapping_covers_the_interval_in_order(
    spec: PeriodSpec, time_zone: str, instant: int, extra_periods: int
) -> None:
    first = period_containing(spec, time_zone, instant)
    last_start = period_at_index(spec, time_zone, first.index + extra_periods).start
    end = max(instant, last_start) + 1
    listed = list(periods_overlapping(spec, time_zone, instant, end))
    assert [period.index for period in listed] == list(
        range(first.index, first.index + extra_periods + 1)
    )
    assert listed[0] == first
    assert all(a.end == b.start for a, b in pairwise(listed))
