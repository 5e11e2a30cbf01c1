"""Time of use: prices by weekday and local time, with usage split at window boundaries to the
second. The tariff below is in the tenant's local time:

- ``peak``: Monday to Friday, 08:00 to 20:00, 0.003 EUR per second;
- ``night``: every day, 22:00 to 06:00 the next morning, 0.0005 EUR per second;
- ``standard``: any other time, 0.001 EUR per second.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from engine.instants import HOUR, parse
from engine.pricing import PerUnit, Price, Schedule, TimeOfUse, TimeWindow, Weekday

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = (Weekday.mon, Weekday.tue, Weekday.wed, Weekday.thu, Weekday.fri)

PEAK = PerUnit(unit_price=Decimal("0.003"))
NIGHT = PerUnit(unit_price=Decimal("0.0005"))
STANDARD = PerUnit(unit_price=Decimal("0.001"))

TARIFF = TimeOfUse(
    windows=(
        TimeWindow(name="peak", start="08:00", end="20:00", days=WEEKDAYS, price=PEAK),
        TimeWindow(name="night", start="22:00", end="06:00", price=NIGHT),
    ),
    default=STANDARD,
)
SCHEDULE = TARIFF.schedule()


def amount_of(pieces: list[tuple[str, int]]) -> Decimal:
    prices = TARIFF.price_table()
    return sum(
        (prices[window].amount(Decimal(seconds), 1) for window, seconds in pieces), Decimal(0)
    )


@pytest.mark.parametrize(
    ("local_time", "window"),
    [
        ("2024-03-04T07:59:59+01:00", "standard"),  # Monday
        ("2024-03-04T08:00:00+01:00", "peak"),  # the window starts on its first second
        ("2024-03-04T19:59:59+01:00", "peak"),
        ("2024-03-04T20:00:00+01:00", "standard"),  # and ends before its end
        ("2024-03-04T21:59:59+01:00", "standard"),
        ("2024-03-04T22:00:00+01:00", "night"),
        ("2024-03-05T00:00:00+01:00", "night"),  # past midnight
        ("2024-03-05T05:59:59+01:00", "night"),
        ("2024-03-05T06:00:00+01:00", "standard"),
        ("2024-03-04T03:00:00+01:00", "night"),  # Monday morning: Sunday night's window
        ("2024-03-09T12:00:00+01:00", "standard"),  # Saturday: no peak
        ("2024-03-10T23:00:00+01:00", "night"),  # Sunday night, into the next week
    ],
)
def test_window_at_follows_weekday_and_local_time(local_time: str, window: str) -> None:
    assert SCHEDULE.window_at(parse(local_time), BERLIN) == window


@pytest.mark.parametrize(
    ("zone", "window"),
    [
        ("Europe/Berlin", "peak"),
        ("America/New_York", "peak"),
        ("Asia/Tokyo", "night"),
        ("UTC", "peak"),
    ],
)
def test_windows_are_in_the_tenants_time_zone(zone: str, window: str) -> None:
    monday_1300_utc = parse("2024-03-04T13:00:00Z")  # 08:00 in New York, 22:00 in Tokyo
    assert SCHEDULE.window_at(monday_1300_utc, ZoneInfo(zone)) == window


@pytest.mark.parametrize(
    ("start", "duration_seconds", "pieces"),
    [
        # A minute of usage crossing the start of peak at 08:00, split to the second.
        ("2024-03-04T07:59:30+01:00", 60, [("standard", 30), ("peak", 30)]),
        ("2024-03-04T19:59:59+01:00", 2, [("peak", 1), ("standard", 1)]),
        ("2024-03-04T08:00:00+01:00", HOUR, [("peak", HOUR)]),  # exactly on the boundary
        ("2024-03-04T07:00:00+01:00", HOUR, [("standard", HOUR)]),  # ends on the boundary
        ("2024-03-04T08:00:00+01:00", 0, [("peak", 0)]),
        # 21:00 to 07:00: the night window wraps midnight.
        (
            "2024-03-04T21:00:00+01:00",
            10 * HOUR,
            [("standard", HOUR), ("night", 8 * HOUR), ("standard", HOUR)],
        ),
        # Sunday 21:00 to Monday 07:00: the night window wraps into the next week.
        (
            "2024-03-10T21:00:00+01:00",
            10 * HOUR,
            [("standard", HOUR), ("night", 8 * HOUR), ("standard", HOUR)],
        ),
        # Friday evening into Saturday: no peak on Saturday morning.
        (
            "2024-03-08T19:00:00+01:00",
            13 * HOUR,
            [("peak", HOUR), ("standard", 2 * HOUR), ("night", 8 * HOUR), ("standard", 2 * HOUR)],
        ),
    ],
)
def test_split_cuts_usage_at_window_boundaries(
    start: str, duration_seconds: int, pieces: list[tuple[str, int]]
) -> None:
    assert SCHEDULE.split(parse(start), duration_seconds, BERLIN) == pieces


@pytest.mark.parametrize(
    ("start", "duration_seconds", "amount"),
    [
        ("2024-03-04T07:59:30+01:00", 60, "0.120"),  # 30 s x 0.001 + 30 s x 0.003
        ("2024-03-04T12:00:00+01:00", HOUR, "10.800"),  # an hour of peak
        ("2024-03-04T21:00:00+01:00", 10 * HOUR, "21.6000"),  # 3.6 + 14.4 + 3.6
        ("2024-03-09T12:00:00+01:00", HOUR, "3.600"),  # Saturday noon
    ],
)
def test_each_piece_is_priced_by_its_window(start: str, duration_seconds: int, amount: str) -> None:
    assert amount_of(SCHEDULE.split(parse(start), duration_seconds, BERLIN)) == Decimal(amount)


def test_a_whole_week_gives_each_window_its_hours() -> None:
    week = SCHEDULE.split(parse("2024-03-04T00:00:00+01:00"), 168 * HOUR, BERLIN)
    hours: dict[str, int] = {}
    for window, seconds in week:
        hours[window] = hours.get(window, 0) + seconds // HOUR
    assert hours == {"night": 7 * 8, "peak": 5 * 12, "standard": 168 - 56 - 60}


# Europe/Berlin moves its clocks from 02:00 to 03:00 on 2024-03-31 and from 03:00 back to 02:00
# on 2024-10-27. Each weekend runs from Saturday 00:00 to Monday 00:00, local time.
@pytest.mark.parametrize(
    ("saturday", "monday", "elapsed_seconds", "pieces"),
    [
        (
            "2024-03-30T00:00:00+01:00",
            "2024-04-01T00:00:00+02:00",
            47 * HOUR,
            [
                ("night", 6 * HOUR),
                ("standard", 16 * HOUR),
                ("night", 7 * HOUR),  # 22:00 to 06:00 is seven hours that night
                ("standard", 16 * HOUR),
                ("night", 2 * HOUR),
            ],
        ),
        (
            "2024-10-26T00:00:00+02:00",
            "2024-10-28T00:00:00+01:00",
            49 * HOUR,
            [
                ("night", 6 * HOUR),
                ("standard", 16 * HOUR),
                ("night", 9 * HOUR),  # and nine hours here
                ("standard", 16 * HOUR),
                ("night", 2 * HOUR),
            ],
        ),
    ],
)
def test_a_daylight_saving_weekend_splits_into_the_real_elapsed_seconds(
    saturday: str, monday: str, elapsed_seconds: int, pieces: list[tuple[str, int]]
) -> None:
    start = parse(saturday)
    assert parse(monday) - start == elapsed_seconds
    split = SCHEDULE.split(start, elapsed_seconds, BERLIN)
    assert split == pieces
    assert sum(seconds for _, seconds in split) == elapsed_seconds


def assert_split_agrees_with_window_at(
    schedule: Schedule, start: int, duration_seconds: int, step_seconds: int
) -> None:
    """Every sampled second of every piece, and each piece's first and last second, belongs to
    the window the piece names."""
    moment = start
    for window, seconds in schedule.split(start, duration_seconds, BERLIN):
        samples = [*range(moment, moment + seconds, step_seconds), moment + seconds - 1]
        for second in samples:
            assert schedule.window_at(second, BERLIN) == window, (second, window)
        moment += seconds
    assert moment == start + duration_seconds


# A window from 02:30 to 05:00 starts inside the hour that Europe/Berlin skips in spring and
# repeats in autumn.
EARLY_MORNING = TimeOfUse(
    windows=(TimeWindow(name="early", start="02:30", end="05:00", price=NIGHT),),
    default=STANDARD,
).schedule()


@pytest.mark.parametrize(
    ("schedule", "start", "duration_seconds"),
    [
        (SCHEDULE, "2024-03-30T00:00:00+01:00", 47 * HOUR),
        (SCHEDULE, "2024-10-26T00:00:00+02:00", 49 * HOUR),
        (EARLY_MORNING, "2024-03-04T00:00:00+01:00", 24 * HOUR),
        (EARLY_MORNING, "2024-03-31T01:45:00+01:00", 3 * HOUR),
        (EARLY_MORNING, "2024-10-27T02:10:00+02:00", 3 * HOUR),
    ],
)
def test_split_agrees_with_window_at(schedule: Schedule, start: str, duration_seconds: int) -> None:
    assert_split_agrees_with_window_at(schedule, parse(start), duration_seconds, 60)


def test_a_window_starting_in_the_skipped_hour_starts_when_the_clock_jumps() -> None:
    # From 01:45 CET for three hours: 02:00 CET becomes 03:00 CEST, after 02:30 wall time.
    split = EARLY_MORNING.split(parse("2024-03-31T01:45:00+01:00"), 3 * HOUR, BERLIN)
    assert split == [("standard", 15 * 60), ("early", 2 * HOUR), ("standard", 45 * 60)]


def test_a_window_is_left_and_entered_again_when_the_clock_falls_back() -> None:
    # From 02:10 CEST for three hours. At 03:00 CEST the clock goes back to 02:00 CET, so the
    # wall time passes 02:30 twice: the window starts at the first and again at the second.
    split = EARLY_MORNING.split(parse("2024-10-27T02:10:00+02:00"), 3 * HOUR, BERLIN)
    assert split == [
        ("standard", 20 * 60),
        ("early", 30 * 60),
        ("standard", 30 * 60),
        ("early", 100 * 60),
    ]


def _tariff(windows: list[dict[str, Any]], **fields: Any) -> bytes:
    standard = {"model": "per_unit", "unit_price": "0.001"}
    document = {"model": "time_of_use", "windows": windows, "default": standard, **fields}
    return json.dumps(document).encode()


def _window(name: str, start: str, end: str, **fields: Any) -> dict[str, Any]:
    price = {"model": "per_unit", "unit_price": "0.003"}
    return {"name": name, "start": start, "end": end, "price": price, **fields}


def test_decodes_from_json_by_its_model_tag() -> None:
    document = _tariff(
        [
            _window("peak", "08:00", "20:00", days=["mon", "tue", "wed", "thu", "fri"]),
            {
                **_window("night", "22:00", "06:00"),
                "price": {"model": "per_unit", "unit_price": "0.0005"},
            },
        ]
    )
    price = msgspec.json.decode(document, type=Price)
    assert price == TARIFF
    assert msgspec.json.decode(msgspec.json.encode(price), type=Price) == price
    assert set(TARIFF.price_table()) == {"peak", "night", "standard"}


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        (
            [_window("peak", "08:00", "20:00"), _window("evening", "19:00", "23:00")],
            "windows[1]: overlaps window 'peak'",
        ),
        (
            # Sunday's night runs until Monday 06:00, so it overlaps a Monday window at 05:00.
            [
                _window("night", "22:00", "06:00", days=["sun"]),
                _window("early", "05:00", "07:00", days=["mon"]),
            ],
            "windows[1]: overlaps window 'night'",
        ),
        ([_window("peak", "08:00", "08:00")], "end: a window must not be empty"),
        ([_window("peak", "8am", "20:00")], "start: expected HH:MM"),
        ([_window("peak", "08:00", "25:00")], "end: '25:00' is not a time of day"),
        ([_window("peak", "08:00", "20:00", days=[])], "days: at least one weekday"),
        ([_window("peak", "08:00", "20:00", days=["monday"])], "$.windows[0].days[0]"),
        (
            [_window("peak", "08:00", "12:00"), _window("peak", "14:00", "18:00")],
            "windows: window names must be unique",
        ),
        ([_window("standard", "08:00", "12:00")], "differ from default_name"),
        (
            [_window("peak", "08:00", "20:00", price={"model": "per_unit", "unit_price": "-1"})],
            "unit_price: must not be negative - at `$.windows[0].price`",
        ),
        ([_window("peak", "08:00", "20:00", tz="UTC")], "unknown field `tz`"),
    ],
)
def test_invalid_documents_are_rejected_naming_the_field(
    windows: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.json.decode(_tariff(windows), type=Price)
    assert message in str(raised.value)


def test_the_windows_must_not_nest_a_routing_price() -> None:
    window = _window("peak", "08:00", "20:00")
    window["price"] = json.loads(_tariff([]))
    with pytest.raises(msgspec.ValidationError, match=r"\$\.windows\[0\]\.price\.model"):
        msgspec.json.decode(_tariff([window]), type=Price)
