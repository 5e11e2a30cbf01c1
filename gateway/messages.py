"""What the HTTP API accepts and answers, as msgspec Structs.

Requests forbid unknown fields and carry their limits in their types, so that a request that
decodes is one the account can be asked. Each request names its client ``id`` (idempotency:
a retry with the same id and content gets the original answer) and its ``tenant``; the
gateway stamps the time it received it. Quantities and amounts are decimals, given as JSON
numbers or strings and answered as strings: no float touches them.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Final, TypeVar

import msgspec

from engine.accounts import (
    Alert,
    Authorize,
    AuthorizeAndRecord,
    Capture,
    Command,
    Heartbeat,
    Outcome,
    PeriodUsage,
    Quote,
    QuoteQuery,
    Reason,
    Record,
    Release,
    StartSession,
    StopSession,
)
from engine.accounts.commands import (
    ONE_UNIT,
    TENANT_ID_REGEX,
    TTL_SECONDS_DEFAULT,
    TTL_SECONDS_MAX,
    Id,
    MeterKey,
    Seconds,
)
from engine.instants import Instant, from_datetime
from engine.meters import PropertyName, PropertyValue
from engine.pricing.base import check_quantity
from engine.statements import LineKind

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
RequestTenantId = Annotated[str, msgspec.Meta(extra_json_schema={"pattern": TENANT_ID_REGEX})]
"""A request's tenant: a :data:`TenantId`, its pattern checked by :func:`check_tenant` in the
Struct's ``__post_init__``. Called there, the compiled pattern costs a quarter of msgspec's
own check of it (90 against 365 ns, on every hot-path request); the answer to a tenant that
does not match is the same 422 naming ``tenant``."""
_TENANT_ID: Final = re.compile(TENANT_ID_REGEX)


def check_tenant(tenant: str) -> None:
    # fullmatch: msgspec's search let a trailing newline through ``$``.
    if _TENANT_ID.fullmatch(tenant) is None:
        raise ValueError(f"tenant: Expected `str` matching regex {TENANT_ID_REGEX!r}")


def instant_of(timestamp: int | datetime | None) -> Instant | None:
    """A decoded :data:`Timestamp` as an instant."""
    if timestamp is None or isinstance(timestamp, int):
        return timestamp
    return from_datetime(timestamp)


_UsageCommand = TypeVar("_UsageCommand", Authorize, Record, AuthorizeAndRecord)


class _Request(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    # No cycles (strings, numbers, a dict of those): kept out of the garbage collector's
    # scans. A gateway with grants remembers up to 100,000 answered requests, and each full
    # collection walked them all (up to 158 ms, every request waiting).
    gc=False,
):
    id: Id
    tenant: RequestTenantId

    def __post_init__(self) -> None:
        # A subclass with a __post_init__ of its own calls check_tenant itself: a super()
        # call cost 125 ns per decode (the test of every route's tenant keeps them honest).
        check_tenant(self.tenant)


class _Usage(_Request, frozen=True, kw_only=True):
    meter: MeterKey
    quantity: Decimal = ONE_UNIT
    properties: Properties = {}
    duration_seconds: Seconds = 0
    usage_time: Timestamp | None = None
    """When the usage happened, for backfill; the time of receipt if not given."""

    def __post_init__(self) -> None:
        check_tenant(self.tenant)
        check_quantity("quantity", self.quantity)

    def _usage(self, kind: type[_UsageCommand], now: Instant) -> _UsageCommand:
        """The command of this usage, its fields named: this runs once per event of a batch,
        and gathering them in a dict first (or passing ``**`` keywords to a Struct) cost two
        to four times as much."""
        return kind(
            id=self.id,
            tenant=self.tenant,
            time=now,
            meter=self.meter,
            quantity=self.quantity,
            properties=self.properties,
            duration_seconds=self.duration_seconds,
            usage_time=instant_of(self.usage_time),
        )


class AuthorizeRequest(_Usage, frozen=True, kw_only=True):
    """Reserve the price of ``quantity`` units for ``ttl_seconds``; capture or release it by
    this request's ``id``."""

    ttl_seconds: TtlSeconds = TTL_SECONDS_DEFAULT

    def command(self, now: Instant) -> Command:
        return msgspec.structs.replace(self._usage(Authorize, now), ttl_seconds=self.ttl_seconds)


class RecordRequest(_Usage, frozen=True, kw_only=True):
    """Authorise and record in one step: charged if the account allows it, refused if not."""

    def command(self, now: Instant) -> Command:
        return self._usage(AuthorizeAndRecord, now)


class Event(_Usage, frozen=True, kw_only=True):
    """Usage that already happened: always charged, even into overdraft (which cuts the
    account off until a top-up)."""

    def command(self, now: Instant) -> Command:
        return self._usage(Record, now)


class EventsRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    events: Annotated[list[Event], msgspec.Meta(min_length=1, max_length=EVENTS_MAX)]


class CaptureRequest(_Request, frozen=True, kw_only=True):
    reservation: Id
    quantity: Decimal | None = None
    """The actual quantity; null captures what was reserved."""

    def __post_init__(self) -> None:
        check_tenant(self.tenant)
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
    quantity: Decimal = ONE_UNIT
    properties: Properties = {}

    def __post_init__(self) -> None:
        check_tenant(self.tenant)
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


class Decision(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
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
    degraded: bool = False
    """True when the host did not answer and the tenant's ``allow_overdraft`` failure policy
    allowed the request; ``amount`` is then the gateway's estimate, and the usage is recorded
    with the host once it answers again."""
    grant: str | None = None
    """The grant a one-step record was answered from: a slice of the account's money that a
    gateway process held and answered it with, at the slice's unit price, without asking the
    host (``balance`` and ``available`` are then not known). The use is reported to the host
    within moments; see "Grants" in the gateway's README."""

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
            grant=outcome.grant,
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


class QuoteRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The price of ``quantity`` more units of ``meter`` for ``tenant`` now. It changes
    nothing, so it carries no id."""

    tenant: RequestTenantId
    meter: MeterKey
    quantity: Decimal = Decimal(1)
    properties: Properties = {}
    duration_seconds: Seconds = 0

    def __post_init__(self) -> None:
        check_tenant(self.tenant)
        check_quantity("quantity", self.quantity)

    def query(self) -> QuoteQuery:
        return QuoteQuery(
            tenant=self.tenant,
            meter=self.meter,
            quantity=self.quantity,
            properties=dict(self.properties),
            duration_seconds=self.duration_seconds,
        )


class QuoteResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the usage would cost now, and whether the account would allow it now (a hint:
    the answer to the authorisation that follows may differ)."""

    tenant: str
    meter: str
    quantity: Decimal
    amount: Decimal
    """Exact (unrounded), priced behind the usage that open reservations and sessions hold."""
    currency: str
    allowed: bool
    reason: Reason | None = None
    message: str = ""
    available: Decimal | None = None
    """What may still be spent; absent when there is no limit."""
    quota_remaining: Decimal | None = None
    """Units left under the tightest hard quota on the meter; absent without one."""

    @classmethod
    def of(cls, request: QuoteRequest, quote: Quote) -> QuoteResponse:
        return cls(
            tenant=request.tenant,
            meter=request.meter,
            quantity=request.quantity,
            amount=quote.amount,
            currency=quote.currency,
            allowed=quote.allowed,
            reason=quote.reason,
            message=quote.message,
            available=quote.available,
            quota_remaining=quote.quota_remaining,
        )


class UsageMeter(msgspec.Struct, frozen=True, kw_only=True):
    meter: str
    quantity: Decimal
    unit: str


class UsageLine(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line of the statement the period would get if it closed now, rounded as it will
    be (once per line, in the tariff's rounding mode)."""

    line_id: str
    kind: LineKind
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal | None = None
    amount: Decimal
    charge: str | None = None
    dimensions: dict[str, str] = {}


class UsageByTenant(msgspec.Struct, frozen=True, kw_only=True):
    """What one sub-tenant's usage came to in one charge, rounded on its own."""

    tenant: str
    charge: str
    quantity: Decimal
    amount: Decimal


class UsageResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The tenant's open billing period so far. ``total`` is the sum of the rounded
    ``lines``: the statement as it would stand if no more usage arrived before the period
    end (fees in arrears and minimums included). ``charged`` is what the account has charged
    for the period so far, exact. A sub-tenant without a tariff of its own has no lines; its
    usage is its share of its parent's period, in ``breakdown``."""

    tenant: str
    currency: str
    period_start: Instant | None = None
    period_end: Instant | None = None
    meters: list[UsageMeter] = []
    lines: list[UsageLine] = []
    total: Decimal = Decimal(0)
    charged: Decimal = Decimal(0)
    breakdown: list[UsageByTenant] = []

    @classmethod
    def of(cls, usage: PeriodUsage) -> UsageResponse:
        return cls(
            tenant=usage.tenant,
            currency=usage.currency,
            period_start=usage.period_start,
            period_end=usage.period_end,
            meters=[
                UsageMeter(meter=m.meter, quantity=m.quantity, unit=m.unit) for m in usage.meters
            ],
            lines=[
                UsageLine(
                    line_id=line.line_id,
                    kind=line.kind,
                    description=line.description,
                    quantity=line.quantity,
                    unit=line.unit,
                    unit_price=line.unit_price,
                    amount=line.amount,
                    charge=line.charge,
                    dimensions=dict(line.dimensions),
                )
                for line in usage.lines
            ],
            total=usage.total,
            charged=usage.charged,
            breakdown=[
                UsageByTenant(
                    tenant=line.tenant,
                    charge=line.charge,
                    quantity=line.quantity,
                    amount=line.amount,
                )
                for line in usage.breakdown
            ],
        )
