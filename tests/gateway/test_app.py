"""The HTTP API against a real account host: decisions, refusals, errors, keys and scopes,
idempotency, coalescing, and no overspend under a race."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.hosts import HostFailed, RayHosts
from gateway.messages import EVENTS_MAX
from tests.gateway.conftest import Stack, gateway_client, headers, in_process_client

pytestmark = pytest.mark.anyio


def new_id() -> str:
    return uuid.uuid4().hex


async def post(client: httpx.AsyncClient, key: str, path: str, body: Any) -> httpx.Response:
    return await client.post(path, json=body, headers=headers(key))


async def record(client: httpx.AsyncClient, key: str, tenant: str, **extra: Any) -> httpx.Response:
    body = {"id": new_id(), "tenant": tenant, "meter": "calls"} | extra
    return await post(client, key, "/v1/record", body)


async def balance(client: httpx.AsyncClient, key: str, tenant: str) -> dict[str, Any]:
    response = await client.get(f"/v1/tenants/{tenant}/balance", headers=headers(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# Decisions ----------------------------------------------------------------------------------


async def test_authorise_then_capture_less_then_release_another(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    tenant = stack.tenant(credit="10")
    key = stack.app_key(tenant)
    body = {"id": "r1", "tenant": tenant, "meter": "calls", "quantity": 4}
    held = await post(client, key, "/v1/authorize", body)
    assert held.status_code == 200, held.text
    assert held.json()["accepted"] is True
    assert Decimal(held.json()["amount"]) == Decimal("1.00")
    assert held.json()["expires_at"] > 0
    assert Decimal((await balance(client, key, tenant))["available"]) == Decimal("9.00")

    captured = await post(
        client,
        key,
        "/v1/capture",
        {"id": "c1", "tenant": tenant, "reservation": "r1", "quantity": "3"},
    )
    assert captured.status_code == 200, captured.text
    assert Decimal(captured.json()["amount"]) == Decimal("0.75")

    await post(client, key, "/v1/authorize", {"id": "r2", "tenant": tenant, "meter": "calls"})
    released = await post(
        client, key, "/v1/release", {"id": "x2", "tenant": tenant, "reservation": "r2"}
    )
    assert released.status_code == 200 and released.json()["accepted"] is True
    after = await balance(client, key, tenant)
    assert Decimal(after["balance"]) == Decimal("9.25") == Decimal(after["available"])

    gone = await post(
        client, key, "/v1/capture", {"id": "c3", "tenant": tenant, "reservation": "r2"}
    )
    assert gone.status_code == 404
    assert gone.json()["code"] == "unknown_reservation"


async def test_one_step_records_until_credit_runs_out_are_answered_as_decisions(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    tenant = stack.tenant(credit="1")
    key = stack.app_key(tenant)
    answers = [await record(client, key, tenant) for _ in range(5)]
    assert [answer.status_code for answer in answers] == [200] * 5
    assert [answer.json()["accepted"] for answer in answers] == [True] * 4 + [False]
    assert answers[4].json()["reason"] == "insufficient_credit"
    assert Decimal(answers[3].json()["balance"]) == Decimal(0)


async def test_a_sub_tenant_is_in_its_roots_scope_and_draws_from_the_pool(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    root = stack.tenant(credit="1")
    child = stack.tenant(parent=root)
    answer = await record(client, stack.app_key(root), child, quantity=2)
    assert answer.status_code == 200 and answer.json()["accepted"] is True, answer.text
    assert Decimal((await balance(client, stack.admin_key, root))["balance"]) == Decimal("0.50")


async def test_a_session_is_granted_until_the_money_runs_out(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    tenant = stack.tenant(credit="2")  # 200 seconds at 0.01 a second
    key = stack.app_key(tenant)
    body = {"id": "s-start", "tenant": tenant, "session": "vm-1", "meter": "vm"}
    before = int(time.time())
    started = await post(client, key, "/v1/sessions/start", body)
    after = int(time.time())
    assert started.status_code == 200, started.text
    granted_until = started.json()["granted_until"]
    assert before + 200 <= granted_until <= after + 200
    beat = await post(
        client, key, "/v1/sessions/heartbeat", {"id": "s-hb", "tenant": tenant, "session": "vm-1"}
    )
    assert beat.status_code == 200 and beat.json()["granted_until"] >= granted_until
    stopped = await post(
        client, key, "/v1/sessions/stop", {"id": "s-stop", "tenant": tenant, "session": "vm-1"}
    )
    assert stopped.status_code == 200 and stopped.json()["accepted"] is True, stopped.text


async def test_batch_ingestion_answers_each_event_and_has_a_limit(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    tenant = stack.tenant(credit="1")
    events = [{"id": f"e{n}", "tenant": tenant, "meter": "calls"} for n in range(6)]
    events.append({"id": "e-nobody", "tenant": "nobody-here", "meter": "calls"})
    answer = await post(client, stack.admin_key, "/v1/events", {"events": events})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["accepted"], body["refused"]) == (6, 1), "past usage is charged into overdraft"
    assert [result["id"] for result in body["results"]] == [event["id"] for event in events]
    assert body["results"][-1]["reason"] == "unknown_tenant"
    assert Decimal((await balance(client, stack.admin_key, tenant))["balance"]) == Decimal("-0.50")

    too_many = [{"id": f"m{n}", "tenant": tenant, "meter": "calls"} for n in range(EVENTS_MAX + 1)]
    refused = await post(client, stack.admin_key, "/v1/events", {"events": too_many})
    assert refused.status_code == 422
    assert refused.json()["field"] == "events"


async def test_a_batch_over_several_trees_of_one_host_keeps_its_order_across_calls(
    stack: Stack,
) -> None:
    """Events of two trees, interleaved, in more host calls than one (``batch_max`` 3): each
    result in the order sent, each charge on its own tenant; a key for one of the trees is
    refused the whole batch, naming the first event outside its scope."""
    first, second = stack.tenant(credit="10"), stack.tenant(credit="10")
    tenants = [first, second, second, first, second, first, first, second]
    events = [
        {"id": f"mix-{n}", "tenant": tenant, "meter": "calls"} for n, tenant in enumerate(tenants)
    ]
    async with gateway_client(stack.hosts, stack.url, GatewayConfig(batch_max=3)) as client:
        answer = await post(client, stack.admin_key, "/v1/events", {"events": events})
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [result["id"] for result in results] == [event["id"] for event in events]
        assert all(result["accepted"] for result in results)
        for tenant in (first, second):
            found = await balance(client, stack.admin_key, tenant)
            assert Decimal(found["balance"]) == 10 - Decimal("0.25") * tenants.count(tenant)
        narrow = await post(client, stack.app_key(first), "/v1/events", {"events": events})
        assert (narrow.status_code, narrow.json()["field"]) == (403, "events[1].tenant")


# Errors -------------------------------------------------------------------------------------


async def test_malformed_json_is_400_and_an_unknown_field_is_422_naming_it(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    tenant = stack.tenant()
    key = stack.app_key(tenant)
    broken = await client.post("/v1/record", content=b'{"id": "x",', headers=headers(key))
    assert broken.status_code == 400
    assert broken.json()["code"] == "malformed_json"
    unknown = await record(client, key, tenant, colour="red")
    assert unknown.status_code == 422
    assert unknown.json() == {
        "code": "invalid_field",
        "message": "Object contains unknown field `colour`",
        "field": "colour",
    }
    negative = await record(client, key, tenant, quantity="-1")
    assert (negative.status_code, negative.json()["field"]) == (422, "quantity")
    nested = await post(
        client,
        stack.admin_key,
        "/v1/events",
        {"events": [{"id": "a", "tenant": tenant, "meter": "calls", "quantity": "NaN"}]},
    )
    assert (nested.status_code, nested.json()["field"]) == (422, "events[0].quantity")


# A valid body for every route that names a tenant, but for the tenant. Every request Struct
# with a __post_init__ of its own must check the tenant there too (gateway/messages.py).
TENANT_BODIES: dict[str, dict[str, Any]] = {
    "/v1/record": {"meter": "calls"},
    "/v1/authorize": {"meter": "calls"},
    "/v1/capture": {"reservation": "r", "quantity": "1"},
    "/v1/release": {"reservation": "r"},
    "/v1/sessions/start": {"session": "s", "meter": "calls"},
    "/v1/sessions/heartbeat": {"session": "s"},
    "/v1/sessions/stop": {"session": "s"},
    "/v1/quote": {"meter": "calls"},
}


@pytest.mark.parametrize(
    "tenant", ["no spaces", "-leading-dash", "x" * 65, "trailing\n", "é", "", "a/b"]
)
async def test_a_tenant_id_off_its_pattern_is_422_naming_it_on_every_route(
    stack: Stack, client: httpx.AsyncClient, tenant: str
) -> None:
    for path, fields in TENANT_BODIES.items():
        body = {"tenant": tenant, **fields} | ({} if path == "/v1/quote" else {"id": new_id()})
        response = await post(client, stack.admin_key, path, body)
        assert (response.status_code, response.json()["code"]) == (422, "invalid_field"), path
        assert response.json()["field"] == "tenant", path
        assert "matching regex" in response.json()["message"], path
    events = await post(
        client,
        stack.admin_key,
        "/v1/events",
        {"events": [{"id": new_id(), "tenant": t, "meter": "calls"} for t in ("ok", tenant)]},
    )
    assert (events.status_code, events.json()["field"]) == (422, "events[1].tenant")


async def test_a_body_over_the_limit_is_413(stack: Stack) -> None:
    tenant = stack.tenant()
    padding = {f"k{n}": "y" * 200 for n in range(10)}  # about 2 KiB
    small = GatewayConfig(body_bytes_max=1_024)
    async with gateway_client(stack.hosts, stack.url, small) as client:
        answer = await record(client, stack.admin_key, tenant, properties=padding)
    assert answer.status_code == 413
    assert answer.json()["code"] == "body_too_large"


async def test_a_body_is_read_in_chunks_and_its_declared_length_checked_first(
    stack: Stack,
) -> None:
    tenant = stack.tenant()
    body = json.dumps({"id": new_id(), "tenant": tenant, "meter": "calls"}).encode()

    async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    small = GatewayConfig(body_bytes_max=1_024)
    async with gateway_client(stack.hosts, stack.url, small) as client:
        auth = headers(stack.admin_key)
        whole = await client.post("/v1/record", content=chunks(body, 7), headers=auth)
        assert (whole.status_code, whole.json()["accepted"]) == (200, True)
        # Streamed without a Content-Length, the limit is found while reading.
        large = await client.post("/v1/record", content=chunks(b"x" * 2_000, 100), headers=auth)
        assert (large.status_code, large.json()["code"]) == (413, "body_too_large")
        declared = {**auth, "content-length": "5000"}
        early = await client.post("/v1/record", content=b"{}", headers=declared)
        assert (early.status_code, early.json()["code"]) == (413, "body_too_large")
        garbled = {**auth, "content-length": "two"}
        answer = await client.post("/v1/record", content=b"{}", headers=garbled)
        assert (answer.status_code, answer.json()["code"]) == (400, "malformed_json")


async def test_a_hot_route_answers_other_methods_405(client: httpx.AsyncClient) -> None:
    for path in ("/v1/record", "/v1/events", "/v1/sessions/start"):
        answer = await client.get(path)
        assert (answer.status_code, answer.json()["code"]) == (405, "method_not_allowed")


async def test_a_host_that_fails_is_500_logged_and_counted(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(stack.hosts, stack.url)

    async def failing(*_args: Any) -> Any:
        raise HostFailed("the host raised")

    app.state.gateway.coalescer.submit = failing
    async with in_process_client(app) as client:
        answer = await record(client, stack.admin_key, stack.tenant())
        metrics = (await client.get("/metrics")).text
    assert (answer.status_code, answer.json()["code"]) == (500, "internal_error")
    assert "/v1/record failed" in caplog.text and "the host raised" in caplog.text
    line = 'meterwerk_http_requests_total{method="POST",route="/v1/record",status="500"} 1.0'
    assert line in metrics


async def test_keys_are_required_and_limited_to_their_tree(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    mine, theirs = stack.tenant(), stack.tenant()
    key = stack.app_key(mine)
    missing = await client.post("/v1/record", json={"id": "a", "tenant": mine, "meter": "calls"})
    assert (missing.status_code, missing.json()["code"]) == (401, "missing_api_key")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = await record(client, key + "x", mine)
    assert (wrong.status_code, wrong.json()["code"]) == (401, "invalid_api_key")
    other = await record(client, key, theirs)
    assert (other.status_code, other.json()["code"]) == (403, "out_of_scope")
    read = await client.get(f"/v1/tenants/{theirs}/balance", headers=headers(key))
    assert read.status_code == 403
    unknown = await record(client, key, "nobody-here")
    assert unknown.status_code == 403, "a key cannot learn which tenants exist elsewhere"
    batch = await post(
        client,
        key,
        "/v1/events",
        {
            "events": [
                {"id": "b1", "tenant": mine, "meter": "calls"},
                {"id": "b2", "tenant": theirs, "meter": "calls"},
            ]
        },
    )
    assert (batch.status_code, batch.json()["field"]) == (403, "events[1].tenant")
    assert Decimal((await balance(client, stack.admin_key, theirs))["balance"]) == Decimal(10)
    admin_unknown = await record(client, stack.admin_key, "nobody-here")
    assert (admin_unknown.status_code, admin_unknown.json()["code"]) == (404, "unknown_tenant")


async def test_a_retry_gets_the_original_answer_and_a_reused_id_is_a_conflict(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    tenant = stack.tenant(credit="10")
    key = stack.app_key(tenant)
    body = {"id": "once", "tenant": tenant, "meter": "calls", "quantity": 2}
    first = await post(client, key, "/v1/record", body)
    await record(client, key, tenant)  # the balance moves on in between
    again = await post(client, key, "/v1/record", body)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    conflict = await post(client, key, "/v1/record", body | {"quantity": 3})
    assert (conflict.status_code, conflict.json()["code"]) == (409, "idempotency_conflict")
    assert Decimal((await balance(client, key, tenant))["balance"]) == Decimal("9.25")


async def test_a_request_refused_as_wrong_leaves_its_id_for_the_corrected_one(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    tenant = stack.tenant(credit="10")
    key = stack.app_key(tenant)
    body = {"id": "fix-me", "tenant": tenant, "meter": "fax"}
    wrong = await post(client, key, "/v1/record", body)
    assert (wrong.status_code, wrong.json()["code"], wrong.json()["field"]) == (
        422,
        "rating_rejected",
        "meter",
    )
    fixed = await post(client, key, "/v1/record", body | {"meter": "calls"})
    assert fixed.status_code == 200 and fixed.json()["accepted"] is True, fixed.text
    again = await post(client, key, "/v1/record", body | {"meter": "calls"})
    assert again.content == fixed.content  # now the id is spent
    assert Decimal((await balance(client, key, tenant))["balance"]) == Decimal("9.75")


# Coalescing and races -----------------------------------------------------------------------


async def test_concurrent_requests_travel_in_fewer_calls(
    stack: Stack, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = stack.tenant(credit="1000")
    key = stack.app_key(tenant)
    await record(client, key, tenant)  # verify the key and find the tenant once
    calls: list[int] = []
    send = RayHosts.send

    def counting_send(self: RayHosts, host: str, items: Any) -> Any:
        calls.append(len(items))
        return send(self, host, items)

    monkeypatch.setattr(RayHosts, "send", counting_send)
    answers = await asyncio.gather(*(record(client, key, tenant) for _ in range(200)))
    assert all(answer.json()["accepted"] for answer in answers)
    assert sum(calls) == 200
    assert len(calls) < 50, calls


async def test_64_concurrent_records_never_spend_more_than_the_balance(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    tenant = stack.tenant(credit="2.50")  # exactly 10 calls
    key = stack.app_key(tenant)
    answers = await asyncio.gather(*(record(client, key, tenant) for _ in range(64)))
    bodies = [answer.json() for answer in answers]
    assert all(answer.status_code == 200 for answer in answers)
    assert sum(body["accepted"] for body in bodies) == 10
    assert {body["reason"] for body in bodies if not body["accepted"]} == {"insufficient_credit"}
    assert Decimal((await balance(client, key, tenant))["balance"]) == Decimal(0)


async def test_a_full_queue_answers_429_with_retry_after(stack: Stack) -> None:
    tenant = stack.tenant(credit="1000")
    config = GatewayConfig(batch_max=1, queued_max=1, calls_in_flight_max=1)
    async with gateway_client(stack.hosts, stack.url, config) as client:
        await record(client, stack.admin_key, tenant)
        answers = await asyncio.gather(
            *(record(client, stack.admin_key, tenant) for _ in range(20))
        )
    statuses = [answer.status_code for answer in answers]
    assert 200 in statuses and 429 in statuses
    busy = answers[statuses.index(429)]
    assert (busy.json()["code"], busy.headers["retry-after"]) == ("host_busy", "1")


# Health -------------------------------------------------------------------------------------


async def test_health_and_readiness(stack: Stack, client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "hosts": {name: "ok" for name in stack.hosts.names}}
    assert (await client.get("/nowhere")).json()["code"] == "no_such_route"


async def test_a_dead_host_denies_with_503_and_is_not_ready(stack: Stack) -> None:
    import ray

    from actors.ray_host import Hosts

    tenant = stack.tenant()
    dead = Hosts(1, stack.hosts.config, prefix=f"gw-dead-{uuid.uuid4().hex[:6]}")
    dead.start()
    try:
        for handle in dead.handles.values():
            ray.kill(handle, no_restart=True)
        async with gateway_client(dead, stack.url) as client:
            answer = await record(client, stack.admin_key, tenant)
            assert (answer.status_code, answer.json()["code"]) == (503, "host_unavailable")
            assert (await client.get("/readyz")).status_code == 503
    finally:
        dead.stop()
