"""The OpenAPI document: valid OpenAPI 3.1, and in step with the app's routes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from gateway.app import create_app
from gateway.openapi import document, operations
from persistence.migrate import migrate
from tests.gateway.conftest import in_process_client


class NoHosts:
    """A transport with no hosts: the document needs none."""

    names: Sequence[str] = ()

    def host_of(self, root: str) -> str:
        raise AssertionError("not called")

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} not called")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def app(tmp_path: Path) -> Any:
    url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    migrate(url)
    return create_app(NoHosts(), url)  # type: ignore[arg-type]


def test_the_document_is_valid_openapi_3_1() -> None:
    spec = document()
    validate(spec)  # raises on any error
    assert spec["openapi"] == "3.1.0"


def test_every_route_is_described_and_every_description_is_a_route(app: Any) -> None:
    routes = {
        (method.lower(), route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    }
    described = {(op.method, op.path) for op in operations()}
    assert routes - described == set(), "routes without an operation in gateway/openapi.py"
    assert described - routes == set(), "operations without a route"


def test_bodies_are_the_structs_that_decode_them() -> None:
    spec = document()
    record = spec["paths"]["/v1/record"]["post"]
    schema = record["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/RecordRequest"}
    body = spec["components"]["schemas"]["RecordRequest"]
    assert body["additionalProperties"] is False
    assert set(body["required"]) == {"id", "tenant", "meter"}
    assert body["properties"]["quantity"]["format"] == "decimal"
    error = record["responses"]["422"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorBody"}


@pytest.mark.anyio
async def test_served_at_openapi_json_without_a_key(app: Any) -> None:
    async with in_process_client(app) as client:
        answer: httpx.Response = await client.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == document()
