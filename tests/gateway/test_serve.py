"""`meterwerk serve` stopped and started again keeps every account, and refuses to start on a
data directory with a different number of hosts."""

from __future__ import annotations

import os
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.accounts import ConfigureTenant, TenantSettings, TopUp
from engine.tariffs import decode_catalog
from meterwerk.serve import (
    ServeError,
    ServeOptions,
    Server,
    create_admin_key,
    default_hosts,
    host_count,
)
from persistence.catalogue import Catalogue, Tenant
from persistence.migrate import migrate
from tests.gateway.conftest import CATALOG, headers, in_process_client

pytestmark = pytest.mark.anyio


def _catalogue(url: str, tenant: str) -> None:
    migrate(url)
    catalogue = Catalogue(url)
    try:
        catalog = decode_catalog(CATALOG)
        for meter in catalog.meters:
            catalogue.save_meter(meter)
        for tariff in catalog.tariffs:
            catalogue.save_tariff(tariff)
        settings = TenantSettings(tariff="api")
        catalogue.save_tenant(Tenant(id=tenant, name=tenant, currency="EUR", settings=settings))
    finally:
        catalogue.close()


async def test_a_stopped_and_started_server_keeps_every_account(
    ray_cluster: Any, tmp_path: Path
) -> None:
    options = ServeOptions(data_dir=str(tmp_path / "data"), hosts=1)
    prefix = f"serve-{uuid.uuid4().hex[:6]}"
    tenant = "acme"
    server = Server(options, prefix=prefix, keep_hosts=False)
    _catalogue(server.config.sql_url, tenant)
    key = create_admin_key(server.config.sql_url)
    body = {"id": "call-1", "tenant": tenant, "meter": "calls", "quantity": 3}
    server.start()
    try:
        settings, now = TenantSettings(tariff="api"), int(time.time())
        setup = server.hosts.apply(
            [
                (tenant, ConfigureTenant(id="c", tenant=tenant, time=now, settings=settings)),
                (tenant, TopUp(id="t", tenant=tenant, time=now, amount=Decimal(5))),
            ]
        )
        assert all(outcome.accepted for outcome in setup), setup
        async with in_process_client(server.app()) as client:
            first = await client.post("/v1/record", json=body, headers=headers(key))
            assert first.status_code == 200 and first.json()["accepted"] is True, first.text
    finally:
        server.stop()

    again = Server(options, prefix=prefix, keep_hosts=False)
    again.start()
    try:
        async with in_process_client(again.app()) as client:
            retry = await client.post("/v1/record", json=body, headers=headers(key))
            assert retry.content == first.content, "a retry after the restart counts once"
            answer = await client.get(f"/v1/tenants/{tenant}/balance", headers=headers(key))
            assert Decimal(answer.json()["balance"]) == Decimal("4.25")
    finally:
        again.stop()


def test_a_data_directory_keeps_its_number_of_hosts(tmp_path: Path) -> None:
    assert host_count(str(tmp_path), 3) == 3
    assert host_count(str(tmp_path), None) == 3
    with pytest.raises(ServeError, match="--hosts 3"):
        host_count(str(tmp_path), 2)


def test_a_new_data_directory_leaves_a_core_to_the_gateway(tmp_path: Path) -> None:
    assert [default_hosts(cores) for cores in (1, 2, 4, 16)] == [1, 1, 3, 15]
    fresh = tmp_path / "fresh"
    assert host_count(str(fresh), None) == default_hosts(os.cpu_count() or 1)
    assert host_count(str(fresh), None) == default_hosts(os.cpu_count() or 1), "kept"
