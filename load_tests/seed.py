"""Tenants, tariffs and usage keys for the load scenarios and the HTTP benchmark.

``python -m load_tests.seed --data-dir ./data`` seeds a server's data directory while the
server is stopped: it starts the account hosts on a local Ray as ``meterwerk serve`` would,
saves the load catalogue and the tenants in the SQL catalogue, tops their accounts up, creates
one usage key per tenant, stops, and writes the tenants and keys to ``loadtest.json`` in the
data directory (the locustfile reads it). The hosts read their tariffs when they start, and
the file journal admits one writer, so the server must not be running meanwhile.

It goes through the catalogue and the hosts directly, not through an admin HTTP API, so that
it works on any data directory ``meterwerk serve`` uses. Seeding again is harmless: the
catalogue and the accounts already there are kept (top-ups carry fixed ids, which the accounts
apply once), and new keys are added.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import msgspec

from engine.accounts import ConfigureTenant, Outcome, TenantSettings, TopUp
from engine.tariffs import decode_catalog

SEED_FILE: Final = "loadtest.json"
TENANTS_MAX: Final = 1_000
"""Per scenario: every tenant is a tree in the hosts' memory and a key hash in SQL."""
COMMANDS_PER_CALL: Final = 1_000

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
    _save_catalogue(sql_url, counts)
    hosts.reload_tariffs()
    now = int(time.time())
    commands: list[tuple[str, Any]] = []
    for scenario, count in counts.items():
        settings = TenantSettings(tariff=TARIFFS[scenario])
        for position in range(count):
            tenant = f"{scenario}-{position}"
            amount = tenant_credit(scenario, position, credit[scenario])
            commands.append(
                (
                    tenant,
                    ConfigureTenant(id="load-setup", tenant=tenant, time=now, settings=settings),
                )
            )
            if amount > 0:
                commands.append(
                    (tenant, TopUp(id="load-credit", tenant=tenant, time=now, amount=amount))
                )
    for start in range(0, len(commands), COMMANDS_PER_CALL):
        _check(hosts.apply(commands[start : start + COMMANDS_PER_CALL]))
    return Seeded(scenarios=_keys(sql_url, counts))


def _save_catalogue(sql_url: str, counts: Mapping[str, int]) -> None:
    from persistence.catalogue import Catalogue, Tenant

    catalogue = Catalogue(sql_url)
    try:
        catalog = decode_catalog(CATALOG)
        for meter in catalog.meters:
            if catalogue.meter(meter.key) is None:
                catalogue.save_meter(meter)
        for tariff in catalog.tariffs:
            if catalogue.tariff(tariff.key) is None:
                catalogue.save_tariff(tariff)
        for scenario, count in counts.items():
            settings = TenantSettings(tariff=TARIFFS[scenario])
            for position in range(count):
                tenant = f"{scenario}-{position}"
                if catalogue.tenant(tenant) is None:
                    catalogue.save_tenant(
                        Tenant(id=tenant, name=tenant, currency="EUR", settings=settings)
                    )
    finally:
        catalogue.close()


def _check(outcomes: Sequence[Outcome]) -> None:
    refused = [outcome for outcome in outcomes if not outcome.accepted]
    if refused:
        raise RuntimeError(f"seeding was refused: {refused[:3]}")


def _keys(sql_url: str, counts: Mapping[str, int]) -> dict[str, list[SeedTenant]]:
    from persistence.credentials import ApiKeys

    keys = ApiKeys(sql_url)
    try:
        return {
            scenario: [
                SeedTenant(tenant=tenant, key=keys.create(["usage"], tenant)[1])
                for tenant in (f"{scenario}-{n}" for n in range(count))
            ]
            for scenario, count in counts.items()
        }
    finally:
        keys.close()


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
