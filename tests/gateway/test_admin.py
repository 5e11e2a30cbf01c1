"""The admin API as an operator uses it: tenants and their tree, credit, meters, tariffs and
versions, API keys; every refusal names its field and changes nothing; lists page through."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from gateway.config import GatewayConfig
from tests.gateway.conftest import Stack, gateway_client, headers

pytestmark = pytest.mark.anyio


def new_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def call(
    client: httpx.AsyncClient, stack: Stack, method: str, path: str, body: Any = None
) -> httpx.Response:
    return await client.request(method, path, json=body, headers=headers(stack.admin_key))


def root_body(tenant: str, **settings: Any) -> dict[str, Any]:
    return {
        "id": tenant,
        "name": f"Tenant {tenant}",
        "currency": "EUR",
        "settings": {"tariff": "api"} | settings,
    }


def child_body(tenant: str, parent: str, **settings: Any) -> dict[str, Any]:
    return {
        "id": tenant,
        "name": f"Child {tenant}",
        "currency": "EUR",
        "settings": {"parent": parent, "funding": "pool"} | settings,
    }


def tariff_body(key: str, price: str = "0.50") -> dict[str, Any]:
    return {"key": key, "versions": [version_body(1, price, "2024-01-01T00:00:00Z")]}


def version_body(version: int, price: str, effective_from: str, meter: str = "calls") -> Any:
    return {
        "version": version,
        "effective_from": effective_from,
        "currency": "EUR",
        "period": {"unit": "month"},
        "charges": [
            {"key": "calls", "meter": meter, "price": {"model": "per_unit", "unit_price": price}}
        ],
    }


async def created_root(client: httpx.AsyncClient, stack: Stack, credit: str = "10") -> str:
    tenant = new_id()
    answer = await call(client, stack, "POST", "/v1/admin/tenants", root_body(tenant))
    assert answer.status_code == 201, answer.text
    if credit:
        body = {"id": f"{tenant}-credit", "amount": credit}
        topped = await call(client, stack, "POST", f"/v1/admin/tenants/{tenant}/credits", body)
        assert topped.status_code == 200 and topped.json()["accepted"], topped.text
    return tenant


async def balance_of(client: httpx.AsyncClient, stack: Stack, tenant: str) -> Decimal:
    answer = await call(client, stack, "GET", f"/v1/tenants/{tenant}/balance")
    assert answer.status_code == 200, answer.text
    return Decimal(answer.json()["balance"])


def refusal(answer: httpx.Response) -> tuple[int, str, str | None]:
    body = answer.json()
    return answer.status_code, body["code"], body["field"]


# Tenants ------------------------------------------------------------------------------------


async def test_a_tree_is_created_read_and_used_at_once(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    root = await created_root(client, stack, credit="10")
    child = new_id("c")
    body = child_body(child, root, cap="5", tariff="api")
    made = await call(client, stack, "POST", "/v1/admin/tenants", body)
    assert made.status_code == 201, made.text
    assert made.json()["root"] == root and made.json()["settings"]["cap"] == "5"

    again = await call(client, stack, "POST", "/v1/admin/tenants", body)
    assert again.status_code == 200, "a retry with the same content is answered, not refused"
    other = await call(client, stack, "POST", "/v1/admin/tenants", body | {"name": "Other"})
    assert refusal(other)[:2] == (409, "tenant_exists")

    read = await call(client, stack, "GET", f"/v1/admin/tenants/{root}")
    assert read.status_code == 200
    assert (read.json()["children"], read.json()["children_next"]) == ([child], None)
    assert read.json()["settings"]["tariff"] == "api"

    used = await client.post(
        "/v1/record",
        json={"id": "u1", "tenant": child, "meter": "calls", "quantity": 4},
        headers=headers(stack.admin_key),
    )
    assert used.status_code == 200 and used.json()["accepted"], used.text
    assert await balance_of(client, stack, root) == Decimal(9)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"id": "-bad"}, "id"),
        ({"currency": "EURO"}, "currency"),
        ({"currency": "XXQ"}, "currency"),
        ({"name": ""}, "name"),
        ({"settings": {"tariff": "api", "time_zone": "Mars/Olympus"}}, "settings.time_zone"),
        ({"settings": {"funding": "pool"}}, "settings.funding"),
        ({"settings": {"tariff": "nope"}}, "settings.tariff"),
        ({"settings": {"tariff": "api", "parent": "nobody-here"}}, "settings.parent"),
        ({"settings": {"tariff": "api", "credit_limit": "-1"}}, "settings.credit_limit"),
        ({"failure_policy": "allow_overdraft"}, "overdraft_cap"),
        ({"address": {"country": "Germany"}}, "address.country"),
    ],
)
async def test_a_bad_tenant_is_refused_naming_its_field_and_not_created(
    stack: Stack, client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    tenant = new_id()
    answer = await call(client, stack, "POST", "/v1/admin/tenants", root_body(tenant) | change)
    assert (answer.status_code, answer.json()["field"]) == (422, field), answer.text
    looked = await call(client, stack, "GET", f"/v1/admin/tenants/{change.get('id', tenant)}")
    assert looked.status_code in (404, 422)


async def test_settings_are_replaced_but_parent_and_funding_stay(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    root = await created_root(client, stack, credit="")
    child = new_id("c")
    await call(client, stack, "POST", "/v1/admin/tenants", child_body(child, root))
    body = root_body(root) | {"name": "Renamed", "vat_id": "DE123456789"}
    del body["id"]
    body["settings"] |= {"budget": "100", "balance_alerts": ["5"]}
    replaced = await call(client, stack, "PUT", f"/v1/admin/tenants/{root}", body)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"] == "Renamed" and replaced.json()["children"] == [child]

    moved = child_body(child, new_id())
    del moved["id"]
    answer = await call(client, stack, "PUT", f"/v1/admin/tenants/{child}", moved)
    assert refusal(answer) == (422, "invalid_field", "settings.parent")
    own = child_body(child, root, funding="own", tariff="api")
    del own["id"]
    answer = await call(client, stack, "PUT", f"/v1/admin/tenants/{child}", own)
    assert refusal(answer)[0::2] == (422, "settings.funding"), answer.text
    read = await call(client, stack, "GET", f"/v1/admin/tenants/{child}")
    assert read.json()["settings"]["funding"] == "pool", "a refused change changes nothing"
    nobody = await call(client, stack, "PUT", "/v1/admin/tenants/nobody-here", body)
    assert refusal(nobody)[:2] == (404, "unknown_tenant")


async def test_a_new_tariff_is_rated_by_the_host_at_once_and_assigned(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    tariff = new_id("plan")
    made = await call(client, stack, "POST", "/v1/admin/tariffs", tariff_body(tariff, "2"))
    assert made.status_code == 201, made.text
    root = new_id()
    body = root_body(root, tariff=tariff)
    assert (await call(client, stack, "POST", "/v1/admin/tenants", body)).status_code == 201
    credits = {"id": "c", "amount": "10"}
    await call(client, stack, "POST", f"/v1/admin/tenants/{root}/credits", credits)
    used = await client.post(
        "/v1/record",
        json={"id": "u", "tenant": root, "meter": "calls"},
        headers=headers(stack.admin_key),
    )
    assert Decimal(used.json()["amount"]) == Decimal(2), used.text

    # The host refuses a tariff it does not know (no_tariff): accepted here, it knows it.
    child = new_id("c")
    await call(client, stack, "POST", "/v1/admin/tenants", child_body(child, root))
    path = f"/v1/admin/tenants/{child}/tariff"
    assigned = await call(client, stack, "POST", path, {"tariff": tariff})
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["settings"]["tariff"] == tariff
    assert [a.tariff for a in stack.catalogue.assignments(child)] == [tariff]

    path = f"/v1/admin/tenants/{root}/tariff"
    unknown = await call(client, stack, "POST", path, {"tariff": "x"})
    assert refusal(unknown) == (422, "invalid_field", "settings.tariff")
    dropped = await call(client, stack, "POST", path, {"tariff": None})
    assert refusal(dropped) == (422, "invalid_field", "tariff"), "an own balance needs a tariff"


# Credit and suspension ----------------------------------------------------------------------


async def test_credit_is_idempotent_by_id_and_bad_credit_changes_nothing(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    root = await created_root(client, stack, credit="")
    child = new_id("c")
    await call(client, stack, "POST", "/v1/admin/tenants", child_body(child, root))
    path = f"/v1/admin/tenants/{root}/credits"
    body = {"id": "gift", "amount": "5.50", "kind": "promotional", "priority": 10}
    body["expires_at"] = int(time.time()) + 600
    first = await call(client, stack, "POST", path, body)
    assert first.status_code == 200, first.text
    assert (first.json()["accepted"], Decimal(first.json()["balance"])) == (True, Decimal("5.50"))
    retry = await call(client, stack, "POST", path, body)
    assert retry.content == first.content, "a retry gets the original answer"

    bad = [
        (body | {"id": "gift", "amount": "6"}, 409, "id"),
        (body | {"id": "b1", "amount": "-1"}, 422, "amount"),
        (body | {"id": "b2", "amount": "0"}, 422, "amount"),
        (body | {"id": "b3", "amount": "1.123456789012345"}, 422, "amount"),
        (body | {"id": "b4", "kind": "gold"}, 422, "kind"),
        (body | {"id": "b5", "expires_at": "2001-01-01T00:00:00Z"}, 422, "expires_at"),
        ({"amount": "1"}, 422, "id"),
    ]
    for request, status, field in bad:
        answer = await call(client, stack, "POST", path, request)
        assert (answer.status_code, answer.json()["field"]) == (status, field), answer.text
    pooled_path = f"/v1/admin/tenants/{child}/credits"
    pooled = await call(client, stack, "POST", pooled_path, body | {"id": "p1"})
    assert refusal(pooled) == (422, "not_funded", "tenant")
    nobody = await call(client, stack, "POST", "/v1/admin/tenants/nobody-here/credits", body)
    assert refusal(nobody)[:2] == (404, "unknown_tenant")
    assert await balance_of(client, stack, root) == Decimal("5.50")


async def test_a_suspended_tenant_is_refused_until_resumed(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    root = await created_root(client, stack)
    usage = {"tenant": root, "meter": "calls"}
    suspended = await call(client, stack, "POST", f"/v1/admin/tenants/{root}/suspend")
    assert suspended.status_code == 200 and suspended.json()["accepted"], suspended.text
    refused = await client.post(
        "/v1/record", json=usage | {"id": "a"}, headers=headers(stack.admin_key)
    )
    assert refused.json()["reason"] == "account_suspended"
    resumed = await call(client, stack, "POST", f"/v1/admin/tenants/{root}/resume")
    assert resumed.status_code == 200
    used = await client.post(
        "/v1/record", json=usage | {"id": "b"}, headers=headers(stack.admin_key)
    )
    assert used.json()["accepted"] is True
    nobody = await call(client, stack, "POST", "/v1/admin/tenants/nobody-here/suspend")
    assert refusal(nobody)[:2] == (404, "unknown_tenant")


# Meters and tariffs -------------------------------------------------------------------------


async def test_meters_are_added_read_and_never_silently_changed(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    key = new_id("m")
    meter = {"key": key, "unit": "byte", "aggregation": "sum", "value_property": "bytes"}
    assert (await call(client, stack, "POST", "/v1/admin/meters", meter)).status_code == 201
    assert (await call(client, stack, "POST", "/v1/admin/meters", meter)).status_code == 200
    changed = await call(client, stack, "POST", "/v1/admin/meters", meter | {"unit": "bit"})
    assert refusal(changed)[:2] == (409, "meter_exists")
    read = await call(client, stack, "GET", f"/v1/admin/meters/{key}")
    assert read.json().items() >= meter.items()
    bad = {"key": new_id("m"), "unit": "user", "aggregation": "unique_count"}
    answer = await call(client, stack, "POST", "/v1/admin/meters", bad)
    assert refusal(answer) == (422, "invalid_field", "unique_property")
    missing = await call(client, stack, "GET", f"/v1/admin/meters/{bad['key']}")
    assert refusal(missing)[:2] == (404, "unknown_meter")


async def test_a_tariff_is_validated_without_saving_then_created_and_versioned(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    key = new_id("plan")
    good = tariff_body(key)
    checked = await call(client, stack, "POST", "/v1/admin/tariffs/validate", good)
    assert checked.json() == {"valid": True, "problems": []}
    broken = tariff_body(key) | {"versions": [version_body(1, "1", "2024-01-01T00:00:00Z", "x")]}
    checked = await call(client, stack, "POST", "/v1/admin/tariffs/validate", broken)
    assert checked.json() == {
        "valid": False,
        "problems": [{"field": "versions[0].charges[0].meter", "message": "unknown meter 'x'"}],
    }
    malformed = good | {"versions": [version_body(1, "-1", "2024-01-01T00:00:00Z")]}
    answer = await call(client, stack, "POST", "/v1/admin/tariffs/validate", malformed)
    assert answer.status_code == 200 and answer.json()["valid"] is False
    [problem] = answer.json()["problems"]
    assert problem["field"] == "versions[0].charges[0].price.unit_price"
    not_json = await client.post(
        "/v1/admin/tariffs/validate", content=b"{", headers=headers(stack.admin_key)
    )
    assert refusal(not_json)[:2] == (400, "malformed_json")
    assert (await call(client, stack, "GET", f"/v1/admin/tariffs/{key}")).status_code == 404

    refused = await call(client, stack, "POST", "/v1/admin/tariffs", broken)
    assert refusal(refused) == (422, "invalid_field", "versions[0].charges[0].meter")
    assert (await call(client, stack, "POST", "/v1/admin/tariffs", good)).status_code == 201
    taken = await call(client, stack, "POST", "/v1/admin/tariffs", tariff_body(key, "9"))
    assert refusal(taken)[:2] == (409, "tariff_exists")
    checked = await call(client, stack, "POST", "/v1/admin/tariffs/validate", tariff_body(key, "9"))
    assert checked.json()["problems"][0]["field"] == "key"

    path = f"/v1/admin/tariffs/{key}/versions"
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3_600))
    bad = [
        (version_body(1, "1", soon), 409, "version_exists", None),
        (version_body(2, "1", "2024-06-01T00:00:00Z"), 422, "invalid_field", "effective_from"),
        (version_body(2, "1", soon, "x"), 422, "invalid_field", "charges[0].meter"),
        (version_body(2, "1", soon) | {"currency": "EURO"}, 422, "invalid_field", "currency"),
    ]
    for version, status, code, field in bad:
        assert refusal(await call(client, stack, "POST", path, version)) == (status, code, field)
    added = await call(client, stack, "POST", path, version_body(2, "0.40", soon))
    assert added.status_code == 201, added.text
    assert [v["version"] for v in added.json()["versions"]] == [1, 2]
    lower = await call(client, stack, "POST", path, version_body(2, "0.40", soon) | {"version": 1})
    assert refusal(lower)[:2] == (409, "version_exists")
    stored = await call(client, stack, "GET", f"/v1/admin/tariffs/{key}")
    assert stored.json() == added.json()
    nothing = await call(
        client, stack, "POST", "/v1/admin/tariffs/nope/versions", version_body(1, "1", soon)
    )
    assert refusal(nothing)[:2] == (404, "unknown_tariff")


# Lists --------------------------------------------------------------------------------------


async def test_lists_page_through_every_item_once(stack: Stack, client: httpx.AsyncClient) -> None:
    root = await created_root(client, stack, credit="")
    children = sorted(new_id(f"{root}.c") for _ in range(5))
    for child in children:
        made = await call(client, stack, "POST", "/v1/admin/tenants", child_body(child, root))
        assert made.status_code == 201, made.text
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        query = {"limit": "2", "parent": root} | ({"after": after} if after else {})
        page = await client.get("/v1/admin/tenants", params=query, headers=headers(stack.admin_key))
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["items"]]
        after = page.json()["next"]
        pages += 1
        if after is None:
            break
    assert (seen, pages) == (children, 3)
    tree = await client.get(
        "/v1/admin/tenants", params={"root": root}, headers=headers(stack.admin_key)
    )
    assert [item["id"] for item in tree.json()["items"]] == sorted([root, *children])

    stack.app_key(root)
    for path in ("/v1/admin/meters", "/v1/admin/tariffs", "/v1/admin/keys"):
        first = await client.get(path, params={"limit": 1}, headers=headers(stack.admin_key))
        assert len(first.json()["items"]) == 1 and first.json()["next"] is not None, path
    for params, field in [
        ({"limit": "0"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"colour": "red"}, "colour"),
    ]:
        answer = await client.get(
            "/v1/admin/tenants", params=params, headers=headers(stack.admin_key)
        )
        assert (answer.status_code, answer.json()["field"]) == (422, field)


# API keys -----------------------------------------------------------------------------------


async def test_a_key_is_shown_once_listed_without_its_secret_and_revoked(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    root = await created_root(client, stack)
    made = await call(
        client, stack, "POST", "/v1/admin/keys", {"scopes": ["usage"], "tenant_root": root}
    )
    assert made.status_code == 201, made.text
    plaintext, key_id = made.json()["key"], made.json()["id"]
    assert plaintext.startswith(made.json()["prefix"])
    used = await client.get(f"/v1/tenants/{root}/balance", headers=headers(plaintext))
    assert used.status_code == 200

    listed = await client.get(
        "/v1/admin/keys", params={"tenant_root": root}, headers=headers(stack.admin_key)
    )
    assert [item["id"] for item in listed.json()["items"]] == [key_id]
    assert "key" not in listed.json()["items"][0] and plaintext not in listed.text

    child = new_id("c")
    await call(client, stack, "POST", "/v1/admin/tenants", child_body(child, root))
    # A key for the sub-tenant acts for its subtree only (see test_scopes.py).
    for_child = await call(
        client, stack, "POST", "/v1/admin/keys", {"scopes": ["usage"], "tenant_root": child}
    )
    assert for_child.status_code == 201 and for_child.json()["tenant_root"] == child
    bad = [
        ({"scopes": ["usage"], "tenant_root": "nobody-here"}, 404, "tenant_root"),
        ({"scopes": ["usage"]}, 422, "tenant_root"),
        ({"scopes": ["admin"], "tenant_root": root}, 422, "tenant_root"),
        ({"scopes": ["root"]}, 422, "scopes[0]"),
        ({"scopes": []}, 422, "scopes"),
    ]
    for body, status, field in bad:
        answer = await call(client, stack, "POST", "/v1/admin/keys", body)
        assert (answer.status_code, answer.json()["field"]) == (status, field), answer.text
    assert len(stack.keys.list_keys(tenant_root=root)) == 1

    revoked = await call(client, stack, "DELETE", f"/v1/admin/keys/{key_id}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert (await call(client, stack, "DELETE", f"/v1/admin/keys/{key_id}")).status_code == 200
    unknown = await call(client, stack, "DELETE", "/v1/admin/keys/0123456789abcdef")
    assert refusal(unknown)[:2] == (404, "unknown_key")


async def test_a_revoked_key_stops_at_once_on_the_gateway_that_revoked_it(stack: Stack) -> None:
    root = stack.tenant()
    config = GatewayConfig(key_cache_seconds=3_600)
    async with gateway_client(stack.hosts, stack.url, config) as client:
        made = await call(
            client, stack, "POST", "/v1/admin/keys", {"scopes": ["usage"], "tenant_root": root}
        )
        plaintext = made.json()["key"]
        path = f"/v1/tenants/{root}/balance"
        assert (await client.get(path, headers=headers(plaintext))).status_code == 200
        await call(client, stack, "DELETE", f"/v1/admin/keys/{made.json()['id']}")
        answer = await client.get(path, headers=headers(plaintext))
        assert refusal(answer)[:2] == (401, "invalid_api_key")


async def test_a_revoked_key_stops_working_within_the_cache_time(stack: Stack) -> None:
    """Revoked through another gateway, a key this one verified keeps working until its
    cache entry expires, and no longer."""
    root = stack.tenant()
    cache_seconds = 1.0
    config = GatewayConfig(key_cache_seconds=cache_seconds)
    async with (
        gateway_client(stack.hosts, stack.url, config) as client,
        gateway_client(stack.hosts, stack.url) as other,
    ):
        made = await call(
            client, stack, "POST", "/v1/admin/keys", {"scopes": ["usage"], "tenant_root": root}
        )
        plaintext = made.json()["key"]
        path = f"/v1/tenants/{root}/balance"
        assert (await client.get(path, headers=headers(plaintext))).status_code == 200
        await call(other, stack, "DELETE", f"/v1/admin/keys/{made.json()['id']}")
        assert (await client.get(path, headers=headers(plaintext))).status_code == 200
        await asyncio.sleep(cache_seconds + 0.1)
        answer = await client.get(path, headers=headers(plaintext))
        assert refusal(answer)[:2] == (401, "invalid_api_key")
