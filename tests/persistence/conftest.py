"""Servers the persistence tests need. Without one, its tests skip with the reason; under CI
(the ``CI`` environment variable set) a missing server fails them instead, so that a broken
CI service never passes as a green run."""

from __future__ import annotations

import os
import uuid

import pytest

POSTGRES_URL = os.environ.get(
    "METERWERK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("METERWERK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _unavailable(what: str, url: str, error: BaseException) -> None:
    message = f"{what} at {url} is unreachable ({type(error).__name__}: {error})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so the tests that need it fail", pytrace=False)
    pytest.skip(f"{message}; set METERWERK_TEST_* to point at one")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    try:
        import psycopg

        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except Exception as error:
        _unavailable("Postgres", POSTGRES_URL, error)
    return POSTGRES_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:
        _unavailable("Redis", REDIS_URL, error)
    return REDIS_URL


@pytest.fixture
def unique_host() -> str:
    """A host name no other test (or earlier run) uses, so tests share servers safely."""
    return f"test-{uuid.uuid4().hex[:16]}"
