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
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from types import CoroutineType
from typing import Any, Final, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

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
    Event,
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
from gateway.tenants import Lineage, TenantRoots
from persistence.catalogue import TENANT_ID_PATTERN, Catalogue
from persistence.credentials import ApiKey, ApiKeys
from persistence.database import engine_for

JSON: Final = "application/json"
CLIENT_GONE: Final = 499
"""The status counted for a request whose client went away before its body arrived (as
nginx logs it); nothing is answered."""

T = TypeVar("T")
HotHandler = Callable[["Gateway", ApiKey, bytes], Any]
"""A hot-path route: given the request's key (authenticated) and its body (read within the
limit), what to answer 200 with (a Struct, or its JSON already encoded), or a coroutine that
gives it when the answer must wait (a host, a lookup); faults are raised as on any other
route. A request answered at once (from a grant) so takes no coroutine of its own."""
_encode = msgspec.json.Encoder().encode
log = logging.getLogger(__name__)


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
            send_at=config.send_at,
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
        return self.root_of(key, await self.roots.lineage_of(tenant), field)

    def root_known(self, key: ApiKey, tenant: str, field: str = "tenant") -> str | None:
        """:meth:`root_in_scope` if ``tenant``'s lineage is remembered, without waiting; None
        if it must be looked up."""
        entry = self.roots.known(tenant)
        return None if entry is None else self.root_of(key, entry[1], field)

    @staticmethod
    def root_of(key: ApiKey, lineage: Lineage | None, field: str) -> str:
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
        self.transport.close()
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
) -> GatewayApp:
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

    hot = _hot_routes(gateway)
    app = GatewayApp(
        hot, gateway.metrics, routes=_routes(hot), exception_handlers=_HANDLERS, lifespan=lifespan
    )
    app.add_middleware(RequestMetrics, metrics=gateway.metrics)
    app.state.gateway = gateway
    app.state.database = database
    return app


def _hot_routes(gateway: Gateway) -> dict[str, HotRoute]:
    """The hot path's POST routes by path, answered by :class:`GatewayApp` before routing."""
    handlers: dict[str, HotHandler] = {
        "/v1/record": _command(RecordRequest),
        "/v1/authorize": _command(AuthorizeRequest),
        "/v1/capture": _command(CaptureRequest),
        "/v1/events": events,
        "/v1/release": _command(ReleaseRequest),
        "/v1/sessions/start": _command(SessionStartRequest),
        "/v1/sessions/heartbeat": _command(SessionHeartbeatRequest),
        "/v1/sessions/stop": _command(SessionStopRequest),
    }
    return {path: HotRoute(gateway, handle) for path, handle in handlers.items()}


def _routes(hot: dict[str, HotRoute]) -> list[Route]:
    from gateway.admin import admin_routes  # admin.py builds on this module's helpers

    # The hot routes are routes too: Starlette answers their other methods (405), and the
    # OpenAPI document and the tests find them in the routing table.
    return [
        *(
            Route(path, route, methods=["POST"], name=route.handle.__name__)
            for path, route in hot.items()
        ),
        Route("/v1/tenants/{tenant}/balance", balance, methods=["GET"]),
        Route("/v1/tenants/{tenant}/usage", usage, methods=["GET"]),
        Route("/v1/quote", quote, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *admin_routes(),
    ]


class GatewayApp(Starlette):
    """Starlette, with the hot path's POST routes answered before its middleware and routing.

    An authorise-and-record request spends most of its time in HTTP and in the call to its
    host; Starlette's layers (the error and exception middleware, the metrics middleware,
    routing by pattern, Request and Response objects) came to about a fifth of the gateway's
    CPU per request (py-spy under ``meterwerk bench``). A hot route matched here by its exact
    path is answered by its :class:`HotRoute`, counted in the same metrics; everything else,
    and a hot path's other methods, goes through Starlette as before.
    """

    def __init__(self, hot: dict[str, HotRoute], metrics: Metrics, **settings: Any) -> None:
        super().__init__(**settings)
        self.hot = hot
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self.hot.get(scope["path"])
            if route is not None:
                scope["app"] = self
                began = time.perf_counter()
                status = 500
                try:
                    status = await route.answer(scope, receive, send)
                finally:
                    self.metrics.observe(scope["path"], "POST", status, time.perf_counter() - began)
                return
        await super().__call__(scope, receive, send)


class HotRoute:
    """One hot-path POST route as a plain ASGI app: authenticate (401), read the body within
    its limit (413), hand both to the handler, and answer its Struct as JSON, or the error a
    fault stands for, exactly as the Starlette routes answer them (``_fault``)."""

    def __init__(self, gateway: Gateway, handle: HotHandler) -> None:
        self.gateway = gateway
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.answer(scope, receive, send)

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer the request; the status answered (``CLIENT_GONE``: none)."""
        gateway = self.gateway
        authorization: bytes | None = None
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:
                authorization = value
            elif name == b"content-length" and declared is None:
                declared = value
        headers: dict[str, str] | None = None
        try:
            key = gateway.verifier.verify(authorization)
            if not isinstance(key, ApiKey):
                key = await key  # not remembered: looked up
            limit = gateway.config.body_bytes_max
            if declared is not None:
                _check_declared(declared, limit)
            # The body, in one message as a small one always comes, read here: a coroutine
            # less than _receive_body for each request.
            message = await receive()
            if message["type"] != "http.request":
                return CLIENT_GONE  # http.disconnect
            body: bytes = message.get("body", b"")
            if message.get("more_body", False) or len(body) > limit:
                rest = await _receive_body(receive, None, limit, body)
                if rest is None:
                    return CLIENT_GONE
                body = rest
            answer = self.handle(gateway, key, body)
            if type(answer) is CoroutineType:
                answer = await answer
            status, payload = 200, answer if type(answer) is bytes else _encode(answer)
        except Exception as error:
            fault = _fault(error)
            if fault.status == 500:  # Starlette's routes leave this to uvicorn's log
                log.error("%s failed", scope["path"], exc_info=error)
            status, payload, headers = fault.status, _encode(fault.body), fault.headers
        length = (b"content-length", b"%d" % len(payload))
        start: list[tuple[bytes, bytes]] = [_CONTENT_TYPE, length]
        if headers:
            start += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": start})
        await send({"type": "http.response.body", "body": payload})
        return status


_CONTENT_TYPE: Final = (b"content-type", JSON.encode())


# Hot path -----------------------------------------------------------------------------------


def _command(kind: type[CommandRequest]) -> HotHandler:
    name = kind.__name__.removesuffix("Request").lower()

    def handle(gateway: Gateway, key: ApiKey, body: bytes) -> Any:
        message = _decode(body, kind)
        root = gateway.root_known(key, message.tenant)
        if root is not None:
            granted = granted_answer(gateway, root, message)
            if granted is not None:
                return granted  # at once
        return on_host(gateway, key, message, root)

    def granted_answer(gateway: Gateway, root: str, message: CommandRequest) -> bytes | None:
        """The answer from a slice this process holds, if there is one."""
        granted = None if gateway.grants is None else gateway.grants.answer(root, message)
        if granted is not None:
            gateway.metrics.decided(name, _GRANTED)
        return granted

    async def on_host(
        gateway: Gateway, key: ApiKey, message: CommandRequest, root: str | None
    ) -> Any:
        if root is None:
            root = await gateway.root_in_scope(key, message.tenant)
            granted = granted_answer(gateway, root, message)
            if granted is not None:
                return granted
        host = gateway.transport.host_of(root)
        command = message.command(gateway.now())
        local = gateway.overdrafts.answer_locally(root, command)
        if local is not None:
            return local  # a reservation or session allowed while its host was away
        try:
            [outcome] = await gateway.coalescer.submit(host, [(root, command)])
        except HostUnavailable:
            return await gateway.overdrafts.degrade(root, command)
        gateway.metrics.decided(name, outcome)
        if gateway.grants is not None:
            gateway.grants.observe(root, message, outcome)
        return _decision(message.id, outcome)

    handle.__name__ = name
    return handle


async def events(gateway: Gateway, key: ApiKey, body: bytes) -> Any:
    """Usage that already happened, up to ``EVENTS_MAX`` events, each recorded (charged even
    into overdraft) with a result of its own, in the order sent."""
    events = _decode(body, EventsRequest).events
    roots = await _event_roots(gateway, key, [event.tenant for event in events])
    outcomes = await _ingest(gateway, events, roots, gateway.now())
    gateway.metrics.ingested(outcomes)
    results = [
        Decision.of(event.id, outcome) for event, outcome in zip(events, outcomes, strict=True)
    ]
    accepted = sum(result.accepted for result in results)
    refused = len(results) - accepted
    return EventsResponse(accepted=accepted, refused=refused, results=results)


async def _ingest(
    gateway: Gateway, events: list[Event], roots: dict[str, str | None], now: Instant
) -> list[Outcome]:
    """Each event's outcome from the host of its tree (unknown tenants refused here): each
    host gets its events in the order sent, in calls of at most ``batch_max``, all hosts at
    once."""
    hosts = {root: gateway.transport.host_of(root) for root in set(roots.values()) if root}
    placed: dict[str, tuple[list[int], list[tuple[str, Command]]]] = {}
    for position, event in enumerate(events):
        root = roots[event.tenant]
        if root is not None:
            host = hosts[root]
            lists = placed.get(host)
            if lists is None:
                lists = placed[host] = ([], [])
            lists[0].append(position)
            lists[1].append((root, event.command(now)))
    chunk = gateway.config.batch_max
    sends = [
        (host, positions[start : start + chunk], items[start : start + chunk])
        for host, (positions, items) in placed.items()
        for start in range(0, len(items), chunk)
    ]
    answers = await asyncio.gather(
        *(gateway.coalescer.submit(host, items) for host, _, items in sends)
    )
    outcomes: list[Outcome] = [_UNKNOWN_TENANT] * len(events)
    for (_host, positions, _items), answer in zip(sends, answers, strict=True):
        for position, outcome in zip(positions, answer, strict=True):
            outcomes[position] = outcome
    return outcomes


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
    for tenant, lineage in lineages.items():
        if not may_use(key, lineage):
            raise errors.out_of_scope(f"events[{tenants.index(tenant)}].tenant")
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


def _check_declared(declared: str | bytes, limit_bytes: int) -> None:
    """A ``Content-Length`` that is a number within ``limit_bytes``: a body declared too
    large is refused at once, before any of it is read."""
    if not declared.isdigit():
        raise errors.malformed("Content-Length is not a number")
    if int(declared) > limit_bytes:
        raise errors.body_too_large(limit_bytes)


async def _receive_body(
    receive: Receive, declared: str | bytes | None, limit_bytes: int, first: bytes = b""
) -> bytes | None:
    """The body from ASGI messages (after ``first``, the body of a message already
    received), within ``limit_bytes``; None if the client went away."""
    if declared is not None:
        _check_declared(declared, limit_bytes)
    chunks: list[bytes] = [first] if first else []
    size = len(first)
    if size > limit_bytes:
        raise errors.body_too_large(limit_bytes)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # http.disconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit_bytes:
            raise errors.body_too_large(limit_bytes)
        if not message.get("more_body", False):
            return b"".join((*chunks, chunk)) if chunks else chunk
        chunks.append(chunk)


async def _read_body(request: Request, limit_bytes: int) -> bytes:
    """A Starlette route's body, read as the hot routes read theirs."""
    declared = request.headers.get("content-length")
    body = await _receive_body(request.receive, declared, limit_bytes)
    if body is None:
        raise ClientDisconnect()
    return body


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


def _fault(error: Exception) -> ApiError:
    """The answer to an exception raised while handling a request, on any route."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, HostBusy):
        return errors.host_busy(str(error) or "the account host is busy; retry later")
    if isinstance(error, HostUnavailable):
        return errors.host_unavailable()
    return errors.internal()  # HostFailed (the host raised) or a bug here


def _error(error: ApiError) -> Response:
    return _json(error.body, status=error.status, headers=error.headers)


async def _on_fault(_request: Request, error: Exception) -> Response:
    return _error(_fault(error))


async def _on_http_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = {404: "no_such_route", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return _json(
        errors.ErrorBody(code=code, message=str(error.detail)),
        status=error.status_code,
        headers=dict(error.headers or {}),
    )


_HANDLERS: Final[dict[Any, Any]] = {
    # Exception itself is handled by Starlette's outermost middleware, which answers and then
    # raises it again for the server to log; the others are answered and end there.
    **dict.fromkeys((ApiError, HostBusy, HostUnavailable, HostFailed, Exception), _on_fault),
    HTTPException: _on_http_error,
}
