"""The HTTP API: routes, and the one place where faults and refusals become HTTP answers.

Every hot-path request goes the same way: authenticate the key (401), read the body within
its limit (413), decode it into its Struct (400, 422), find the tenant's tree (404) and check
the key's scope (403), stamp the time of receipt, and send ``(root, command)`` through the
coalescer to the tree's host. The account's outcome is the answer: 200 for a decision, also a
refusal such as ``insufficient_credit`` (``accepted: false``); a 4xx for a request that was
wrong (see ``errors.py``). A busy host is 429, an unreachable one 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actors.ray_host import Hosts
from engine.accounts import Command, Outcome, Reason
from engine.instants import Instant
from gateway import errors
from gateway.coalescer import Coalescer
from gateway.config import GatewayConfig
from gateway.errors import ApiError
from gateway.grants import GrantBook
from gateway.hosts import (
    HostBusy,
    HostFailed,
    HostTransport,
    HostUnavailable,
    RayHosts,
    readiness,
)
from gateway.keys import KeyVerifier, may_use
from gateway.messages import (
    AuthorizeRequest,
    BalanceResponse,
    CaptureRequest,
    CommandRequest,
    Decision,
    EventsRequest,
    EventsResponse,
    QuoteRequest,
    QuoteResponse,
    RecordRequest,
    ReleaseRequest,
    SessionHeartbeatRequest,
    SessionStartRequest,
    SessionStopRequest,
    UsageResponse,
)
from gateway.metrics import Metrics, RequestMetrics, metrics_endpoint
from gateway.overdraft import Overdrafts
from gateway.policy import TenantPolicies
from gateway.tenants import TenantRoots
from persistence.catalogue import TENANT_ID_PATTERN, Catalogue
from persistence.credentials import ApiKey, ApiKeys
from persistence.database import engine_for

JSON: Final = "application/json"

T = TypeVar("T")
Endpoint = Callable[[Request], Awaitable[Response]]
_encode = msgspec.json.Encoder().encode


class Gateway:
    """What the routes share: the hosts, the coalescer, the key and tenant caches."""

    def __init__(
        self,
        transport: HostTransport,
        catalogue: Catalogue,
        api_keys: ApiKeys,
        config: GatewayConfig,
        clock: Callable[[], float],
    ) -> None:
        self.transport = transport
        self.config = config
        self.clock = clock
        self.catalogue = catalogue
        self.api_keys = api_keys
        self.coalescer = Coalescer(
            transport,
            batch_max=config.batch_max,
            calls_in_flight_max=config.calls_in_flight_max,
            queued_max=config.queued_max,
            linger_seconds=config.linger_seconds,
        )
        self.metrics = Metrics(transport)
        self.metrics.follow(self.coalescer)
        self.verifier = KeyVerifier(api_keys, cache_seconds=config.key_cache_seconds)
        self.roots = TenantRoots(catalogue)
        self.policies = TenantPolicies(catalogue, clock=clock)
        self.overdrafts = Overdrafts(
            self.policies, transport, self.coalescer, self.now, self.metrics.count_failure_policy
        )
        self.grants = (
            GrantBook(
                self.coalescer,
                transport.host_of,
                config,
                clock,
                self.metrics.set_grants_outstanding,
            )
            if config.grants_enabled
            else None
        )

    def now(self) -> Instant:
        return int(self.clock())

    async def root_in_scope(self, key: ApiKey, tenant: str, field: str = "tenant") -> str:
        """The root of ``tenant``'s tree if ``key`` may act for it; 403 or 404 if not."""
        lineage = await self.roots.lineage_of(tenant)
        if not may_use(key, lineage):
            raise errors.out_of_scope(field)
        if lineage is None:
            raise errors.unknown_tenant(field)
        return lineage[0]

    async def aclose(self) -> None:
        if self.grants is not None:
            await self.grants.aclose()  # its final reports go through the coalescer
        await self.overdrafts.aclose()
        await self.coalescer.aclose()
        self.policies.close()
        self.verifier.close()
        self.roots.close()
        self.catalogue.close()
        self.api_keys.close()


def create_app(
    hosts: Hosts | HostTransport,
    catalogue_url: str,
    *,
    config: GatewayConfig | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The gateway over ``hosts`` (started or attached), with tenants and API keys in the SQL
    database at ``catalogue_url`` (migrated)."""
    config = config or GatewayConfig.from_environment(os.environ)
    transport = (
        RayHosts(hosts, timeout_seconds=config.call_timeout_seconds)
        if isinstance(hosts, Hosts)
        else hosts
    )
    database = engine_for(catalogue_url)
    gateway = Gateway(transport, Catalogue(database), ApiKeys(database), config, clock)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await gateway.aclose()
            database.dispose()

    app = Starlette(routes=_routes(), exception_handlers=_HANDLERS, lifespan=lifespan)
    app.add_middleware(RequestMetrics, metrics=gateway.metrics)
    app.state.gateway = gateway
    app.state.database = database
    return app


def _routes() -> list[Route]:
    from gateway.admin import admin_routes  # admin.py builds on this module's helpers

    # Starlette tries routes in order: the hot path comes first.
    return [
        Route("/v1/record", _command_endpoint(RecordRequest), methods=["POST"]),
        Route("/v1/authorize", _command_endpoint(AuthorizeRequest), methods=["POST"]),
        Route("/v1/capture", _command_endpoint(CaptureRequest), methods=["POST"]),
        Route("/v1/events", events, methods=["POST"]),
        Route("/v1/release", _command_endpoint(ReleaseRequest), methods=["POST"]),
        Route("/v1/sessions/start", _command_endpoint(SessionStartRequest), methods=["POST"]),
        Route(
            "/v1/sessions/heartbeat", _command_endpoint(SessionHeartbeatRequest), methods=["POST"]
        ),
        Route("/v1/sessions/stop", _command_endpoint(SessionStopRequest), methods=["POST"]),
        Route("/v1/tenants/{tenant}/balance", balance, methods=["GET"]),
        Route("/v1/tenants/{tenant}/usage", usage, methods=["GET"]),
        Route("/v1/quote", quote, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *admin_routes(),
    ]


# Hot path -----------------------------------------------------------------------------------


def _command_endpoint(kind: type[CommandRequest]) -> Endpoint:
    name = kind.__name__.removesuffix("Request").lower()

    async def endpoint(request: Request) -> Response:
        gateway = _gateway(request)
        key = await gateway.verifier.authenticate(request.headers.get("authorization"))
        message = _decode(await _read_body(request, gateway.config.body_bytes_max), kind)
        root = await gateway.root_in_scope(key, message.tenant)
        if gateway.grants is not None:
            granted = gateway.grants.answer(root, message)
            if granted is not None:
                gateway.metrics.decided(name, _GRANTED)
                return _json(granted)  # from a slice this process holds
        host = gateway.transport.host_of(root)
        command = message.command(gateway.now())
        local = gateway.overdrafts.answer_locally(root, command)
        if local is not None:
            return _json(local)  # a reservation or session allowed while its host was away
        try:
            [outcome] = await gateway.coalescer.submit(host, [(root, command)])
        except HostUnavailable:
            return _json(await gateway.overdrafts.degrade(root, command))
        gateway.metrics.decided(name, outcome)
        if gateway.grants is not None:
            gateway.grants.observe(root, message, outcome)
        return _json(_decision(message.id, outcome))

    endpoint.__name__ = name
    return endpoint


async def events(request: Request) -> Response:
    """Usage that already happened, up to ``EVENTS_MAX`` events, each recorded (charged even
    into overdraft) with a result of its own, in the order sent."""
    gateway = _gateway(request)
    key = await gateway.verifier.authenticate(request.headers.get("authorization"))
    message = _decode(await _read_body(request, gateway.config.body_bytes_max), EventsRequest)
    roots = await _event_roots(gateway, key, [event.tenant for event in message.events])
    now = gateway.now()
    outcomes: list[Outcome] = [_UNKNOWN_TENANT] * len(message.events)
    hosts = {root: gateway.transport.host_of(root) for root in set(roots.values()) if root}
    by_host: dict[str, list[tuple[int, tuple[str, Command]]]] = {}
    for position, event in enumerate(message.events):
        root = roots[event.tenant]
        if root is not None:
            by_host.setdefault(hosts[root], []).append((position, (root, event.command(now))))
    chunk = gateway.config.batch_max
    sends = [
        (host, placed[start : start + chunk])
        for host, placed in by_host.items()
        for start in range(0, len(placed), chunk)
    ]
    answers = await asyncio.gather(
        *(gateway.coalescer.submit(host, [item for _, item in part]) for host, part in sends)
    )
    for (_host, part), answer in zip(sends, answers, strict=True):
        for (position, _item), outcome in zip(part, answer, strict=True):
            outcomes[position] = outcome
    gateway.metrics.ingested(outcomes)
    results = [
        Decision.of(event.id, outcome)
        for event, outcome in zip(message.events, outcomes, strict=True)
    ]
    accepted = sum(result.accepted for result in results)
    refused = len(results) - accepted
    return _json(EventsResponse(accepted=accepted, refused=refused, results=results))


_GRANTED: Final = Outcome(accepted=True)
"""What a record answered from a grant counts as in the metrics."""
_UNKNOWN_TENANT: Final = Outcome(
    accepted=False, reason=Reason.unknown_tenant, field="tenant", message="no such tenant"
)


async def _event_roots(gateway: Gateway, key: ApiKey, tenants: list[str]) -> dict[str, str | None]:
    """Each tenant's root. A tenant the key may not act for refuses the whole request (403);
    for an admin key, an unknown tenant is refused in its events' results only."""
    distinct = list(dict.fromkeys(tenants))
    found = await asyncio.gather(*(gateway.roots.lineage_of(tenant) for tenant in distinct))
    lineages = dict(zip(distinct, found, strict=True))
    for position, tenant in enumerate(tenants):
        if not may_use(key, lineages[tenant]):
            raise errors.out_of_scope(f"events[{position}].tenant")
    return {tenant: lineage[0] if lineage else None for tenant, lineage in lineages.items()}


async def balance(request: Request) -> Response:
    gateway = _gateway(request)
    key = await gateway.verifier.authenticate(request.headers.get("authorization"))
    tenant = _path_tenant(request)
    root = await gateway.root_in_scope(key, tenant)
    found = await gateway.transport.balance(gateway.transport.host_of(root), root, tenant)
    if found is None:
        raise errors.unknown_tenant()
    amount, available = found
    return _json(BalanceResponse(tenant=tenant, balance=amount, available=available))


async def usage(request: Request) -> Response:
    """The tenant's open period so far: quantities, the statement's lines as they stand."""
    gateway = _gateway(request)
    key = await gateway.verifier.authenticate(request.headers.get("authorization"))
    tenant = _path_tenant(request)
    root = await gateway.root_in_scope(key, tenant)
    host = gateway.transport.host_of(root)
    found = _answered(await gateway.transport.usage(host, root, tenant, gateway.now()))
    return _json(UsageResponse.of(found))


async def quote(request: Request) -> Response:
    """The price of some more usage now, changing nothing (so no id and no idempotency)."""
    gateway = _gateway(request)
    key = await gateway.verifier.authenticate(request.headers.get("authorization"))
    message = _decode(await _read_body(request, gateway.config.body_bytes_max), QuoteRequest)
    root = await gateway.root_in_scope(key, message.tenant)
    host = gateway.transport.host_of(root)
    found = await gateway.transport.quote(host, root, message.query(), gateway.now())
    return _json(QuoteResponse.of(message, _answered(found)))


def _answered(found: T | Outcome | None) -> T:
    """A query's answer, or the error its refusal stands for (a tree the host does not
    know is an unknown tenant: the catalogue has it, the host not yet)."""
    if found is None:
        raise errors.unknown_tenant()
    if isinstance(found, Outcome):
        assert found.reason is not None and found.reason not in errors.DECISIONS, found
        raise errors.refused(found.reason, found.message, found.field)
    return found


# Health -------------------------------------------------------------------------------------


async def openapi_json(request: Request) -> Response:
    """The OpenAPI 3.1 document, generated once per app from the Structs."""
    cached: bytes | None = getattr(request.app.state, "openapi", None)
    if cached is None:
        from gateway.openapi import document

        cached = _encode(document())
        request.app.state.openapi = cached
    return Response(cached, media_type=JSON)


async def healthz(_request: Request) -> Response:
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when every host answers a ping within the deadline and its journal is
    writable."""
    gateway = _gateway(request)
    timeout = gateway.config.ready_timeout_seconds
    names = list(gateway.transport.names)
    answers = await asyncio.gather(
        *(gateway.transport.ping(name, timeout) for name in names), return_exceptions=True
    )
    hosts = {name: readiness(answer) for name, answer in zip(names, answers, strict=True)}
    ready = all(state == "ok" for state in hosts.values())
    return _json({"ready": ready, "hosts": hosts}, status=200 if ready else 503)


# Requests and answers -----------------------------------------------------------------------


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _path_tenant(request: Request) -> str:
    """The ``{tenant}`` in the path, checked as a tenant id in a body is (422)."""
    tenant: str = request.path_params["tenant"]
    if not TENANT_ID_PATTERN.fullmatch(tenant):
        raise errors.invalid("tenant: must be 1-64 letters, digits or '_.:-'", "tenant")
    return tenant


async def _read_body(request: Request, limit_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise errors.malformed("Content-Length is not a number")
        if int(declared) > limit_bytes:
            raise errors.body_too_large(limit_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise errors.body_too_large(limit_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        raise errors.from_validation(error) from None
    except msgspec.DecodeError as error:
        raise errors.malformed(f"the body is not JSON: {error}") from None


def _decision(command_id: str, outcome: Outcome) -> Decision:
    """A decision to answer 200; a refusal that says the request was wrong is raised."""
    if not outcome.accepted:
        assert outcome.reason is not None, "a refusal names its reason"
        if outcome.reason not in errors.DECISIONS:
            raise errors.refused(outcome.reason, outcome.message, outcome.field)
    return Decision.of(command_id, outcome)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(body), status_code=status, headers=headers, media_type=JSON)


# Faults -------------------------------------------------------------------------------------


def _error(error: ApiError) -> Response:
    return _json(error.body, status=error.status, headers=error.headers)


async def _on_api_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return _error(error)


async def _on_http_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = {404: "no_such_route", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return _json(
        errors.ErrorBody(code=code, message=str(error.detail)),
        status=error.status_code,
        headers=dict(error.headers or {}),
    )


async def _on_host_busy(_request: Request, error: Exception) -> Response:
    return _error(errors.host_busy(str(error) or "the account host is busy; retry later"))


async def _on_host_unavailable(_request: Request, _error_: Exception) -> Response:
    return _error(errors.host_unavailable())


async def _on_internal(_request: Request, _error_: Exception) -> Response:
    return _error(errors.internal())


_HANDLERS: Final[dict[Any, Any]] = {
    ApiError: _on_api_error,
    HTTPException: _on_http_error,
    HostBusy: _on_host_busy,
    HostUnavailable: _on_host_unavailable,
    HostFailed: _on_internal,
    Exception: _on_internal,
}
