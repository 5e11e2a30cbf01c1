"""Keys × tenants × routes: every key on every route for a tenant of its tree, its tree's
sub-tenant, and another tree. A key never reads or charges a tenant outside its scope, and a
call that is refused for its key changes nothing.

Keys: an admin key; an application key for root A; a key bound to A's sub-tenant (the admin
API refuses to make one, because scopes are whole trees, so it must fail closed); a revoked
key; no key; a key that does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
from starlette.routing import Route

from gateway.admin_messages import TenantView
from tests.gateway.conftest import Stack, gateway_client, headers

pytestmark = pytest.mark.anyio

TENANTS = ("a", "child", "b")
KEYS = ("admin", "app_a", "app_child", "revoked", "none", "garbage")


@dataclass(frozen=True)
class World:
    stack: Stack
    tenants: dict[str, str]
    keys: dict[str, str | None]
    tariff: str


@pytest.fixture(scope="module")
def world(stack: Stack) -> World:
    a = stack.tenant(credit="1000")
    tenants = {"a": a, "child": stack.tenant(parent=a), "b": stack.tenant(credit="1000")}
    revoked_id, revoked = stack.keys.create(["usage"], a)
    stack.keys.revoke(revoked_id)
    keys: dict[str, str | None] = {
        "admin": stack.admin_key,
        "app_a": stack.app_key(a),
        "app_child": stack.keys.create(["usage"], tenants["child"])[1],
        "revoked": revoked,
        "none": None,
        "garbage": "mwk_0123456789abcdef_not-a-secret",
    }
    tariff = stack.catalogue.tariff("api")
    assert tariff is not None
    matrix_tariff = msgspec.structs.replace(tariff, key=f"matrix-{uuid.uuid4().hex[:6]}")
    stack.catalogue.save_tariff(matrix_tariff)
    return World(stack, tenants, keys, matrix_tariff.key)


@pytest.fixture(scope="module")
async def matrix_client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(stack.hosts, stack.url) as client:
        yield client


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# The routes ---------------------------------------------------------------------------------

Send = Callable[[httpx.AsyncClient, dict[str, str], str, World], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Cell:
    """How a route is called for a tenant, and what an allowed call answers."""

    route: str
    """``METHOD /path`` as the app declares it."""
    send: Send
    admin: bool = False
    moves_money: bool = False
    allowed: int = 200
    allowed_for_child: int | None = None


async def _post(client: httpx.AsyncClient, hdrs: dict[str, str], path: str, body: Any) -> Any:
    return await client.post(path, json=body, headers=hdrs)


def usage(tenant: str, **extra: Any) -> dict[str, Any]:
    return {"id": fresh("u"), "tenant": tenant, "meter": "calls"} | extra


async def session_start(
    client: httpx.AsyncClient, hdrs: dict[str, str], tenant: str, _w: World
) -> httpx.Response:
    body = {"id": fresh("s"), "tenant": tenant, "session": fresh("vm"), "meter": "vm"}
    answer = await _post(client, hdrs, "/v1/sessions/start", body)
    if answer.status_code == 200 and answer.json()["accepted"]:
        # Stopped at once, so that the matrix holds no money in running sessions.
        stop = {"id": fresh("s"), "tenant": tenant, "session": body["session"]}
        assert (await _post(client, hdrs, "/v1/sessions/stop", stop)).status_code == 200
    return answer


async def create_tenant(
    client: httpx.AsyncClient, hdrs: dict[str, str], tenant: str, w: World
) -> httpx.Response:
    child = fresh("m")
    body = {
        "id": child,
        "name": child,
        "currency": "EUR",
        "settings": {"parent": tenant, "funding": "pool"},
    }
    answer = await _post(client, hdrs, "/v1/admin/tenants", body)
    if answer.status_code >= 400:
        assert w.stack.catalogue.tenant(child) is None, "a refused tenant is not created"
    return answer


async def replace_tenant(
    client: httpx.AsyncClient, hdrs: dict[str, str], tenant: str, w: World
) -> httpx.Response:
    stored = w.stack.catalogue.tenant(tenant)
    assert stored is not None
    body = msgspec.to_builtins(TenantView.of(stored))
    del body["id"]
    return await client.put(f"/v1/admin/tenants/{tenant}", json=body, headers=hdrs)


async def assign_tariff(
    client: httpx.AsyncClient, hdrs: dict[str, str], tenant: str, w: World
) -> httpx.Response:
    stored = w.stack.catalogue.tenant(tenant)
    assert stored is not None
    body = {"tariff": stored.settings.tariff}
    return await _post(client, hdrs, f"/v1/admin/tenants/{tenant}/tariff", body)


async def suspend(
    client: httpx.AsyncClient, hdrs: dict[str, str], tenant: str, w: World
) -> httpx.Response:
    answer = await _post(client, hdrs, f"/v1/admin/tenants/{tenant}/suspend", None)
    if answer.status_code == 200:  # resumed at once, so that the other cells can charge it
        resume = f"/v1/admin/tenants/{tenant}/resume"
        assert (await _post(client, hdrs, resume, None)).status_code == 200
    return answer


async def add_version(
    client: httpx.AsyncClient, hdrs: dict[str, str], _tenant: str, w: World
) -> httpx.Response:
    stored = w.stack.catalogue.tariff(w.tariff)
    assert stored is not None
    number = stored.versions[-1].version + 1
    version = msgspec.to_builtins(stored.versions[0]) | {
        "version": number,
        "effective_from": f"{2100 + number}-01-01T00:00:00Z",
    }
    return await _post(client, hdrs, f"/v1/admin/tariffs/{w.tariff}/versions", version)


async def revoke_key(
    client: httpx.AsyncClient, hdrs: dict[str, str], _tenant: str, w: World
) -> httpx.Response:
    key_id, _plaintext = w.stack.keys.create(["usage"], w.tenants["a"])
    answer = await client.delete(f"/v1/admin/keys/{key_id}", headers=hdrs)
    if answer.status_code >= 400:
        stored = w.stack.keys.get(key_id)
        assert stored is not None and stored.revoked_at is None, "a refused revocation"
    return answer


def post(path: str, body: Callable[[str, World], Any]) -> Send:
    async def send(
        client: httpx.AsyncClient, hdrs: dict[str, str], tenant: str, w: World
    ) -> httpx.Response:
        return await _post(client, hdrs, path.format(tenant=tenant), body(tenant, w))

    return send


def get(path: str) -> Send:
    async def send(
        client: httpx.AsyncClient, hdrs: dict[str, str], tenant: str, w: World
    ) -> httpx.Response:
        return await client.get(path.format(tenant=tenant, tariff=w.tariff), headers=hdrs)

    return send


def meter(_tenant: str, _w: World) -> Any:
    return {"key": fresh("m"), "unit": "call", "aggregation": "count"}


def tariff(_tenant: str, w: World) -> Any:
    stored = w.stack.catalogue.tariff(w.tariff)
    assert stored is not None
    return msgspec.to_builtins(stored) | {"key": fresh("p")}


def reservation(tenant: str, _w: World) -> Any:
    return {"id": fresh("x"), "tenant": tenant, "reservation": "none"}


def session(tenant: str, _w: World) -> Any:
    return {"id": fresh("x"), "tenant": tenant, "session": "none"}


def credit(_tenant: str, _w: World) -> Any:
    return {"id": fresh("k"), "amount": "1"}


def app_key(_tenant: str, w: World) -> Any:
    return {"scopes": ["usage"], "tenant_root": w.tenants["a"]}


def nothing(_tenant: str, _w: World) -> Any:
    return None


HOT_PATH = (
    Cell(
        "POST /v1/authorize",
        # Held for an hour: a reservation expiring while a refused call is watched would
        # look like money moved.
        post("/v1/authorize", lambda t, _w: usage(t, ttl_seconds=3_600)),
        moves_money=True,
    ),
    Cell("POST /v1/capture", post("/v1/capture", reservation), allowed=404),
    Cell("POST /v1/release", post("/v1/release", reservation), allowed=404),
    Cell("POST /v1/record", post("/v1/record", lambda t, _w: usage(t)), moves_money=True),
    Cell(
        "POST /v1/events",
        post("/v1/events", lambda t, _w: {"events": [usage(t)]}),
        moves_money=True,
    ),
    Cell("POST /v1/sessions/start", session_start, moves_money=True),
    Cell("POST /v1/sessions/heartbeat", post("/v1/sessions/heartbeat", session), allowed=404),
    Cell("POST /v1/sessions/stop", post("/v1/sessions/stop", session), allowed=404),
    Cell("GET /v1/tenants/{tenant}/balance", get("/v1/tenants/{tenant}/balance")),
    Cell("GET /v1/tenants/{tenant}/usage", get("/v1/tenants/{tenant}/usage")),
    Cell("POST /v1/quote", post("/v1/quote", lambda t, _w: {"tenant": t, "meter": "calls"})),
)

_TENANT = "/v1/admin/tenants/{tenant}"
ADMIN = (
    Cell("POST /v1/admin/tenants", create_tenant, admin=True, allowed=201),
    Cell("GET /v1/admin/tenants", get("/v1/admin/tenants"), admin=True),
    Cell(f"GET {_TENANT}", get(_TENANT), admin=True),
    Cell(f"PUT {_TENANT}", replace_tenant, admin=True),
    Cell(f"POST {_TENANT}/tariff", assign_tariff, admin=True),
    Cell(
        f"POST {_TENANT}/credits",
        post(f"{_TENANT}/credits", credit),
        admin=True,
        moves_money=True,
        allowed_for_child=422,  # a pooled tenant has no balance of its own
    ),
    Cell(f"POST {_TENANT}/suspend", suspend, admin=True),
    Cell(f"POST {_TENANT}/resume", post(f"{_TENANT}/resume", nothing), admin=True),
    Cell("POST /v1/admin/meters", post("/v1/admin/meters", meter), admin=True, allowed=201),
    Cell("GET /v1/admin/meters", get("/v1/admin/meters"), admin=True),
    Cell("GET /v1/admin/meters/{key}", get("/v1/admin/meters/calls"), admin=True),
    Cell("POST /v1/admin/tariffs/validate", post("/v1/admin/tariffs/validate", tariff), admin=True),
    Cell("POST /v1/admin/tariffs", post("/v1/admin/tariffs", tariff), admin=True, allowed=201),
    Cell("GET /v1/admin/tariffs", get("/v1/admin/tariffs"), admin=True),
    Cell("GET /v1/admin/tariffs/{key}", get("/v1/admin/tariffs/{tariff}"), admin=True),
    Cell("POST /v1/admin/tariffs/{key}/versions", add_version, admin=True, allowed=201),
    Cell("POST /v1/admin/keys", post("/v1/admin/keys", app_key), admin=True, allowed=201),
    Cell("GET /v1/admin/keys", get("/v1/admin/keys"), admin=True),
    Cell("DELETE /v1/admin/keys/{key_id}", revoke_key, admin=True),
)


def expected(cell: Cell, key: str, tenant: str) -> tuple[int, str | None]:
    """The status and error code of ``key`` calling ``cell`` for ``tenant``."""
    if key == "none":
        return 401, "missing_api_key"
    if key in ("garbage", "revoked"):
        return 401, "invalid_api_key"
    # An application key acts for its tenant and those below: A's key for A and its child,
    # the child's key for the child alone.
    reaches = {"app_a": ("a", "child"), "app_child": ("child",)}.get(key, ())
    in_scope = key == "admin" or (not cell.admin and tenant in reaches)
    if not in_scope:
        return 403, "out_of_scope"
    if tenant == "child" and cell.allowed_for_child is not None:
        return cell.allowed_for_child, None
    return cell.allowed, None


async def balances(client: httpx.AsyncClient, w: World) -> list[tuple[str, str | None]]:
    """Balance and available of both trees, read with the admin key."""
    found = []
    for root in (w.tenants["a"], w.tenants["b"]):
        answer = await client.get(f"/v1/tenants/{root}/balance", headers=headers(w.stack.admin_key))
        found.append((answer.json()["balance"], answer.json().get("available")))
    return found


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("cell", HOT_PATH + ADMIN, ids=lambda cell: cell.route)
async def test_a_key_acts_only_within_its_scope(
    world: World, matrix_client: httpx.AsyncClient, cell: Cell, key: str
) -> None:
    plaintext = world.keys[key]
    hdrs = headers(plaintext) if plaintext is not None else {}
    for tenant in TENANTS:
        status, code = expected(cell, key, tenant)
        watch = cell.moves_money and status in (401, 403)
        before = await balances(matrix_client, world) if watch else None
        answer = await cell.send(matrix_client, hdrs, world.tenants[tenant], world)
        assert answer.status_code == status, (tenant, answer.text)
        if code is not None:
            assert answer.json()["code"] == code, (tenant, answer.text)
        if watch:
            assert await balances(matrix_client, world) == before, f"{tenant}: money moved"


def test_every_route_of_the_api_is_in_the_matrix(matrix_client: httpx.AsyncClient) -> None:
    app: Any = matrix_client._transport.app  # type: ignore[attr-defined]
    routes = {
        f"{method} {route.path}"
        for route in app.routes
        if isinstance(route, Route) and route.path.startswith("/v1/")
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert {cell.route for cell in HOT_PATH + ADMIN} == routes
