"""The failure policy: a host that does not answer in time denies by default; a tenant with
``allow_overdraft`` is allowed up to its cap, and the usage is recorded once when the host is
back. The host is a :class:`HostCore` in process behind a transport that can miss its
deadline, so no Ray is needed. Calls cost 0.25 EUR, vm seconds 0.01 EUR (``CATALOG``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from actors.host import HostCore, HostStats
from engine.accounts import (
    Command,
    ConfigureTenant,
    Outcome,
    PeriodUsage,
    Quote,
    QuoteQuery,
    TenantSettings,
    TopUp,
)
from engine.accounts.tariffs import CatalogTariffs
from engine.instants import parse
from engine.tariffs import Tariff, decode_catalog
from gateway.app import create_app
from gateway.hosts import HostUnavailable
from gateway.policy import Pricing
from persistence.catalogue import Catalogue, FailurePolicy, Tenant
from persistence.credentials import ApiKeys
from persistence.migrate import migrate
from tests.actors.fakes import MemoryJournal, MemorySnapshots, MemoryStatements
from tests.gateway.conftest import CATALOG, headers, in_process_client

pytestmark = pytest.mark.anyio

T = parse("2024-03-05T12:00:00Z")
CAP = Decimal("1.00")


class LateHosts:
    """A :class:`gateway.hosts.HostTransport` over one in-process host that can be made to
    miss its deadline: ``down`` (the call never reaches the host) or ``late`` (the host
    applies it, but the answer comes after the deadline)."""

    names: Sequence[str] = ("h0",)

    def __init__(self, core: HostCore, deadline_seconds: float = 0.01) -> None:
        self.core = core
        self.deadline_seconds = deadline_seconds
        self.down = False
        self.late = False

    def host_of(self, root: str) -> str:
        return "h0"

    def close(self) -> None:
        pass

    def send(self, host: str, items: Sequence[tuple[str, Command]]) -> Awaitable[list[Outcome]]:
        return self.apply(host, items)

    async def apply(self, host: str, items: Sequence[tuple[str, Command]]) -> list[Outcome]:
        if self.late:
            self.core.apply(items)
        await self._deadline()
        return self.core.apply(items)

    async def balance(
        self, host: str, root: str, tenant: str
    ) -> tuple[Decimal, Decimal | None] | None:
        await self._deadline()
        return self.core.balance(root, tenant)

    async def usage(
        self, host: str, root: str, tenant: str, now: int
    ) -> PeriodUsage | Outcome | None:
        await self._deadline()
        return self.core.usage(root, tenant, now)

    async def quote(
        self, host: str, root: str, query: QuoteQuery, now: int
    ) -> Quote | Outcome | None:
        await self._deadline()
        return self.core.quote(root, query, now)

    async def ping(self, host: str, timeout_seconds: float) -> None:
        await self._deadline()

    async def stats(self, host: str, timeout_seconds: float) -> HostStats:
        await self._deadline()
        return self.core.stats()

    async def reload_tariffs(self) -> None:
        await self._deadline()

    async def _deadline(self) -> None:
        if self.down or self.late:
            await asyncio.sleep(self.deadline_seconds)
            raise HostUnavailable("timed out")


class Setup:
    def __init__(self, url: str, hosts: LateHosts, key: str) -> None:
        self.url = url
        self.hosts = hosts
        self.key = key
        self.clock = float(T)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    migrate(url)
    catalog = decode_catalog(CATALOG)
    catalogue = Catalogue(url)
    for meter in catalog.meters:
        catalogue.save_meter(meter)
    for tariff in catalog.tariffs:
        catalogue.save_tariff(tariff)
    core = HostCore(
        "h0",
        journal=MemoryJournal(),
        snapshots=MemorySnapshots(),
        statements=MemoryStatements(),
        tariffs=CatalogTariffs(catalog),
    )
    settings = TenantSettings(tariff="api")
    for tenant, policy in (("open", FailurePolicy.allow_overdraft), ("strict", FailurePolicy.deny)):
        cap = CAP if policy is FailurePolicy.allow_overdraft else None
        catalogue.save_tenant(
            Tenant(
                id=tenant,
                name=tenant,
                currency="EUR",
                settings=settings,
                failure_policy=policy,
                overdraft_cap=cap,
            )
        )
        configure = ConfigureTenant(id="c", tenant=tenant, time=T, settings=settings)
        top_up = TopUp(id="t", tenant=tenant, time=T, amount=Decimal(10))
        assert all(o.accepted for o in core.apply([(tenant, configure), (tenant, top_up)]))
    catalogue.close()
    keys = ApiKeys(url)
    key = keys.create(["admin"], None)[1]
    keys.close()
    yield Setup(url, LateHosts(core), key)


@pytest.fixture
async def client(setup: Setup) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(setup.hosts, setup.url, clock=lambda: setup.clock)
    async with in_process_client(app) as client:
        yield client


def gateway(client: httpx.AsyncClient) -> Any:
    return client._transport.app.state.gateway  # type: ignore[attr-defined]


def counted(client: httpx.AsyncClient, policy: str, outcome: str) -> float:
    registry = gateway(client).metrics.registry
    found = registry.get_sample_value(
        "meterwerk_failure_policy_total", {"policy": policy, "outcome": outcome}
    )
    return float(found or 0)


async def post(client: httpx.AsyncClient, setup: Setup, path: str, **body: Any) -> httpx.Response:
    return await client.post(path, json=body, headers=headers(setup.key))


def balance(setup: Setup, tenant: str) -> Decimal:
    found = setup.hosts.core.balance(tenant, tenant)
    assert found is not None
    return found[0]


# Deny ---------------------------------------------------------------------------------------


async def test_the_default_policy_denies_and_counts_it(
    setup: Setup, client: httpx.AsyncClient
) -> None:
    setup.hosts.down = True
    answer = await post(client, setup, "/v1/record", id="r1", tenant="strict", meter="calls")
    assert answer.status_code == 503, answer.text
    assert answer.json()["code"] == "host_unavailable"
    assert answer.headers["Retry-After"] == "1"
    assert counted(client, "deny", "denied") == 1
    assert not gateway(client).overdrafts.queued


# Allow with a capped overdraft --------------------------------------------------------------


async def test_allowed_up_to_the_cap_then_recorded_once_when_the_host_is_back(
    setup: Setup, client: httpx.AsyncClient
) -> None:
    setup.hosts.down = True
    answers = [
        await post(client, setup, "/v1/record", id=f"r{n}", tenant="open", meter="calls")
        for n in range(5)
    ]
    assert [a.status_code for a in answers] == [200] * 4 + [503]
    assert answers[0].json() == {
        "id": "r0",
        "accepted": True,
        "amount": "0.25",
        "message": answers[0].json()["message"],
        "degraded": True,
    }
    # A retry of an allowed request gets the same answer and takes no more of the cap.
    again = await post(client, setup, "/v1/record", id="r0", tenant="open", meter="calls")
    assert again.json() == answers[0].json()
    assert counted(client, "allow_overdraft", "allowed") == 5
    assert counted(client, "allow_overdraft", "cap_exceeded") == 1
    overdrafts = gateway(client).overdrafts
    assert overdrafts.outstanding == {"open": CAP}
    assert await overdrafts.flush() == 0  # still away: kept

    setup.hosts.down = False
    assert await overdrafts.flush() == 4
    assert balance(setup, "open") == Decimal("9.00")
    assert (overdrafts.queued, overdrafts.outstanding) == ({}, {})
    assert counted(client, "allow_overdraft", "recorded") == 4
    # The room is back: the next failure is allowed again.
    setup.hosts.down = True
    allowed = await post(client, setup, "/v1/record", id="r9", tenant="open", meter="calls")
    assert allowed.json()["degraded"] is True


async def test_a_command_the_host_applied_after_its_deadline_is_charged_once(
    setup: Setup, client: httpx.AsyncClient
) -> None:
    setup.hosts.late = True
    answer = await post(client, setup, "/v1/record", id="late-1", tenant="open", meter="calls")
    assert answer.json()["degraded"] is True
    setup.hosts.late = False
    assert await gateway(client).overdrafts.flush() == 1
    assert balance(setup, "open") == Decimal("9.75")
    assert counted(client, "allow_overdraft", "recorded") == 1


async def test_a_reservation_allowed_here_is_captured_and_released_here(
    setup: Setup, client: httpx.AsyncClient
) -> None:
    setup.hosts.down = True
    held = await post(
        client, setup, "/v1/authorize", id="a1", tenant="open", meter="calls", quantity=4
    )
    assert held.status_code == 200, held.text
    assert (held.json()["amount"], held.json()["expires_at"]) == ("1.00", int(T) + 300)
    full = await post(client, setup, "/v1/authorize", id="a2", tenant="open", meter="calls")
    assert full.status_code == 503  # the cap is held by a1
    more = await post(
        client, setup, "/v1/capture", id="k0", tenant="open", reservation="a1", quantity=5
    )
    assert (more.json()["accepted"], more.json()["reason"]) == (False, "insufficient_credit")
    captured = await post(
        client, setup, "/v1/capture", id="k1", tenant="open", reservation="a1", quantity=3
    )
    assert captured.json() == captured.json() | {"accepted": True, "amount": "0.75"}
    other = await post(client, setup, "/v1/authorize", id="a3", tenant="open", meter="calls")
    assert other.json()["degraded"] is True
    released = await post(client, setup, "/v1/release", id="x3", tenant="open", reservation="a3")
    assert released.json()["accepted"] is True
    setup.hosts.down = False
    assert await gateway(client).overdrafts.flush() == 1
    assert balance(setup, "open") == Decimal("9.25")
    gone = await post(client, setup, "/v1/capture", id="k3", tenant="open", reservation="a3")
    assert gone.status_code == 404  # released here, and the host never knew it


async def test_a_session_allowed_here_is_granted_what_the_cap_covers(
    setup: Setup, client: httpx.AsyncClient
) -> None:
    setup.hosts.down = True
    started = await post(
        client, setup, "/v1/sessions/start", id="s1", tenant="open", session="vm-1", meter="vm"
    )
    assert started.status_code == 200, started.text
    assert started.json()["granted_until"] == int(T) + 100  # 1.00 at 0.01 a second
    setup.clock += 30
    beat = await post(
        client, setup, "/v1/sessions/heartbeat", id="s2", tenant="open", session="vm-1"
    )
    assert beat.json()["granted_until"] == int(T) + 100
    stopped = await post(client, setup, "/v1/sessions/stop", id="s3", tenant="open", session="vm-1")
    assert (stopped.json()["amount"], stopped.json()["degraded"]) == ("0.30", True)
    setup.hosts.down = False
    assert await gateway(client).overdrafts.flush() == 1
    assert balance(setup, "open") == Decimal("9.70")


REGIONAL = b"""{"key": "regional", "versions": [{"version": 1,
  "effective_from": "2024-01-01T00:00:00Z", "currency": "EUR", "period": {"unit": "month"},
  "charges": [{"key": "vm", "meter": "vm", "time_basis": {"unit": "second"}, "price": {
    "model": "by_attribute", "property": "region",
    "prices": [{"value": "eu", "price": {"model": "per_unit", "unit_price": "0.01"}}]}}]}]}"""


async def test_a_session_is_priced_with_its_own_properties(
    setup: Setup, client: httpx.AsyncClient
) -> None:
    """A tariff that prices only some values of a property (no default) prices a session that
    names one of them, so the session is allowed, not denied as unpriced."""
    catalogue = Catalogue(setup.url)
    catalogue.save_tariff(msgspec.json.decode(REGIONAL, type=Tariff))
    settings = TenantSettings(tariff="regional")
    catalogue.save_tenant(
        Tenant(
            id="regional",
            name="regional",
            currency="EUR",
            settings=settings,
            failure_policy=FailurePolicy.allow_overdraft,
            overdraft_cap=CAP,
        )
    )
    catalogue.close()
    setup.hosts.down = True
    body = {"session": "vm-eu", "meter": "vm", "properties": {"region": "eu"}}
    started = await post(client, setup, "/v1/sessions/start", id="s1", tenant="regional", **body)
    assert started.status_code == 200, started.text
    assert started.json()["granted_until"] == int(T) + 100  # 1.00 at 0.01 a second
    assert counted(client, "allow_overdraft", "unpriced") == 0


async def test_an_unknown_tenant_or_a_catalogue_without_a_price_is_denied(
    setup: Setup, client: httpx.AsyncClient
) -> None:
    setup.hosts.down = True
    answer = await post(client, setup, "/v1/record", id="u1", tenant="open", meter="nope")
    assert answer.status_code == 503
    assert counted(client, "allow_overdraft", "unpriced") == 1
    # Queries and the other commands are not covered by the policy.
    balance_answer = await client.get("/v1/tenants/open/balance", headers=headers(setup.key))
    assert balance_answer.status_code == 503


def test_the_estimate_ignores_free_units_the_tenant_may_have_used() -> None:
    catalog = decode_catalog(
        CATALOG.replace(b'"meter": "calls",', b'"meter": "calls", "free_units": "5",')
    )
    version = catalog.tariff("api").versions[0]
    pricing = Pricing("api", version, catalog.meters_by_key(), "UTC")
    assert pricing.estimate("calls", Decimal(2), {}, 0, T) == Decimal("0.50")
    assert pricing.estimate("vm", Decimal(2), {}, 10, T) == Decimal("0.20")
    assert pricing.estimate("nope", Decimal(1), {}, 0, T) is None


async def test_the_queue_flushes_itself_and_an_unreported_session_ends_at_its_grant(
    setup: Setup, client: httpx.AsyncClient
) -> None:
    overdrafts = gateway(client).overdrafts
    overdrafts.retry_seconds = 0.01
    setup.hosts.down = True
    await post(
        client, setup, "/v1/sessions/start", id="s1", tenant="open", session="vm-1", meter="vm"
    )
    setup.clock += 500  # never stopped: recorded up to granted_until, 100 s
    setup.hosts.down = False
    for _ in range(200):
        if not (overdrafts.sessions or overdrafts.queued):
            break
        await asyncio.sleep(0.01)
    assert balance(setup, "open") == Decimal("9.00")
    assert counted(client, "allow_overdraft", "recorded") == 1


async def test_what_a_stopping_gateway_cannot_record_is_counted_as_lost(setup: Setup) -> None:
    app = create_app(setup.hosts, setup.url, clock=lambda: setup.clock)
    setup.hosts.down = True
    async with in_process_client(app) as client:
        await post(client, setup, "/v1/record", id="r1", tenant="open", meter="calls")
    registry = app.state.gateway.metrics.registry
    labels = {"policy": "allow_overdraft", "outcome": "lost"}
    assert registry.get_sample_value("meterwerk_failure_policy_total", labels) == 1
