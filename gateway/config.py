"""The gateway's limits, each with a default; none is unbounded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import msgspec

from gateway import coalescer, keys


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    body_bytes_max: Annotated[int, msgspec.Meta(ge=1_024, le=64 * 1024**2)] = 1024**2
    """Larger bodies are refused with 413 before they are read in full."""
    batch_max: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = coalescer.BATCH_MAX
    """Commands per call to a host."""
    calls_in_flight_max: Annotated[int, msgspec.Meta(ge=1, le=32)] = coalescer.CALLS_IN_FLIGHT_MAX
    """Calls to one host at a time."""
    queued_max: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = coalescer.QUEUED_MAX
    """Commands waiting for one host; past that, 429 with Retry-After."""
    linger_seconds: Annotated[float, msgspec.Meta(ge=0, le=0.1)] = coalescer.LINGER_SECONDS
    """While calls to a host are in flight, how long the next call waits to fill."""
    send_at: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = coalescer.SEND_AT
    """Commands waiting for a host at which a call leaves at once, mid-turn."""
    call_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    """A host that has not answered by then is unavailable: 503, the request is denied."""
    ready_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    metrics_enabled: bool = True
    """Serve ``GET /metrics`` (without a key); off, it answers 404."""
    key_cache_seconds: Annotated[float, msgspec.Meta(ge=0, le=3_600)] = keys.CACHE_SECONDS
    """How long a verified API key is trusted without checking it again (and so how long a
    revoked key may keep working on this gateway)."""

    grants_enabled: bool = False
    """Answer busy tenants' one-step records from slices this process holds (see "Grants" in
    the README): off by default, on where the benchmark shows it helps."""
    grants_min_rate: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] = 50.0
    """Requests per second for one (tenant, meter) from which this process asks for a slice."""
    grants_units_max: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000
    """The most units one slice holds: with the unit price, the most a tenant can be charged
    for uses a crashed gateway never reported, per (tenant, meter) and gateway process."""
    grants_validity_seconds: Annotated[int, msgspec.Meta(ge=10, le=3_600)] = 60
    """How long a slice lives; it is sized to about half of that at the key's rate."""
    grants_report_seconds: Annotated[float, msgspec.Meta(ge=0.001, le=10)] = 0.05
    """How often the uses answered from slices are reported to the accounts."""
    grants_max: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1_000
    """Slices held (or opening, or being given back) at a time."""
    grants_pending_max: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10_000
    """Uses waiting for a slice's next report; past that, requests take the host path."""
    grants_backoff_seconds: Annotated[float, msgspec.Meta(ge=0, le=3_600)] = 30.0
    """After a slice was refused (no credit for it, a tariff that is not flat), how long a
    (tenant, meter) takes the host path before asking again."""
    grants_remembered_max: Annotated[int, msgspec.Meta(ge=2, le=10_000_000)] = 100_000
    grants_remembered_seconds: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 600.0
    """Ids answered from slices are remembered for retries at least this long, unless half
    of ``grants_remembered_max`` newer ones arrive first."""

    def __post_init__(self) -> None:
        if self.queued_max < self.batch_max:
            raise ValueError("queued_max: must be at least batch_max")
        margin = 2 * self.grants_report_seconds + self.call_timeout_seconds
        if self.grants_enabled and self.grants_validity_seconds <= 4 * margin:
            raise ValueError(
                "grants_validity_seconds: must exceed four times the margin a slice keeps "
                f"before its expiry (2 x grants_report_seconds + call_timeout_seconds = "
                f"{margin:g} s)"
            )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> GatewayConfig:
        """The defaults, with every field named in ``environ`` as ``METERWERK_<FIELD>``
        (``METERWERK_GRANTS_ENABLED=true``, ``METERWERK_GRANTS_MIN_RATE=20``)."""
        fields = {
            name: environ[f"METERWERK_{name.upper()}"]
            for name in cls.__struct_fields__
            if f"METERWERK_{name.upper()}" in environ
        }
        return msgspec.convert(fields, cls, strict=False)
