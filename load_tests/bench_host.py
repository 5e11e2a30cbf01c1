"""Durable throughput of one host, and its recovery time.

``meterwerk bench host``: one-step records per second through ``HostCore.apply`` (journal
append and flush, rating, ledger, idempotency) with batches of 1, 100 and 1,000 commands, for
each journal backend, against a baseline measured in the same run: the same batches with an
in-memory journal (no durability), so the ratio is the price of durability.

``meterwerk bench recovery``: a host holding 10,000 accounts with 1,000,000 journaled
commands after its last snapshot is restarted; the figure is the time until it answers a
command again (for a tree it has not yet replayed).

Both need nothing installed for the file journal; Postgres and Redis backends are measured
when reachable (``METERWERK_BENCH_POSTGRES_URL``, ``METERWERK_BENCH_REDIS_URL``). The last
line is one JSON object.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from actors.host import HostCore
from engine.accounts import CatalogTariffs, ConfigureTenant, Record, TenantSettings, TopUp
from engine.numbers import use_engine_context
from engine.ports import Journal
from engine.tariffs import decode_catalog
from load_tests.bench_journal import POSTGRES_URL, REDIS_URL
from persistence.journal import open_journal
from persistence.journal.memory import MemoryJournal

START = int(time.time()) // 86_400 * 86_400
CATALOG = b"""{
  "meters": [{"key": "calls", "unit": "call", "aggregation": "count"}],
  "tariffs": [{"key": "api", "versions": [{"version": 1,
    "effective_from": "2024-01-01T00:00:00Z", "currency": "EUR", "period": {"unit": "month"},
    "payment_mode": "postpaid",
    "charges": [{"key": "calls", "meter": "calls",
                 "price": {"model": "per_unit", "unit_price": "0.0001"}}]}]}]
}"""


class _Discard:
    def save(self, host: str, sequence: int, data: bytes) -> None:
        pass

    def load(self, host: str) -> tuple[int, bytes] | None:
        return None

    def put(self, items: object) -> None:
        pass

    def close(self) -> None:
        pass


class _KeepOne(_Discard):
    def __init__(self) -> None:
        self.saved: tuple[int, bytes] | None = None

    def save(self, host: str, sequence: int, data: bytes) -> None:
        self.saved = (sequence, data)

    def load(self, host: str) -> tuple[int, bytes] | None:
        return self.saved


def _host(journal: Journal, snapshots: Any = None, **options: Any) -> HostCore:
    return HostCore(
        f"bench-{uuid.uuid4().hex[:8]}",
        journal=journal,
        snapshots=snapshots or _Discard(),
        statements=_Discard(),
        tariffs=CatalogTariffs(decode_catalog(CATALOG)),
        snapshot_every_commands=10**12,
        snapshot_every_seconds=10**12,
        **options,
    )


def _tenants(core: HostCore, count: int) -> list[str]:
    roots = [f"t{n}" for n in range(count)]
    for chunk in range(0, count, 1_000):
        core.apply(
            [
                item
                for root in roots[chunk : chunk + 1_000]
                for item in (
                    (
                        root,
                        ConfigureTenant(
                            id="c", tenant=root, time=START, settings=TenantSettings(tariff="api")
                        ),
                    ),
                    (root, TopUp(id="t", tenant=root, time=START, amount=Decimal(1_000))),
                )
            ]
        )
    return roots


def _records(roots: list[str], count: int, tag: str) -> list[tuple[str, Record]]:
    return [
        (
            roots[n % len(roots)],
            Record(id=f"{tag}{n}", tenant=roots[n % len(roots)], time=START + 60, meter="calls"),
        )
        for n in range(count)
    ]


def durable_rate(journal: Journal, batch: int, seconds: float) -> float:
    core = _host(journal)
    roots = _tenants(core, 100)
    done, elapsed, round_ = 0, 0.0, 0
    while elapsed < seconds or round_ < 2:
        items = _records(roots, max(batch * 20, 2_000) if batch > 1 else 500, f"r{round_}:")
        began = time.perf_counter()
        for start in range(0, len(items), batch):
            core.apply(items[start : start + batch])
        elapsed += time.perf_counter() - began
        done += len(items)
        round_ += 1
    journal.trim(journal.last_sequence())  # leave nothing behind on a shared server
    journal.close()
    return done / elapsed


def _journals(directory: Path) -> dict[str, Callable[[], Journal]]:
    journals: dict[str, Callable[[], Journal]] = {
        "memory (baseline)": MemoryJournal,
        "file": lambda: open_journal(str(directory / uuid.uuid4().hex), "bench"),
    }
    for name, url in (("postgres", POSTGRES_URL), ("redis", REDIS_URL)):
        try:
            open_journal(url, f"probe-{uuid.uuid4().hex[:6]}").close()
        except Exception as error:  # a server that is not there is left out, and said so
            print(f"{name}: not measured ({type(error).__name__}: {error})")
            continue
        journals[name] = lambda url=url: open_journal(url, f"bench-{uuid.uuid4().hex[:8]}")
    return journals


def measure_host(seconds: float = 1.0) -> dict[str, Any]:
    use_engine_context()
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as directory:
        for name, make in _journals(Path(directory)).items():
            figures[name] = {
                str(batch): durable_rate(make(), batch, seconds) for batch in (1, 100, 1_000)
            }
    baseline = figures["memory (baseline)"]
    return {
        "benchmark": "host.durable_records",
        "records_per_s": {n: {b: round(v) for b, v in f.items()} for n, f in figures.items()},
        "ratio_to_memory": {
            n: {b: round(v / baseline[b], 3) for b, v in f.items()} for n, f in figures.items()
        },
    }


def measure_recovery(accounts: int = 10_000, commands: int = 1_000_000) -> dict[str, Any]:
    use_engine_context()
    with tempfile.TemporaryDirectory() as directory:
        location = str(Path(directory) / "journal")
        snapshots = _KeepOne()
        core = _host(open_journal(location, "recovery"), snapshots)
        roots = _tenants(core, accounts)
        core.snapshot()
        began = time.perf_counter()
        for start in range(0, commands, 1_000):
            core.apply(_records(roots, 1_000, f"{start}:"))
        filled = time.perf_counter() - began
        core.journal.close()
        began = time.perf_counter()
        restarted = _host(open_journal(location, "recovery"), snapshots)
        restarted.name = core.name
        waiting = restarted.recover()
        answer = restarted.apply(
            [(roots[-1], Record(id="after", tenant=roots[-1], time=START + 61, meter="calls"))]
        )
        serving = time.perf_counter() - began
        assert answer[0].accepted
        began = time.perf_counter()
        restarted.catch_up(accounts)
        replayed = time.perf_counter() - began
    return {
        "benchmark": "host.recovery",
        "accounts": accounts,
        "journaled_after_snapshot": waiting,
        "serving_again_s": round(serving, 3),
        "full_replay_s": round(replayed, 3),
        "journal_fill_s": round(filled, 1),
    }


def run_host(seconds: float = 1.0) -> int:
    figures = measure_host(seconds)
    for name, rates in figures["records_per_s"].items():
        ratios = figures["ratio_to_memory"][name]
        cells = "  ".join(f"batch {b:>5}: {r:>8,}/s ({ratios[b]:.2f})" for b, r in rates.items())
        print(f"{name:<18} {cells}")
    print(json.dumps(figures))
    return 0


def run_recovery(accounts: int = 10_000, commands: int = 1_000_000) -> int:
    figures = measure_recovery(accounts, commands)
    print(
        f"{figures['accounts']:,} accounts, {figures['journaled_after_snapshot']:,} commands "
        f"after the snapshot: serving again after {figures['serving_again_s']} s; every tree "
        f"replayed after a further {figures['full_replay_s']} s"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    run_host()
