"""Instants: whole seconds since the Unix epoch, UTC.

meterwerk bills to the second, so an instant is an ``int``. The engine never reads the clock;
every function that needs the time takes it as an argument. Conversions to and from aware
datetimes happen at the edges.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

Instant = int

SECOND: Final = 1
MINUTE: Final = 60
HOUR: Final = 3_600
DAY: Final = 86_400
WEEK: Final = 604_800

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def from_datetime(moment: datetime) -> Instant:
    """The instant of an aware datetime, truncated to the second."""
    if moment.tzinfo is None:
        raise ValueError("a datetime without a time zone is not an instant")
    return (moment - _EPOCH) // timedelta(seconds=1)


def to_datetime(instant: Instant) -> datetime:
    return datetime.fromtimestamp(instant, tz=UTC)


def parse(text: str) -> Instant:
    """Parse an RFC 3339 timestamp with an offset (``Z`` or ``+hh:mm``)."""
    return from_datetime(datetime.fromisoformat(text))


def format_utc(instant: Instant) -> str:
    return to_datetime(instant).strftime("%Y-%m-%dT%H:%M:%SZ")
