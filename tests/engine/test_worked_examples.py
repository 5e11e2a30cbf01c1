"""The worked examples of the product documents, as table tests with hand-checked totals.

Each scenario is a small catalogue, a month of usage, and the statement a person checked with
pencil and paper. Tenants bill in Europe/Berlin; March 2024 has 31 local days and a daylight
saving change, so it is 743 hours long.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from engine.instants import parse
from engine.meters import Event
from engine.numbers import divide
from engine.rating import PeriodRater
from engine.statements import LineKind, Statement
from engine.tariffs import Catalog
from tests.engine.helpers import tariff_document

ZONE = "Europe/Berlin"
MONTH_START = parse("2024-03-01T00:00:00+01:00")


def catalog(
    meters: list[dict[str, Any]], charges: list[dict[str, Any]], **version: Any
) -> tuple[PeriodRater, Catalog]:
    """The rater of the tariff ``plan``, in EUR by the month, and its catalogue."""
    document = {"meters": meters, "tariffs": [tariff_document("plan", charges, **version)]}
    decoded = msgspec.convert(document, Catalog)
    tariff = decoded.tariff("plan")
    return PeriodRater("plan", tariff.versions[0], decoded.meters_by_key(), ZONE), decoded


def rate_month(engine: PeriodRater, usage: list[dict[str, Any]]) -> Statement:
    period = engine.period_at(MONTH_START)
    assert period.start == MONTH_START
    state, _ = engine.open(period)
    for number, item in enumerate(usage):
        when = item.pop("at", "2024-03-04T10:00:00+01:00")
        event = msgspec.convert({"id": f"e{number}", "time": parse(when), **item}, Event)
        result = engine.rate(state, event)
        assert isinstance(result, Decimal), result
    return engine.close(state)


def amounts(statement: Statement) -> dict[str, Decimal]:
    return {line.line_id: line.amount for line in statement.lines}


def test_cloud_compute_cpu_hours_storage_and_transfer() -> None:
    """0.05 EUR per CPU-hour, 0.01 EUR per GB-month stored, 0.02 EUR per GB transferred."""
    engine, _ = catalog(
        meters=[
            {"key": "cpu", "unit": "vCPU", "aggregation": "sum"},
            {"key": "storage", "unit": "GB", "aggregation": "time_weighted", "time_unit": "period"},
            {"key": "transfer", "unit": "GB", "aggregation": "sum"},
        ],
        charges=[
            {
                "key": "cpu",
                "meter": "cpu",
                "time_basis": {"unit": "hour"},
                "price": {"model": "per_unit", "unit_price": "0.05"},
            },
            {
                "key": "storage",
                "meter": "storage",
                "price": {"model": "per_unit", "unit_price": "0.01"},
            },
            {
                "key": "transfer",
                "meter": "transfer",
                "price": {"model": "per_unit", "unit_price": "0.02"},
            },
        ],
    )
    statement = rate_month(
        engine,
        [
            # 4 vCPUs for 10.5 hours and 2 vCPUs for 45 minutes: 42 + 1.5 = 43.5 CPU-hours.
            {"meter": "cpu", "quantity": "4", "duration_seconds": 37_800},
            {"meter": "cpu", "quantity": "2", "duration_seconds": 2_700},
            # 200 GB stored all month, then 300 GB from the middle of the month on.
            {"meter": "storage", "quantity": "200", "at": "2024-03-01T00:00:00+01:00"},
            {"meter": "storage", "quantity": "500", "at": "2024-03-16T12:00:00+01:00"},
            {"meter": "transfer", "quantity": "120.5"},
        ],
    )
    lines = amounts(statement)
    assert lines["cpu/units"] == Decimal("2.18")  # 43.5 h x 0.05 = 2.175, half up
    # 200 GB for 372 of 743 hours, 500 GB for the remaining 371: 349.798… GB-months.
    storage = statement.line("storage/units")
    assert storage.quantity == divide(200 * 372 + 500 * 371, 743)
    assert lines["storage/units"] == Decimal("3.50")
    assert lines["transfer/units"] == Decimal("2.41")  # 120.5 GB x 0.02
    assert statement.total == Decimal("8.09")


@pytest.mark.parametrize(
    ("rounding", "call_seconds", "expected_minutes", "expected_amount"),
    [
        ("exact", [90, 30], Decimal(2), Decimal("0.20")),
        ("started_unit", [90, 30], Decimal(3), Decimal("0.30")),
        ("started_unit", [60, 61, 1], Decimal(4), Decimal("0.40")),
        ("exact", [61], divide(61, 60), Decimal("0.10")),
    ],
)
def test_telecom_pay_as_you_go(
    rounding: str, call_seconds: list[int], expected_minutes: Decimal, expected_amount: Decimal
) -> None:
    """0.10 EUR per minute of calls, 0.01 EUR per SMS, 0.05 EUR per MB of data."""
    engine, _ = catalog(
        meters=[
            {"key": "calls", "unit": "call", "aggregation": "sum"},
            {"key": "sms", "unit": "SMS", "aggregation": "count"},
            {"key": "data", "unit": "MB", "aggregation": "sum"},
        ],
        charges=[
            {
                "key": "calls",
                "meter": "calls",
                "time_basis": {"unit": "minute", "rounding": rounding},
                "price": {"model": "per_unit", "unit_price": "0.10"},
            },
            {"key": "sms", "meter": "sms", "price": {"model": "per_unit", "unit_price": "0.01"}},
            {"key": "data", "meter": "data", "price": {"model": "per_unit", "unit_price": "0.05"}},
        ],
    )
    usage = [{"meter": "calls", "duration_seconds": seconds} for seconds in call_seconds]
    usage += [{"meter": "sms"} for _ in range(37)]
    usage += [{"meter": "data", "quantity": "512.3"}]
    statement = rate_month(engine, usage)
    calls = statement.line("calls/units")
    assert (calls.quantity, calls.unit, calls.amount) == (
        expected_minutes,
        "minute",
        expected_amount,
    )
    assert statement.line("sms/units").amount == Decimal("0.37")
    assert statement.line("data/units").amount == Decimal("25.62")  # 25.615 half up
    assert statement.total == expected_amount + Decimal("0.37") + Decimal("25.62")


def test_energy_peak_and_off_peak() -> None:
    """0.15 EUR/kWh on weekdays 08:00–20:00 local time, 0.08 EUR/kWh otherwise."""
    engine, _ = catalog(
        meters=[{"key": "energy", "unit": "kWh", "aggregation": "sum"}],
        charges=[
            {
                "key": "energy",
                "meter": "energy",
                "price": {
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
                },
            }
        ],
    )
    statement = rate_month(
        engine,
        [
            # Monday 4 March: 10 kWh at noon (peak), 6 kWh at 23:00 (off-peak).
            {"meter": "energy", "quantity": "10", "at": "2024-03-04T12:00:00+01:00"},
            {"meter": "energy", "quantity": "6", "at": "2024-03-04T23:00:00+01:00"},
            # Saturday: 20 kWh at noon, off-peak all weekend.
            {"meter": "energy", "quantity": "20", "at": "2024-03-09T12:00:00+01:00"},
            # 12 kWh drawn evenly 19:00–21:00 on a Tuesday: 6 peak, 6 off-peak, split to the second.
            {
                "meter": "energy",
                "quantity": "12",
                "at": "2024-03-05T19:00:00+01:00",
                "duration_seconds": 7_200,
            },
        ],
    )
    assert statement.line("energy/peak/units").quantity == Decimal(16)
    assert statement.line("energy/peak/units").amount == Decimal("2.40")
    assert statement.line("energy/off_peak/units").quantity == Decimal(32)
    assert statement.line("energy/off_peak/units").amount == Decimal("2.56")
    assert statement.total == Decimal("4.96")


def test_saas_per_user_and_per_active_project() -> None:
    """10 EUR per user and 5 EUR per active project per month."""
    engine, _ = catalog(
        meters=[
            {
                "key": "active_users",
                "unit": "user",
                "aggregation": "unique_count",
                "unique_property": "user_id",
            },
            {
                "key": "active_projects",
                "unit": "project",
                "aggregation": "unique_count",
                "unique_property": "project_id",
            },
        ],
        charges=[
            {
                "key": "users",
                "meter": "active_users",
                "price": {"model": "per_unit", "unit_price": "10"},
            },
            {
                "key": "projects",
                "meter": "active_projects",
                "price": {"model": "per_unit", "unit_price": "5"},
            },
        ],
    )
    usage = [
        {"meter": "active_users", "properties": {"user_id": user}}
        for user in ["ana", "ben", "ana", "cem", "ben", "dora", "ana"]
    ] + [
        {"meter": "active_projects", "properties": {"project_id": project}}
        for project in ["p1", "p2", "p1", "p3", "p2"]
    ]
    statement = rate_month(engine, usage)
    assert statement.line("users/units").quantity == 4
    assert statement.line("users/units").amount == Decimal("40.00")
    assert statement.line("projects/units").quantity == 3
    assert statement.total == Decimal("55.00")


@pytest.mark.parametrize(
    ("calls", "overage", "total"),
    [
        (0, Decimal("0.00"), Decimal("29.00")),
        (10_000, Decimal("0.00"), Decimal("29.00")),
        (10_001, Decimal("0.00"), Decimal("29.00")),  # 0.002 rounds to 0.00 half up
        (10_003, Decimal("0.01"), Decimal("29.01")),  # 0.006
        (12_500, Decimal("5.00"), Decimal("34.00")),
    ],
)
def test_api_plan_with_an_included_allowance(calls: int, overage: Decimal, total: Decimal) -> None:
    """A 29 EUR plan includes 10,000 calls; every call above costs 0.002 EUR."""
    engine, _ = catalog(
        meters=[{"key": "api_calls", "unit": "call", "aggregation": "count"}],
        charges=[
            {
                "key": "calls",
                "meter": "api_calls",
                "price": {"model": "overage", "included": "10000", "unit_price": "0.002"},
            }
        ],
        recurring_fees=[{"key": "plan", "name": "API plan", "amount": "29"}],
    )
    period = engine.period_at(MONTH_START)
    state, due = engine.open(period)
    assert due == Decimal(29)  # the plan fee is due in advance, at the period start
    for number in range(calls):
        engine.rate(state, Event(id=str(number), meter="api_calls", time=period.start + 60))
    statement = engine.close(state)
    assert statement.line("calls/overage").amount == overage
    assert statement.line("calls/included").quantity == min(calls, 10_000)
    assert statement.line("plan/0").amount == Decimal("29.00")
    assert statement.total == total


def test_statement_with_tier_lines_and_a_maximum_price_line() -> None:
    """Survey transactions priced in graduated tiers, capped at 20 EUR a month: each tier is
    its own line and the cap is a line of its own, as the product documents show."""
    engine, _ = catalog(
        meters=[{"key": "surveys", "unit": "transaction", "aggregation": "count"}],
        charges=[
            {
                "key": "surveys",
                "meter": "surveys",
                "name": "Survey transactions",
                "maximum_amount": "20.00",
                "price": {
                    "model": "graduated",
                    "tiers": [
                        {"up_to": "10", "unit_price": "0.96"},
                        {"up_to": "20", "unit_price": "0.80"},
                        {"up_to": None, "unit_price": "0.50"},
                    ],
                },
            }
        ],
    )
    statement = rate_month(engine, [{"meter": "surveys"} for _ in range(25)])
    lines = {line.line_id: line for line in statement.lines}
    assert [
        (lines[key].quantity, lines[key].amount)
        for key in ("surveys/tier-1", "surveys/tier-2", "surveys/tier-3")
    ] == [
        (10, Decimal("9.60")),
        (10, Decimal("8.00")),
        (5, Decimal("2.50")),
    ]
    cap = lines["surveys/maximum"]
    assert cap.kind is LineKind.maximum
    assert cap.amount == Decimal("-0.10")  # 20.10 capped at 20.00
    assert statement.total == Decimal("20.00")
    assert statement.charged_live == Decimal("20.00")
    assert statement.rounding_difference == 0


def test_a_minimum_charge_tops_up_a_quiet_month() -> None:
    engine, _ = catalog(
        meters=[{"key": "api_calls", "unit": "call", "aggregation": "count"}],
        charges=[
            {
                "key": "calls",
                "meter": "api_calls",
                "minimum_amount": "5.00",
                "price": {"model": "per_unit", "unit_price": "0.01"},
            }
        ],
    )
    statement = rate_month(engine, [{"meter": "api_calls"} for _ in range(120)])
    assert statement.line("calls/units").amount == Decimal("1.20")
    assert statement.line("calls/minimum").amount == Decimal("3.80")
    assert statement.total == Decimal("5.00")
    assert statement.closing_amount == Decimal("3.80")  # what closing adds to the live 1.20
