"""Invariants of money, as Hypothesis properties.

Each property compares the engine's incremental rating (one marginal amount per event) with
an independent, obviously correct computation over the whole period.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.instants import parse
from engine.numbers import ZERO
from engine.pricing import TimeOfUse
from engine.rating import PeriodState
from engine.rejections import Rejection
from engine.statements import LineKind
from engine.tariffs import RecurringFee
from tests.engine.helpers import charge, event, meter, price, rater

MARCH = parse("2024-03-15T12:00:00Z")


def decimals(low: int, high: int, places: int) -> st.SearchStrategy[Decimal]:
    return st.builds(
        lambda whole, exponent: Decimal(whole).scaleb(-exponent),
        st.integers(low * 10**places, high * 10**places),
        st.integers(0, places),
    )


prices = decimals(0, 100, 6)
quantities = decimals(0, 5_000, 3)


@st.composite
def tiers(draw: st.DrawFn) -> list[dict[str, Any]]:
    bounds = sorted(draw(st.sets(st.integers(1, 10_000), min_size=0, max_size=4)))
    uppers: list[int | None] = [*bounds, None]
    return [
        {
            "up_to": None if upper is None else str(upper),
            "unit_price": str(draw(prices)),
            "flat_fee": str(draw(st.sampled_from([ZERO, Decimal(5), Decimal("0.5")]))),
        }
        for upper in uppers
    ]


@st.composite
def price_documents(draw: st.DrawFn) -> dict[str, Any]:
    model = draw(
        st.sampled_from(["per_unit", "graduated", "volume", "package", "overage", "percentage"])
    )
    match model:
        case "per_unit":
            return {"model": model, "unit_price": str(draw(prices))}
        case "graduated" | "volume":
            return {"model": model, "tiers": draw(tiers())}
        case "package":
            return {
                "model": model,
                "package_size": str(draw(st.integers(1, 1_000))),
                "package_price": str(draw(prices)),
                "round_up": draw(st.booleans()),
            }
        case "overage":
            return {
                "model": model,
                "included": str(draw(quantities)),
                "unit_price": str(draw(prices)),
            }
        case _:
            return {
                "model": model,
                "rate": str(draw(decimals(0, 1, 4)).min(Decimal(1))),
                "fixed_fee": str(draw(decimals(0, 1, 2))),
            }


def ceil_div(a: Decimal, b: Decimal) -> int:
    whole = int(a // b)
    return whole + 1 if whole * b < a else whole


def reference_amount(document: dict[str, Any], quantity: Decimal, events: int) -> Decimal:
    """Each model written the plain way, from its definition."""
    match document["model"]:
        case "per_unit":
            return quantity * Decimal(document["unit_price"])
        case "graduated":
            total, lower = ZERO, ZERO
            for tier in document["tiers"]:
                upper = None if tier["up_to"] is None else Decimal(tier["up_to"])
                if quantity > lower:
                    top = quantity if upper is None else min(quantity, upper)
                    total += (top - lower) * Decimal(tier["unit_price"]) + Decimal(tier["flat_fee"])
                lower = upper if upper is not None else lower
            return total
        case "volume":
            if quantity == 0:
                return ZERO
            for tier in document["tiers"]:
                if tier["up_to"] is None or quantity <= Decimal(tier["up_to"]):
                    return quantity * Decimal(tier["unit_price"]) + Decimal(tier["flat_fee"])
            raise AssertionError("last tier is unbounded")
        case "package":
            size = Decimal(document["package_size"])
            blocks = ceil_div(quantity, size) if document["round_up"] else int(quantity // size)
            return blocks * Decimal(document["package_price"])
        case "overage":
            return max(ZERO, quantity - Decimal(document["included"])) * Decimal(
                document["unit_price"]
            )
        case "percentage":
            return quantity * Decimal(document["rate"]) + events * Decimal(document["fixed_fee"])
    raise AssertionError(document)


@given(
    document=price_documents(),
    amounts=st.lists(quantities, max_size=30),
    free=st.sampled_from([ZERO, Decimal(10), Decimal("250.5")]),
    maximum=st.sampled_from([None, Decimal("0.00"), Decimal("7.50"), Decimal("1000.00")]),
)
def test_incremental_equals_whole_period_for_every_model(
    document: dict[str, Any], amounts: list[Decimal], free: Decimal, maximum: Decimal | None
) -> None:
    engine = rater(
        [charge(document, free_units=str(free), maximum_amount=maximum and str(maximum))],
        [meter()],
    )
    period = engine.period_at(MARCH)
    state, _ = engine.open(period)
    marginals = []
    for number, amount in enumerate(amounts):
        marginal = engine.rate(state, event(number, period.start + number, amount))
        assert not isinstance(marginal, Rejection)
        marginals.append(marginal)

    total = sum(amounts, ZERO)
    whole = reference_amount(document, max(ZERO, total - free), len(amounts))
    if maximum is not None:
        whole = min(whole, maximum)
    assert sum(marginals, ZERO) == whole

    statement = engine.close(state)
    assert statement.charged_live == whole
    usage = [line for line in statement.lines if line.kind in (LineKind.usage, LineKind.maximum)]
    assert sum((line.amount_raw for line in usage), ZERO) == whole
    assert statement.total == sum((line.amount for line in statement.lines), ZERO)
    if maximum is not None:
        assert statement.total <= maximum
    assert statement.total - statement.charged_live == statement.rounding_difference


@given(document=price_documents(), amounts=st.lists(quantities, min_size=1, max_size=20))
def test_order_of_events_does_not_change_the_total(
    document: dict[str, Any], amounts: list[Decimal]
) -> None:
    def total(order: list[Decimal]) -> Decimal:
        engine = rater([charge(document)], [meter()])
        period = engine.period_at(MARCH)
        state, _ = engine.open(period)
        for number, amount in enumerate(order):
            engine.rate(state, event(number, period.start, amount))
        return engine.close(state).total

    shuffled = list(amounts)
    random.Random(len(amounts)).shuffle(shuffled)
    assert total(amounts) == total(shuffled)


@given(
    document=price_documents().filter(
        lambda d: d["model"] in ("per_unit", "graduated", "package", "overage", "percentage")
    ),
    steps=st.lists(quantities, min_size=2, max_size=20),
)
def test_totals_never_decrease_as_usage_grows(
    document: dict[str, Any], steps: list[Decimal]
) -> None:
    engine = rater([charge(document)], [meter()])
    period = engine.period_at(MARCH)
    state, _ = engine.open(period)
    for number, amount in enumerate(steps):
        marginal = engine.rate(state, event(number, period.start, amount))
        assert isinstance(marginal, Decimal) and marginal >= 0


@given(
    document=price_documents(),
    amounts=st.lists(quantities, max_size=15),
    probe=quantities,
)
def test_a_quote_is_what_recording_then_costs(
    document: dict[str, Any], amounts: list[Decimal], probe: Decimal
) -> None:
    engine = rater([charge(document, maximum_amount="500.00")], [meter()])
    period = engine.period_at(MARCH)
    state, _ = engine.open(period)
    for number, amount in enumerate(amounts):
        engine.rate(state, event(number, period.start, amount))
    before = msgspec.msgpack.encode(state)
    quoted = engine.quote(state, event(999, period.start, probe))
    assert msgspec.msgpack.encode(state) == before, "a quote must not change the state"
    assert engine.rate(state, event(999, period.start, probe)) == quoted


# Aggregations ----------------------------------------------------------------------------

observations = st.lists(
    st.tuples(st.integers(0, 40 * 86_400), decimals(0, 1_000, 2), st.sampled_from("abcde")),
    max_size=25,
)


def reference_quantity(
    aggregation: str, items: list[tuple[int, Decimal, str]], start: int, end: int
) -> Decimal:
    inside = [(t, v, u) for t, v, u in items]
    match aggregation:
        case "count":
            return sum((v for _, v, _ in inside), ZERO)
        case "sum":
            return sum((v for _, v, _ in inside), ZERO)
        case "max":
            return max((v for _, v, _ in inside), default=ZERO)
        case "latest":
            latest: tuple[int, Decimal] | None = None
            for t, v, _ in inside:
                if latest is None or t >= latest[0]:
                    latest = (t, v)
            return latest[1] if latest else ZERO
        case "unique_count":
            return Decimal(len({u for _, _, u in inside}))
    # time_weighted, GB-seconds; the last recorded of simultaneous changes wins
    ordered = sorted(
        ((max(t, start), position, v) for position, (t, v, _) in enumerate(inside)),
    )
    integral = ZERO
    for index, (t, _, v) in enumerate(ordered):
        following = ordered[index + 1][0] if index + 1 < len(ordered) else end
        integral += v * (following - t)
    return integral


@pytest.mark.parametrize(
    "aggregation", ["count", "sum", "max", "latest", "unique_count", "time_weighted"]
)
@given(items=observations)
def test_every_aggregation_rates_incrementally_as_a_whole(
    aggregation: str, items: list[tuple[int, Decimal, str]]
) -> None:
    fields: dict[str, Any] = {}
    if aggregation == "unique_count":
        fields["unique_property"] = "user"
    if aggregation == "time_weighted":
        fields["time_unit"] = "second"
    engine = rater(
        [charge({"model": "per_unit", "unit_price": "0.25"})],
        [meter(aggregation=aggregation, **fields)],
        period={"unit": "day", "count": 40},
    )
    period = engine.period_at(parse("2024-02-01T00:00:00Z"))
    state, _ = engine.open(period)
    inside = [
        (period.start + t, Decimal(int(v)) if aggregation == "count" else v, u)
        for t, v, u in items
        if period.start + t < period.end
    ]
    marginal_total = ZERO
    for number, (time, value, user) in enumerate(inside):
        marginal = engine.rate(state, event(number, time, value, properties={"user": user}))
        assert isinstance(marginal, Decimal)
        marginal_total += marginal
    statement = engine.close(state)
    expected = reference_quantity(aggregation, inside, period.start, period.end) * Decimal("0.25")
    if aggregation == "time_weighted":
        # The tail of a gauge after its last change is rated at close.
        assert (
            marginal_total
            + sum((line.amount_raw for line in statement.lines), ZERO)
            - statement.charged_live
            == expected
        )
    else:
        assert marginal_total == expected
    assert sum((line.amount_raw for line in statement.lines), ZERO) == expected


# Snapshots -------------------------------------------------------------------------------


@given(
    document=price_documents(),
    amounts=st.lists(quantities, min_size=2, max_size=20),
    cut=st.integers(0, 19),
)
def test_a_snapshot_restored_mid_period_continues_identically(
    document: dict[str, Any], amounts: list[Decimal], cut: int
) -> None:
    engine = rater([charge(document)], [meter()])
    period = engine.period_at(MARCH)
    original, _ = engine.open(period)
    cut = min(cut, len(amounts))
    for number, amount in enumerate(amounts[:cut]):
        engine.rate(original, event(number, period.start, amount))
    restored = msgspec.msgpack.decode(msgspec.msgpack.encode(original), type=PeriodState)
    assert restored == original
    for number, amount in enumerate(amounts[cut:], start=cut):
        assert engine.rate(original, event(number, period.start, amount)) == engine.rate(
            restored, event(number, period.start, amount)
        )
    assert engine.close(original) == engine.close(restored)


# Caps, fees, proration -------------------------------------------------------------------


@given(
    amounts=st.lists(quantities, max_size=30),
    maximum=decimals(0, 200, 2),
    unit_price=prices,
)
def test_a_cap_is_never_exceeded(
    amounts: list[Decimal], maximum: Decimal, unit_price: Decimal
) -> None:
    engine = rater(
        [
            charge(
                {
                    "model": "graduated",
                    "tiers": [
                        {"up_to": "100", "unit_price": str(unit_price)},
                        {"up_to": None, "unit_price": str(unit_price * 2)},
                    ],
                },
                maximum_amount=str(maximum),
            )
        ],
        [meter()],
    )
    period = engine.period_at(MARCH)
    state, _ = engine.open(period)
    running = ZERO
    for number, amount in enumerate(amounts):
        running += engine.rate(state, event(number, period.start, amount))  # type: ignore[operator]
        assert running <= maximum
    assert engine.close(state).total <= maximum


@given(
    amount=prices,
    quantity=st.integers(1, 50),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    unit=st.sampled_from(["day", "week", "month", "quarter", "year"]),
    month=st.integers(1, 12),
)
def test_prorating_a_full_period_gives_the_full_fee(
    amount: Decimal, quantity: int, zone: str, unit: str, month: int
) -> None:
    for timing in ("advance", "arrears"):
        fee = RecurringFee(key="plan", amount=amount, quantity=Decimal(quantity), timing=timing)  # type: ignore[arg-type]
        engine = rater([], [], zone, period={"unit": unit}, fees=[fee])
        period = engine.period_at(parse(f"2024-{month:02d}-20T12:00:00Z"))
        state, due = engine.open(period)
        statement = engine.close(state)
        assert statement.lines[0].amount_raw == amount * quantity
        assert due == (amount * quantity if timing == "advance" else ZERO)


@given(
    changes=st.lists(st.tuples(st.integers(0, 31 * 86_400), st.integers(0, 20)), max_size=8),
    amount=prices,
)
def test_seats_in_advance_and_in_arrears_cost_the_same_over_a_period(
    changes: list[tuple[int, int]], amount: Decimal
) -> None:
    totals = []
    for timing in ("advance", "arrears"):
        fee = RecurringFee(key="seats", amount=amount, quantity=Decimal(3), timing=timing)  # type: ignore[arg-type]
        engine = rater([], [], "Europe/Berlin", fees=[fee])
        period = engine.period_at(MARCH)
        state, due = engine.open(period)
        for offset, seats in sorted(changes):
            if period.start + offset < period.end:
                due += engine.change_fee_quantity(  # type: ignore[operator]
                    state, "seats", Decimal(seats), period.start + offset
                )
        statement = engine.close(state)
        raw = sum((line.amount_raw for line in statement.lines), ZERO)
        if timing == "advance":
            assert raw == due == statement.charged_live
        totals.append(raw)
    assert totals[0] == totals[1]


# Time of use -----------------------------------------------------------------------------

ENERGY = {
    "model": "time_of_use",
    "default_name": "off_peak",
    "default": {"model": "per_unit", "unit_price": "0.08"},
    "windows": [
        {
            "name": "peak",
            "start": "08:00",
            "end": "20:00",
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "price": {"model": "per_unit", "unit_price": "0.15"},
        }
    ],
}


def seconds_by_window(start: int, duration: int, zone: ZoneInfo) -> dict[str, int]:
    """Walk the usage minute by minute (windows change only on whole local minutes)."""
    schedule = price(ENERGY)
    assert isinstance(schedule, TimeOfUse)
    plan = schedule.schedule()
    found: dict[str, int] = {}
    moment, end = start, start + duration
    while moment < end:
        step = min(60 - moment % 60, end - moment)
        name = plan.window_at(moment, zone)
        found[name] = found.get(name, 0) + step
        moment += step
    return found


@given(
    usages=st.lists(
        st.tuples(st.integers(0, 27 * 86_400), st.integers(0, 6 * 3_600), st.integers(1, 9)),
        max_size=6,
    ),
    zone_name=st.sampled_from(["Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
)
def test_time_of_use_splits_usage_to_the_second(
    usages: list[tuple[int, int, int]], zone_name: str
) -> None:
    engine = rater(
        [charge(ENERGY, time_basis={"unit": "second"})],
        [meter()],
        zone_name,
        period={"unit": "month"},
    )
    period = engine.period_at(parse("2024-03-01T12:00:00Z"))
    state, _ = engine.open(period)
    expected = ZERO
    rates = {"peak": Decimal("0.15"), "off_peak": Decimal("0.08")}
    for number, (offset, duration, kilowatts) in enumerate(usages):
        start = period.start + offset
        engine.rate(state, event(number, start, kilowatts, duration_seconds=duration))
        for name, seconds in seconds_by_window(start, duration, ZoneInfo(zone_name)).items():
            expected += rates[name] * kilowatts * seconds
    assert state.charged_live == expected
    statement = engine.close(state)
    assert sum((line.amount_raw for line in statement.lines), ZERO) == expected


# Late events -----------------------------------------------------------------------------


@given(
    amounts=st.lists(quantities, min_size=1, max_size=10),
    late=st.lists(quantities, min_size=1, max_size=5),
)
def test_late_events_yield_deltas_that_add_up_to_the_revised_statement(
    amounts: list[Decimal], late: list[Decimal]
) -> None:
    engine = rater(
        [
            charge(
                {
                    "model": "graduated",
                    "tiers": [
                        {"up_to": "1000", "unit_price": "0.013"},
                        {"up_to": None, "unit_price": "0.007"},
                    ],
                }
            )
        ],
        [meter()],
        late_event_grace_seconds=86_400,
    )
    period = engine.period_at(MARCH)
    state, _ = engine.open(period)
    for number, amount in enumerate(amounts):
        engine.rate(state, event(number, period.start, amount))
    issued = first = engine.close(state)
    deltas_total = ZERO
    for number, amount in enumerate(late, start=100):
        result = engine.rate_late(
            state, issued, event(number, period.end - 1, amount), now=period.end + 3_600
        )
        assert not isinstance(result, Rejection)
        assert result.delta.revision == issued.revision + 1
        deltas_total += result.delta.total
        issued = msgspec.structs.replace(result.revised, revision=result.delta.revision)
    assert first.total + deltas_total == issued.total
    too_late = engine.rate_late(state, issued, event(999, period.start, 1), now=period.end + 86_400)
    assert isinstance(too_late, Rejection) and too_late.code == "event_too_late"
