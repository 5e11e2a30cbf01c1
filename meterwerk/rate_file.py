"""``meterwerk rate``: rate a file of events against one tariff of a catalogue and print the
statements.

The events are rated in time order (a stable sort, so events at the same second keep the
file's order). The first event chooses the first period: the period that contains it, rated
with the tariff version in effect at that period's start. An event after the open period's end
closes it and opens the following ones, empty periods included, each with the version in effect
at its start. A file is a batch, not a live stream, so no event arrives late here.

An event id that appears twice with the same content is a retry and is rated once; the same id
with different content is rejected. Rejected events are listed on stderr and make the exit
status 1; a document that does not decode prints ``error: <message>`` and exits with 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Final, TextIO, TypeVar

import msgspec

from engine.instants import Instant, parse
from engine.meters import EVENT_ID_LENGTH_MAX, Event, Key, Meter, PropertyName, PropertyValue
from engine.numbers import (
    QUANTITY_DECIMALS_MAX,
    ZERO,
    decimals_of,
    engine_context_installed,
    use_engine_context,
)
from engine.periods import UnknownTimeZone, zone
from engine.rating import PeriodRater, PeriodState
from engine.rejections import Rejection
from engine.statements import Statement
from engine.tariffs import Tariff, decode_catalog

EVENTS_MAX: Final = 1_000_000
PERIODS_MAX: Final = 1_000
"""How many periods one file may span, empty ones included; more is almost surely a typo."""
INSTANT_MAX: Final = 253_402_300_799
"""9999-12-31T23:59:59Z, the last second a period can be laid out around."""
DURATION_SECONDS_MAX: Final = 366 * 86_400

EXIT_RATED: Final = 0
EXIT_REJECTED: Final = 1
EXIT_INVALID: Final = 2

T = TypeVar("T")

EpochSeconds = Annotated[int, msgspec.Meta(ge=0, le=INSTANT_MAX)]


class InvalidInput(ValueError):
    """The files are well-formed but cannot be rated as asked (unknown tariff, too many
    periods); reported like a validation error."""


class EventDocument(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An event as the file holds it: ``time`` is RFC 3339 text with an offset, or whole
    seconds since the Unix epoch."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=EVENT_ID_LENGTH_MAX)]
    meter: Key
    time: str | EpochSeconds
    quantity: Decimal = Decimal(1)
    duration_seconds: Annotated[int, msgspec.Meta(ge=0, le=DURATION_SECONDS_MAX)] = 0
    properties: dict[PropertyName, PropertyValue] = {}

    def __post_init__(self) -> None:
        instant_of(self.time)
        # The engine's arithmetic is exact only within its digit budget; a quantity finer
        # than that would be rounded silently, so the document refuses it.
        if self.quantity.is_finite() and decimals_of(self.quantity) > QUANTITY_DECIMALS_MAX:
            raise ValueError(f"quantity: at most {QUANTITY_DECIMALS_MAX} decimal places")

    def to_event(self) -> Event:
        return Event(
            id=self.id,
            meter=self.meter,
            time=instant_of(self.time),
            quantity=self.quantity,
            duration_seconds=self.duration_seconds,
            properties=self.properties,
        )


EventsDocument = Annotated[list[EventDocument], msgspec.Meta(max_length=EVENTS_MAX)]


def instant_of(time: str | int) -> Instant:
    """The instant of an event's ``time``; a ValueError naming the field otherwise."""
    if isinstance(time, int):
        return time
    try:
        instant = parse(time)
    except ValueError:
        raise ValueError(
            f"time: {time!r} is not an RFC 3339 time with an offset, e.g. 2024-03-05T10:00:00Z"
        ) from None
    if not 0 <= instant <= INSTANT_MAX:
        raise ValueError(f"time: {time!r} lies outside 1970-01-01 to 9999-12-31")
    return instant


def decode_events(document: bytes | str) -> list[Event]:
    """Decode a JSON array of events; raises msgspec.ValidationError naming the field."""
    return [item.to_event() for item in msgspec.json.decode(document, type=EventsDocument)]


@dataclass(frozen=True, kw_only=True)
class RatedPeriod:
    statement: Statement
    time_zone: str


@dataclass(kw_only=True)
class Outcome:
    periods: list[RatedPeriod] = field(default_factory=list)
    rejected: list[tuple[Event, Rejection]] = field(default_factory=list)


@dataclass(kw_only=True)
class _Open:
    """The period being rated, with the rater of its version."""

    rater: PeriodRater
    state: PeriodState
    number: int

    def close(self) -> RatedPeriod:
        return RatedPeriod(statement=self.rater.close(self.state), time_zone=self.rater.time_zone)


def rate_events(
    tariff: Tariff, meters: dict[str, Meter], events: list[Event], time_zone: str
) -> Outcome:
    """Rate ``events`` in time order into consecutive periods of ``tariff``."""
    outcome = Outcome()
    seen: dict[str, Event] = {}
    current: _Open | None = None
    for event in sorted(events, key=lambda item: item.time):
        earlier = seen.setdefault(event.id, event)
        if earlier is not event:
            if earlier != event:
                outcome.rejected.append((event, _reused_id(event)))
            continue
        if current is None:
            current = _open_first(tariff, meters, time_zone, event.time)
        else:
            current = _advance(tariff, meters, current, event.time, outcome)
        if current is None:
            outcome.rejected.append((event, _before_tariff(tariff)))
            continue
        marginal = current.rater.rate(current.state, event)
        if isinstance(marginal, Rejection):
            outcome.rejected.append((event, marginal))
    if current is not None:
        outcome.periods.append(current.close())
    return outcome


def _open_first(
    tariff: Tariff, meters: dict[str, Meter], time_zone: str, instant: Instant
) -> _Open | None:
    """The period that contains ``instant``, with the version in effect at its start.

    A version that takes effect in mid-period applies from the next period on, so an earlier
    version rates the period. If the tariff's first version itself begins in mid-period, that
    first period is opened from the version's ``effective_from`` (fees prorated), since no
    version covers its beginning.
    """
    candidates = [v for v in tariff.versions if v.effective_instant <= instant]
    if not candidates:
        return None
    for version in reversed(candidates):
        rater = PeriodRater(tariff.key, version, meters, time_zone)
        period = rater.period_at(instant)
        if version.effective_instant <= period.start:
            state, _ = rater.open(period)
            return _Open(rater=rater, state=state, number=1)
    first = candidates[0]
    rater = PeriodRater(tariff.key, first, meters, time_zone)
    state, _ = rater.open(rater.period_at(instant), active_from=first.effective_instant)
    return _Open(rater=rater, state=state, number=1)


def _advance(
    tariff: Tariff, meters: dict[str, Meter], current: _Open, instant: Instant, outcome: Outcome
) -> _Open:
    """Close periods until the open one contains ``instant``."""
    while instant >= current.state.period.end:
        if current.number >= PERIODS_MAX:
            raise InvalidInput(
                f"events: they span more than {PERIODS_MAX} periods of {tariff.key!r}; "
                "split the file"
            )
        outcome.periods.append(current.close())
        current = _open_next(tariff, meters, current)
    return current


def _open_next(tariff: Tariff, meters: dict[str, Meter], current: _Open) -> _Open:
    following = current.rater.next_period(current.state.period)
    version = tariff.version_at(following.start)
    assert version is not None, "a later period has at least the current version"
    rater = current.rater
    if version is not rater.version:
        rater = PeriodRater(tariff.key, version, meters, rater.time_zone)
    period = rater.period_at(following.start)
    # A version with a different period spec may cut time elsewhere; its first period then
    # starts where the previous one ended, as an assignment starting in mid-period does.
    active_from = following.start if period.start < following.start else None
    state, _ = rater.open(
        period, period_number=current.number + 1, active_from=active_from, previous=current.state
    )
    return _Open(rater=rater, state=state, number=current.number + 1)


def _reused_id(event: Event) -> Rejection:
    return Rejection.of(
        "event_id_reused", "id", f"id {event.id!r} was used before for a different event"
    )


def _before_tariff(tariff: Tariff) -> Rejection:
    first = tariff.versions[0].effective_from.isoformat()
    return Rejection.of(
        "no_version_in_effect", "time", f"tariff {tariff.key!r} takes effect at {first}"
    )


# Output ------------------------------------------------------------------------------------

_HEADINGS: Final = ("line", "description", "quantity", "unit price", "amount")


def render(period: RatedPeriod) -> str:
    """One statement as a table: line id, description, quantity, unit price, amount."""
    statement = period.statement
    rows = [
        (
            line.line_id,
            line.description,
            f"{_plain(line.quantity)} {line.unit}".rstrip(),
            "" if line.unit_price is None else _plain(line.unit_price),
            _plain(line.amount),
        )
        for line in statement.lines
    ]
    total = ("", "total", "", statement.currency, _plain(statement.total))
    widths = [max(len(row[c]) for row in (_HEADINGS, *rows, total)) for c in range(5)]
    start = _local(statement.period_start, period.time_zone)
    end = _local(statement.period_end, period.time_zone)
    out = [
        f"{statement.tariff} version {statement.version}, {statement.currency}, "
        f"period {start} to {end} ({period.time_zone})",
        _row(_HEADINGS, widths),
        *(_row(row, widths) for row in rows),
        _row(total, widths),
    ]
    if statement.rounding_difference:
        # The exact difference between the rounded and the unrounded lines, without the
        # trailing zeros that division leaves.
        difference = statement.rounding_difference.normalize()
        out.append(f"rounding difference {_plain(difference)}")
    return "\n".join(out)


def _row(cells: tuple[str, str, str, str, str], widths: list[int]) -> str:
    line_id, description, quantity, unit_price, amount = cells
    return "  ".join(
        (
            line_id.ljust(widths[0]),
            description.ljust(widths[1]),
            quantity.rjust(widths[2]),
            unit_price.rjust(widths[3]),
            amount.rjust(widths[4]),
        )
    ).rstrip()


def _plain(value: Decimal) -> str:
    return format(value, "f")


def _local(instant: Instant, time_zone: str) -> str:
    return datetime.fromtimestamp(instant, zone(time_zone)).isoformat()


def _print_outcome(outcome: Outcome, out: TextIO, err: TextIO) -> None:
    for position, period in enumerate(outcome.periods):
        if position:
            print(file=out)
        print(render(period), file=out)
    if len(outcome.periods) > 1:
        statements = [period.statement for period in outcome.periods]
        grand_total = sum((statement.total for statement in statements), ZERO)
        print(
            f"\n{len(statements)} periods, total {statements[0].currency} {_plain(grand_total)}",
            file=out,
        )
    for event, rejection in outcome.rejected:
        where = f" at {rejection.field}" if rejection.field else ""
        print(
            f"rejected: event {event.id!r}: {rejection.code}{where}: {rejection.message}", file=err
        )


# The command -------------------------------------------------------------------------------


def rate_file(catalog_path: str, tariff_key: str, events_path: str, time_zone: str) -> int:
    """Rate ``events_path`` with tariff ``tariff_key`` of ``catalog_path`` and print the
    statements; the exit status: 0 rated, 1 some events rejected, 2 invalid input."""
    if not engine_context_installed():
        use_engine_context()
    try:
        outcome = _rate_paths(catalog_path, tariff_key, events_path, time_zone)
    except (InvalidInput, UnknownTimeZone) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    if not outcome.periods and not outcome.rejected:
        print("no events: nothing to rate")
        return EXIT_RATED
    _print_outcome(outcome, sys.stdout, sys.stderr)
    return EXIT_REJECTED if outcome.rejected else EXIT_RATED


def _rate_paths(catalog_path: str, tariff_key: str, events_path: str, time_zone: str) -> Outcome:
    zone(time_zone)
    catalog = _decode(catalog_path, decode_catalog)
    try:
        tariff = catalog.tariff(tariff_key)
    except KeyError:
        known = ", ".join(t.key for t in catalog.tariffs) or "none"
        raise InvalidInput(f"{catalog_path}: no tariff {tariff_key!r} (tariffs: {known})") from None
    events = _decode(events_path, decode_events)
    return rate_events(tariff, catalog.meters_by_key(), events, time_zone)


def _decode(path: str, decoder: Callable[[bytes], T]) -> T:
    """Read and decode one file; every failure names the file (and the field, if any)."""
    try:
        document = Path(path).read_bytes()
    except OSError as error:
        raise InvalidInput(f"{path}: {error.strerror or error}") from None
    try:
        return decoder(document)
    except msgspec.DecodeError as error:  # ValidationError included
        raise InvalidInput(f"{path}: {error}") from None
