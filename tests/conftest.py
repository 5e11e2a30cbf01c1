"""Shared test setup. Every test thread runs with the engine's decimal context in strict mode,
so that an inexact operation outside the engine's deliberate roundings raises."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from engine.numbers import use_engine_context

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _strict_decimals() -> None:
    use_engine_context(strict=True)


@pytest.fixture(scope="session")
def ray_cluster() -> object:
    """One local Ray instance for the whole test session, dashboard off."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        namespace="meterwerk-tests",
        logging_level="WARNING",
        configure_logging=False,
    )
    yield ray
    ray.shutdown()
