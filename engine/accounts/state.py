"""The state of a tenant tree: everything a snapshot holds. Plain msgspec Structs, so that a
snapshot encodes to bytes and decodes to an equal state. ``SCHEMA`` names the layout; new
fields get defaults, existing ones are never reordered or retyped."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import msgspec

from engine.accounts.commands import Alert, Command, Outcome
from engine.accounts.settings import TenantSettings
from engine.accounts.wallet import Wallet
from engine.instants import Instant
from engine.meters import Event
from engine.numbers import ZERO
from engine.rating import PeriodState
from engine.statements import Statement

SCHEMA: Final = 1


class Hold(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    """Money held at one funded tenant, or pool drawn at one capped tenant."""

    tenant: str
    amount: Decimal
    capped: bool = False


class Held(msgspec.Struct, kw_only=True):
    """What one reservation, slice or session holds: money at funded tenants, pool at capped
    ones, ``units`` of ``usage.meter`` at every tenant from ``leaf`` to the root, and the usage
    it priced, so that later reservations are priced behind it."""

    leaf: str
    usage: Event
    units: Decimal
    holds: list[Hold]


class Reservation(msgspec.Struct, kw_only=True):
    reservation_id: str
    tenant: str
    meter: str
    quantity: Decimal
    properties: dict[str, str]
    duration_seconds: int
    usage_time: Instant
    expires_at: Instant
    held: Held


class Slice(msgspec.Struct, kw_only=True):
    """A grant handed to a caller: ``quantity`` units to spend locally until ``expires_at``."""

    grant_id: str
    tenant: str
    meter: str
    properties: dict[str, str]
    quantity: Decimal
    used: Decimal
    expires_at: Instant
    held: Held | None


class Session(msgspec.Struct, kw_only=True):
    """A running, time-metered use. ``segment_start`` is where the part not yet charged begins
    (the start, or the last period boundary); money for ``[segment_start, granted_until)`` is
    held."""

    session_id: str
    tenant: str
    meter: str
    quantity: Decimal
    properties: dict[str, str]
    started_at: Instant
    segment_start: Instant
    granted_until: Instant | None
    held: Held | None = None


class ClosedPeriod(msgspec.Struct, kw_only=True):
    """A closed period kept for late events until its grace window ends."""

    state: PeriodState
    issued: Statement
    accepts_until: Instant


class NodeState(msgspec.Struct, kw_only=True):
    tenant: str
    settings: TenantSettings
    children: list[str] = msgspec.field(default_factory=list)
    wallet: Wallet | None = None
    period: PeriodState | None = None
    closed: list[ClosedPeriod] = msgspec.field(default_factory=list)
    units: dict[str, Decimal] = msgspec.field(default_factory=dict)
    units_held: dict[str, Decimal] = msgspec.field(default_factory=dict)
    drawn: Decimal = ZERO
    drawn_held: Decimal = ZERO
    spent: Decimal = ZERO
    """Charged to this tenant's own balance in the current period (for budget alerts)."""
    suspended: bool = False
    cut_off: bool = False
    fired: list[str] = msgspec.field(default_factory=list)
    """Alerts already raised this period, so that each fires once."""
    period_number: int = 0
    period_time_zone: str = ""
    """The zone the current period was opened in; a change of zone waits for the next one."""


class Remembered(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    """A handled command and its outcome. The command itself is kept, rather than a hash of
    it, so that the common case (an id never seen again) costs nothing to fingerprint."""

    command: Command
    at: Instant
    outcome: Outcome


class TreeState(msgspec.Struct, kw_only=True):
    root: str
    schema: int = SCHEMA
    clock: Instant = 0
    nodes: dict[str, NodeState] = msgspec.field(default_factory=dict)
    reservations: dict[str, Reservation] = msgspec.field(default_factory=dict)
    slices: dict[str, Slice] = msgspec.field(default_factory=dict)
    sessions: dict[str, Session] = msgspec.field(default_factory=dict)
    remembered: dict[str, Remembered] = msgspec.field(default_factory=dict)
    remembered_before: dict[str, Remembered] = msgspec.field(default_factory=dict)
    """The previous generation of remembered ids (see ``tree.REMEMBERED_MAX``)."""
    remembered_since: Instant = 0
    """When the current generation began."""
    statements: list[tuple[str, Statement]] = msgspec.field(default_factory=list)
    """Statements waiting to be taken by the invoice pipeline: (tenant, statement)."""
    alerts: list[Alert] = msgspec.field(default_factory=list)
    """Alerts waiting to be taken by whoever acts on them (notifications, auto top-ups)."""
    commands_applied: int = 0


def encode(state: TreeState) -> bytes:
    return msgspec.msgpack.encode(state)


def decode(data: bytes) -> TreeState:
    state = msgspec.msgpack.decode(data, type=TreeState)
    assert state.schema <= SCHEMA, f"snapshot schema {state.schema} is newer than {SCHEMA}"
    return state
