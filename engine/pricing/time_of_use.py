"""Time-of-use: prices by weekday and local time (peak, off-peak). Usage that spans a window
boundary is split to the second.

Windows are given in the tenant's local time. A window whose ``end`` is not after its
``start`` runs past midnight into the next day; its ``days`` are the days it starts on. Time
not covered by any window belongs to the ``default`` window. Windows may not overlap.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo

import msgspec

from engine.pricing.simple import SimplePrice

MINUTES_PER_DAY: Final = 1_440
MINUTES_PER_WEEK: Final = 7 * MINUTES_PER_DAY


class Weekday(StrEnum):
    mon = "mon"
    tue = "tue"
    wed = "wed"
    thu = "thu"
    fri = "fri"
    sat = "sat"
    sun = "sun"


_ALL_DAYS: Final = tuple(Weekday)


def _minute_of_day(field: str, text: str) -> int:
    try:
        hours_text, minutes_text = text.split(":")
        hours, minutes = int(hours_text), int(minutes_text)
    except ValueError:
        raise ValueError(f"{field}: expected HH:MM, got {text!r}") from None
    if not (0 <= minutes < 60 and (0 <= hours < 24 or (hours == 24 and minutes == 0))):
        raise ValueError(f"{field}: {text!r} is not a time of day")
    return hours * 60 + minutes


class TimeWindow(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    start: str
    end: str
    price: SimplePrice
    days: tuple[Weekday, ...] = _ALL_DAYS

    def __post_init__(self) -> None:
        start, end = _minute_of_day("start", self.start), _minute_of_day("end", self.end)
        if start == MINUTES_PER_DAY:
            raise ValueError("start: 24:00 ends a day; a window starts at 00:00")
        if start == end:
            raise ValueError("end: a window must not be empty")
        if not self.days:
            raise ValueError("days: at least one weekday")

    def minutes(self) -> list[int]:
        """The minutes of the week this window covers (Monday 00:00 is minute 0)."""
        start, end = _minute_of_day("start", self.start), _minute_of_day("end", self.end)
        length = end - start if end > start else end + MINUTES_PER_DAY - start
        covered: list[int] = []
        for day in self.days:
            first = _ALL_DAYS.index(day) * MINUTES_PER_DAY + start
            covered.extend((first + offset) % MINUTES_PER_WEEK for offset in range(length))
        return covered


class TimeOfUse(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="model",
    tag="time_of_use",
):
    windows: tuple[TimeWindow, ...]
    default: SimplePrice
    default_name: str = "standard"

    def __post_init__(self) -> None:
        names = [window.name for window in self.windows]
        if len(set(names)) != len(names) or self.default_name in names:
            raise ValueError("windows: window names must be unique and differ from default_name")
        self.schedule()  # validates that no two windows overlap

    def price_table(self) -> dict[str, SimplePrice]:
        table = {window.name: window.price for window in self.windows}
        table[self.default_name] = self.default
        return table

    def schedule(self) -> Schedule:
        owner: list[str] = [self.default_name] * MINUTES_PER_WEEK
        for position, window in enumerate(self.windows):
            for minute in window.minutes():
                if owner[minute] != self.default_name:
                    raise ValueError(f"windows[{position}]: overlaps window {owner[minute]!r}")
                owner[minute] = window.name
        return Schedule.from_minutes(owner)


class Schedule:
    """The week as change points: ``names[i]`` holds from minute ``starts[i]`` on."""

    __slots__ = ("names", "starts")

    def __init__(self, starts: list[int], names: list[str]) -> None:
        assert starts and starts[0] == 0 and len(starts) == len(names)
        self.starts = starts
        self.names = names

    @classmethod
    def from_minutes(cls, owner: list[str]) -> Schedule:
        starts, names = [0], [owner[0]]
        for minute in range(1, MINUTES_PER_WEEK):
            if owner[minute] != names[-1]:
                starts.append(minute)
                names.append(owner[minute])
        return cls(starts, names)

    def window_at(self, instant: int, zone: ZoneInfo) -> str:
        local = datetime.fromtimestamp(instant, zone)
        return self.names[bisect_right(self.starts, _minute_of_week(local)) - 1]

    def split(self, start: int, duration_seconds: int, zone: ZoneInfo) -> list[tuple[str, int]]:
        """``[start, start + duration)`` cut at window boundaries: (window, seconds) in order."""
        if duration_seconds <= 0:
            return [(self.window_at(start, zone), 0)]
        pieces: list[tuple[str, int]] = []
        moment, end = start, start + duration_seconds
        while moment < end:
            name, boundary = self._window_and_next_change(moment, zone)
            piece_end = min(boundary, end)
            if pieces and pieces[-1][0] == name:
                pieces[-1] = (name, pieces[-1][1] + piece_end - moment)
            else:
                pieces.append((name, piece_end - moment))
            moment = piece_end
        return pieces

    def _window_and_next_change(self, instant: int, zone: ZoneInfo) -> tuple[str, int]:
        local = datetime.fromtimestamp(instant, zone)
        minute = _minute_of_week(local)
        index = bisect_right(self.starts, minute) - 1
        following = index + 1
        change = (
            self.starts[following]
            if following < len(self.starts)
            else MINUTES_PER_WEEK + self.starts[0]
        )
        week_start = local.replace(tzinfo=None, second=0, microsecond=0) - timedelta(minutes=minute)
        boundary_local = week_start + timedelta(minutes=change)
        boundary = _first_instant_at(boundary_local, zone)
        if boundary <= instant:
            boundary = _to_instant(boundary_local, zone, fold=1)
        if boundary <= instant:
            # A boundary swallowed by a daylight-saving jump: move on a minute at a time.
            boundary = instant - instant % 60 + 60
        # Where the clock changes before that boundary, stop there: the wall time then jumps
        # and the window must be looked up afresh (the repeated hour when it falls back).
        offset = local.utcoffset()
        if datetime.fromtimestamp(boundary - 1, zone).utcoffset() != offset:
            boundary = _offset_change(instant, boundary - 1, offset, zone)
        return self.names[index], boundary


def _first_instant_at(local: datetime, zone: ZoneInfo) -> int:
    """The first instant whose local wall time is ``local`` or later.

    Normally that is ``local`` itself (the first of two, where the clock falls back). A wall
    time the clock skips (02:30 when it jumps from 02:00 to 03:00) is reached at the jump.
    """
    candidate = _to_instant(local, zone, fold=0)
    if _wall_time(candidate, zone) == local:
        return candidate
    low, high = _to_instant(local, zone, fold=1), candidate
    while high - low > 1:
        middle = (low + high) // 2
        if _wall_time(middle, zone) >= local:
            high = middle
        else:
            low = middle
    return high


def _offset_change(low: int, high: int, offset: timedelta | None, zone: ZoneInfo) -> int:
    """The first instant in ``(low, high]`` whose UTC offset is no longer ``offset``."""
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return high


def _wall_time(instant: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(instant, zone).replace(tzinfo=None)


def _minute_of_week(local: datetime) -> int:
    return local.weekday() * MINUTES_PER_DAY + local.hour * 60 + local.minute


def _to_instant(local: datetime, zone: ZoneInfo, *, fold: int) -> int:
    aware = local.replace(tzinfo=zone, fold=fold)
    epoch = datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))
    return (aware - epoch) // timedelta(seconds=1)
