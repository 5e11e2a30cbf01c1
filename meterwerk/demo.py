"""``meterwerk serve --demo``: a catalogue, a tenant with credit and some usage, so that a
newcomer sees the server work within a minute. Idempotent: starting again changes nothing."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.accounts import ConfigureTenant, Record, TenantSettings, TopUp
from engine.tariffs import decode_catalog

DEMO_TENANT = "demo"
DEMO_TARIFF = "telecom-payg"
EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples" / "catalog.json"


def seed(hosts: Any, database_url: str) -> str:
    """Load the example catalogue and the demo tenant; return a new usage key for it."""
    from persistence.catalogue import Catalogue, Tenant
    from persistence.credentials import ApiKeys

    catalogue = Catalogue(database_url)
    try:
        if catalogue.tariff(DEMO_TARIFF) is None:
            examples = decode_catalog(EXAMPLES.read_bytes())
            for meter in examples.meters:
                catalogue.save_meter(meter)
            for tariff in examples.tariffs:
                catalogue.save_tariff(tariff)
            hosts.reload_tariffs()
        settings = TenantSettings(tariff=DEMO_TARIFF, balance_alerts=(Decimal(5),))
        if catalogue.tenant(DEMO_TENANT) is None:
            catalogue.save_tenant(
                Tenant(id=DEMO_TENANT, name="Demo GmbH", currency="EUR", settings=settings)
            )
    finally:
        catalogue.close()
    now = int(time.time())
    outcomes = hosts.apply(
        [
            (
                DEMO_TENANT,
                ConfigureTenant(id="demo-setup", tenant=DEMO_TENANT, time=now, settings=settings),
            ),
            (
                DEMO_TENANT,
                TopUp(id="demo-credit", tenant=DEMO_TENANT, time=now, amount=Decimal(20)),
            ),
        ]
        + [
            (DEMO_TENANT, Record(id=f"demo-sms-{n}", tenant=DEMO_TENANT, time=now, meter="sms"))
            for n in range(25)
        ]
    )
    assert all(outcome.accepted for outcome in outcomes), outcomes
    keys = ApiKeys(database_url)
    try:
        return keys.create(["usage"], DEMO_TENANT)[1]
    finally:
        keys.close()
