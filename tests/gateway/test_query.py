"""The read-only queries over HTTP against a real account host: period-to-date usage and
the quote, their scopes and errors. Calls cost 0.25 EUR each (see ``conftest.CATALOG``)."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from engine.periods import PeriodSpec, PeriodUnit, period_containing
from tests.gateway.conftest import Stack, headers

pytestmark = pytest.mark.anyio


async def quote(client: httpx.AsyncClient, key: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/quote", json=body, headers=headers(key))


async def usage(client: httpx.AsyncClient, key: str, tenant: str) -> httpx.Response:
    return await client.get(f"/v1/tenants/{tenant}/usage", headers=headers(key))


async def record(client: httpx.AsyncClient, key: str, tenant: str, quantity: int) -> Decimal:
    body = {"id": uuid.uuid4().hex, "tenant": tenant, "meter": "calls", "quantity": quantity}
    answer = await client.post("/v1/record", json=body, headers=headers(key))
    assert answer.status_code == 200 and answer.json()["accepted"], answer.text
    return Decimal(answer.json()["amount"])


async def test_usage_so_far_with_its_period_lines_and_total(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    tenant = stack.tenant(credit="10")
    key = stack.app_key(tenant)
    await record(client, key, tenant, 3)
    answer = await usage(client, key, tenant)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    month = period_containing(PeriodSpec(unit=PeriodUnit.month), "UTC", int(time.time()))
    assert (body["period_start"], body["period_end"]) == (month.start, month.end)
    assert (body["tenant"], body["currency"]) == (tenant, "EUR")
    assert {m["meter"]: Decimal(m["quantity"]) for m in body["meters"]} == {
        "calls": 3,
        "vm": 0,
    }
    calls = next(line for line in body["lines"] if line["charge"] == "calls")
    assert (calls["amount"], calls["kind"]) == ("0.75", "usage")
    assert Decimal(body["total"]) == Decimal(body["charged"]) == Decimal("0.75")


async def test_a_quote_prices_without_changing_anything_and_the_record_costs_as_much(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    tenant = stack.tenant(credit="10")
    key = stack.app_key(tenant)
    answer = await quote(client, key, {"tenant": tenant, "meter": "calls", "quantity": 4})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body == {
        "tenant": tenant,
        "meter": "calls",
        "quantity": "4",
        "amount": "1.00",
        "currency": "EUR",
        "allowed": True,
        "available": "10",
    }
    assert await record(client, key, tenant, 4) == Decimal("1.00")
    too_much = await quote(client, key, {"tenant": tenant, "meter": "calls", "quantity": "37"})
    assert too_much.json()["allowed"] is False
    assert too_much.json()["reason"] == "insufficient_credit"
    balance = await client.get(f"/v1/tenants/{tenant}/balance", headers=headers(key))
    assert Decimal(balance.json()["balance"]) == Decimal("9.00")


async def test_a_sub_tenant_without_a_tariff_sees_its_share_of_the_parents_period(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    root = stack.tenant(credit="10")
    child = stack.tenant(parent=root)
    key = stack.app_key(root)
    await record(client, key, child, 2)
    body = (await usage(client, key, child)).json()
    assert body["lines"] == [] and body["breakdown"] == [
        {"tenant": child, "charge": "calls", "quantity": "2", "amount": "0.50"}
    ]
    parent = (await usage(client, key, root)).json()
    assert [line["tenant"] for line in parent["breakdown"]] == [child]


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"meter": "nope"}, 422, "rating_rejected", "meter"),
        ({"meter": "calls", "quantity": "-1"}, 422, "invalid_field", "quantity"),
        ({"meter": "calls", "id": "x"}, 422, "invalid_field", "id"),
        ({"meter": "calls", "tenant": "elsewhere"}, 403, "out_of_scope", "tenant"),
    ],
)
async def test_a_bad_quote_is_an_error_naming_its_field(
    stack: Stack,
    client: httpx.AsyncClient,
    body: dict[str, Any],
    status: int,
    code: str,
    field: str,
) -> None:
    tenant = stack.tenant(credit="1")
    answer = await quote(client, stack.app_key(tenant), {"tenant": tenant} | body)
    assert answer.status_code == status, answer.text
    assert (answer.json()["code"], answer.json()["field"]) == (code, field)


async def test_usage_is_scoped_like_the_balance(stack: Stack, client: httpx.AsyncClient) -> None:
    tenant = stack.tenant(credit="1")
    other = stack.tenant(credit="1")
    assert (await usage(client, stack.app_key(other), tenant)).status_code == 403
    assert (await usage(client, stack.admin_key, "nobody")).status_code == 404
    assert (await usage(client, stack.admin_key, "bad id!")).status_code == 422
    assert (await usage(client, stack.admin_key, tenant)).status_code == 200
