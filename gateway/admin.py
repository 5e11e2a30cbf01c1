"""The admin API under ``/v1/admin/``: tenants and their hierarchy, meters, tariffs and their
versions, credit, API keys. Every route needs a key with the ``admin`` scope.

Checks run in this order: the key (401), its scope (403), the query or body (400, 413, 422),
then what the request names (404, 409, 422). A request that fails a check changes nothing.

A tenant lives in two places: the SQL catalogue (for lists, billing and placement) and its
account on the host of its tree. A tenant is written to its host first and to the catalogue
after, so that a tenant the host refuses is never listed; a write that fails in between is
repaired by sending it again (the host takes the same settings twice without harm). Writes
that touch both take one lock per gateway process, so that two requests for the same tenant
or tariff cannot interleave here. Catalogue calls block, so they run on threads.

``ROUTES`` lists every route with its request and answer types, for the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final, NamedTuple, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.accounts import Command, ConfigureTenant, Outcome, Resume, Suspend
from engine.instants import to_datetime
from engine.meters import Meter
from engine.tariffs import Tariff, TariffVersion, problems
from gateway import errors
from gateway.admin_messages import (
    CHILDREN_MAX,
    CreditRequest,
    KeyCreate,
    KeyCreated,
    KeyPage,
    KeyQuery,
    KeyView,
    MeterPage,
    PageQuery,
    Problem,
    TariffAssignmentRequest,
    TariffPage,
    TariffValidation,
    TenantCreate,
    TenantDetail,
    TenantFields,
    TenantPage,
    TenantQuery,
    TenantView,
)
from gateway.app import (
    Gateway,
    _decision,
    _decode,
    _gateway,
    _json,
    _path_tenant,
    _read_body,
)
from gateway.errors import ApiError
from gateway.keys import is_admin
from gateway.messages import Decision
from gateway.openapi import Operation, Parameter
from persistence.catalogue import Catalogue, Tenant
from persistence.credentials import ApiKey

T = TypeVar("T")
Handler = Callable[[Request, Gateway], Awaitable[Response]]
_FIELD: Final = re.compile(r"^(?P<field>[A-Za-z_][A-Za-z0-9_.\[\]]*): (?P<message>.+)$", re.DOTALL)
_VERSION_PREFIX: Final = re.compile(r"^versions\[\d+\]\.?")
_KEY_ID: Final = re.compile(r"[0-9a-f]{16}")


# Errors -------------------------------------------------------------------------------------


def _not_admin() -> ApiError:
    return ApiError(403, "out_of_scope", "the admin API needs a key with the admin scope", None)


def _not_found(what: str, name: str, field: str | None = None) -> ApiError:
    return ApiError(404, f"unknown_{what}", f"no {what} {name!r}", field)


def _exists(what: str, name: str, hint: str = "") -> ApiError:
    return ApiError(409, f"{what}_exists", f"{what} {name!r} exists with other content{hint}")


def _invalid(error: ValueError, strip_version: bool = False) -> ApiError:
    """A 422 from a check's ``"field: message"`` (the engine's and the catalogue's form)."""
    match = _FIELD.match(str(error))
    if match is None:
        return errors.invalid(str(error), None)
    field = match.group("field")
    if strip_version:  # the body is one version, not a tariff
        field = _VERSION_PREFIX.sub("", field) or None
    return errors.invalid(match.group("message"), field)


def _refused(outcome: Outcome) -> ApiError:
    """The host's refusal of an admin command that is not a decision to answer."""
    assert outcome.reason is not None, "a refusal names its reason"
    if outcome.reason in errors.DECISIONS:
        return ApiError(409, outcome.reason.value, outcome.message, outcome.field)
    return errors.refused(outcome.reason, outcome.message, outcome.field)


# Requests and answers -----------------------------------------------------------------------


def _admin(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        gateway = _gateway(request)
        key = await gateway.verifier.authenticate(request.headers.get("authorization"))
        if not is_admin(key):
            raise _not_admin()
        return await handler(request, gateway)

    endpoint.__name__ = handler.__name__
    return endpoint


async def _body(request: Request, gateway: Gateway, kind: type[T]) -> T:
    return _decode(await _read_body(request, gateway.config.body_bytes_max), kind)


def _query(request: Request, kind: type[T]) -> T:
    try:
        return msgspec.convert(dict(request.query_params), type=kind, strict=False)
    except msgspec.ValidationError as error:
        raise errors.from_validation(error) from None


async def _blocking(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(call, *args, **kwargs)


def _writes(request: Request) -> asyncio.Lock:
    """The gateway process's lock for writes that touch the catalogue and a host."""
    state = request.app.state
    lock: asyncio.Lock | None = getattr(state, "admin_writes", None)
    if lock is None:
        lock = state.admin_writes = asyncio.Lock()
    return lock


def _page(items: list[T], limit: int, key: Callable[[T], str]) -> tuple[list[T], str | None]:
    """The first ``limit`` of ``limit + 1`` fetched items, and the cursor if there are more."""
    if len(items) > limit:
        return items[:limit], key(items[limit - 1])
    return items, None


async def _send(gateway: Gateway, root: str, command: Command) -> Outcome:
    [outcome] = await gateway.coalescer.submit(gateway.transport.host_of(root), [(root, command)])
    return outcome


def _admin_id(action: str) -> str:
    """A fresh command id for an admin action that is safe to repeat (configure, suspend)."""
    return f"admin:{action}:{uuid.uuid4().hex}"


# Tenants ------------------------------------------------------------------------------------


async def create_tenant(request: Request, gateway: Gateway) -> Response:
    message = await _body(request, gateway, TenantCreate)
    tenant = _catalogue_tenant(message, message.id)
    async with _writes(request):
        existing = await _blocking(gateway.catalogue.tenant, tenant.id)
        if existing is not None and existing != tenant:
            raise _exists("tenant", tenant.id, "; change it with PUT")
        root = tenant.id
        if tenant.parent is not None:
            found = await _blocking(gateway.catalogue.root_of, tenant.parent)
            if found is None:
                raise errors.invalid(f"no tenant {tenant.parent!r}", "settings.parent")
            root = found
        await _save_tenant(gateway, root, tenant, existing)
    gateway.roots.forget(tenant.id)
    detail = await _blocking(_tenant_detail, gateway.catalogue, tenant.id)
    return _json(detail, status=200 if existing is not None else 201)


async def update_tenant(request: Request, gateway: Gateway) -> Response:
    tenant_id = _path_tenant(request)
    message = await _body(request, gateway, TenantFields)
    tenant = _catalogue_tenant(message, tenant_id)
    async with _writes(request):
        await _replace_tenant(gateway, tenant_id, lambda _existing: tenant)
    return _json(await _blocking(_tenant_detail, gateway.catalogue, tenant_id))


async def assign_tariff(request: Request, gateway: Gateway) -> Response:
    tenant_id = _path_tenant(request)
    message = await _body(request, gateway, TariffAssignmentRequest)

    def assigned(existing: Tenant) -> Tenant:
        try:
            settings = msgspec.structs.replace(existing.settings, tariff=message.tariff)
        except ValueError as error:
            raise _invalid(error) from None
        return msgspec.structs.replace(existing, settings=settings)

    async with _writes(request):
        await _replace_tenant(gateway, tenant_id, assigned)
    return _json(await _blocking(_tenant_detail, gateway.catalogue, tenant_id))


async def _replace_tenant(
    gateway: Gateway, tenant_id: str, change: Callable[[Tenant], Tenant]
) -> None:
    existing = await _blocking(gateway.catalogue.tenant, tenant_id)
    if existing is None:
        raise errors.unknown_tenant("tenant")
    tenant = change(existing)
    if tenant.parent != existing.parent:
        raise errors.invalid("a tenant cannot move to another parent", "settings.parent")
    root = await _blocking(gateway.catalogue.root_of, tenant_id)
    assert root is not None, "a stored tenant has a root"
    await _save_tenant(gateway, root, tenant, existing)


async def _save_tenant(
    gateway: Gateway, root: str, tenant: Tenant, existing: Tenant | None
) -> None:
    """Configure the tenant's account on its host, then keep it in the catalogue, with a
    record of a new tariff."""
    tariff = tenant.settings.tariff
    if tariff is not None and await _blocking(gateway.catalogue.tariff, tariff) is None:
        raise errors.invalid(f"unknown tariff {tariff!r}", "settings.tariff")
    command = ConfigureTenant(
        id=_admin_id("configure"), tenant=tenant.id, time=gateway.now(), settings=tenant.settings
    )
    outcome = await _send(gateway, root, command)
    if not outcome.accepted:
        raise _refused(outcome)
    try:
        await _blocking(gateway.catalogue.save_tenant, tenant)
    except ValueError as error:
        raise _invalid(error) from None
    if tariff is not None and (existing is None or existing.settings.tariff != tariff):
        effective_from = to_datetime(command.time)
        await _blocking(gateway.catalogue.assign_tariff, tenant.id, tariff, effective_from)


def _catalogue_tenant(message: TenantFields, tenant_id: str) -> Tenant:
    try:
        return message.tenant(tenant_id)
    except ValueError as error:
        raise _invalid(error) from None


def _tenant_detail(catalogue: Catalogue, tenant_id: str) -> TenantDetail:
    tenant = catalogue.tenant(tenant_id)
    if tenant is None:
        raise errors.unknown_tenant("tenant")
    root = catalogue.root_of(tenant_id)
    assert root is not None, "a stored tenant has a root"
    children = catalogue.list_tenants(limit=CHILDREN_MAX + 1, parent=tenant_id)
    shown, more = _page([child.id for child in children], CHILDREN_MAX, str)
    return TenantDetail.of_tree(tenant, root, shown, more)


async def get_tenant(request: Request, gateway: Gateway) -> Response:
    return _json(await _blocking(_tenant_detail, gateway.catalogue, _path_tenant(request)))


async def list_tenants(request: Request, gateway: Gateway) -> Response:
    query = _query(request, TenantQuery)
    found = await _blocking(
        gateway.catalogue.list_tenants,
        limit=query.limit + 1,
        after=query.after,
        root=query.root,
        parent=query.parent,
    )
    items, next_after = _page(found, query.limit, lambda tenant: tenant.id)
    return _json(TenantPage(items=[TenantView.of(tenant) for tenant in items], next=next_after))


async def suspend_tenant(request: Request, gateway: Gateway) -> Response:
    return await _tenant_command(request, gateway, Suspend, "suspend")


async def resume_tenant(request: Request, gateway: Gateway) -> Response:
    return await _tenant_command(request, gateway, Resume, "resume")


async def _tenant_command(
    request: Request, gateway: Gateway, kind: type[Suspend | Resume], action: str
) -> Response:
    tenant = _path_tenant(request)
    root = await gateway.roots.root_of(tenant)
    if root is None:
        raise errors.unknown_tenant("tenant")
    command = kind(id=_admin_id(action), tenant=tenant, time=gateway.now())
    return _json(_decision(command.id, await _send(gateway, root, command)))


async def add_credit(request: Request, gateway: Gateway) -> Response:
    tenant = _path_tenant(request)
    message = await _body(request, gateway, CreditRequest)
    root = await gateway.roots.root_of(tenant)
    if root is None:
        raise errors.unknown_tenant("tenant")
    outcome = await _send(gateway, root, message.command(tenant, gateway.now()))
    return _json(_decision(message.id, outcome))


# Meters -------------------------------------------------------------------------------------


async def create_meter(request: Request, gateway: Gateway) -> Response:
    """Meters are added, never changed: open periods count with the meter they began with."""
    meter = await _body(request, gateway, Meter)
    async with _writes(request):
        existing = await _blocking(gateway.catalogue.meter, meter.key)
        if existing is not None and existing != meter:
            raise _exists("meter", meter.key)
        if existing is None:
            await _blocking(gateway.catalogue.save_meter, meter)
    return _json(meter, status=200 if existing is not None else 201)


async def list_meters(request: Request, gateway: Gateway) -> Response:
    query = _query(request, PageQuery)
    found = await _blocking(gateway.catalogue.list_meters, limit=query.limit + 1, after=query.after)
    items, next_after = _page(found, query.limit, lambda meter: meter.key)
    return _json(MeterPage(items=items, next=next_after))


async def get_meter(request: Request, gateway: Gateway) -> Response:
    key: str = request.path_params["key"]
    meter = await _blocking(gateway.catalogue.meter, key)
    if meter is None:
        raise _not_found("meter", key, "key")
    return _json(meter)


# Tariffs ------------------------------------------------------------------------------------


def _problems(catalogue: Catalogue, tariff: Tariff) -> list[Problem]:
    """What a stored catalogue says against ``tariff``: unknown meters, charges their meters
    do not allow."""
    keys = {charge.meter for version in tariff.versions for charge in version.charges}
    meters = {key: meter for key in keys if (meter := catalogue.meter(key)) is not None}
    return [Problem(field=field, message=text) for field, text in problems(tariff, meters)]


async def validate_tariff(request: Request, gateway: Gateway) -> Response:
    """A dry run of ``POST /v1/admin/tariffs``: saves nothing. Every problem of a document
    that is JSON is answered as a problem (200, ``valid: false``), whether the document does
    not decode or does not fit the catalogue; a body that is not JSON is 400."""
    body = await _read_body(request, gateway.config.body_bytes_max)
    try:
        tariff = _decode(body, Tariff)
    except errors.ApiError as error:
        if error.status != 422:
            raise
        problem = Problem(field=error.body.field or "", message=error.body.message)
        return _json(TariffValidation(valid=False, problems=[problem]))
    found = await _blocking(_problems, gateway.catalogue, tariff)
    existing = await _blocking(gateway.catalogue.tariff, tariff.key)
    if existing is not None and existing != tariff:
        found.insert(0, Problem(field="key", message=f"tariff {tariff.key!r} exists"))
    return _json(TariffValidation(valid=not found, problems=found))


async def create_tariff(request: Request, gateway: Gateway) -> Response:
    tariff = await _body(request, gateway, Tariff)
    async with _writes(request):
        existing = await _blocking(gateway.catalogue.tariff, tariff.key)
        if existing is not None and existing != tariff:
            raise _exists("tariff", tariff.key, "; add a version with POST .../versions")
        if existing is None:
            await _save_tariff(gateway, tariff)
        await gateway.transport.reload_tariffs()
    return _json(tariff, status=200 if existing is not None else 201)


async def add_version(request: Request, gateway: Gateway) -> Response:
    """A new version of a stored tariff, effective now or later: a version already in effect
    is never changed, so that periods rated with it stay as they were."""
    key: str = request.path_params["key"]
    version = await _body(request, gateway, TariffVersion)
    async with _writes(request):
        existing = await _blocking(gateway.catalogue.tariff, key)
        if existing is None:
            raise _not_found("tariff", key, "key")
        same = [stored for stored in existing.versions if stored.version == version.version]
        if same and same[0] != version:
            raise _exists("version", f"{key} {version.version}")
        if not same:
            tariff = _with_version(existing, version, gateway.now())
            await _save_tariff(gateway, tariff, strip_version=True)
            existing = tariff
        await gateway.transport.reload_tariffs()
    return _json(existing, status=200 if same else 201)


def _with_version(tariff: Tariff, version: TariffVersion, now: int) -> Tariff:
    latest = tariff.versions[-1]
    if version.version <= latest.version:
        raise errors.invalid(f"must be greater than the latest, {latest.version}", "version")
    if version.effective_instant < now:
        raise errors.invalid("must be now or later", "effective_from")
    try:
        return msgspec.structs.replace(tariff, versions=(*tariff.versions, version))
    except ValueError as error:
        raise _invalid(error, strip_version=True) from None


async def _save_tariff(gateway: Gateway, tariff: Tariff, strip_version: bool = False) -> None:
    found = await _blocking(_problems, gateway.catalogue, tariff)
    if found:
        field = _VERSION_PREFIX.sub("", found[0].field) if strip_version else found[0].field
        raise errors.invalid(found[0].message, field or None)
    try:
        await _blocking(gateway.catalogue.save_tariff, tariff)
    except ValueError as error:
        raise _invalid(error, strip_version) from None


async def list_tariffs(request: Request, gateway: Gateway) -> Response:
    query = _query(request, PageQuery)
    found = await _blocking(
        gateway.catalogue.list_tariffs, limit=query.limit + 1, after=query.after
    )
    items, next_after = _page(found, query.limit, lambda tariff: tariff.key)
    return _json(TariffPage(items=items, next=next_after))


async def get_tariff(request: Request, gateway: Gateway) -> Response:
    key: str = request.path_params["key"]
    tariff = await _blocking(gateway.catalogue.tariff, key)
    if tariff is None:
        raise _not_found("tariff", key, "key")
    return _json(tariff)


# API keys -----------------------------------------------------------------------------------


def _key_view(key: ApiKey) -> KeyView:
    return KeyView(
        id=key.id,
        prefix=key.prefix,
        scopes=list(key.scopes),
        tenant_root=key.tenant_root,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


async def create_key(request: Request, gateway: Gateway) -> Response:
    """A new key; its plaintext is in this answer only."""
    message = await _body(request, gateway, KeyCreate)
    root = message.tenant_root
    # An application key acts for its tenant's subtree (gateway/keys.py).
    if root is not None and await _blocking(gateway.catalogue.root_of, root) is None:
        raise errors.unknown_tenant("tenant_root")
    scopes = [scope.value for scope in message.scopes]
    key_id, plaintext = await _blocking(gateway.api_keys.create, scopes, root)
    key = await _blocking(gateway.api_keys.get, key_id)
    assert key is not None, "a key just created is stored"
    view = msgspec.structs.asdict(_key_view(key))
    return _json(KeyCreated(**view, key=plaintext), status=201)


async def list_keys(request: Request, gateway: Gateway) -> Response:
    query = _query(request, KeyQuery)
    found = await _blocking(
        gateway.api_keys.list_keys,
        limit=query.limit + 1,
        after=query.after,
        tenant_root=query.tenant_root,
    )
    items, next_after = _page(found, query.limit, lambda key: key.id)
    return _json(KeyPage(items=[_key_view(key) for key in items], next=next_after))


async def revoke_key(request: Request, gateway: Gateway) -> Response:
    """Revoke a key (again: no change). A gateway that verified the key recently may accept
    it for up to ``key_cache_seconds`` more."""
    key_id: str = request.path_params["key_id"]
    if not _KEY_ID.fullmatch(key_id):
        raise _not_found("key", key_id, "key_id")
    if await _blocking(gateway.api_keys.get, key_id) is None:
        raise _not_found("key", key_id, "key_id")
    await _blocking(gateway.api_keys.revoke, key_id)
    gateway.verifier.forget(key_id)
    key = await _blocking(gateway.api_keys.get, key_id)
    assert key is not None and key.revoked_at is not None
    return _json(_key_view(key))


# The routes ---------------------------------------------------------------------------------


class AdminRoute(NamedTuple):
    """One route, as an OpenAPI generator reads it: ``request`` is the body's type,
    ``query`` the query's, ``answer`` the type of a ``status`` answer."""

    method: str
    path: str
    handler: Handler
    summary: str
    answer: type
    status: int = 200
    request: type | None = None
    query: type | None = None


ROUTES: Final[tuple[AdminRoute, ...]] = (
    AdminRoute(
        "POST",
        "/v1/admin/tenants",
        create_tenant,
        "Create a tenant (a root, or a sub-tenant of settings.parent) and its account",
        TenantDetail,
        201,
        request=TenantCreate,
    ),
    AdminRoute(
        "GET", "/v1/admin/tenants", list_tenants, "A page of tenants", TenantPage, query=TenantQuery
    ),
    AdminRoute(
        "GET", "/v1/admin/tenants/{tenant}", get_tenant, "A tenant with its children", TenantDetail
    ),
    AdminRoute(
        "PUT",
        "/v1/admin/tenants/{tenant}",
        update_tenant,
        "Replace a tenant's settings (not its parent or funding)",
        TenantDetail,
        request=TenantFields,
    ),
    AdminRoute(
        "POST",
        "/v1/admin/tenants/{tenant}/tariff",
        assign_tariff,
        "Assign a tariff: from the tenant's next period on, at once if it had none",
        TenantDetail,
        request=TariffAssignmentRequest,
    ),
    AdminRoute(
        "POST",
        "/v1/admin/tenants/{tenant}/credits",
        add_credit,
        "Top up or grant credit (paid, promotional, refund), idempotent by id",
        Decision,
        request=CreditRequest,
    ),
    AdminRoute(
        "POST",
        "/v1/admin/tenants/{tenant}/suspend",
        suspend_tenant,
        "Suspend a tenant: its usage is refused until it is resumed",
        Decision,
    ),
    AdminRoute(
        "POST", "/v1/admin/tenants/{tenant}/resume", resume_tenant, "Resume a tenant", Decision
    ),
    AdminRoute("POST", "/v1/admin/meters", create_meter, "Add a meter", Meter, 201, request=Meter),
    AdminRoute(
        "GET", "/v1/admin/meters", list_meters, "A page of meters", MeterPage, query=PageQuery
    ),
    AdminRoute("GET", "/v1/admin/meters/{key}", get_meter, "A meter", Meter),
    AdminRoute(
        "POST",
        "/v1/admin/tariffs/validate",
        validate_tariff,
        "Check a tariff document against the stored meters; saves nothing",
        TariffValidation,
        request=Tariff,
    ),
    AdminRoute(
        "POST",
        "/v1/admin/tariffs",
        create_tariff,
        "Add a tariff with its versions; the hosts rate with it at once",
        Tariff,
        201,
        request=Tariff,
    ),
    AdminRoute(
        "GET", "/v1/admin/tariffs", list_tariffs, "A page of tariffs", TariffPage, query=PageQuery
    ),
    AdminRoute("GET", "/v1/admin/tariffs/{key}", get_tariff, "A tariff with its versions", Tariff),
    AdminRoute(
        "POST",
        "/v1/admin/tariffs/{key}/versions",
        add_version,
        "Add a version effective now or later",
        Tariff,
        201,
        request=TariffVersion,
    ),
    AdminRoute(
        "POST",
        "/v1/admin/keys",
        create_key,
        "Create an API key; its plaintext is in this answer only",
        KeyCreated,
        201,
        request=KeyCreate,
    ),
    AdminRoute("GET", "/v1/admin/keys", list_keys, "A page of API keys", KeyPage, query=KeyQuery),
    AdminRoute("DELETE", "/v1/admin/keys/{key_id}", revoke_key, "Revoke an API key", KeyView),
)


def admin_routes() -> list[Route]:
    return [Route(route.path, _admin(route.handler), methods=[route.method]) for route in ROUTES]


_QUERY_MEANINGS: Final = {
    "limit": "How many items to answer (1 to 1,000).",
    "after": "The `next` cursor of the previous page; absent for the first page.",
    "root": "Only the tenants of this tree.",
    "parent": "Only the children of this tenant.",
    "tenant_root": "Only the application keys of this tree.",
}
_NULL: Final = {"type": "null"}


def _parameters(query: type | None) -> tuple[Parameter, ...]:
    """The query parameters of ``query``'s fields, with the schemas its types give."""
    if query is None:
        return ()
    (_ref,), components = msgspec.json.schema_components([query])
    properties: dict[str, dict[str, Any]] = components[query.__name__]["properties"]
    found = []
    for name, schema in properties.items():
        branches = [branch for branch in schema.get("anyOf", [schema]) if branch != _NULL]
        found.append(Parameter(name=name, description=_QUERY_MEANINGS[name], schema=branches[0]))
    return tuple(found)


def _operation(route: AdminRoute) -> Operation:
    reads = route.request is None and route.method == "GET"
    created = " Answers 201 when it creates, 200 when it existed with the same content."
    return Operation(
        method=route.method.lower(),
        path=route.path,
        summary=route.summary,
        tag="admin",
        request=route.request,
        response=route.answer,
        errors=(401, 403, 404, 422) if reads else (400, 401, 403, 404, 409, 413, 422, 503),
        query=_parameters(route.query),
        creates=route.status == 201,
        description=(route.handler.__doc__ or "").strip()
        + (created if route.status == 201 else ""),
    )


OPERATIONS: Final[tuple[Operation, ...]] = tuple(_operation(route) for route in ROUTES)
"""The admin routes as ``gateway/openapi.py`` describes them."""
