"""``meterwerk demo`` (or ``meterwerk serve --demo``): a catalogue, a small tenant tree with
credit and some usage, so that a newcomer sees the server work within a minute.

The tree is a reseller's: ``demo`` (Demo GmbH, 20.00 EUR prepaid) with two customers of its
own, ``demo-shop-a`` drawing from demo's pool with a cap of 5.00 EUR per period and
``demo-shop-b`` with a balance of its own (3.00 EUR). Seeding is idempotent: the commands
carry fixed ids, so starting again changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from engine.accounts import Command, ConfigureTenant, Funding, Record, TenantSettings, TopUp
from engine.tariffs import Catalog, decode_catalog
from persistence.catalogue import Catalogue, Tenant

DEMO_TENANT: Final = "demo"
DEMO_TARIFF: Final = "telecom-payg"
SHOP_A: Final = "demo-shop-a"
SHOP_B: Final = "demo-shop-b"
EXAMPLES: Final = Path(__file__).resolve().parent.parent / "docs" / "examples" / "catalog.json"

_ROOT: Final = TenantSettings(tariff=DEMO_TARIFF, balance_alerts=(Decimal(5),))
_TREE: Final[tuple[tuple[str, str, TenantSettings, Decimal], ...]] = (
    (DEMO_TENANT, "Demo GmbH", _ROOT, Decimal(20)),
    (
        SHOP_A,
        "Shop A (pooled, capped)",
        TenantSettings(
            parent=DEMO_TENANT, funding=Funding.pool, tariff=DEMO_TARIFF, cap=Decimal(5)
        ),
        Decimal(0),
    ),
    (
        SHOP_B,
        "Shop B (own balance)",
        TenantSettings(parent=DEMO_TENANT, funding=Funding.own, tariff=DEMO_TARIFF),
        Decimal(3),
    ),
)
_SMS: Final = {DEMO_TENANT: 25, SHOP_A: 10, SHOP_B: 5}
COMMANDS_PER_CALL: Final = 1_000


def seed(hosts: Any, database_url: str) -> str:
    """Load the example catalogue and the demo tree; return a new usage key for it."""
    tenants = [
        Tenant(id=tenant, name=name, currency="EUR", settings=settings)
        for tenant, name, settings, _credit in _TREE
    ]
    save_missing(hosts, database_url, decode_catalog(EXAMPLES.read_bytes()), tenants)
    apply_all(hosts, [(DEMO_TENANT, command) for command in _commands(int(time.time()))])
    return usage_keys(database_url, [DEMO_TENANT])[0]


# Seeding a started server through its hosts, shared with load_tests/seed.py ----------------


def save_missing(
    hosts: Any, database_url: str, catalog: Catalog, tenants: Iterable[Tenant]
) -> None:
    """Save the meters, tariffs and tenants (parents first) not in the catalogue yet; the
    hosts (:class:`actors.ray_host.Hosts`) reload their tariffs if any were new."""
    catalogue = Catalogue(database_url)
    try:
        meters = [meter for meter in catalog.meters if catalogue.meter(meter.key) is None]
        tariffs = [tariff for tariff in catalog.tariffs if catalogue.tariff(tariff.key) is None]
        for meter in meters:
            catalogue.save_meter(meter)
        for tariff in tariffs:
            catalogue.save_tariff(tariff)
        if meters or tariffs:
            hosts.reload_tariffs()
        for tenant in tenants:
            if catalogue.tenant(tenant.id) is None:
                catalogue.save_tenant(tenant)
    finally:
        catalogue.close()


def apply_all(hosts: Any, work: Sequence[tuple[str, Command]]) -> None:
    """Apply ``(root, command)`` pairs in calls of a bounded size; every one must be
    accepted (a seed with fixed ids is accepted again, as a retry)."""
    for start in range(0, len(work), COMMANDS_PER_CALL):
        outcomes = hosts.apply(work[start : start + COMMANDS_PER_CALL])
        refused = [outcome for outcome in outcomes if not outcome.accepted]
        if refused:
            raise RuntimeError(f"seeding was refused: {refused[:3]}")


def usage_keys(database_url: str, tenants: Iterable[str]) -> list[str]:
    """A new usage key for each tenant (its plaintext, shown once)."""
    from persistence.credentials import ApiKeys

    keys = ApiKeys(database_url)
    try:
        return [keys.create(["usage"], tenant)[1] for tenant in tenants]
    finally:
        keys.close()


def _commands(now: int) -> list[Command]:
    commands: list[Command] = []
    for tenant, _name, settings, credit in _TREE:
        commands.append(
            ConfigureTenant(id=f"{tenant}-setup", tenant=tenant, time=now, settings=settings)
        )
        if credit:
            commands.append(TopUp(id=f"{tenant}-credit", tenant=tenant, time=now, amount=credit))
    for tenant, count in _SMS.items():
        commands.extend(
            Record(id=f"{tenant}-sms-{n}", tenant=tenant, time=now, meter="sms")
            for n in range(count)
        )
    return commands
