"""One account host per test module, over a SQLite catalogue in a temporary directory; the
gateway app in front of it, called in process through httpx's ASGI transport."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from actors.ray_host import Hosts
from actors.storage import StorageConfig
from engine.accounts import ConfigureTenant, Funding, TenantSettings, TopUp
from engine.tariffs import decode_catalog
from gateway.app import create_app
from gateway.config import GatewayConfig
from persistence.catalogue import Catalogue, Tenant
from persistence.credentials import ApiKeys
from persistence.migrate import migrate

PRICE = Decimal("0.25")
CATALOG = b"""{
  "meters": [{"key": "calls", "unit": "call", "aggregation": "count"},
             {"key": "vm", "unit": "second", "aggregation": "sum"}],
  "tariffs": [{"key": "api", "versions": [{"version": 1,
    "effective_from": "2024-01-01T00:00:00Z", "currency": "EUR", "period": {"unit": "month"},
    "charges": [
      {"key": "calls", "meter": "calls", "price": {"model": "per_unit", "unit_price": "0.25"}},
      {"key": "vm", "meter": "vm", "price": {"model": "per_unit", "unit_price": "0.01"},
       "time_basis": {"unit": "second"}}]}]}]
}"""


class Stack:
    """A running host, its SQL catalogue, and an admin key."""

    def __init__(self, hosts: Hosts, url: str) -> None:
        self.hosts = hosts
        self.url = url
        self.catalogue = Catalogue(url)
        self.keys = ApiKeys(url)
        self.admin_key = self.keys.create(["admin"], None)[1]

    def tenant(self, credit: str = "10", parent: str | None = None) -> str:
        """A new tenant with ``credit`` on the host (a root, or a pooled child of ``parent``)."""
        tenant = f"t-{uuid.uuid4().hex[:10]}"
        settings = (
            TenantSettings(tariff="api")
            if parent is None
            else TenantSettings(parent=parent, funding=Funding.pool)
        )
        self.catalogue.save_tenant(
            Tenant(id=tenant, name=tenant, currency="EUR", settings=settings)
        )
        root = parent or tenant
        now = int(time.time())
        configure = ConfigureTenant(id=f"{tenant}-c", tenant=tenant, time=now, settings=settings)
        commands: list[Any] = [configure]
        if parent is None:
            credit_amount = Decimal(credit)
            commands.append(TopUp(id=f"{tenant}-t", tenant=tenant, time=now, amount=credit_amount))
        outcomes = self.hosts.apply([(root, command) for command in commands])
        assert all(outcome.accepted for outcome in outcomes), outcomes
        return tenant

    def app_key(self, root: str) -> str:
        return self.keys.create(["usage"], root)[1]

    def close(self) -> None:
        self.catalogue.close()
        self.keys.close()


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # Ray's ObjectRefs are awaited on asyncio


@pytest.fixture(scope="module")
def stack(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data: Path = tmp_path_factory.mktemp("gateway")
    config = StorageConfig(data_dir=str(data))
    migrate(config.sql_url)
    catalogue = Catalogue(config.sql_url)
    catalog = decode_catalog(CATALOG)
    for meter in catalog.meters:
        catalogue.save_meter(meter)
    for tariff in catalog.tariffs:
        catalogue.save_tariff(tariff)
    catalogue.close()
    # The hosts read their tariffs from the SQL catalogue, as `meterwerk serve` runs them.
    hosts = Hosts(1, config, prefix=f"gw-{uuid.uuid4().hex[:6]}")
    hosts.start()
    stack = Stack(hosts, config.sql_url)
    try:
        yield stack
    finally:
        hosts.stop()
        stack.close()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(stack.hosts, stack.url) as client:
        yield client


@contextlib.asynccontextmanager
async def gateway_client(
    hosts: Any, url: str, config: GatewayConfig | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling a fresh gateway app in process."""
    async with in_process_client(create_app(hosts, url, config=config)) as client:
        yield client


@contextlib.asynccontextmanager
async def in_process_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling ``app`` in process, with its lifespan run."""
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway") as client,
    ):
        yield client
