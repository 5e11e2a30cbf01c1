"""The chaos tests reuse the persistence tests' server fixtures (fail under CI, skip else)."""

from tests.persistence.conftest import postgres_url, redis_url

__all__ = ["postgres_url", "redis_url"]
