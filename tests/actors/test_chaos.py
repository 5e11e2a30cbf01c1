"""Chaos: real host processes killed with SIGKILL under load, and the whole server stopped.

While a client sends authorisations with unique ids, the host process is killed; Ray restarts
it and it recovers from its snapshot and journal. The client retries what was not answered,
with the same ids. Afterwards every acknowledged command is in the balance exactly once, no
reservation outlives its time to live, and every ledger sums to zero. The same runs for each
journal backend.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.accounts import Authorize, AuthorizeAndRecord, ConfigureTenant, TenantSettings, TopUp
from tests.engine.helpers import calls_catalog

PRICE = Decimal("0.01")
CREDIT = Decimal(1_000_000)
BATCHES = 30
BATCH = 50

CATALOG = calls_catalog(str(PRICE))


def _config(tmp_path: Path, journal_url: str | None) -> Any:
    from actors.storage import StorageConfig

    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(CATALOG))
    return StorageConfig(
        data_dir=str(tmp_path / "data"),
        journal_url=journal_url,
        catalog_path=str(catalog),
        snapshot_every_commands=400,
    )


def _send_until_answered(
    transport: Any, loop: asyncio.AbstractEventLoop, items: list[tuple[str, Any]], deadline: float
) -> list[Any]:
    """Send a batch as the gateway does (over the host's channel); if the host died before
    answering, send the same batch again, to wherever Ray restarted it."""
    from gateway.hosts import HostUnavailable

    while True:
        try:
            return loop.run_until_complete(transport.apply(transport.names[0], items))
        except HostUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(params=["file", "postgres", "redis"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if request.param == "file":
        return None
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(request.getfixturevalue("redis_url"))


def test_a_host_killed_under_load_loses_and_doubles_nothing(
    ray_cluster: Any, tmp_path: Path, journal_url: str | None
) -> None:
    import ray

    from actors.ray_host import Hosts
    from gateway.hosts import RayHosts

    tenant = f"acme-{uuid.uuid4().hex[:8]}"
    hosts = Hosts(1, _config(tmp_path, journal_url), prefix=f"chaos-{uuid.uuid4().hex[:6]}")
    hosts.start()
    transport = RayHosts(hosts, timeout_seconds=5.0)
    loop = asyncio.new_event_loop()
    try:
        now = int(time.time())
        setup = hosts.apply(
            [
                (
                    tenant,
                    ConfigureTenant(
                        id="c", tenant=tenant, time=now, settings=TenantSettings(tariff="api")
                    ),
                ),
                (tenant, TopUp(id="t", tenant=tenant, time=now, amount=CREDIT)),
                (
                    tenant,
                    Authorize(
                        id="short",
                        tenant=tenant,
                        time=now,
                        meter="calls",
                        quantity=Decimal(100),
                        ttl_seconds=2,
                    ),
                ),
            ]
        )
        assert all(outcome.accepted for outcome in setup)
        host = next(iter(hosts.handles.values()))
        pid = ray.get(host.pid.remote())
        deadline = time.monotonic() + 120
        answered = 0
        for batch in range(BATCHES):
            if batch == BATCHES // 2:
                os.kill(pid, signal.SIGKILL)
            items = [
                (
                    tenant,
                    AuthorizeAndRecord(
                        id=f"b{batch}-{n}", tenant=tenant, time=int(time.time()), meter="calls"
                    ),
                )
                for n in range(BATCH)
            ]
            outcomes = _send_until_answered(transport, loop, items, deadline)
            assert all(outcome.accepted for outcome in outcomes)
            answered += len(outcomes)
        assert ray.get(host.pid.remote()) != pid, "Ray restarted the host in a new process"
        time.sleep(2.5)  # past the short reservation's time to live; the host clock fires it
        balance, available = ray.get(host.balance.remote(tenant, tenant))
        assert Decimal(balance) == CREDIT - PRICE * BATCHES * BATCH
        assert Decimal(available) == Decimal(balance), "the expired reservation holds nothing"
        audit = ray.get(host.audit.remote())
        assert audit["reservations"] == 0
        assert answered == BATCHES * BATCH
    finally:
        loop.run_until_complete(_closed(transport))
        loop.close()
        hosts.stop()
        _forget_journals(hosts)


async def _closed(transport: Any) -> None:
    transport.close()


def _forget_journals(hosts: Any) -> None:
    """Leave nothing behind on a shared Postgres or Redis."""
    from actors.storage import open_host_journal
    from persistence.journal import JournalFailed

    for name in hosts.names:
        deadline = time.monotonic() + 20
        while True:
            try:
                # The killed host's database session may linger a moment with the lock.
                journal = open_host_journal(hosts.config, name)
                break
            except JournalFailed:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        journal.trim(journal.last_sequence())
        journal.close()


def test_the_whole_server_stopped_and_started_keeps_every_cent(
    ray_cluster: Any, tmp_path: Path, journal_url: str | None
) -> None:
    import ray

    from actors.ray_host import Hosts

    config = _config(tmp_path, journal_url)
    prefix = f"restart-{uuid.uuid4().hex[:6]}"
    tenants = [f"t{n}" for n in range(6)]
    hosts = Hosts(2, config, prefix=prefix)
    hosts.start()
    now = int(time.time())
    for tenant in tenants:
        hosts.apply(
            [
                (
                    tenant,
                    ConfigureTenant(
                        id="c", tenant=tenant, time=now, settings=TenantSettings(tariff="api")
                    ),
                ),
                (tenant, TopUp(id="t", tenant=tenant, time=now, amount=Decimal(5))),
            ]
        )
    hosts.apply(
        [
            (tenant, AuthorizeAndRecord(id=f"{tenant}-{n}", tenant=tenant, time=now, meter="calls"))
            for tenant in tenants
            for n in range(7)
        ]
    )
    hosts.stop()  # every host process gone, nothing restarted
    again = Hosts(2, config, prefix=prefix)
    again.start()
    try:
        for tenant in tenants:
            host = again.handles[again.host_of(tenant)]
            balance, _ = ray.get(host.balance.remote(tenant, tenant))
            assert Decimal(balance) == Decimal("4.93")
        retry = again.apply(
            [
                (
                    tenants[0],
                    AuthorizeAndRecord(
                        id=f"{tenants[0]}-6", tenant=tenants[0], time=now, meter="calls"
                    ),
                )
            ]
        )
        assert retry[0].balance == Decimal("4.93"), "a retry after the restart counts once"
    finally:
        again.stop()
        _forget_journals(again)
