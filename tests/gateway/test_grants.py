"""Grants held by the gateway, against a real account host: a busy tenant's one-step records
are answered from a slice, reported to the cent, remembered for retries on every path, never
beyond the credit, and given back at shutdown; a tariff that is not flat never gets a slice."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest

from engine.accounts import (
    AuthorizeAndRecord,
    ConfigureTenant,
    Outcome,
    TenantSettings,
    TopUp,
)
from engine.accounts.commands import ONE_UNIT
from engine.tariffs import decode_catalog
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.grants import FORGET_PER_ADD, Answered, AnsweredIds, answered_key
from persistence.catalogue import Tenant
from tests.gateway.conftest import PRICE, Stack, gateway_client, headers, in_process_client

pytestmark = pytest.mark.anyio

GRANTS = GatewayConfig(grants_enabled=True, grants_min_rate=5, grants_report_seconds=0.02)
TIERED = b"""{
  "meters": [{"key": "calls", "unit": "call", "aggregation": "count"}],
  "tariffs": [{"key": "tiered", "versions": [{"version": 1,
    "effective_from": "2024-01-01T00:00:00Z", "currency": "EUR", "period": {"unit": "month"},
    "charges": [{"key": "calls", "meter": "calls", "price": {"model": "graduated", "tiers": [
      {"up_to": "1000", "unit_price": "0.25"}, {"up_to": null, "unit_price": "0.1"}]}}]}]}]
}"""


async def record(client: httpx.AsyncClient, key: str, tenant: str, **extra: Any) -> dict[str, Any]:
    body = {"id": uuid.uuid4().hex, "tenant": tenant, "meter": "calls"} | extra
    response = await client.post("/v1/record", json=body, headers=headers(key))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def until_granted(client: httpx.AsyncClient, key: str, tenant: str) -> list[dict[str, Any]]:
    """Records, one after the other, until one is answered from a grant (a few, at the test's
    rate of 5 a second), or 200 of them."""
    answers = [await record(client, key, tenant)]
    while "grant" not in answers[-1] and len(answers) < 200:
        answers.append(await record(client, key, tenant))
    return answers


async def balance(stack: Stack, tenant: str) -> tuple[Decimal, Decimal]:
    async with gateway_client(stack.hosts, stack.url) as client:
        response = await client.get(
            f"/v1/tenants/{tenant}/balance", headers=headers(stack.admin_key)
        )
    body = response.json()
    return Decimal(body["balance"]), Decimal(body["available"])


async def settled(stack: Stack, tenant: str, expected: Decimal) -> tuple[Decimal, Decimal]:
    """The balance once it is ``expected`` (the reports reached the host), or after 5 s."""
    deadline = time.monotonic() + 5
    found = await balance(stack, tenant)
    while found[0] != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        found = await balance(stack, tenant)
    return found


def spent(answers: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(a["amount"]) for a in answers if a["accepted"]), Decimal(0))


async def test_a_busy_tenant_is_answered_from_a_grant_and_charged_to_the_cent(
    stack: Stack,
) -> None:
    tenant = stack.tenant(credit="100")
    key = stack.app_key(tenant)
    app = create_app(stack.hosts, stack.url, config=GRANTS)
    async with in_process_client(app) as client:
        answers = await until_granted(client, key, tenant)
        assert "grant" in answers[-1], answers[-1]
        answers += [await record(client, key, tenant, quantity=2) for _ in range(30)]
        local = [a for a in answers if "grant" in a]
        assert len(local) >= 30
        assert all(a["accepted"] and "balance" not in a for a in local)
        assert {Decimal(a["amount"]) for a in local[1:]} == {2 * PRICE}
        # What a slice cannot price alone takes the host path: a fraction of a call is
        # refused there, as it always was.
        fraction = {"id": "half", "tenant": tenant, "meter": "calls", "quantity": "0.5"}
        refused = await client.post("/v1/record", json=fraction, headers=headers(key))
        assert refused.status_code == 422
        reported, _available = await settled(stack, tenant, Decimal(100) - spent(answers))
        assert reported == Decimal(100) - spent(answers)
        assert app.state.gateway.grants.outstanding() >= 1
    # Shutdown reports every slice final: nothing is held any more.
    assert await balance(stack, tenant) == (Decimal(100) - spent(answers),) * 2
    assert app.state.gateway.grants.outstanding() == 0


async def test_a_retry_gets_the_first_answer_on_every_path_and_is_charged_once(
    stack: Stack,
) -> None:
    tenant = stack.tenant(credit="100")
    key = stack.app_key(tenant)
    async with gateway_client(stack.hosts, stack.url, GRANTS) as client:
        answers = await until_granted(client, key, tenant)
        first = answers[-1]
        body = {"id": first["id"], "tenant": tenant, "meter": "calls"}
        again = await client.post("/v1/record", json=body, headers=headers(key))
        assert again.json() == first
        other = await client.post("/v1/record", json=body | {"quantity": 2}, headers=headers(key))
        assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
        charged = Decimal(100) - spent(answers)
        assert (await settled(stack, tenant, charged))[0] == charged
        # After the report, the host knows the answer: through a gateway without grants ...
        async with gateway_client(stack.hosts, stack.url) as plain:
            elsewhere = await plain.post("/v1/record", json=body, headers=headers(key))
        assert elsewhere.status_code == 200 and elsewhere.json() == first
        # ... and as a command sent to the host directly.
        retry = AuthorizeAndRecord(
            id=first["id"], tenant=tenant, time=int(time.time()), meter="calls"
        )
        [direct] = stack.hosts.apply([(tenant, retry)])
        assert direct == Outcome(accepted=True, amount=PRICE, grant=first["grant"])
        assert (await balance(stack, tenant))[0] == charged


async def test_a_busy_slice_that_retires_opens_the_next_at_once(stack: Stack) -> None:
    """A slice's own answers are its rate (they are not counted one by one): when it is
    spent, the next slice for its key is asked for with the request that spent it, not
    after more requests took the host path."""
    tenant = stack.tenant(credit="100")
    key = stack.app_key(tenant)
    config = msgspec.structs.replace(GRANTS, grants_units_max=20)
    app = create_app(stack.hosts, stack.url, config=config)
    book = app.state.gateway.grants
    async with in_process_client(app) as client:
        answers = await until_granted(client, key, tenant)
        assert "grant" in answers[-1], answers[-1]
        [(slice_key, first)] = book.slots.items()
        while not first.retired:
            answers.append(await record(client, key, tenant))
        assert first.answered >= 1 and first.left < first.low
        assert slice_key in book.opening or slice_key in book.slots
        # Answers from the next slice follow; every one is charged to the cent.
        while answers[-1].get("grant") in (None, first.grant):
            answers.append(await record(client, key, tenant))
        assert answers[-1]["grant"] != first.grant
    charged = Decimal(100) - spent(answers)
    assert await balance(stack, tenant) == (charged, charged)


async def test_grants_never_approve_more_than_the_credit(stack: Stack) -> None:
    tenant = stack.tenant(credit="5")  # 20 calls
    key = stack.app_key(tenant)
    async with gateway_client(stack.hosts, stack.url, GRANTS) as client:
        answers = [await record(client, key, tenant) for _ in range(30)]
        answers += await asyncio.gather(*(record(client, key, tenant) for _ in range(20)))
    approved = spent(answers)
    assert approved <= Decimal(5)
    assert any("grant" in a for a in answers)
    refusals = {a.get("reason") for a in answers if not a["accepted"]}
    assert refusals == {"insufficient_credit"}
    assert await balance(stack, tenant) == (Decimal(5) - approved,) * 2


async def test_a_tariff_that_is_not_flat_never_gets_a_grant(stack: Stack) -> None:
    catalogue = stack.catalogue
    for tariff in decode_catalog(TIERED).tariffs:
        catalogue.save_tariff(tariff)
    stack.hosts.reload_tariffs()
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    settings = TenantSettings(tariff="tiered")
    catalogue.save_tenant(Tenant(id=tenant, name=tenant, currency="EUR", settings=settings))
    now = int(time.time())
    outcomes = stack.hosts.apply(
        [
            (tenant, ConfigureTenant(id=f"{tenant}-c", tenant=tenant, time=now, settings=settings)),
            (tenant, TopUp(id=f"{tenant}-t", tenant=tenant, time=now, amount=Decimal(100))),
        ]
    )
    assert all(outcome.accepted for outcome in outcomes), outcomes
    key = stack.app_key(tenant)
    app = create_app(stack.hosts, stack.url, config=GRANTS)
    async with in_process_client(app) as client:
        answers = [await record(client, key, tenant) for _ in range(40)]
        assert all(a["accepted"] and "grant" not in a and "balance" in a for a in answers)
        assert (tenant, tenant, "calls") in app.state.gateway.grants.backoff


def test_grants_are_turned_on_from_the_environment() -> None:
    environ = {"METERWERK_GRANTS_ENABLED": "true", "METERWERK_GRANTS_MIN_RATE": "20"}
    config = GatewayConfig.from_environment(environ | {"METERWERK_PORT": "8080"})
    assert config.grants_enabled and config.grants_min_rate == 20
    assert GatewayConfig.from_environment({}) == GatewayConfig()
    # A slice must outlive the margin its final report keeps before its expiry.
    with pytest.raises(msgspec.ValidationError, match="grants_validity_seconds"):
        GatewayConfig.from_environment(environ | {"METERWERK_GRANTS_VALIDITY_SECONDS": "20"})


ANSWER = Answered(tenant="t", meter="calls", quantity=ONE_UNIT, amount=PRICE, grant="g")


def test_answered_ids_are_remembered_for_a_generation_and_released_a_few_at_a_time() -> None:
    remembered = AnsweredIds(maximum=200, seconds=3600.0)
    answer = ANSWER
    # Nothing a remembered answer holds is tracked by the garbage collector.
    assert not any(map(gc.is_tracked, (answered_key("t", "x"), answer)))
    for n in range(200):
        remembered.add(answered_key("t", f"id-{n}"), answer, now=0.0)
    assert all(remembered.get(answered_key("t", f"id-{n}")) for n in range(200))
    assert remembered.get(answered_key("u", "id-1")) is None  # another tree's id
    # The first generation is forgotten at once when the third begins, and released over
    # the next adds, all of it before the third generation is full.
    held = []
    for n in range(200, 300):
        remembered.add(answered_key("t", f"id-{n}"), answer, now=0.0)
        assert remembered.get(answered_key("t", "id-0")) is None
        held.append(remembered.held())
    assert held[0] == 200 + 1 - FORGET_PER_ADD
    assert held[-1] == 200 and not remembered.forgetting
    assert all(remembered.get(answered_key("t", f"id-{n}")) for n in range(100, 300))


def test_a_generation_also_ends_by_age() -> None:
    remembered = AnsweredIds(maximum=200, seconds=10.0)
    answer = ANSWER
    remembered.add("t/a", answer, now=0.0)
    remembered.add("t/b", answer, now=10.0)  # a new generation: "a" is still remembered
    assert remembered.get("t/a") and remembered.get("t/b")
    remembered.add("t/c", answer, now=20.0)
    assert remembered.get("t/a") is None and remembered.get("t/b")
    assert remembered.held() == 2  # "a" released with the add that forgot it
