"""What the HTTP API accepts and answers, as msgspec Structs.

Requests forbid unknown fields and carry their limits in their types, so that a request that
decodes is one the account can be asked. Each request names its client ``id`` (idempotency:
a retry with the same id and content gets the original answer) and its ``tenant``; the
gateway stamps the time it received it. Quantities and amounts are decimals, given as JSON
numbers or strings and answered as strings: no float touches them.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final

import msgspec

from engine.accounts import (
    Alert,
    Authorize,
    AuthorizeAndRecord,
    Capture,
    Command,
    Heartbeat,
    Outcome,
    Reason,
    Record,
    Release,
    StartSession,
    StopSession,
)
from engine.accounts.commands import (
    TTL_SECONDS_DEFAULT,
    TTL_SECONDS_MAX,
    Id,
    MeterKey,
    Seconds,
    TenantId,
)
from engine.instants import Instant, from_datetime
from engine.meters import PropertyName, PropertyValue
from engine.pricing.base import check_quantity

EVENTS_MAX: Final = 1_000
"""The most events one ingestion request may carry."""
PROPERTIES_MAX: Final = 32
INSTANT_MAX: Final = 253_402_300_799
"""9999-12-31T23:59:59Z."""

Properties = Annotated[dict[PropertyName, PropertyValue], msgspec.Meta(max_length=PROPERTIES_MAX)]
Timestamp = (
    Annotated[int, msgspec.Meta(ge=0, le=INSTANT_MAX)] | Annotated[datetime, msgspec.Meta(tz=True)]
)
"""Seconds since the Unix epoch, or an RFC 3339 timestamp with an offset."""
TtlSeconds = Annotated[int, msgspec.Meta(ge=1, le=TTL_SECONDS_MAX)]


def _instant(timestamp: int | datetime | None) -> Instant | None:
    if timestamp is None or isinstance(timestamp, int):
        return timestamp
    return from_datetime(timestamp)


class _Request(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: Id
    tenant: TenantId


class _Usage(_Request, frozen=True, kw_only=True):
    meter: MeterKey
    quantity: Decimal = Decimal(1)
    properties: Properties = {}
    duration_seconds: Seconds = 0
    usage_time: Timestamp | None = None
    """When the usage happened, for backfill; the time of receipt if not given."""

    def __post_init__(self) -> None:
        check_quantity("quantity", self.quantity)

    def _usage(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "meter": self.meter,
            "quantity": self.quantity,
            "properties": self.properties,
            "duration_seconds": self.duration_seconds,
            "usage_time": _instant(self.usage_time),
        }


class AuthorizeRequest(_Usage, frozen=True, kw_only=True):
    """Reserve the price of ``quantity`` units for ``ttl_seconds``; capture or release it by
    this request's ``id``."""

    ttl_seconds: TtlSeconds = TTL_SECONDS_DEFAULT

    def command(self, now: Instant) -> Command:
        return Authorize(time=now, ttl_seconds=self.ttl_seconds, **self._usage())


class RecordRequest(_Usage, frozen=True, kw_only=True):
    """Authorise and record in one step: charged if the account allows it, refused if not."""

    def command(self, now: Instant) -> Command:
        return AuthorizeAndRecord(time=now, **self._usage())


class Event(_Usage, frozen=True, kw_only=True):
    """Usage that already happened: always charged, even into overdraft (which cuts the
    account off until a top-up)."""

    def command(self, now: Instant) -> Command:
        return Record(time=now, **self._usage())


class EventsRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    events: Annotated[list[Event], msgspec.Meta(min_length=1, max_length=EVENTS_MAX)]


class CaptureRequest(_Request, frozen=True, kw_only=True):
    reservation: Id
    quantity: Decimal | None = None
    """The actual quantity; null captures what was reserved."""

    def __post_init__(self) -> None:
        if self.quantity is not None:
            check_quantity("quantity", self.quantity)

    def command(self, now: Instant) -> Command:
        return Capture(
            id=self.id,
            tenant=self.tenant,
            time=now,
            reservation=self.reservation,
            quantity=self.quantity,
        )


class ReleaseRequest(_Request, frozen=True, kw_only=True):
    reservation: Id

    def command(self, now: Instant) -> Command:
        return Release(id=self.id, tenant=self.tenant, time=now, reservation=self.reservation)


class SessionStartRequest(_Request, frozen=True, kw_only=True):
    session: Id
    meter: MeterKey
    quantity: Decimal = Decimal(1)
    properties: Properties = {}

    def __post_init__(self) -> None:
        check_quantity("quantity", self.quantity)

    def command(self, now: Instant) -> Command:
        return StartSession(
            id=self.id,
            tenant=self.tenant,
            time=now,
            session=self.session,
            meter=self.meter,
            quantity=self.quantity,
            properties=self.properties,
        )


class SessionHeartbeatRequest(_Request, frozen=True, kw_only=True):
    session: Id

    def command(self, now: Instant) -> Command:
        return Heartbeat(id=self.id, tenant=self.tenant, time=now, session=self.session)


class SessionStopRequest(_Request, frozen=True, kw_only=True):
    session: Id

    def command(self, now: Instant) -> Command:
        return StopSession(id=self.id, tenant=self.tenant, time=now, session=self.session)


CommandRequest = (
    AuthorizeRequest
    | RecordRequest
    | CaptureRequest
    | ReleaseRequest
    | SessionStartRequest
    | SessionHeartbeatRequest
    | SessionStopRequest
)


class Decision(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The account's answer to one command. ``accepted`` false comes with a ``reason``."""

    id: str
    accepted: bool
    amount: Decimal
    """Charged (captures, records), held (authorisations, sessions)."""
    reason: Reason | None = None
    field: str | None = None
    message: str = ""
    balance: Decimal | None = None
    available: Decimal | None = None
    """What may still be spent; absent when there is no limit (postpaid without one)."""
    expires_at: Instant | None = None
    granted_until: Instant | None = None
    alerts: tuple[Alert, ...] = ()

    @classmethod
    def of(cls, command_id: str, outcome: Outcome) -> Decision:
        available = outcome.available
        return cls(
            id=command_id,
            accepted=outcome.accepted,
            amount=outcome.amount,
            reason=outcome.reason,
            field=outcome.field,
            message=outcome.message,
            balance=outcome.balance,
            available=available if available is not None and available.is_finite() else None,
            expires_at=outcome.expires_at,
            granted_until=outcome.granted_until,
            alerts=outcome.alerts,
        )


class EventsResponse(msgspec.Struct, frozen=True, kw_only=True):
    accepted: int
    refused: int
    results: list[Decision]
    """One per event, in the order sent."""


class BalanceResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    tenant: str
    balance: Decimal
    available: Decimal | None = None
