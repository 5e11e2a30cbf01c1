"""Tenants, tariffs and usage keys for the load scenarios and the HTTP benchmark.

``python -m load_tests.seed --data-dir ./data`` seeds a server's data directory while the
server is stopped: it starts the account hosts on a local Ray as ``meterwerk serve`` would,
saves the load catalogue and the tenants in the SQL catalogue, tops their accounts up, creates
one usage key per tenant, stops, and writes the tenants and keys to ``loadtest.json`` in the
data directory (the locustfile reads it). The hosts read their tariffs when they start, and
the file journal admits one writer, so the server must not be running meanwhile.

It goes through the catalogue and the hosts directly (with ``meterwerk demo``'s helpers), not
through an admin HTTP API, so that it works on any data directory ``meterwerk serve`` uses.
Seeding again is harmless: the catalogue and the accounts already there are kept (top-ups
carry fixed ids, which the accounts apply once), and new keys are added.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import msgspec

from engine.accounts import Command, ConfigureTenant, TenantSettings, TopUp
from engine.tariffs import decode_catalog
from meterwerk.demo import apply_all, save_missing, usage_keys
from persistence.catalogue import Tenant

SEED_FILE: Final = "loadtest.json"
TENANTS_MAX: Final = 1_000
"""Per scenario: every tenant is a tree in the hosts' memory and a key hash in SQL."""

CATALOG: Final = b"""{
  "meters": [
    {"key": "api_calls", "unit": "call", "aggregation": "count"},
    {"key": "vm_seconds", "unit": "vCPU", "aggregation": "sum"},
    {"key": "storage_gb", "unit": "GB", "aggregation": "time_weighted", "time_unit": "hour"},
    {"key": "backfill_events", "unit": "event", "aggregation": "count"}
  ],
  "tariffs": [
    {"key": "load-api", "versions": [{"version": 1, "effective_from": "2024-01-01T00:00:00Z",
      "currency": "EUR", "period": {"unit": "month"}, "payment_mode": "prepaid",
      "charges": [{"key": "calls", "meter": "api_calls",
                   "price": {"model": "per_unit", "unit_price": "0.002"}}]}]},
    {"key": "load-vm", "versions": [{"version": 1, "effective_from": "2024-01-01T00:00:00Z",
      "currency": "EUR", "period": {"unit": "month"}, "payment_mode": "prepaid",
      "charges": [{"key": "vm", "meter": "vm_seconds",
                   "price": {"model": "per_unit", "unit_price": "0.01"},
                   "time_basis": {"unit": "second"}}]}]},
    {"key": "load-storage", "versions": [{"version": 1, "effective_from": "2024-01-01T00:00:00Z",
      "currency": "EUR", "period": {"unit": "month"}, "payment_mode": "prepaid",
      "charges": [{"key": "storage", "meter": "storage_gb",
                   "price": {"model": "per_unit", "unit_price": "0.0002"}}]}]},
    {"key": "load-backfill", "versions": [{"version": 1,
      "effective_from": "2024-01-01T00:00:00Z", "currency": "EUR", "period": {"unit": "month"},
      "payment_mode": "postpaid",
      "charges": [{"key": "events", "meter": "backfill_events",
                   "price": {"model": "per_unit", "unit_price": "0.0001"}}]}]}
  ]
}"""

TARIFFS: Final = {
    "api": "load-api",
    "vm": "load-vm",
    "storage": "load-storage",
    "backfill": "load-backfill",
}
"""Scenario → tariff; a scenario's tenants are ``<scenario>-<n>``."""
COUNTS: Final = {"api": 20, "vm": 20, "storage": 20, "backfill": 5}
CREDIT: Final = {
    "api": Decimal(1_000),
    # VM tenants get little credit, and each a different amount, so that sessions are cut off
    # one tenant after another during a run (tenant n has (n + 1) * this).
    "vm": Decimal("0.50"),
    "storage": Decimal(100),
    "backfill": Decimal(0),
}


class SeedTenant(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    key: str


class Seeded(msgspec.Struct, frozen=True, kw_only=True):
    """What ``loadtest.json`` holds: per scenario, its tenants and their usage keys."""

    scenarios: dict[str, list[SeedTenant]]


def tenant_credit(scenario: str, position: int, credit: Decimal) -> Decimal:
    return credit * (position + 1) if scenario == "vm" else credit


def seed(
    hosts: Any, sql_url: str, counts: Mapping[str, int], credit: Mapping[str, Decimal]
) -> Seeded:
    """Save the load catalogue and ``counts[scenario]`` tenants per scenario; top them up;
    a usage key for each. ``hosts`` are started :class:`actors.ray_host.Hosts`."""
    for scenario, count in counts.items():
        if scenario not in TARIFFS or not 0 <= count <= TENANTS_MAX:
            raise ValueError(f"{scenario}: a scenario of {sorted(TARIFFS)}, 0-{TENANTS_MAX}")
    names = {
        scenario: [f"{scenario}-{n}" for n in range(count)] for scenario, count in counts.items()
    }
    now = int(time.time())
    tenants: list[Tenant] = []
    commands: list[tuple[str, Command]] = []
    for scenario, tenants_of in names.items():
        settings = TenantSettings(tariff=TARIFFS[scenario])
        for position, tenant in enumerate(tenants_of):
            tenants.append(Tenant(id=tenant, name=tenant, currency="EUR", settings=settings))
            commands.append(
                (
                    tenant,
                    ConfigureTenant(id="load-setup", tenant=tenant, time=now, settings=settings),
                )
            )
            amount = tenant_credit(scenario, position, credit[scenario])
            if amount > 0:
                commands.append(
                    (tenant, TopUp(id="load-credit", tenant=tenant, time=now, amount=amount))
                )
    save_missing(hosts, sql_url, decode_catalog(CATALOG), tenants)
    apply_all(hosts, commands)
    return Seeded(
        scenarios={
            scenario: [
                SeedTenant(tenant=tenant, key=key)
                for tenant, key in zip(tenants_of, usage_keys(sql_url, tenants_of), strict=True)
            ]
            for scenario, tenants_of in names.items()
        }
    )


def seed_data_dir(
    data_dir: str,
    counts: Mapping[str, int],
    credit: Mapping[str, Decimal],
    hosts: int | None = None,
) -> Seeded:
    """Seed a stopped server's data directory, on a local Ray of its own; write the file."""
    from meterwerk.serve import ServeOptions, Server

    server = Server(ServeOptions(data_dir=data_dir, hosts=hosts))
    server.start()
    try:
        seeded = seed(server.hosts, server.config.sql_url, counts, credit)
    finally:
        server.stop()
    path = Path(data_dir) / SEED_FILE
    path.write_bytes(msgspec.json.format(msgspec.json.encode(seeded)))
    return seeded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.seed", description=__doc__)
    parser.add_argument("--data-dir", default="./data", help="the stopped server's data")
    parser.add_argument("--hosts", type=int, default=None, help="as for meterwerk serve")
    for scenario, count in COUNTS.items():
        parser.add_argument(f"--{scenario}", type=int, default=count, help=f"{scenario} tenants")
    parser.add_argument(
        "--api-credit", type=Decimal, default=CREDIT["api"], help="EUR per api tenant"
    )
    args = parser.parse_args(argv)
    counts = {scenario: getattr(args, scenario) for scenario in COUNTS}
    credit = {**CREDIT, "api": args.api_credit}
    seed_data_dir(args.data_dir, counts, credit, hosts=args.hosts)
    path = Path(args.data_dir).resolve() / SEED_FILE
    print(f"seeded {sum(counts.values())} tenants; keys in {path}", file=sys.stderr)
    print(f"export METERWERK_SEED_FILE={path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
