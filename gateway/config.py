"""The gateway's limits, each with a default; none is unbounded."""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway import coalescer, keys


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    body_bytes_max: Annotated[int, msgspec.Meta(ge=1_024, le=64 * 1024**2)] = 1024**2
    """Larger bodies are refused with 413 before they are read in full."""
    batch_max: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = coalescer.BATCH_MAX
    """Commands per call to a host."""
    calls_in_flight_max: Annotated[int, msgspec.Meta(ge=1, le=32)] = coalescer.CALLS_IN_FLIGHT_MAX
    """Calls to one host at a time (Ray allows 64 pending calls per caller and host)."""
    queued_max: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = coalescer.QUEUED_MAX
    """Commands waiting for one host; past that, 429 with Retry-After."""
    linger_seconds: Annotated[float, msgspec.Meta(ge=0, le=0.1)] = coalescer.LINGER_SECONDS
    call_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    """A host that has not answered by then is unavailable: 503, the request is denied."""
    ready_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    metrics_enabled: bool = True
    """Serve ``GET /metrics`` (without a key); off, it answers 404."""
    key_cache_seconds: Annotated[float, msgspec.Meta(ge=0, le=3_600)] = keys.CACHE_SECONDS
    """How long a verified API key is trusted without checking it again (and so how long a
    revoked key may keep working on this gateway)."""

    def __post_init__(self) -> None:
        if self.queued_max < self.batch_max:
            raise ValueError("queued_max: must be at least batch_max")
