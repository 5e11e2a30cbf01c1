"""Read-only questions to a tenant tree: what the open period has used so far, and what more
usage would cost now.

Nothing here changes the tree's state. A question is asked "now", and the tree may not have
seen ``now`` yet (a period end or an expiry due since its last command); then the question is
answered on a copy brought up to ``now``, so that the answer is the one a command at ``now``
would see while the tree itself waits for its host to fire the timers (and journal them).

The functions reach into the tree's planning (``_plan``, ``_check``, ``_rater``):
they belong to the same package, and pricing and checking usage in one place is what keeps a
quote equal to the charge of the record that follows it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final

import msgspec

from engine.accounts.commands import Advance, Outcome, Reason, denied
from engine.accounts.state import NodeState, decode, encode
from engine.accounts.tree import Plan, TenantTree
from engine.instants import Instant
from engine.meters import Event, PropertyName, PropertyValue
from engine.numbers import ZERO, divide
from engine.rating import PeriodRater, PeriodState
from engine.statements import BreakdownLine, Statement, StatementLine

QUOTE_ID: Final = "quote"
_ADVANCE_ID: Final = "query-advance:" + "-" * 128
"""Longer than any command id may be (128), so that it is never taken for a remembered one."""


class QuoteQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Usage to price, as a usage event would carry it."""

    tenant: str
    meter: str
    quantity: Decimal = Decimal(1)
    properties: dict[PropertyName, PropertyValue] = {}
    duration_seconds: Annotated[int, msgspec.Meta(ge=0, le=366 * 86_400)] = 0


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    """The price of some more usage now, and whether it would be allowed now (a hint: the
    answer may change before the usage arrives)."""

    tenant: str
    amount: Decimal
    """What the payer would be charged, exact (unrounded), priced behind the usage that open
    reservations, grants and sessions hold."""
    currency: str
    allowed: bool
    reason: Reason | None = None
    """Why it would be refused now (``insufficient_credit``, ``quota_exceeded`` …)."""
    message: str = ""
    available: Decimal | None = None
    """What the tenant may still spend: the payer's credit, within the room under the cap of
    every pooled tenant on the way (as a balance answers it); None without a limit."""
    quota_remaining: Decimal | None = None
    """Units of the meter left under the tightest hard quota on the way to the root."""


class MeterQuantity(msgspec.Struct, frozen=True, kw_only=True):
    meter: str
    quantity: Decimal
    unit: str


class PeriodUsage(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's open period so far.

    ``lines`` are the statement the period would get if it closed with no more usage than it
    has now: one line per tier, window and dimension, each rounded once as on the statement
    (fees in arrears and minimums included; a gauge counted at its current level to the
    period end). ``total`` is their sum, so it equals the statement at the close when nothing
    else arrives. ``charged`` is what the account has charged for the period so far, exact.
    """

    tenant: str
    currency: str
    period_start: Instant | None
    period_end: Instant | None
    meters: tuple[MeterQuantity, ...] = ()
    lines: tuple[StatementLine, ...] = ()
    total: Decimal = ZERO
    charged: Decimal = ZERO
    breakdown: tuple[BreakdownLine, ...] = ()
    """By sub-tenant, for a tenant with sub-tenants; for a sub-tenant without a tariff of its
    own, its part of its parent's period."""


def quote(tree: TenantTree, query: QuoteQuery, now: Instant) -> Quote | Outcome:
    """The price of ``query`` for its tenant at ``now``, or why it cannot be priced (an
    unknown tenant or meter, no tariff on the way to the root)."""
    tree = _at(tree, now)
    node = tree.state.nodes.get(query.tenant)
    if node is None:
        return denied(Reason.unknown_tenant, "tenant", f"no tenant {query.tenant!r}")
    time = max(now, tree.state.clock)
    event = _event(query, time)
    plan = tree._plan(node, event, time, reserve=True)
    if isinstance(plan, Outcome):
        return plan
    payer = next(step for step in plan.steps if step.node.wallet is not None)
    refusal = tree._check(plan, time)
    available = tree.available(query.tenant)
    return Quote(
        tenant=query.tenant,
        amount=payer.cost,
        currency=payer.rater.version.currency,
        allowed=refusal is None,
        reason=None if refusal is None else refusal.reason,
        message="" if refusal is None else refusal.message,
        available=available if available.is_finite() else None,
        quota_remaining=_quota_remaining(plan),
    )


def period_usage(tree: TenantTree, tenant: str, now: Instant) -> PeriodUsage | Outcome:
    """The open period of ``tenant`` at ``now``: quantities, lines so far, total."""
    tree = _at(tree, now)
    node = tree.state.nodes.get(tenant)
    if node is None:
        return denied(Reason.unknown_tenant, "tenant", f"no tenant {tenant!r}")
    if node.period is None:
        return _share_of_parent(tree, node)
    rater = tree._rater(node, node.period)
    # Closing integrates gauges into the period state, so the preview closes a copy.
    preview = _copy(node.period)
    statement = rater.close(preview)
    return PeriodUsage(
        tenant=tenant,
        currency=statement.currency,
        period_start=statement.period_start,
        period_end=statement.period_end,
        meters=_meter_quantities(rater, preview),
        lines=statement.lines,
        total=statement.total,
        charged=node.period.charged_live,
        breakdown=statement.breakdown,
    )


def _at(tree: TenantTree, now: Instant) -> TenantTree:
    """``tree`` if nothing falls due by ``now``; else a copy that has let time pass to it."""
    due = tree.next_timer()
    if due is None or due > now:
        return tree
    copy = TenantTree(decode(encode(tree.state)), tree.tariffs)
    copy.handle(Advance(id=_ADVANCE_ID, tenant=tree.state.root, time=now))
    return copy


def _event(query: QuoteQuery, time: Instant) -> Event:
    return Event(
        id=QUOTE_ID,
        meter=query.meter,
        time=time,
        quantity=query.quantity,
        properties=dict(query.properties),
        duration_seconds=query.duration_seconds,
    )


def _quota_remaining(plan: Plan) -> Decimal | None:
    meter = plan.event.meter
    remaining: Decimal | None = None
    for node in plan.path:
        for quota in node.settings.quotas:
            if quota.meter != meter or quota.hard is None:
                continue
            used = node.units.get(meter, ZERO) + node.units_held.get(meter, ZERO)
            left = max(ZERO, quota.hard - used)
            remaining = left if remaining is None else min(remaining, left)
    return remaining


def _copy(state: PeriodState) -> PeriodState:
    return msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=PeriodState)


def _meter_quantities(rater: PeriodRater, state: PeriodState) -> tuple[MeterQuantity, ...]:
    """Each priced meter's quantity as the tariff's first charge on it counts it (summed over
    its windows and groups; for usage over time, in the charge's unit of time)."""
    found: list[MeterQuantity] = []
    for meter, charges in sorted(rater.by_meter.items()):
        compiled = charges[0]
        charge_state = state.charges.get(compiled.key)
        quantity = ZERO
        if charge_state is not None:
            end = state.period.end
            quantity = sum((b.aggregate.quantity(end) for b in charge_state.buckets.values()), ZERO)
        if compiled.divisor != 1:
            quantity = divide(quantity, compiled.divisor)
        found.append(MeterQuantity(meter=meter, quantity=quantity, unit=compiled.quantity_unit()))
    return tuple(found)


def _share_of_parent(tree: TenantTree, node: NodeState) -> PeriodUsage:
    """A sub-tenant without a tariff of its own is rated in its parent's period, which keeps
    its usage apart in the breakdown."""
    parent_name = node.settings.parent
    parent = tree.state.nodes.get(parent_name) if parent_name is not None else None
    if parent is None or parent.period is None:
        return PeriodUsage(tenant=node.tenant, currency="", period_start=None, period_end=None)
    rater = tree._rater(parent, parent.period)
    statement: Statement = rater.close(_copy(parent.period))
    return PeriodUsage(
        tenant=node.tenant,
        currency=statement.currency,
        period_start=statement.period_start,
        period_end=statement.period_end,
        breakdown=tuple(line for line in statement.breakdown if line.tenant == node.tenant),
    )
