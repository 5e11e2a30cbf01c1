"""Zero overspend over real HTTP: 64 connections race to spend one prepaid balance to zero.

A real uvicorn server (in a thread of its own, on a free port) serves the gateway in front of
the module's account host. The price per call is uneven (0.07) and the quantities differ, so
the last cents decide: the approved charges never sum past the balance, the final balance is
the initial one less exactly what was approved, and every denial is ``insufficient_credit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import uvicorn

from engine.accounts import ConfigureTenant, TenantSettings, TopUp
from engine.tariffs import decode_catalog
from gateway.app import create_app
from persistence.catalogue import Tenant
from tests.gateway.conftest import Stack, headers

pytestmark = pytest.mark.anyio

CONNECTIONS = 64
CREDIT = Decimal("10.00")
PRICE = Decimal("0.07")
QUANTITIES = (1, 2, 3)
TARIFF = b"""{"meters": [{"key": "race_calls", "unit": "call", "aggregation": "count"}],
  "tariffs": [{"key": "race", "versions": [{"version": 1,
    "effective_from": "2024-01-01T00:00:00Z", "currency": "EUR", "period": {"unit": "month"},
    "payment_mode": "prepaid",
    "charges": [{"key": "calls", "meter": "race_calls",
                 "price": {"model": "per_unit", "unit_price": "0.07"}}]}]}]}"""


@pytest.fixture(scope="module")
def server(stack: Stack) -> Iterator[str]:
    """The gateway on a real socket; its base URL."""
    catalog = decode_catalog(TARIFF)
    for meter in catalog.meters:
        stack.catalogue.save_meter(meter)
    for tariff in catalog.tariffs:
        stack.catalogue.save_tariff(tariff)
    stack.hosts.reload_tariffs()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        create_app(stack.hosts, stack.url), loop="asyncio", access_log=False, log_level="warning"
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        running.should_exit = True
        thread.join(30)
        listener.close()


def prepaid_tenant(stack: Stack) -> tuple[str, str]:
    """A new tenant on the uneven tariff with ``CREDIT``, and its usage key."""
    tenant = f"race-{uuid.uuid4().hex[:10]}"
    settings = TenantSettings(tariff="race")
    stack.catalogue.save_tenant(Tenant(id=tenant, name=tenant, currency="EUR", settings=settings))
    now = int(time.time())
    outcomes = stack.hosts.apply(
        [
            (tenant, ConfigureTenant(id="c", tenant=tenant, time=now, settings=settings)),
            (tenant, TopUp(id="t", tenant=tenant, time=now, amount=CREDIT)),
        ]
    )
    assert all(outcome.accepted for outcome in outcomes), outcomes
    return tenant, stack.app_key(tenant)


@contextlib.asynccontextmanager
async def racing_client(base: str, key: str) -> Any:
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(
        base_url=base, headers=headers(key), limits=limits, timeout=30.0
    ) as client:
        yield client


async def command(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await client.post(path, json=body)
    assert answer.status_code == 200, answer.text
    decision: dict[str, Any] = answer.json()
    if not decision["accepted"]:
        assert decision["reason"] == "insufficient_credit", decision
    return decision


async def final_balance(client: httpx.AsyncClient, tenant: str) -> tuple[Decimal, Decimal]:
    answer = await client.get(f"/v1/tenants/{tenant}/balance")
    assert answer.status_code == 200, answer.text
    return Decimal(answer.json()["balance"]), Decimal(answer.json()["available"])


def assert_no_overspend(approved: list[Decimal], balance: Decimal, available: Decimal) -> None:
    spent = sum(approved, Decimal(0))
    assert spent <= CREDIT, f"{spent} approved of a balance of {CREDIT}"
    assert balance == available == CREDIT - spent >= 0
    # Every racer stopped at a denial, so what is left cannot pay for the largest ask.
    assert balance < PRICE * max(QUANTITIES)
    assert all(amount % PRICE == 0 for amount in approved)


async def test_64_connections_racing_records_never_overspend(stack: Stack, server: str) -> None:
    tenant, key = prepaid_tenant(stack)
    approved: list[Decimal] = []

    async def racer(client: httpx.AsyncClient, number: int) -> None:
        for attempt in range(1_000):
            quantity = QUANTITIES[(number + attempt) % len(QUANTITIES)]
            body = {
                "id": f"{number}-{attempt}",
                "tenant": tenant,
                "meter": "race_calls",
                "quantity": quantity,
            }
            decision = await command(client, "/v1/record", body)
            if not decision["accepted"]:
                return
            assert Decimal(decision["amount"]) == PRICE * quantity
            approved.append(Decimal(decision["amount"]))
        raise AssertionError("a racer was never denied")

    async with racing_client(server, key) as client:
        await asyncio.gather(*(racer(client, number) for number in range(CONNECTIONS)))
        balance, available = await final_balance(client, tenant)
    assert_no_overspend(approved, balance, available)


async def test_64_connections_racing_authorise_and_capture_never_overspend(
    stack: Stack, server: str
) -> None:
    tenant, key = prepaid_tenant(stack)
    captured: list[Decimal] = []

    async def racer(client: httpx.AsyncClient, number: int) -> None:
        for attempt in range(1_000):
            quantity = QUANTITIES[(number + attempt) % len(QUANTITIES)]
            reservation = f"{number}-{attempt}"
            body = {
                "id": reservation,
                "tenant": tenant,
                "meter": "race_calls",
                "quantity": quantity,
            }
            held = await command(client, "/v1/authorize", body)
            if not held["accepted"]:
                return
            capture = {"id": f"{reservation}-c", "tenant": tenant, "reservation": reservation}
            charged = await command(client, "/v1/capture", capture)
            assert charged["accepted"] and Decimal(charged["amount"]) == PRICE * quantity
            captured.append(Decimal(charged["amount"]))
        raise AssertionError("a racer was never denied")

    async with racing_client(server, key) as client:
        await asyncio.gather(*(racer(client, number) for number in range(CONNECTIONS)))
        balance, available = await final_balance(client, tenant)
    assert_no_overspend(captured, balance, available)
