"""The documented JSON format (docs/tariffs.md): every example decodes, every example in the
guide is its file, every worked total holds, and every invalid document fails naming its field.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.charges import Charge
from engine.instants import HOUR, parse
from engine.meters import Event, Meter, event_value
from engine.numbers import RoundingMode, divide, round_amount
from engine.periods import PeriodSpec, next_period, period_containing
from engine.rating import PeriodRater, PeriodState
from engine.rejections import Rejection
from engine.statements import Statement
from engine.tariffs import Catalog, Tariff, TariffVersion, decode_catalog, decode_tariff
from meterwerk.rate_file import decode_events

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
GUIDE = ROOT / "docs" / "tariffs.md"

Decoder = Callable[[bytes], object]


def _typed(type_: Any) -> Decoder:
    return lambda document: msgspec.json.decode(document, type=type_)


# The kind of an example is the start of its file name: charge-graduated.json is a charge.
DECODERS: dict[str, Decoder] = {
    "catalog": decode_catalog,
    "tariff": decode_tariff,
    "version": _typed(TariffVersion),
    "charge": _typed(Charge),
    "meters": _typed(list[Meter]),
    "periods": _typed(list[PeriodSpec]),
    "events": decode_events,
}


def decoder_for(path: Path) -> Decoder:
    kind = path.stem.removeprefix("invalid-").split("-")[0]
    assert kind in DECODERS, f"{path.name}: no decoder for kind {kind!r}; see DECODERS"
    return DECODERS[kind]


def example_paths(*, invalid: bool) -> list[Path]:
    paths = sorted(EXAMPLES.glob("*.json"))
    return [path for path in paths if path.name.startswith("invalid-") is invalid]


def example(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


# The examples and the guide -----------------------------------------------------------------


@pytest.mark.parametrize("path", example_paths(invalid=False), ids=lambda path: path.name)
def test_every_example_decodes(path: Path) -> None:
    decoder_for(path)(path.read_bytes())


@pytest.mark.parametrize("path", example_paths(invalid=True), ids=lambda path: path.name)
def test_every_invalid_example_fails_with_the_message_the_guide_shows(path: Path) -> None:
    shown = re.search(
        rf"File: \[`examples/{re.escape(path.name)}`\].*?```json\n.*?```.*?```text\n(.*?)\n```",
        guide(),
        re.S,
    )
    assert shown, f"the guide shows no message for {path.name}"
    with pytest.raises(msgspec.ValidationError) as raised:
        decoder_for(path)(path.read_bytes())
    assert str(raised.value) == shown.group(1)


LINKED_BLOCK = re.compile(
    r"File: \[`examples/(?P<name>[^`]+)`\]\(examples/(?P=name)\)\n\n```json\n(?P<body>.*?)```",
    re.S,
)


def test_every_json_block_in_the_guide_is_an_example_file() -> None:
    text = guide()
    blocks = list(LINKED_BLOCK.finditer(text))
    assert len(blocks) == text.count("```json"), "each ```json block follows a File: link"
    for block in blocks:
        name = block.group("name")
        assert json.loads(block.group("body")) == json.loads(example(name)), name


def test_the_guide_mentions_every_example() -> None:
    text = guide()
    missing = [p.name for p in sorted(EXAMPLES.glob("*.json")) if f"examples/{p.name}" not in text]
    assert not missing


# Invalid documents name the field ------------------------------------------------------------


def _version(document: dict[str, Any]) -> dict[str, Any]:
    version: dict[str, Any] = document["tariffs"][0]["versions"][0]
    return version


def _charge(document: dict[str, Any]) -> dict[str, Any]:
    charge: dict[str, Any] = _version(document)["charges"][0]
    return charge


def _add_meter(document: dict[str, Any], **fields: Any) -> None:
    document["meters"].append({"key": "cpu", "unit": "vCPU", "aggregation": "sum", **fields})


def _second_version(document: dict[str, Any], version: int, effective_from: str) -> None:
    later = copy.deepcopy(_version(document))
    later.update(version=version, effective_from=effective_from)
    document["tariffs"][0]["versions"].append(later)


def _tiers(*bounds: str | None) -> dict[str, Any]:
    tiers = [{"up_to": bound, "unit_price": "0.01"} for bound in bounds]
    return {"model": "graduated", "tiers": tiers}


TIME_OF_USE: dict[str, Any] = {
    "model": "time_of_use",
    "windows": [
        {
            "name": "peak",
            "start": "08:00",
            "end": "20:00",
            "price": {"model": "per_unit", "unit_price": "0.15"},
        }
    ],
    "default": {"model": "per_unit", "unit_price": "0.08"},
}


def _minimum_in_yen(document: dict[str, Any]) -> None:
    _version(document)["currency"] = "JPY"
    _charge(document)["minimum_amount"] = "5.5"


def _overlapping_windows(document: dict[str, Any]) -> None:
    _add_meter(document)
    evening = {
        "name": "evening",
        "start": "19:00",
        "end": "23:00",
        "price": {"model": "per_unit", "unit_price": "0.1"},
    }
    price = {**TIME_OF_USE, "windows": [*TIME_OF_USE["windows"], evening]}
    _charge(document).update(meter="cpu", price=price)


V = "$.tariffs[0].versions[0]"
C = f"{V}.charges[0]"

# (case, change to catalog-minimal.json, texts the message must contain)
INVALID: list[tuple[str, Callable[[dict[str, Any]], object], tuple[str, ...]]] = [
    ("unknown field at the top", lambda d: d.update(owner="x"), ("`owner`",)),
    (
        "unknown field in a meter",
        lambda d: d["meters"][0].update(units="call"),
        ("`units`", "$.meters[0]"),
    ),
    (
        "unknown field in a version",
        lambda d: _version(d).update(currencies=["EUR"]),
        ("`currencies`", V),
    ),
    (
        "unknown field in a price",
        lambda d: _charge(d)["price"].update(price="0.1"),
        ("`price`", f"{C}.price"),
    ),
    (
        "unknown field in a tier",
        lambda d: _charge(d).update(
            price={"model": "volume", "tiers": [{"up_to": None, "unit_price": "1", "to": "9"}]}
        ),
        ("`to`", f"{C}.price.tiers[0]"),
    ),
    (
        "negative price",
        lambda d: _charge(d)["price"].update(unit_price="-0.001"),
        ("unit_price: must not be negative", f"{C}.price"),
    ),
    (
        "unsorted tiers",
        lambda d: _charge(d).update(price=_tiers("100", "10", None)),
        ("tiers[1].up_to", "sorted", f"{C}.price"),
    ),
    (
        "overlapping tiers",
        lambda d: _charge(d).update(price=_tiers("100", "100", None)),
        ("tiers[1].up_to", "overlap", f"{C}.price"),
    ),
    (
        "unbounded tier before the last",
        lambda d: _charge(d).update(price=_tiers(None, "100")),
        ("tiers[0].up_to", "only the last tier", f"{C}.price"),
    ),
    (
        "unknown currency",
        lambda d: _version(d).update(currency="EURO"),
        ("currency: unknown ISO 4217 currency 'EURO'", V),
    ),
    (
        "unknown time zone",
        lambda d: _version(d).update(time_zone="Europe/Atlantis"),
        ("time_zone: unknown IANA time zone 'Europe/Atlantis'", V),
    ),
    (
        "host-dependent time zone",
        lambda d: _version(d).update(time_zone="localtime"),
        ("time_zone:", V),
    ),
    (
        "anchor that is not a date-time",
        lambda d: _version(d)["period"].update(anchor="2024-02-30T00:00:00"),
        ("anchor: '2024-02-30T00:00:00'", f"{V}.period"),
    ),
    (
        "anchor with an offset",
        lambda d: _version(d)["period"].update(anchor="2024-01-31T00:00:00Z"),
        ("anchor:", "without an offset", f"{V}.period"),
    ),
    (
        "period count zero",
        lambda d: _version(d)["period"].update(count=0),
        (f"{V}.period.count",),
    ),
    (
        "charge referencing an unknown meter",
        lambda d: _charge(d).update(meter="api_cals"),
        ("tariffs[0].versions[0].charges[0].meter: unknown meter 'api_cals'",),
    ),
    (
        "duplicate charge keys",
        lambda d: _version(d)["charges"].append(copy.deepcopy(_charge(d))),
        ("charges: keys must be unique", "'calls'", V),
    ),
    (
        "charge and fee with one key",
        lambda d: _version(d).update(recurring_fees=[{"key": "calls", "amount": "1"}]),
        ("charges: keys must be unique", "'calls'", V),
    ),
    (
        "minimum above maximum",
        lambda d: _charge(d).update(minimum_amount="10.00", maximum_amount="5.00"),
        ("minimum_amount: must not exceed maximum_amount", C),
    ),
    (
        "maximum with more decimals than the currency",
        lambda d: _charge(d).update(maximum_amount="5.001"),
        ("charges[0].maximum_amount: EUR has 2 decimals", V),
    ),
    (
        "minimum with decimals in a currency without any",
        _minimum_in_yen,
        ("charges[0].minimum_amount: JPY has 0 decimals", V),
    ),
    (
        "version numbers not increasing",
        lambda d: _second_version(d, 1, "2024-06-01T00:00:00Z"),
        ("versions[1].version: must increase", "$.tariffs[0]"),
    ),
    (
        "effective_from not increasing",
        lambda d: _second_version(d, 2, "2023-06-01T00:00:00Z"),
        ("versions[1].effective_from: must increase", "$.tariffs[0]"),
    ),
    (
        "effective_from without an offset",
        lambda d: _version(d).update(effective_from="2024-01-01T00:00:00"),
        ("effective_from:", V),
    ),
    (
        "time_basis on a count meter",
        lambda d: _charge(d).update(time_basis={"unit": "hour"}),
        ("tariffs[0].versions[0].charges[0].time_basis: a time basis needs a sum meter",),
    ),
    (
        "free_units with time_of_use",
        lambda d: _charge(d).update(free_units="100", price=TIME_OF_USE),
        ("tariffs[0].versions[0].charges[0].free_units: free units need a single bucket",),
    ),
    (
        "percentage on a count meter",
        lambda d: _charge(d).update(price={"model": "percentage", "rate": "0.029"}),
        ("tariffs[0].versions[0].charges[0].price: a percentage needs a sum meter",),
    ),
    (
        "time_weighted meter without a time_unit",
        lambda d: _add_meter(d, aggregation="time_weighted"),
        ("time_unit: required", "$.meters[1]"),
    ),
    (
        "unique_count meter without a property",
        lambda d: _add_meter(d, aggregation="unique_count"),
        ("unique_property: required", "$.meters[1]"),
    ),
    (
        "overlapping time-of-use windows",
        _overlapping_windows,
        ("windows[1]: overlaps window 'peak'", f"{C}.price"),
    ),
    (
        "discount on an unknown key",
        lambda d: _version(d).update(
            discounts=[{"key": "d", "kind": "percent", "value": "10", "applies_to": ["call"]}]
        ),
        ("discounts[0].applies_to: unknown keys ['call']", V),
    ),
    (
        "price model that does not exist",
        lambda d: _charge(d)["price"].update(model="flat"),
        ("'flat'", f"{C}.price.model"),
    ),
    (
        "price with too many decimals",
        lambda d: _charge(d)["price"].update(unit_price="0.0000000000001"),
        ("unit_price: at most 12 decimal places", f"{C}.price"),
    ),
    (
        "key with capitals",
        lambda d: _charge(d).update(key="Calls"),
        (f"{C}.key",),
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"),
    [pytest.param(change, expected, id=case) for case, change, expected in INVALID],
)
def test_an_invalid_catalog_fails_naming_the_field(
    change: Callable[[dict[str, Any]], object], expected: tuple[str, ...]
) -> None:
    document = json.loads(example("catalog-minimal.json"))
    change(document)
    with pytest.raises(msgspec.ValidationError) as raised:
        decode_catalog(json.dumps(document))
    message = str(raised.value)
    for text in expected:
        assert text in message


def test_json_numbers_are_read_exactly_from_their_digits() -> None:
    document = json.loads(example("catalog-minimal.json"))
    # 0.1 has no exact binary float; decoding must not go through one.
    text = json.dumps(document).replace('"0.001"', "0.1")
    price = decode_catalog(text).tariffs[0].versions[0].charges[0].price
    assert price.unit_price == Decimal("0.1")  # type: ignore[union-attr]


# Worked totals -----------------------------------------------------------------------------


def _meters() -> dict[str, Meter]:
    meters = msgspec.json.decode(example("meters.json"), type=list[Meter])
    return {meter.key: meter for meter in meters}


_ids = itertools.count(1)


def ev(
    meter: str, time: str, quantity: str = "1", duration_seconds: int = 0, **props: str
) -> Event:
    return Event(
        id=f"e{next(_ids)}",
        meter=meter,
        time=parse(time),
        quantity=Decimal(quantity),
        duration_seconds=duration_seconds,
        properties=props,
    )


def version_of(charges: Sequence[Charge] = (), **fields: Any) -> TariffVersion:
    document = {
        "version": 1,
        "effective_from": "2024-01-01T00:00:00Z",
        "currency": "EUR",
        "period": {"unit": "month"},
        "charges": [msgspec.to_builtins(charge) for charge in charges],
        **fields,
    }
    version = msgspec.json.decode(msgspec.json.encode(document), type=TariffVersion)
    # Building the catalogue checks that the charges fit the meters of meters.json.
    Catalog(meters=tuple(_meters().values()), tariffs=(Tariff(key="t", versions=(version,)),))
    return version


def charge_example(name: str, **changes: Any) -> Charge:
    document = json.loads(example(name))
    document.update(changes)
    return msgspec.convert(document, Charge, strict=False)


class Period:
    """One period of a version, opened at ``at``, for a worked example."""

    def __init__(self, version: TariffVersion, at: str, time_zone: str = "UTC") -> None:
        self.rater = PeriodRater("example", version, _meters(), time_zone)
        self.state: PeriodState
        self.state, self.due = self.rater.open(self.rater.period_at(parse(at)))

    def rate(self, *events: Event) -> Decimal:
        total = Decimal(0)
        for event in events:
            marginal = self.rater.rate(self.state, event)
            assert not isinstance(marginal, Rejection), marginal
            total += marginal
        return total

    def close(self) -> Statement:
        return self.rater.close(self.state)


def amounts(statement: Statement) -> dict[str, Decimal]:
    return {line.line_id: line.amount for line in statement.lines}


def rated(charge: Charge, *events: Event, time_zone: str = "UTC", **fields: Any) -> Statement:
    period = Period(version_of([charge], **fields), "2024-03-15T12:00:00Z", time_zone)
    period.rate(*events)
    return period.close()


def many(count: int, meter: str, **props: str) -> Iterator[Event]:
    for number in range(count):
        yield ev(meter, f"2024-03-{1 + number % 28:02d}T10:00:00Z", "1", 0, **props)


def test_per_unit_worked_total() -> None:
    statement = rated(charge_example("charge-per_unit.json"), *many(120, "sms"))
    assert amounts(statement) == {"sms/units": Decimal("10.80")}


def test_graduated_worked_totals() -> None:
    charge = charge_example("charge-graduated.json")
    statement = rated(charge, ev("transfer_gb", "2024-03-02T00:00:00Z", "1500"))
    assert amounts(statement) == {
        "transfer/tier-1": Decimal("0.00"),
        "transfer/tier-2": Decimal("86.00"),
        "transfer/tier-3": Decimal("35.00"),
    }
    assert statement.total == Decimal("121.00")
    assert rated(charge, ev("transfer_gb", "2024-03-02T00:00:00Z", "50")).total == 0


def test_volume_worked_totals_and_the_credit_of_the_51st_user() -> None:
    charge = charge_example("charge-volume.json")
    users = [ev("users", "2024-03-02T00:00:00Z", user_id=f"u{n}") for n in range(51)]
    statement = rated(charge, *users[:30])
    assert amounts(statement) == {"users/tier-2": Decimal("300.00")}
    period = Period(version_of([charge]), "2024-03-15T12:00:00Z")
    assert period.rate(*users[:50]) == Decimal("500.00")
    assert period.rate(users[50]) == Decimal("-92.00")
    assert period.close().total == Decimal("408.00")


def test_package_worked_totals() -> None:
    usage = [ev("transfer_gb", "2024-03-02T00:00:00Z", q) for q in ("10", "10", "5.5")]
    statement = rated(charge_example("charge-package.json"), *usage)
    assert amounts(statement) == {"transfer/packages": Decimal("14.97")}
    price = json.loads(example("charge-package.json"))["price"] | {"round_up": False}
    assert rated(charge_example("charge-package.json", price=price), *usage).total == Decimal(
        "9.98"
    )


def test_overage_worked_total() -> None:
    statement = rated(charge_example("charge-overage.json"), *many(12_345, "api_calls"))
    assert amounts(statement) == {"calls/included": Decimal(0), "calls/overage": Decimal("4.69")}
    assert statement.line("calls/overage").quantity == 2_345


def test_percentage_worked_total_rounds_each_line() -> None:
    payments = [
        ev("payments", "2024-03-02T00:00:00Z", amount=amount, status=status)
        for amount, status in [
            ("100.00", "captured"),
            ("25.00", "captured"),
            ("50.00", "failed"),
            ("10.00", "captured"),
        ]
    ]
    statement = rated(charge_example("charge-percentage.json"), *payments)
    assert amounts(statement) == {
        "card-fees/percentage": Decimal("3.92"),
        "card-fees/transactions": Decimal("0.90"),
    }
    assert statement.total == Decimal("4.82")
    assert statement.rounding_difference == Decimal("0.005")


def test_time_of_use_worked_total_in_berlin() -> None:
    usage = [
        ev("energy_kwh", "2024-03-05T10:00:00+01:00", "12"),
        ev("energy_kwh", "2024-03-05T22:00:00+01:00", "8"),
        ev("energy_kwh", "2024-03-06T19:00:00+01:00", "4", duration_seconds=2 * HOUR),
        ev("energy_kwh", "2024-03-09T12:00:00+01:00", "10"),
    ]
    charge = charge_example("charge-time_of_use.json")
    statement = rated(charge, *usage, time_zone="Europe/Berlin")
    assert amounts(statement) == {
        "energy/off-peak/units": Decimal("1.60"),
        "energy/peak/units": Decimal("2.10"),
    }
    assert statement.line("energy/peak/units").quantity == 14
    assert statement.total == Decimal("3.70")


def test_by_attribute_worked_total() -> None:
    usage = [
        ev("transfer_gb", "2024-03-02T00:00:00Z", quantity, region=region)
        for quantity, region in [("100", "eu"), ("50", "us"), ("10", "ap")]
    ]
    statement = rated(charge_example("charge-by_attribute.json"), *usage)
    assert amounts(statement) == {
        "transfer/*/units": Decimal("0.90"),
        "transfer/eu/units": Decimal("5.00"),
        "transfer/us/units": Decimal("3.00"),
    }
    assert statement.total == Decimal("8.90")


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (None, {"transfer/free": 0, "transfer/units": 0, "transfer/minimum": Decimal("5.00")}),
        ("40", {"transfer/free": 0, "transfer/units": 0, "transfer/minimum": Decimal("5.00")}),
        ("250", {"transfer/free": 0, "transfer/units": Decimal("13.50")}),
        (
            "1000",
            {
                "transfer/free": 0,
                "transfer/units": Decimal("81.00"),
                "transfer/maximum": Decimal("-31.00"),
            },
        ),
    ],
)
def test_free_units_minimum_and_maximum(usage: str | None, expected: dict[str, Decimal]) -> None:
    events = [] if usage is None else [ev("transfer_gb", "2024-03-02T00:00:00Z", usage)]
    statement = rated(charge_example("charge-limits.json"), *events)
    assert amounts(statement) == expected
    assert statement.total == sum(expected.values())


def test_the_maximum_applies_while_the_period_runs() -> None:
    period = Period(version_of([charge_example("charge-limits.json")]), "2024-03-15T12:00:00Z")
    assert period.rate(ev("transfer_gb", "2024-03-02T00:00:00Z", "700")) == Decimal("50.00")
    assert period.rate(ev("transfer_gb", "2024-03-03T00:00:00Z", "300")) == 0


def test_time_basis_worked_total() -> None:
    usage = [
        ev("cpu", "2024-03-02T00:00:00Z", "2", duration_seconds=90),
        ev("cpu", "2024-03-03T00:00:00Z", "4", duration_seconds=3_601),
    ]
    statement = rated(charge_example("charge-time_basis.json"), *usage)
    assert statement.line("vm/units").quantity == 264
    assert statement.total == Decimal("0.26")
    exact = charge_example("charge-time_basis.json", time_basis={"unit": "minute"})
    raw = rated(exact, *usage).line("vm/units").amount_raw
    assert abs(raw - divide(2 * 90 + 4 * 3_601, 60) * Decimal("0.001")) < Decimal("1e-18")


def test_fees_and_discounts_worked_total() -> None:
    version = msgspec.json.decode(example("version-fees.json"), type=TariffVersion)
    rater = PeriodRater("example", version, {}, "UTC")
    april = rater.period_at(parse("2024-04-10T00:00:00Z"))
    state, due = rater.open(april)
    assert due == Decimal("148.00")
    assert rater.change_fee_quantity(state, "seats", Decimal(8), parse("2024-04-16T00:00:00Z")) == 0
    statement = rater.close(state)
    assert amounts(statement) == {
        "platform/0": Decimal("49.00"),
        "seats/0": Decimal("20.00"),
        "seats/1": Decimal("32.00"),
        "one-time/0/setup": Decimal("99.00"),
        "discount/welcome": Decimal("-9.80"),
        "discount/loyalty": Decimal("-10.00"),
    }
    assert statement.total == Decimal("180.20")

    fourth = rater.next_period(rater.next_period(rater.next_period(april)))
    later, due = rater.open(fourth, period_number=4, previous=state)
    assert due == Decimal("49.00")
    assert amounts(rater.close(later)) == {
        "platform/0": Decimal("49.00"),
        "seats/0": Decimal("64.00"),  # 8 seats, carried over
        "discount/loyalty": Decimal("-10.00"),
    }


def test_a_fee_is_prorated_from_a_start_in_mid_period() -> None:
    version = msgspec.json.decode(example("version-fees.json"), type=TariffVersion)
    rater = PeriodRater("example", version, {}, "UTC")
    april = rater.period_at(parse("2024-04-10T00:00:00Z"))
    state, due = rater.open(april, active_from=parse("2024-04-11T00:00:00Z"))
    # Two thirds of 49.00, exact to the 18th decimal place of the share, plus the setup fee.
    assert abs(due - Decimal("99.00") - divide(Decimal("49.00") * 2, 3)) < Decimal("1e-15")
    assert rater.close(state).line("platform/0").amount == Decimal("32.67")


BERLIN_MID_MARCH = "2024-03-15T12:00:00+01:00"

# Each spec of periods.json, and the period that holds BERLIN_MID_MARCH, in local time.
PERIODS_IN_BERLIN = [
    ("2024-03-01T00:00:00+01:00", "2024-04-01T00:00:00+02:00"),
    ("2024-03-01T00:00:00+01:00", "2024-05-01T00:00:00+02:00"),
    ("2024-01-01T00:00:00+01:00", "2024-04-01T00:00:00+02:00"),
    ("2024-02-29T00:00:00+01:00", "2024-03-31T00:00:00+01:00"),
    ("2024-03-11T00:00:00+01:00", "2024-03-25T00:00:00+01:00"),
    ("2024-03-15T06:00:00+01:00", "2024-03-16T06:00:00+01:00"),
    ("2024-03-15T12:00:00+01:00", "2024-03-15T18:00:00+01:00"),
]


def test_period_examples() -> None:
    specs = msgspec.json.decode(example("periods.json"), type=list[PeriodSpec])
    assert len(specs) == len(PERIODS_IN_BERLIN)
    for spec, (start, end) in zip(specs, PERIODS_IN_BERLIN, strict=True):
        period = period_containing(spec, "Europe/Berlin", parse(BERLIN_MID_MARCH))
        assert (period.start, period.end) == (parse(start), parse(end)), spec


def test_an_anchor_on_the_31st_does_not_drift() -> None:
    anchored = msgspec.json.decode(example("periods.json"), type=list[PeriodSpec])[3]
    period = period_containing(anchored, "UTC", parse("2024-02-10T00:00:00Z"))
    starts = []
    for _ in range(4):
        starts.append(period.start)
        period = next_period(anchored, "UTC", period)
    expected = ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]
    assert starts == [parse(f"{day}T00:00:00Z") for day in expected]


def test_a_day_when_clocks_spring_forward_lasts_23_hours() -> None:
    daily = msgspec.json.decode(example("periods.json"), type=list[PeriodSpec])[5]
    period = period_containing(daily, "Europe/Berlin", parse("2024-03-30T12:00:00+01:00"))
    assert period.start == parse("2024-03-30T06:00:00+01:00")
    assert period.duration_seconds == 23 * HOUR


def test_the_version_rule() -> None:
    tariff = decode_tariff(example("tariff-versions.json"))
    spec = tariff.versions[0].period
    june = period_containing(spec, "UTC", parse("2024-06-20T00:00:00Z"))
    july = next_period(spec, "UTC", june)
    # Version 2 takes effect on 15 June: June started before, so version 1 rates it.
    assert tariff.version_at(june.start).version == 1  # type: ignore[union-attr]
    assert tariff.version_at(july.start).version == 2  # type: ignore[union-attr]


def test_an_effective_from_in_utc_starts_after_a_berlin_period() -> None:
    tariff = decode_tariff(example("tariff-versions.json"))
    january = period_containing(
        tariff.versions[0].period, "Europe/Berlin", parse("2024-01-10T00:00:00Z")
    )
    assert january.start == parse("2024-01-01T00:00:00+01:00")
    assert tariff.version_at(january.start) is None


ROUNDING_TABLE = {
    RoundingMode.half_up: ("2.35", "2.36", "-2.35"),
    RoundingMode.half_even: ("2.34", "2.36", "-2.34"),
    RoundingMode.half_down: ("2.34", "2.35", "-2.34"),
    RoundingMode.up: ("2.35", "2.36", "-2.35"),
    RoundingMode.down: ("2.34", "2.35", "-2.34"),
    RoundingMode.ceiling: ("2.35", "2.36", "-2.34"),
    RoundingMode.floor: ("2.34", "2.35", "-2.35"),
}


@pytest.mark.parametrize("mode", list(RoundingMode))
def test_rounding_table(mode: RoundingMode) -> None:
    results = tuple(
        str(round_amount(Decimal(value), 2, mode)) for value in ("2.345", "2.355", "-2.345")
    )
    assert results == ROUNDING_TABLE[mode]
    row = f"| `{mode.value}`"
    shown = next(line for line in guide().splitlines() if line.startswith(row))
    cells = [cell.strip() for cell in shown.split("|")[3:6]]
    assert cells == [value.replace("-", "−") for value in ROUNDING_TABLE[mode]]


def _quantity(meter: str, *events: Event) -> Decimal:
    """The period's quantity of ``meter``, read from a statement line priced at 1 per unit."""
    charge = msgspec.convert(
        {"key": "q", "meter": meter, "price": {"model": "per_unit", "unit_price": "1"}}, Charge
    )
    return rated(charge, *events).line("q/units").quantity


@pytest.mark.parametrize(
    ("meter", "expected"),
    [("api_calls", 15), ("transfer_gb", 15), ("peak_connections", 7), ("reported_seats", 5)],
)
def test_aggregation_table(meter: str, expected: int) -> None:
    days = ("02", "03", "04")
    usage = [ev(meter, f"2024-03-{day}T00:00:00Z", q) for day, q in zip(days, "375", strict=True)]
    assert _quantity(meter, *usage) == expected


def test_unique_count_counts_distinct_values() -> None:
    users = [ev("users", "2024-03-02T00:00:00Z", user_id=user) for user in ("ada", "bob", "ada")]
    assert _quantity("users", *users) == 2


def test_a_gauge_of_2_gb_for_36_hours_is_3_gb_days() -> None:
    # March has 31 days: 2 GB until the 2nd at 12:00, then nothing, is 3 GB-days.
    assert _quantity(
        "storage_gb",
        ev("storage_gb", "2024-03-01T00:00:00Z", "2"),
        ev("storage_gb", "2024-03-02T12:00:00Z", "0"),
    ) == Decimal(3)


def test_a_gauge_in_period_units_is_averaged_over_the_period() -> None:
    meter = msgspec.convert(
        {"key": "storage", "unit": "GB", "aggregation": "time_weighted", "time_unit": "period"},
        Meter,
    )
    price = {"model": "per_unit", "unit_price": "0.01"}
    version = msgspec.convert(
        {
            "version": 1,
            "effective_from": "2024-01-01T00:00:00Z",
            "currency": "EUR",
            "period": {"unit": "month"},
            "charges": [{"key": "storage", "meter": "storage", "price": price}],
        },
        TariffVersion,
        strict=False,
    )
    rater = PeriodRater("example", version, {"storage": meter}, "UTC")
    state, _ = rater.open(rater.period_at(parse("2024-04-10T00:00:00Z")))
    # 100 GB for the first 15 of April's 30 days.
    rater.rate(state, ev("storage", "2024-04-01T00:00:00Z", "100"))
    rater.rate(state, ev("storage", "2024-04-16T00:00:00Z", "0"))
    line = rater.close(state).line("storage/units")
    assert (line.quantity, line.amount) == (Decimal(50), Decimal("0.50"))


def test_a_late_event_within_the_grace_window_gives_a_delta_statement() -> None:
    version = version_of([charge_example("charge-per_unit.json")])
    period = Period(version, "2024-03-15T12:00:00Z")
    period.rate(*many(10, "sms"))
    issued = period.close()
    late = ev("sms", "2024-03-31T23:00:00Z")
    grace = version.late_event_grace_seconds
    assert grace == 3 * 86_400
    on_time = period.rater.rate_late(period.state, issued, late, issued.period_end + grace - 1)
    assert not isinstance(on_time, Rejection)
    assert on_time.delta.revision == 1
    assert amounts(on_time.delta) == {"sms/units": Decimal("0.09")}
    too_late = period.rater.rate_late(period.state, issued, late, issued.period_end + grace)
    assert isinstance(too_late, Rejection)
    assert too_late.code == "event_too_late"


def test_filters_and_group_by() -> None:
    charge = msgspec.convert(
        {
            "key": "requests",
            "meter": "requests_by_region",
            "price": {"model": "per_unit", "unit_price": "0.01"},
        },
        Charge,
    )
    usage = [
        ev("requests_by_region", "2024-03-02T00:00:00Z", status=status, region=region)
        for status, region in [("ok", "eu"), ("cached", "eu"), ("failed", "eu"), ("ok", "us")]
    ]
    statement = rated(charge, *usage)
    quantities = {line.line_id: line.quantity for line in statement.lines}
    assert quantities == {"requests/region=eu/units": 2, "requests/region=us/units": 1}


# Engine bugs found while documenting the format ---------------------------------------------


def test_graduated_never_prices_usage_above_the_last_tier_at_zero() -> None:
    document = {
        "key": "c",
        "meter": "transfer_gb",
        "price": {"model": "graduated", "tiers": [{"up_to": "10", "unit_price": "1"}]},
    }
    try:
        charge = msgspec.convert(document, Charge, strict=False)
    except msgspec.ValidationError:
        return  # refusing a bounded last tier would be a fix as well
    assert charge.price.amount(Decimal(15), 1) == Decimal(15)  # type: ignore[union-attr]


def test_discounts_together_never_exceed_what_they_apply_to() -> None:
    version = version_of(
        [charge_example("charge-per_unit.json")],
        discounts=[
            {"key": "first", "kind": "fixed", "value": "20.00"},
            {"key": "second", "kind": "fixed", "value": "20.00"},
        ],
    )
    period = Period(version, "2024-03-15T12:00:00Z")
    period.rate(*many(334, "sms"))  # 30.06
    assert period.close().total >= 0


def test_discount_keys_are_unique() -> None:
    document = json.loads(example("version-fees.json"))
    document["discounts"].append(document["discounts"][1])
    with pytest.raises(msgspec.ValidationError, match="discounts"):
        msgspec.json.decode(json.dumps(document), type=TariffVersion)


@pytest.mark.parametrize("quantity", ["0." + "1" * 70, "0.0000000001", "1.0000000001"])
def test_an_event_quantity_beyond_the_exact_budget_is_refused(quantity: str) -> None:
    document = {"id": "e1", "meter": "sms", "time": 0, "quantity": quantity}
    event = msgspec.json.decode(json.dumps(document), type=Event)
    meter = msgspec.convert({"key": "sms", "unit": "SMS", "aggregation": "sum"}, Meter)
    rejection = event_value(meter, event)
    assert isinstance(rejection, Rejection)
    assert (rejection.code, rejection.field) == ("invalid_value", "quantity")


# Statement lines ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("charge_file", "line_id", "usage", "unit"),
    [
        ("charge-package.json", "transfer/packages", ("transfer_gb", "25.5"), "package"),
        ("charge-percentage.json", "card-fees/transactions", ("payments", "0"), "transaction"),
        ("charge-percentage.json", "card-fees/percentage", ("payments", "0"), "EUR"),
        ("charge-time_basis.json", "vm/units", ("cpu", "1"), "minute"),
        ("storage", "storage/units", ("storage_gb", "100"), "GB-day"),
    ],
)
def test_a_line_states_the_unit_of_its_own_quantity(
    charge_file: str, line_id: str, usage: tuple[str, str], unit: str
) -> None:
    meter, quantity = usage
    if charge_file == "storage":
        charge = msgspec.convert(
            {"key": "storage", "meter": meter, "price": {"model": "per_unit", "unit_price": "1"}},
            Charge,
        )
    else:
        charge = charge_example(charge_file)
    props = {"amount": "10.00", "status": "captured"} if meter == "payments" else {}
    statement = rated(charge, ev(meter, "2024-03-02T00:00:00Z", quantity, 0, **props))
    assert statement.line(line_id).unit == unit
