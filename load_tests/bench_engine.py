"""Incremental-rating throughput per price model, on one core.

Run: ``meterwerk bench engine`` (or ``make bench``). Each figure is marginal ratings per
second through ``PeriodRater.rate`` with events built beforehand, and its ratio to a baseline
measured in the same run: a bare loop that adds ``quantity * unit_price`` into a Decimal total,
the least work any exact per-unit rating can do. The last line is one JSON object.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from engine.meters import Event, Meter
from engine.numbers import use_engine_context
from engine.rating import PeriodRater
from engine.tariffs import TariffVersion

EVENTS = 20_000
START = 1_709_251_200  # 2024-03-01T00:00:00Z

MODELS: dict[str, dict[str, Any]] = {
    "per_unit": {"model": "per_unit", "unit_price": "0.0000138"},
    "graduated": {
        "model": "graduated",
        "tiers": [
            {"up_to": "1000", "unit_price": "0"},
            {"up_to": "100000", "unit_price": "0.002", "flat_fee": "5"},
            {"up_to": None, "unit_price": "0.001"},
        ],
    },
    "volume": {
        "model": "volume",
        "tiers": [
            {"up_to": "1000", "unit_price": "0.003"},
            {"up_to": None, "unit_price": "0.002"},
        ],
    },
    "package": {"model": "package", "package_size": "100", "package_price": "0.5"},
    "overage": {"model": "overage", "included": "10000", "unit_price": "0.002"},
    "percentage": {"model": "percentage", "rate": "0.029", "fixed_fee": "0.25"},
    "time_of_use": {
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
    "by_attribute": {
        "model": "by_attribute",
        "property": "region",
        "prices": [
            {"value": "eu", "price": {"model": "per_unit", "unit_price": "0.01"}},
            {"value": "us", "price": {"model": "per_unit", "unit_price": "0.012"}},
        ],
    },
}


def _rater(price: dict[str, Any], aggregation: str = "sum", **meter: Any) -> PeriodRater:
    version = msgspec.convert(
        {
            "version": 1,
            "effective_from": "2024-01-01T00:00:00Z",
            "currency": "EUR",
            "period": {"unit": "month"},
            "charges": [{"key": "c", "meter": "m", "price": price, "maximum_amount": "1000000"}],
        },
        TariffVersion,
    )
    definition = msgspec.convert(
        {"key": "m", "unit": "unit", "aggregation": aggregation, **meter}, Meter
    )
    return PeriodRater("bench", version, {"m": definition}, "Europe/Berlin")


def _events(count: int) -> list[Event]:
    regions = ("eu", "us")
    return [
        Event(
            id=f"e{number}",
            meter="m",
            time=START + number,
            quantity=Decimal(1 + number % 7),
            properties={"region": regions[number % 2]},
        )
        for number in range(count)
    ]


def _rate_all(rater: PeriodRater, events: list[Event]) -> Callable[[], None]:
    def run() -> None:
        state, _ = rater.open(rater.period_at(START))
        rate = rater.rate
        for event in events:
            rate(state, event)

    return run


def _baseline(events: list[Event]) -> Callable[[], None]:
    price = Decimal("0.0000138")

    def run() -> None:
        total = Decimal(0)
        for event in events:
            total += event.quantity * price

    return run


def _per_second(run: Callable[[], None], count: int, seconds: float) -> float:
    run()  # warm up
    rounds, elapsed = 0, 0.0
    while elapsed < seconds:
        began = time.perf_counter()
        run()
        elapsed += time.perf_counter() - began
        rounds += 1
    return rounds * count / elapsed


def measure(seconds: float = 1.0) -> dict[str, Any]:
    use_engine_context()
    events = _events(EVENTS)
    baseline = _per_second(_baseline(events), EVENTS, seconds)
    results: dict[str, float] = {}
    for name, price in MODELS.items():
        results[name] = _per_second(_rate_all(_rater(price), events), EVENTS, seconds)
    gauges = _rater(MODELS["per_unit"], "time_weighted", time_unit="hour")
    results["time_weighted"] = _per_second(_rate_all(gauges, events), EVENTS, seconds)
    return {
        "benchmark": "engine.incremental_rating",
        "python": platform.python_version(),
        "events_per_run": EVENTS,
        "baseline_decimal_mul_add_per_s": round(baseline),
        "ratings_per_s": {name: round(value) for name, value in results.items()},
        "ratio_to_baseline": {name: round(value / baseline, 3) for name, value in results.items()},
    }


def run(seconds: float = 1.0) -> int:
    figures = measure(seconds)
    print(
        f"baseline (Decimal multiply-add loop): {figures['baseline_decimal_mul_add_per_s']:>12,}/s"
    )
    for name, value in figures["ratings_per_s"].items():
        ratio = figures["ratio_to_baseline"][name]
        print(f"{name:<16} {value:>12,} ratings/s   {ratio:6.3f} of baseline")
    print(json.dumps(figures))
    return 0
