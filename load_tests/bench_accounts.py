"""Account throughput on one core: one-step records and authorise-then-capture pairs.

Run: ``meterwerk bench accounts``. Commands are built beforehand; the figure is commands
handled per second by ``TenantTree.handle`` (idempotency, rating, ledger postings, alerts
included), on one account and spread over 10,000 accounts (one tree each), for a per-unit
tariff. The baseline, measured in the same run, is the bare rating of the same events
(``PeriodRater.rate``), the least work an account can do per event. The last line is one JSON
object.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from engine.accounts import (
    Authorize,
    AuthorizeAndRecord,
    Capture,
    CatalogTariffs,
    Command,
    ConfigureTenant,
    TenantSettings,
    TenantTree,
    TopUp,
)
from engine.meters import Event
from engine.numbers import use_engine_context
from engine.tariffs import decode_catalog

START = 1_709_251_200  # 2024-03-01T00:00:00Z
CATALOG = b"""{
  "meters": [{"key": "api_calls", "unit": "call", "aggregation": "count"}],
  "tariffs": [{"key": "api", "versions": [{"version": 1,
    "effective_from": "2024-01-01T00:00:00Z", "currency": "EUR", "period": {"unit": "month"},
    "charges": [{"key": "calls", "meter": "api_calls",
                 "price": {"model": "per_unit", "unit_price": "0.0001"}}]}]}]
}"""


def _trees(count: int, tariffs: CatalogTariffs) -> list[TenantTree]:
    trees = []
    for number in range(count):
        tenant = f"t{number}"
        tree = TenantTree.new(tenant, tariffs)
        tree.handle(
            ConfigureTenant(
                id="setup", tenant=tenant, time=START, settings=TenantSettings(tariff="api")
            )
        )
        tree.handle(TopUp(id="credit", tenant=tenant, time=START, amount=Decimal(1_000_000)))
        trees.append(tree)
    return trees


def _records(trees: list[TenantTree], count: int, round_: int) -> list[tuple[TenantTree, Command]]:
    return [
        (
            tree,
            AuthorizeAndRecord(
                id=f"r{round_}:{number}",
                tenant=tree.state.root,
                time=START + 60 + number // 1_000,
                meter="api_calls",
            ),
        )
        for number in range(count)
        for tree in (trees[number % len(trees)],)
    ]


def _pairs(trees: list[TenantTree], count: int, round_: int) -> list[tuple[TenantTree, Command]]:
    work: list[tuple[TenantTree, Command]] = []
    for number in range(count):
        tree = trees[number % len(trees)]
        tenant, at = tree.state.root, START + 60 + number // 1_000
        reservation = f"a{round_}:{number}"
        work.append((tree, Authorize(id=reservation, tenant=tenant, time=at, meter="api_calls")))
        work.append(
            (
                tree,
                Capture(id=f"c{round_}:{number}", tenant=tenant, time=at, reservation=reservation),
            )
        )
    return work


def _per_second(
    make: Callable[[int], list[tuple[TenantTree, Command]]], units: int, seconds: float
) -> float:
    rounds, elapsed, done = 0, 0.0, 0
    while elapsed < seconds or rounds < 2:
        work = make(rounds)
        began = time.perf_counter()
        for tree, command in work:
            tree.handle(command)
        elapsed += time.perf_counter() - began
        done += units
        rounds += 1
    return done / elapsed


def _baseline(count: int, seconds: float) -> float:
    tariffs = CatalogTariffs(decode_catalog(CATALOG))
    rater = tariffs.rater("api", START, "UTC")
    assert rater is not None
    events = [Event(id=str(n), meter="api_calls", time=START + 60) for n in range(count)]
    state, _ = rater.open(rater.period_at(START))
    rounds, elapsed = 0, 0.0
    while elapsed < seconds or rounds < 2:
        began = time.perf_counter()
        for event in events:
            rater.rate(state, event)
        elapsed += time.perf_counter() - began
        rounds += 1
    return rounds * count / elapsed


def measure(seconds: float = 1.0, events: int = 20_000) -> dict[str, Any]:
    use_engine_context()
    tariffs = CatalogTariffs(decode_catalog(CATALOG))
    one = _trees(1, tariffs)
    many = _trees(10_000, tariffs)
    figures = {
        "records_one_account": _per_second(lambda r: _records(one, events, r), events, seconds),
        "records_10000_accounts": _per_second(lambda r: _records(many, events, r), events, seconds),
        "pairs_one_account": _per_second(lambda r: _pairs(one, events, r), events, seconds),
        "pairs_10000_accounts": _per_second(lambda r: _pairs(many, events, r), events, seconds),
    }
    baseline = _baseline(events, seconds)
    return {
        "benchmark": "engine.accounts",
        "python": platform.python_version(),
        "baseline_bare_rating_per_s": round(baseline),
        "per_s": {name: round(value) for name, value in figures.items()},
        "ratio_to_baseline": {name: round(value / baseline, 3) for name, value in figures.items()},
    }


def run(seconds: float = 1.0) -> int:
    figures = measure(seconds)
    print(f"baseline (bare PeriodRater.rate):    {figures['baseline_bare_rating_per_s']:>10,}/s")
    for name, value in figures["per_s"].items():
        unit = "pairs" if name.startswith("pairs") else "records"
        ratio = figures["ratio_to_baseline"][name]
        print(f"{name:<24} {value:>10,} {unit}/s   {ratio:6.3f} of baseline")
    print(json.dumps(figures))
    return 0
