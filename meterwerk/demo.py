"""``meterwerk demo`` (or ``meterwerk serve --demo``): a catalogue, a small tenant tree with
credit and some usage, so that a newcomer sees the server work within a minute.

The tree is a reseller's: ``demo`` (Demo GmbH, 20.00 EUR prepaid) with two customers of its
own, ``demo-shop-a`` drawing from demo's pool with a cap of 5.00 EUR per period and
``demo-shop-b`` with a balance of its own (3.00 EUR). Seeding is idempotent: the commands
carry fixed ids, so starting again changes nothing.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from engine.accounts import Command, ConfigureTenant, Funding, Record, TenantSettings, TopUp
from engine.tariffs import decode_catalog

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


def seed(hosts: Any, database_url: str) -> str:
    """Load the example catalogue and the demo tree; return a new usage key for it."""
    from persistence.credentials import ApiKeys

    _save_catalogue(hosts, database_url)
    outcomes = hosts.apply([(DEMO_TENANT, command) for command in _commands(int(time.time()))])
    assert all(outcome.accepted for outcome in outcomes), outcomes
    keys = ApiKeys(database_url)
    try:
        return keys.create(["usage"], DEMO_TENANT)[1]
    finally:
        keys.close()


def _save_catalogue(hosts: Any, database_url: str) -> None:
    from persistence.catalogue import Catalogue, Tenant

    catalogue = Catalogue(database_url)
    try:
        if catalogue.tariff(DEMO_TARIFF) is None:
            examples = decode_catalog(EXAMPLES.read_bytes())
            for meter in examples.meters:
                catalogue.save_meter(meter)
            for tariff in examples.tariffs:
                catalogue.save_tariff(tariff)
            hosts.reload_tariffs()
        for tenant, name, settings, _credit in _TREE:
            if catalogue.tenant(tenant) is None:
                catalogue.save_tenant(
                    Tenant(id=tenant, name=name, currency="EUR", settings=settings)
                )
    finally:
        catalogue.close()


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
