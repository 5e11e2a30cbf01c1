"""The OpenAPI 3.1 document of the HTTP API, generated from the request and answer Structs.

Each route is described once, as an :class:`Operation`; its schemas come from the same msgspec
Structs that decode and encode its bodies (``msgspec.json.schema_components`` writes JSON
Schema 2020-12, which OpenAPI 3.1 uses as is), so the document cannot drift from what the
gateway accepts. A test checks that every route of the app has an operation and every
operation a route.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from gateway import messages as m
from gateway.errors import ErrorBody

VERSION: Final = "1.0.0"
_PATH_PARAMETER: Final = re.compile(r"\{(\w+)\}")

ERROR_MEANINGS: Final[dict[int, str]] = {
    400: "The body is not JSON (`malformed_json`).",
    401: "No key, or a key that is unknown or revoked (`missing_api_key`, `invalid_api_key`).",
    403: "The key may not act for this tenant or use this route (`out_of_scope`).",
    404: "An unknown tenant, reservation, session or grant.",
    409: "An id reused with other content (`idempotency_conflict`), or a duplicate.",
    413: "The body is over the limit (`body_too_large`).",
    422: "A field is invalid (`invalid_field` and the engine's reasons); `field` names it.",
    429: "The host is busy (`host_busy`); retry after `Retry-After` seconds with the same id.",
    503: "The host did not answer in time (`host_unavailable`); retry with the same id.",
}


class Parameter(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    schema: dict[str, Any]
    required: bool = False


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    """One route: what it takes, what it answers, who may call it."""

    method: str
    path: str
    summary: str
    tag: str
    request: Any = None
    """The Struct of the JSON body, if it takes one."""
    response: Any = None
    """The Struct of the 200 answer; None with ``response_schema``."""
    response_schema: dict[str, Any] | None = None
    response_type: str = "application/json"
    creates: bool = False
    """Answers 201 with the same body when it creates, 200 when it existed as sent."""
    errors: tuple[int, ...] = (400, 401, 403, 404, 409, 413, 422, 429, 503)
    authenticated: bool = True
    query: tuple[Parameter, ...] = ()
    description: str = ""


_HOT: Final = "usage"
_HEALTH: Final = "health"

HOT_PATH: Final[tuple[Operation, ...]] = (
    Operation(
        method="post",
        path="/v1/authorize",
        summary="Reserve the price of usage before it happens",
        tag=_HOT,
        request=m.AuthorizeRequest,
        response=m.Decision,
        description="Holds the quoted price for `ttl_seconds`; capture or release it by this "
        "request's `id`. A refusal for lack of credit or quota is a decision "
        "(200, `accepted: false`).",
    ),
    Operation(
        method="post",
        path="/v1/capture",
        summary="Charge a reservation",
        tag=_HOT,
        request=m.CaptureRequest,
        response=m.Decision,
    ),
    Operation(
        method="post",
        path="/v1/release",
        summary="Give a reservation back",
        tag=_HOT,
        request=m.ReleaseRequest,
        response=m.Decision,
    ),
    Operation(
        method="post",
        path="/v1/record",
        summary="Authorise and record usage in one step",
        tag=_HOT,
        request=m.RecordRequest,
        response=m.Decision,
        description="Charges the usage if the account allows it, and refuses it otherwise.",
    ),
    Operation(
        method="post",
        path="/v1/events",
        summary="Ingest usage that already happened (up to 1,000 events)",
        tag=_HOT,
        request=m.EventsRequest,
        response=m.EventsResponse,
        description="Every event is charged, even into overdraft (which cuts the account "
        "off); each has a result of its own, in the order sent.",
    ),
    Operation(
        method="post",
        path="/v1/sessions/start",
        summary="Start a time-metered session",
        tag=_HOT,
        request=m.SessionStartRequest,
        response=m.Decision,
        description="Answers `granted_until`: the second at which the credit runs out at the "
        "session's rate; send heartbeats before it.",
    ),
    Operation(
        method="post",
        path="/v1/sessions/heartbeat",
        summary="Extend a session",
        tag=_HOT,
        request=m.SessionHeartbeatRequest,
        response=m.Decision,
    ),
    Operation(
        method="post",
        path="/v1/sessions/stop",
        summary="Stop a session and charge it to the second",
        tag=_HOT,
        request=m.SessionStopRequest,
        response=m.Decision,
    ),
    Operation(
        method="get",
        path="/v1/tenants/{tenant}/balance",
        summary="A tenant's balance and what it may still spend",
        tag=_HOT,
        response=m.BalanceResponse,
        errors=(401, 403, 404, 422, 429, 503),
    ),
    Operation(
        method="get",
        path="/v1/tenants/{tenant}/usage",
        summary="Period-to-date usage and amounts, line by line",
        tag=_HOT,
        response=m.UsageResponse,
        errors=(401, 403, 404, 422, 429, 503),
        description="The open period's usage per meter and its amounts per statement line, as "
        "the statement would show them if the period closed now.",
    ),
    Operation(
        method="post",
        path="/v1/quote",
        summary="The price of more units now, without charging",
        tag=_HOT,
        request=m.QuoteRequest,
        response=m.QuoteResponse,
        errors=(400, 401, 403, 404, 413, 422, 429, 503),
        description="Quoted from the period-to-date usage (tier position, free units, caps), "
        "behind what open reservations hold; changes nothing.",
    ),
)

HEALTH: Final[tuple[Operation, ...]] = (
    Operation(
        method="get",
        path="/healthz",
        summary="The process is up",
        tag=_HEALTH,
        response_schema={"type": "object", "properties": {"status": {"const": "ok"}}},
        errors=(),
        authenticated=False,
    ),
    Operation(
        method="get",
        path="/readyz",
        summary="Every host answers and its journal is writable",
        tag=_HEALTH,
        response_schema={
            "type": "object",
            "properties": {
                "ready": {"type": "boolean"},
                "hosts": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        errors=(503,),
        authenticated=False,
    ),
    Operation(
        method="get",
        path="/metrics",
        summary="Prometheus metrics of the gateway and its hosts",
        tag=_HEALTH,
        response_schema={"type": "string"},
        response_type="text/plain",
        errors=(),
        authenticated=False,
        description="The text exposition format; no label carries a tenant, key or id.",
    ),
    Operation(
        method="get",
        path="/openapi.json",
        summary="This document",
        tag=_HEALTH,
        response_schema={"type": "object"},
        errors=(),
        authenticated=False,
    ),
)


def operations() -> list[Operation]:
    """Every operation of the API, from each module that adds routes."""
    found: list[Operation] = [*HOT_PATH, *HEALTH]
    from gateway.admin import OPERATIONS as ADMIN

    found.extend(ADMIN)
    return found


def document(described: Iterable[Operation] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``described`` (default: every operation)."""
    listed = list(operations() if described is None else described)
    types = [t for op in listed for t in (op.request, op.response) if t is not None]
    schemas, components = msgspec.json.schema_components(
        [*types, ErrorBody], ref_template="#/components/schemas/{name}"
    )
    by_type = dict(zip([*types, ErrorBody], schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in listed:
        paths.setdefault(op.path, {})[op.method] = _operation(op, by_type)
    spec = {
        "openapi": "3.1.0",
        "info": {
            "title": "meterwerk",
            "version": VERSION,
            "summary": "Real-time metering and billing: authorise, record, rate, charge.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key `mwk_<id>_<secret>`: admin, or an application "
                    "key limited to one tenant tree and the usage routes.",
                }
            },
        },
    }
    # A round trip through JSON turns the defaults msgspec keeps as Python values (tuples,
    # Decimals) into what a client reads.
    built: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(spec))
    return built


def _operation(op: Operation, by_type: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "operationId": _operation_id(op),
        "summary": op.summary,
        "tags": [op.tag],
        "responses": _responses(op, by_type),
    }
    if op.description:
        body["description"] = op.description
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAMETER.findall(op.path)
    ] + [
        {
            "name": p.name,
            "in": "query",
            "required": p.required,
            "description": p.description,
            "schema": p.schema,
        }
        for p in op.query
    ]
    if parameters:
        body["parameters"] = parameters
    if op.request is not None:
        body["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": by_type[op.request]}},
        }
    body["security"] = [{"bearer": []}] if op.authenticated else []
    return body


def _responses(op: Operation, by_type: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    schema = by_type[op.response] if op.response is not None else op.response_schema or {}
    content = {op.response_type: {"schema": schema}}
    responses: dict[str, Any] = {"200": {"description": op.summary, "content": content}}
    if op.creates:
        responses["201"] = {"description": "Created.", "content": content}
    error = {"application/json": {"schema": by_type[ErrorBody]}}
    for status in op.errors:
        responses[str(status)] = {
            "description": ERROR_MEANINGS.get(status, "An error."),
            "content": error,
        }
    return responses


def _operation_id(op: Operation) -> str:
    words = re.findall(r"[a-z]+", op.path.replace("/v1/", "/"))
    return op.method + "".join(word.capitalize() for word in words)
