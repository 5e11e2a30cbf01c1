"""A tenant tree: a root tenant and all its sub-tenants, as one single-writer state machine.

A tree lives on one host so that a sub-tenant's charge against its parent's pool is local and
atomic. :meth:`TenantTree.handle` applies one command: it first lets time pass up to the
command's time (timers fire in a fixed order), then checks everything the command needs, and
only then changes the state, so that a denied command changes nothing.

An event at tenant L is rated at every tenant on the path from L to the root that has a
tariff: each tariff says what that tenant owes its parent. Tenants with a balance of their own
are charged their own amount; a pooled tenant's usage is paid by the nearest ancestor with a
balance, and counts against the pooled tenant's cap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import cached_property
from typing import Final

import msgspec

from engine.accounts import commands as c
from engine.accounts.commands import Alert, AlertKind, Outcome, Reason, denied
from engine.accounts.ledger import ADJUSTMENT, REVENUE_FEES, REVENUE_ROUNDING, REVENUE_USAGE
from engine.accounts.ledger import PostingKind as PK
from engine.accounts.settings import Funding, GrantExpiry, Quota, TenantSettings
from engine.accounts.state import (
    ClosedPeriod,
    Held,
    Hold,
    NodeState,
    Remembered,
    Reservation,
    Session,
    Slice,
    TreeState,
)
from engine.accounts.tariffs import TariffSource
from engine.accounts.wallet import UNLIMITED, CreditGrant, Wallet
from engine.instants import Instant
from engine.meters import Aggregation, Event, event_value
from engine.numbers import ZERO
from engine.periods import Period, UnknownTimeZone, zone
from engine.pricing.base import check_quantity
from engine.rating import PeriodRater, PeriodState
from engine.rejections import Rejection
from engine.statements import Statement
from engine.tariffs import PaymentMode

REMEMBERED_MAX: Final = 100_000
"""At most this many ids are held per tree for idempotency, in two generations of half as
many; when the current generation is full or older than ``REMEMBERED_SECONDS``, the previous
one is forgotten and the current one takes its place."""
REMEMBERED_SECONDS: Final = 86_400
"""Ids are remembered for at least this long, unless ``REMEMBERED_MAX // 2`` newer ids arrive
first."""
FORGET_EVERY: Final = 256
FORGET_CHUNK: Final = 512
"""A forgotten generation is released ``FORGET_CHUNK`` ids at a time, every ``FORGET_EVERY``
ids remembered: gone before half of the next generation has filled (only a generation ended
by age can find some of it left, and drops that rest at once). Released at once, the 50,000
ids of a generation (several hundred thousand objects, with their commands and outcomes)
held the host's apply thread for 15 to 50 ms per tree, and trees of the same traffic rotate
together: the half-rate p99 of ``meterwerk bench`` showed stalls of 70 to 200 ms."""
BUDGET_STEPS: Final = (50, 80, 100)

# Timers due at the same instant fire in this order. A period ends first, so that whatever
# else happens at that instant (a slice charged at its expiry) belongs to the next period,
# as half-open periods say.
_PERIOD_END: Final = 0
_RESERVATION: Final = 1
_SLICE: Final = 2
_SESSION: Final = 3
_CREDIT: Final = 4
_LATE_WINDOW: Final = 5


class Step(msgspec.Struct, kw_only=True):
    """One tenant on an event's path that rates it."""

    node: NodeState
    rater: PeriodRater
    state: PeriodState
    closed: ClosedPeriod | None
    cost: Decimal
    source: str | None


class Plan(msgspec.Struct, kw_only=True):
    event: Event
    path: list[NodeState]
    steps: list[Step]
    units: Decimal

    def costs(self) -> dict[str, Decimal]:
        """The money each funded tenant on the path would be charged."""
        return {s.node.tenant: s.cost for s in self.steps if s.node.wallet is not None}


class TenantTree:
    """The state machine of one tenant tree. The state is a :class:`TreeState`; the tree
    object adds only caches that can be rebuilt from it."""

    def __init__(self, state: TreeState, tariffs: TariffSource) -> None:
        self.state = state
        self.tariffs = tariffs
        # Caches, rebuilt from the state when None: the earliest timer (it may be early, never
        # late) and the tenants whose tariffs have gauges to accrue.
        self._due: Instant | None = None
        self._due_known = False
        self._gauge_tenants: list[str] | None = None
        self._raters: dict[str, tuple[PeriodState, PeriodRater]] = {}
        # Not state: a generation of ids no longer looked up, released a chunk at a time.
        self._forgetting: dict[str, Remembered] = {}

    @classmethod
    def new(cls, root: str, tariffs: TariffSource) -> TenantTree:
        return cls(TreeState(root=root), tariffs)

    def use_tariffs(self, tariffs: TariffSource) -> None:
        """Rate with ``tariffs`` from now on (the catalogue was reloaded). A period keeps the
        tariff version it was opened with; its rater is compiled again from the new source."""
        self.tariffs = tariffs
        self._raters.clear()

    # The one entry point --------------------------------------------------------------------

    def handle(self, command: c.Command) -> Outcome:
        state = self.state
        time = command.time if command.time > state.clock else state.clock
        remembered = state.remembered.get(command.id)
        if remembered is None and state.remembered_before:
            remembered = state.remembered_before.get(command.id)
        if remembered is not None:
            if not _same_content(remembered.command, command):
                return denied(
                    Reason.idempotency_conflict,
                    "id",
                    "this id was used before for a different command",
                )
            return remembered.outcome
        alerts: list[Alert] = []
        if (
            not self._due_known
            or (self._due is not None and self._due <= time)
            or self._gauge_tenants is None
            or self._gauge_tenants
        ):
            alerts.extend(self._advance(time))
        outcome = self._dispatch(command, time, alerts)
        if alerts:
            outcome = msgspec.structs.replace(outcome, alerts=tuple(alerts))
            state.alerts.extend(alerts)
        if command.__class__ is not c.Advance and (
            outcome.accepted or outcome.reason in c.DECISIONS
        ):
            self._remember(command, time, outcome)
        state.clock = time
        state.commands_applied += 1
        return outcome

    def _dispatch(self, command: c.Command, time: Instant, alerts: list[Alert]) -> Outcome:
        kind = command.__class__
        if kind is c.ConfigureTenant:
            return self._configure(command, time, alerts)  # type: ignore[arg-type]
        if kind is c.Advance:
            return Outcome(accepted=True)
        node = self.state.nodes.get(command.tenant)
        if node is None:
            return denied(Reason.unknown_tenant, "tenant", f"no tenant {command.tenant!r}")
        return self._handlers[kind](command, node, time, alerts)

    @cached_property
    def _handlers(self) -> dict[type, Callable[..., Outcome]]:
        return {
            c.TopUp: self._top_up,
            c.Authorize: self._authorize,
            c.Capture: self._capture,
            c.Release: self._release,
            c.AuthorizeAndRecord: self._usage,
            c.Record: self._usage,
            c.StartSession: self._start_session,
            c.Heartbeat: self._heartbeat,
            c.StopSession: self._stop_session,
            c.OpenGrant: self._open_grant,
            c.ReportGrant: self._report_grant,
            c.ChangeSeats: self._change_seats,
            c.OneTimeCharge: self._one_time_charge,
            c.Refund: self._refund,
            c.Adjust: self._adjust,
            c.Suspend: self._suspend,
            c.Resume: self._resume,
        }

    # Reading --------------------------------------------------------------------------------

    def payer(self, node: NodeState) -> NodeState | None:
        """The nearest tenant on the way to the root (itself included) with its own balance."""
        if node.wallet is not None:
            return node  # the common case, without building the path to the root
        for step in self._path(node):
            if step.wallet is not None:
                return step
        return None

    def balance(self, tenant: str) -> Decimal:
        node = self.state.nodes[tenant]
        payer = self.payer(node)
        return payer.wallet.balance() if payer and payer.wallet else ZERO

    def available(self, tenant: str) -> Decimal:
        """What the tenant may still spend: its payer's available money, within the room
        left under the cap of every pooled tenant on the way to the payer (itself included)."""
        node = self.state.nodes[tenant]
        payer = self.payer(node)
        if payer is None or payer.wallet is None:
            return ZERO
        return self._within_caps(node, payer, payer.wallet.available(self.state.clock))

    def _within_caps(self, node: NodeState, payer: NodeState, available: Decimal) -> Decimal:
        """``available`` at the payer, within the room left under the cap of every pooled
        tenant from ``node`` up to the payer."""
        if node is payer:
            return available
        for step in self._path(node):
            if step is payer:
                break
            room = _cap_room(step)
            if room is not None:
                available = min(available, room)
        return available

    def take_statements(self) -> list[tuple[str, Statement]]:
        taken, self.state.statements = self.state.statements, []
        return list(taken)

    def take_alerts(self) -> list[Alert]:
        taken, self.state.alerts = self.state.alerts, []
        return taken

    def next_timer(self) -> Instant | None:
        """When something may next happen without a command: never later than the earliest
        timer, though it may be earlier (a reservation captured since); an ``Advance`` then
        finds nothing to do and the instant moves on."""
        if not self._due_known:
            self._due, self._due_known = self._earliest_timer(), True
        return self._due

    def _earliest_timer(self) -> Instant | None:
        due = [instant for instant, _, _ in self._timers()]
        return min(due) if due else None

    # Configuration --------------------------------------------------------------------------

    def _configure(self, command: c.ConfigureTenant, time: Instant, alerts: list[Alert]) -> Outcome:
        settings = command.settings
        node = self.state.nodes.get(command.tenant)
        problem = self._settings_problem(command.tenant, settings, node)
        if problem is not None:
            return denied(Reason.invalid_settings, problem[0], problem[1])
        self._gauge_tenants = None
        rater = self._settings_rater(settings, time)
        if isinstance(rater, Outcome):
            return rater
        if node is not None:
            return self._reconfigure(node, settings, rater, time, alerts)
        node = NodeState(tenant=command.tenant, settings=settings)
        if settings.funding is Funding.own:
            assert rater is not None, "a tenant with a balance has a tariff"
            node.wallet = Wallet(credit_limit=_credit_limit(settings, rater))
        self.state.nodes[command.tenant] = node
        if settings.parent is not None:
            parent = self.state.nodes[settings.parent]
            if not parent.children and parent.period is not None:
                # Usage until now was the parent's own; the breakdown starts from there.
                self._rater(parent, parent.period).attribute_rest(parent.period, parent.tenant)
            parent.children.append(command.tenant)
        if rater is not None:
            self._open_period(node, rater, rater.period_at(time), time, None, alerts)
        return self._accepted(node)

    def _settings_rater(
        self, settings: TenantSettings, time: Instant
    ) -> PeriodRater | Outcome | None:
        """The rater of the settings' tariff now (None without one), or why there is none."""
        if settings.tariff is None:
            return None
        rater = self.tariffs.rater(settings.tariff, time, settings.time_zone)
        if rater is None:
            return denied(
                Reason.no_tariff,
                "settings.tariff",
                f"no version of tariff {settings.tariff!r} is in effect",
            )
        return rater

    def _settings_problem(
        self, tenant: str, settings: TenantSettings, node: NodeState | None
    ) -> tuple[str, str] | None:
        try:
            zone(settings.time_zone)
        except UnknownTimeZone:
            return "settings.time_zone", f"unknown time zone {settings.time_zone!r}"
        if node is None:
            if settings.parent is None and tenant != self.state.root:
                return "settings.parent", f"only {self.state.root!r} is the root of this tree"
            if settings.parent is not None and settings.parent not in self.state.nodes:
                return "settings.parent", f"no tenant {settings.parent!r} in this tree"
            if tenant == self.state.root and settings.parent is not None:
                return "settings.parent", "the root has no parent"
            return None
        if settings.parent != node.settings.parent:
            return "settings.parent", "a tenant cannot move to another parent"
        if settings.funding is not node.settings.funding:
            return "settings.funding", "funding cannot change once a tenant exists"
        return None

    def _reconfigure(
        self,
        node: NodeState,
        settings: TenantSettings,
        rater: PeriodRater | None,
        time: Instant,
        alerts: list[Alert],
    ) -> Outcome:
        """New settings take effect now; a new tariff or time zone from the tenant's next
        period on; a first tariff at once."""
        node.settings = settings
        if node.wallet is not None and node.period is not None:
            node.wallet.credit_limit = _credit_limit(settings, self._rater(node, node.period))
        if node.period is None and rater is not None:
            self._open_period(node, rater, rater.period_at(time), time, None, alerts)
        return self._accepted(node)

    # Money in and out -----------------------------------------------------------------------

    def _top_up(
        self, command: c.TopUp, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        if node.wallet is None:
            return denied(Reason.not_funded, "tenant", "a pooled tenant has no balance")
        if not command.amount.is_finite() or command.amount <= 0:
            return denied(Reason.invalid_amount, "amount", "must be greater than zero")
        if command.expires_at is not None and command.expires_at <= time:
            return denied(Reason.invalid_amount, "expires_at", "must be in the future")
        grant = CreditGrant(
            grant_id=command.id,
            kind=command.kind,
            amount=command.amount,
            priority=command.priority,
            granted_at=time,
            expires_at=command.expires_at,
        )
        node.wallet.top_up(grant, command.id)
        if command.expires_at is not None:
            self._note_timer(command.expires_at)
        if node.cut_off and node.wallet.available_now() > 0:
            node.cut_off = False
        _unfire(node, "auto_top_up")
        return self._accepted(node, amount=command.amount)

    def _refund(
        self, command: c.Refund, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        if node.wallet is None:
            return denied(Reason.not_funded, "tenant", "a pooled tenant has no balance")
        if not command.amount.is_finite() or command.amount <= 0:
            return denied(Reason.invalid_amount, "amount", "must be greater than zero")
        node.wallet.charge(-command.amount, ADJUSTMENT, PK.refund, time, command.id)
        return self._accepted(node, amount=command.amount)

    def _adjust(
        self, command: c.Adjust, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        if node.wallet is None:
            return denied(Reason.not_funded, "tenant", "a pooled tenant has no balance")
        if not command.amount.is_finite() or command.amount == 0:
            return denied(Reason.invalid_amount, "amount", "must be a non-zero number")
        node.wallet.charge(-command.amount, ADJUSTMENT, PK.adjustment, time, command.id)
        self._after_charge(node, time, alerts)
        return self._accepted(node, amount=command.amount)

    def _suspend(
        self, command: c.Suspend, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        node.suspended = True
        return self._accepted(node)

    def _resume(
        self, command: c.Resume, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        node.suspended = False
        return self._accepted(node)

    # Usage ----------------------------------------------------------------------------------

    def _usage(
        self,
        command: c.Record | c.AuthorizeAndRecord,
        node: NodeState,
        time: Instant,
        alerts: list[Alert],
    ) -> Outcome:
        """Charge usage: a ``Record`` always, an ``AuthorizeAndRecord`` only if every tenant
        on its path allows it."""
        authorize = command.__class__ is c.AuthorizeAndRecord
        period = node.period
        # The short way, for a tenant that is _alone, not suspended, with usage in its current
        # period. The long way gives the same result.
        if (
            _alone(node)
            and not node.suspended
            and command.usage_time is None
            and period is not None
            and period.period.start <= command.time < period.period.end
        ):
            return self._one_step(command, node, time, alerts, authorize=authorize)
        plan = self._plan(node, _event(command), time)
        if isinstance(plan, Outcome):
            return plan
        if authorize:
            refusal = self._check(plan, time)
            if refusal is not None:
                return refusal
        charged = self._apply(plan, time, command.id, alerts)
        return self._accepted(node, amount=charged)

    def _authorize(
        self, command: c.Authorize, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        if command.id in self.state.reservations:
            return denied(
                Reason.duplicate_reservation, "id", "a reservation with this id is still open"
            )
        plan = self._plan(node, _event(command), time, reserve=True)
        if isinstance(plan, Outcome):
            return plan
        expires_at = time + command.ttl_seconds
        refusal = self._check(plan, time, horizon=expires_at)
        if refusal is not None:
            return refusal
        held = self._hold(plan)
        self._note_timer(expires_at)
        self.state.reservations[command.id] = Reservation(
            reservation_id=command.id,
            tenant=node.tenant,
            meter=command.meter,
            quantity=command.quantity,
            properties=dict(command.properties),
            duration_seconds=command.duration_seconds,
            usage_time=plan.event.time,
            expires_at=expires_at,
            held=held,
        )
        return self._accepted(node, amount=_payer_amount(plan), expires_at=expires_at)

    def _capture(
        self, command: c.Capture, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        reservation = self._open_reservation(command.reservation, node)
        if isinstance(reservation, Outcome):
            return reservation
        quantity = reservation.quantity if command.quantity is None else command.quantity
        if not quantity.is_finite() or quantity < 0:
            return denied(Reason.invalid_quantity, "quantity", "must not be negative")
        event = Event(
            id=command.id,
            meter=reservation.meter,
            time=reservation.usage_time,
            quantity=quantity,
            properties=reservation.properties,
            duration_seconds=reservation.duration_seconds,
        )
        self._unhold(reservation.held)
        plan = self._plan(node, event, time)
        refusal: Outcome | None = plan if isinstance(plan, Outcome) else None
        if refusal is None and quantity > reservation.quantity:
            refusal = self._check(plan, time)  # type: ignore[arg-type]
        if refusal is not None:
            # Decided while the reservation's own hold is given back; it is then held again.
            self._rehold(reservation.held)
            return refusal
        assert not isinstance(plan, Outcome)
        del self.state.reservations[reservation.reservation_id]
        guarantee = reservation.held if quantity <= reservation.quantity else None
        charged = self._apply(plan, time, command.id, alerts, guarantee=guarantee)
        return self._accepted(node, amount=charged)

    def _open_reservation(self, reservation_id: str, node: NodeState) -> Reservation | Outcome:
        reservation = self.state.reservations.get(reservation_id)
        if reservation is None or reservation.tenant != node.tenant:
            return denied(
                Reason.unknown_reservation,
                "reservation",
                "no open reservation with this id (captured, released or expired)",
            )
        return reservation

    def _release(
        self, command: c.Release, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        reservation = self._open_reservation(command.reservation, node)
        if isinstance(reservation, Outcome):
            return reservation
        del self.state.reservations[reservation.reservation_id]
        self._unhold(reservation.held)
        return self._accepted(node)

    def _one_step(
        self,
        command: c.Record | c.AuthorizeAndRecord,
        node: NodeState,
        time: Instant,
        alerts: list[Alert],
        *,
        authorize: bool,
    ) -> Outcome:
        period = node.period
        wallet = node.wallet
        assert period is not None and wallet is not None
        rater = self._rater(node, period)
        if authorize:
            budget = ZERO if node.cut_off else wallet.available_now()
            rated = rater.rate_within(period, command, budget)
            if isinstance(rated, Rejection):
                return denied(Reason.rating_rejected, rated.field, rated.message)
            accepted, amount = rated
            if not accepted:
                return _denied_cut_off() if node.cut_off else _denied_credit(amount, budget)
        else:
            recorded = rater.rate(period, command)
            if isinstance(recorded, Rejection):
                return denied(Reason.rating_rejected, recorded.field, recorded.message)
            amount = recorded
        if amount:
            wallet.charge(amount, REVENUE_USAGE, PK.charge, time, command.id)
            node.spent += amount
            settings = node.settings
            # Only when :meth:`_after_charge` has something to act on: the hot path skips it.
            if (
                settings.balance_alerts
                or settings.budget
                or settings.auto_top_up_below is not None
                or wallet.ledger.customer_credits + wallet.credit_limit < 0
            ):
                self._after_charge(node, time, alerts)
        # What _accepted answers for a tenant that is its own payer, written out: the call
        # alone is a measurable part of the one-step path.
        return Outcome(
            accepted=True,
            amount=amount,
            balance=wallet.ledger.customer_credits,
            available=_finite(wallet.available_now()),
        )

    # Grants: slices spent by a caller -------------------------------------------------------

    def _open_grant(
        self, command: c.OpenGrant, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        if not command.quantity.is_finite() or command.quantity <= 0:
            return denied(Reason.invalid_quantity, "quantity", "must be greater than zero")
        if command.id in self.state.slices:
            return denied(Reason.duplicate_grant, "id", "a grant with this id is still open")
        event = Event(
            id=command.id,
            meter=command.meter,
            time=time,
            quantity=command.quantity,
            properties=dict(command.properties),
        )
        plan = self._plan(node, event, time, reserve=True)
        if isinstance(plan, Outcome):
            return plan
        expires_at = time + command.validity_seconds
        unit_price: Decimal | None = None
        if command.linear:
            linear = self._linear_price(node, command.meter)
            if isinstance(linear, Outcome):
                return linear
            if command.properties:
                # Its uses are remembered as one-step records, which name no properties.
                return denied(
                    Reason.grant_not_linear, "properties", "a linear grant has no properties"
                )
            unit_price = linear
            assert _payer_amount(plan) == command.quantity * unit_price, "priced linearly"
            # The price holds for the period whose tariff version fixed it.
            assert node.period is not None
            expires_at = min(expires_at, node.period.period.end)
        refusal = self._check(plan, time, horizon=expires_at)
        if refusal is not None:
            return refusal
        self._note_timer(expires_at)
        self.state.slices[command.id] = Slice(
            grant_id=command.id,
            tenant=node.tenant,
            meter=command.meter,
            properties=dict(command.properties),
            quantity=command.quantity,
            used=ZERO,
            expires_at=expires_at,
            held=self._hold(plan),
        )
        outcome = self._accepted(node, amount=_payer_amount(plan), expires_at=expires_at)
        if unit_price is None:
            return outcome
        return msgspec.structs.replace(outcome, unit_price=unit_price)

    def _linear_price(self, node: NodeState, meter: str) -> Decimal | Outcome:
        """The flat unit price at which a caller may answer uses of ``meter`` for ``node``
        itself: only where the tree would charge each use alone, at that price, whatever
        else happens (see ``OpenGrant.linear``); else why not."""
        period = node.period
        if period is None or not _alone(node):
            return denied(
                Reason.grant_not_linear,
                "tenant",
                "a linear grant needs a tenant alone in its tree, with its own balance and "
                "no quotas",
            )
        price = self._rater(node, period).unit_price(meter)
        if price is None:
            return denied(
                Reason.grant_not_linear,
                "meter",
                f"the tariff does not price {meter!r} at a flat price per unit",
            )
        return price

    def _report_grant(
        self, command: c.ReportGrant, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        grant = self.state.slices.get(command.grant)
        if grant is None or grant.tenant != node.tenant:
            return denied(Reason.unknown_grant, "grant", "no open grant with this id")
        left = grant.quantity - grant.used
        if not command.used.is_finite() or command.used < 0:
            return denied(Reason.invalid_quantity, "used", "must not be negative")
        if command.used > left:
            return denied(Reason.grant_exceeded, "used", f"only {left} units are left")
        used = command.used
        if command.records or command.units:
            linear = self._records_price(command, grant, node)
            if isinstance(linear, Outcome):
                return linear  # a refusal
            used -= self._remember_records(command, grant, time, linear)
        charged = self._settle_slice(grant, used, time, command.id, alerts, final=command.final)
        return self._accepted(node, amount=charged)

    def _records_price(
        self, command: c.ReportGrant, grant: Slice, node: NodeState
    ) -> Decimal | Outcome:
        """The unit price of the uses a report names, or why they cannot be taken as they
        are: they must make up ``used``, each priced at the flat unit price of the slice's
        meter. (The tree may have changed since the slice opened, a sub-tenant added, say;
        the price cannot have, as a linear slice ends with the period.)"""
        rater = self._rater(node, node.period) if node.period is not None else None
        linear = rater.unit_price(grant.meter) if rater is not None else None
        if rater is None or linear is None or grant.properties:
            return denied(
                Reason.grant_not_linear, "records", "uses are reported for linear slices only"
            )
        counted = rater.meters[grant.meter].aggregation
        total = ZERO
        for position, record in enumerate(command.records):
            quantity = record.quantity
            problem = _quantity_problem(quantity, whole=counted is Aggregation.count)
            if problem is not None:
                field = f"records[{position}].quantity"
                return denied(Reason.invalid_quantity, field, problem)
            if record.amount != quantity * linear:
                field = f"records[{position}].amount"
                return denied(
                    Reason.invalid_amount, field, f"{quantity} units cost {quantity * linear}"
                )
            total += quantity
        total += len(command.units)  # one unit each
        if total != command.used:
            return denied(
                Reason.invalid_quantity,
                "records",
                f"the uses add up to {total}, not {command.used}",
            )
        return linear

    def _remember_records(
        self, command: c.ReportGrant, grant: Slice, time: Instant, linear: Decimal
    ) -> Decimal:
        """Remember every use a report names as an answered ``AuthorizeAndRecord``; the units
        of those this tree has already charged as such (a client's retry that reached it
        first), which are not charged again."""
        one_unit = Outcome(accepted=True, amount=linear, grant=grant.grant_id)
        uses = [
            (
                record.id,
                record.quantity,
                Outcome(accepted=True, amount=record.amount, grant=grant.grant_id),
            )
            for record in command.records
        ]
        # The answer to each one-unit use is the same: one Outcome for them all.
        uses += [(use_id, c.ONE_UNIT, one_unit) for use_id in command.units]
        charged_before = ZERO
        for use_id, quantity, answer in uses:
            use = c.AuthorizeAndRecord(
                id=use_id, tenant=command.tenant, time=time, meter=grant.meter, quantity=quantity
            )
            remembered = self._remembered(use_id)
            if remembered is None:
                self._remember(use, time, answer)
            elif remembered.outcome.accepted and _same_content(remembered.command, use):
                charged_before += quantity
            # Any other memory of the id stands: the caller answered it, so it is charged.
        return charged_before

    def _settle_slice(
        self,
        grant: Slice,
        used: Decimal,
        time: Instant,
        reference: str,
        alerts: list[Alert],
        *,
        final: bool,
    ) -> Decimal:
        """Charge ``used`` units of a slice; hold the price of the rest unless ``final``."""
        node = self.state.nodes[grant.tenant]
        guarantee = grant.held
        self._unhold(grant.held)
        grant.held = None
        grant.used += used
        charged = ZERO
        if used > 0:
            plan = self._plan(node, _slice_usage(grant, used, time, reference), time)
            if not isinstance(plan, Outcome):
                charged = self._apply(plan, time, reference, alerts, guarantee=guarantee)
        left = grant.quantity - grant.used
        if final or left <= 0:
            del self.state.slices[grant.grant_id]
            return charged
        plan = self._plan(node, _slice_usage(grant, left, time, reference), time, reserve=True)
        if isinstance(plan, Outcome):
            grant.held = None
            return charged
        # The rest was authorised with the slice: hold its price, but never more than what
        # remained of the slice's hold (the guarantee covers the difference at its report).
        remaining = {
            h.tenant: h.amount for h in (guarantee.holds if guarantee else []) if not h.capped
        }
        for step in plan.steps:
            if step.node.wallet is not None:
                left_held = remaining.get(step.node.tenant, ZERO) - (
                    charged if self.payer(node) is step.node else ZERO
                )
                step.cost = min(step.cost, max(ZERO, left_held))
        grant.held = self._hold(plan)
        return charged

    # Sessions, to the second ----------------------------------------------------------------

    def _start_session(
        self, command: c.StartSession, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        if command.session in self.state.sessions:
            return denied(Reason.duplicate_session, "session", "this session is running")
        if not command.quantity.is_finite() or command.quantity <= 0:
            return denied(Reason.invalid_quantity, "quantity", "must be greater than zero")
        session = Session(
            session_id=command.session,
            tenant=node.tenant,
            meter=command.meter,
            quantity=command.quantity,
            properties=dict(command.properties),
            started_at=time,
            segment_start=time,
            granted_until=None,
        )
        probe = self._plan(node, self._session_event(session, 1), time)
        if isinstance(probe, Outcome):
            return probe
        refusal = self._grant_session(session, time)
        if refusal is not None:
            return refusal
        self.state.sessions[session.session_id] = session
        return self._accepted(
            node,
            amount=_held_by_payer(session.held, node, self),
            granted_until=session.granted_until,
        )

    def _heartbeat(
        self, command: c.Heartbeat, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        session = self._running_session(command.session, node)
        if isinstance(session, Outcome):
            return session
        self._regrant_or_cut_off(session, time, alerts)
        if session.session_id not in self.state.sessions:
            # The session ended here; this is news, not a refusal: it changed the state.
            outcome = self._accepted(node, granted_until=session.granted_until)
            return msgspec.structs.replace(
                outcome, message="the session was cut off: the credit ran out"
            )
        return self._accepted(node, granted_until=session.granted_until)

    def _stop_session(
        self, command: c.StopSession, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        session = self._running_session(command.session, node)
        if isinstance(session, Outcome):
            return session
        charged = self._end_session(session, time, command.id, alerts)
        return self._accepted(node, amount=charged)

    def _running_session(self, session_id: str, node: NodeState) -> Session | Outcome:
        session = self.state.sessions.get(session_id)
        if session is None or session.tenant != node.tenant:
            return denied(Reason.unknown_session, "session", "no running session with this id")
        return session

    def _session_event(self, session: Session, seconds: int) -> Event:
        return Event(
            id=session.session_id,
            meter=session.meter,
            time=session.segment_start,
            quantity=session.quantity,
            properties=session.properties,
            duration_seconds=seconds,
        )

    def _grant_session(self, session: Session, time: Instant) -> Outcome | None:
        """Hold money for as long ahead as the payers allow, up to the grant window."""
        node = self.state.nodes[session.tenant]
        used = time - session.segment_start
        window = node.settings.session_grant_seconds
        covers = self._affordable_seconds(session, used, used + window, time)
        if isinstance(covers, Outcome):
            return covers
        plan = self._plan(node, self._session_event(session, covers), time, reserve=True)
        assert not isinstance(plan, Outcome)
        session.held = self._hold(plan)
        session.granted_until = session.segment_start + covers
        self._note_timer(session.granted_until)
        return None

    def _affordable_seconds(
        self, session: Session, low: int, high: int, time: Instant
    ) -> int | Outcome:
        """The longest duration in ``[max(low, 1), high]`` the payers can afford, or why not
        even the shortest. Costs grow with duration, so a binary search finds it."""
        node = self.state.nodes[session.tenant]

        def refusal(seconds: int) -> Outcome | None:
            plan = self._plan(node, self._session_event(session, seconds), time, reserve=True)
            if isinstance(plan, Outcome):
                return plan
            return self._check(plan, time, horizon=session.segment_start + seconds)

        def affordable(seconds: int) -> bool:
            return refusal(seconds) is None

        low = max(low, 1)
        first = refusal(low)
        if first is not None:
            return first
        if affordable(high):
            return high
        while high - low > 1:
            middle = (low + high) // 2
            if affordable(middle):
                low = middle
            else:
                high = middle
        return low

    def _regrant_or_cut_off(self, session: Session, time: Instant, alerts: list[Alert]) -> None:
        node = self.state.nodes[session.tenant]
        held_before = session.held
        self._unhold(session.held)
        session.held = None
        previous = session.granted_until
        if self._grant_session(session, time) is None:
            if session.granted_until is not None and session.granted_until > time:
                return
            # Nothing more can be granted: the session ends where its money ends.
            self._unhold(session.held)
            session.held = None
            session.granted_until = previous
        until = session.granted_until or time
        self._end_session(
            session,
            max(min(until, time), session.segment_start),
            f"{session.session_id}:cut-off",
            alerts,
            guarantee=held_before,
        )
        payer = self.payer(node)
        if payer is not None:
            payer.cut_off = True
            alerts.append(
                Alert(
                    kind=AlertKind.cut_off,
                    tenant=payer.tenant,
                    at=time,
                    detail=f"session {session.session_id} ran out of credit",
                )
            )

    def _end_session(
        self,
        session: Session,
        end: Instant,
        reference: str,
        alerts: list[Alert],
        guarantee: Held | None = None,
    ) -> Decimal:
        """Charge the session up to ``end`` (at most what its hold, or ``guarantee``, covers
        where the payer cannot pay more) and forget it."""
        guarantee = session.held or guarantee
        self._unhold(session.held)
        session.held = None
        self.state.sessions.pop(session.session_id, None)
        return self._charge_segment(session, end, reference, alerts, guarantee)

    def _charge_segment(
        self,
        session: Session,
        end: Instant,
        reference: str,
        alerts: list[Alert],
        guarantee: Held | None = None,
    ) -> Decimal:
        seconds = end - session.segment_start
        if seconds <= 0:
            return ZERO
        node = self.state.nodes[session.tenant]
        plan = self._plan(node, self._session_event(session, seconds), end)
        session.segment_start = end
        if isinstance(plan, Outcome):
            return ZERO
        held = guarantee if guarantee is not None else session.held
        if held is not None and end > (session.granted_until or end):
            held = None  # only the time the hold covered is guaranteed
        return self._apply(plan, end, reference, alerts, guarantee=held)

    # Fees -----------------------------------------------------------------------------------

    def _change_seats(
        self, command: c.ChangeSeats, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        if node.period is None:
            return denied(Reason.no_tariff, "tenant", "the tenant has no tariff")
        rater = self._rater(node, node.period)
        due = rater.change_fee_quantity(node.period, command.fee, command.quantity, time)
        if isinstance(due, Rejection):
            return denied(Reason.rating_rejected, due.field, due.message)
        self._post(node, due, REVENUE_FEES, PK.fee, time, command.id, alerts)
        return self._accepted(node, amount=due)

    def _one_time_charge(
        self, command: c.OneTimeCharge, node: NodeState, time: Instant, alerts: list[Alert]
    ) -> Outcome:
        if node.period is None:
            return denied(Reason.no_tariff, "tenant", "the tenant has no tariff")
        if not command.amount.is_finite() or command.amount < 0:
            return denied(Reason.invalid_amount, "amount", "must not be negative")
        if not command.quantity.is_finite() or command.quantity <= 0:
            return denied(Reason.invalid_quantity, "quantity", "must be greater than zero")
        rater = self._rater(node, node.period)
        due = rater.add_one_time(
            node.period, command.id, command.description, command.amount, command.quantity, time
        )
        self._post(node, due, REVENUE_FEES, PK.fee, time, command.id, alerts)
        return self._accepted(node, amount=due)

    # Planning, checking and applying usage --------------------------------------------------

    def _plan(
        self, leaf: NodeState, event: Event, time: Instant, *, reserve: bool = False
    ) -> Plan | Outcome:
        """Price ``event`` at every tenant on its path, changing nothing. With ``reserve``,
        each price is quoted behind the usage other reservations hold at that tenant."""
        if event.time > time:
            return denied(Reason.event_in_future, "usage_time", "usage cannot lie ahead")
        path = self._path(leaf)
        steps: list[Step] = []
        units: Decimal | None = None
        for position, node in enumerate(path):
            if node.period is None:
                continue
            where = self._period_for(node, event.time, time)
            if isinstance(where, Outcome):
                return where
            state, closed = where
            rater = self._rater(node, state)
            if units is None:
                units = _units(rater, event)
            ahead = self._held_usage(node, event.meter) if reserve and closed is None else ()
            cost = rater.quote(state, event, ahead)
            if isinstance(cost, Rejection):
                return denied(Reason.rating_rejected, cost.field, cost.message)
            # A parent's amounts are kept by the sub-tenant (or itself) they came from.
            source = (
                path[position - 1].tenant if position else (node.tenant if node.children else None)
            )
            steps.append(
                Step(node=node, rater=rater, state=state, closed=closed, cost=cost, source=source)
            )
        if not any(step.node.wallet is not None for step in steps):
            return denied(
                Reason.no_tariff, "tenant", "no tenant on the way to the root charges this usage"
            )
        return Plan(event=event, path=path, steps=steps, units=units or ZERO)

    def _check(self, plan: Plan, time: Instant, horizon: Instant | None = None) -> Outcome | None:
        """Whether every tenant on the path allows the plan: suspension, quotas, caps, money."""
        for node in plan.path:
            if node.suspended:
                return denied(
                    Reason.account_suspended, "tenant", f"tenant {node.tenant!r} is suspended"
                )
            quota = _quota(node, plan.event.meter)
            if quota is not None and quota.hard is not None:
                used = node.units.get(plan.event.meter, ZERO)
                held = node.units_held.get(plan.event.meter, ZERO)
                if used + held + plan.units > quota.hard:
                    return denied(
                        Reason.quota_exceeded,
                        "quantity",
                        f"quota of {quota.hard} {plan.event.meter} per period",
                    )
        costs = plan.costs()
        for node, payer in self._draws(plan):
            room = _cap_room(node)
            if room is not None and costs.get(payer.tenant, ZERO) > room:
                return denied(
                    Reason.cap_exceeded,
                    "quantity",
                    f"tenant {node.tenant!r} may draw at most {node.settings.cap} per period",
                )
        for step in plan.steps:
            wallet = step.node.wallet
            if wallet is None or step.cost <= 0:
                continue
            if step.node.cut_off:
                return _denied_cut_off()
            # A hold is backed only by credit that is still there when the hold ends.
            available = wallet.available_now() if horizon is None else wallet.available(horizon)
            if step.cost > available:
                return _denied_credit(step.cost, available)
        return None

    def _draws(self, plan: Plan) -> list[tuple[NodeState, NodeState]]:
        """Each pooled tenant on the path with the payer whose balance it draws from."""
        draws: list[tuple[NodeState, NodeState]] = []
        waiting: list[NodeState] = []
        for node in plan.path:
            if node.wallet is None:
                waiting.append(node)
                continue
            draws.extend((pooled, node) for pooled in waiting)
            waiting = []
        return draws

    def _hold(self, plan: Plan) -> Held:
        holds: list[Hold] = []
        for step in plan.steps:
            wallet = step.node.wallet
            if wallet is not None and step.cost > 0:
                wallet.ledger.hold(step.cost)
                holds.append(Hold(tenant=step.node.tenant, amount=step.cost))
        costs = plan.costs()
        for node, payer in self._draws(plan):
            amount = costs.get(payer.tenant, ZERO)
            if node.settings.cap is not None and amount > 0:
                node.drawn_held += amount
                holds.append(Hold(tenant=node.tenant, amount=amount, capped=True))
        held = Held(leaf=plan.path[0].tenant, usage=plan.event, units=plan.units, holds=holds)
        self._hold_units(held, 1)
        return held

    def _unhold(self, held: Held | None) -> None:
        """Give back everything ``held`` holds."""
        if held is None:
            return
        for hold in held.holds:
            node = self.state.nodes[hold.tenant]
            if hold.capped:
                node.drawn_held -= hold.amount
            else:
                assert node.wallet is not None
                node.wallet.ledger.release(hold.amount)
        self._hold_units(held, -1)

    def _rehold(self, held: Held) -> None:
        """Hold again what :meth:`_unhold` gave back (a capture that was refused)."""
        for hold in held.holds:
            node = self.state.nodes[hold.tenant]
            if hold.capped:
                node.drawn_held += hold.amount
            else:
                assert node.wallet is not None
                node.wallet.ledger.hold(hold.amount)
        self._hold_units(held, 1)

    def _hold_units(self, held: Held, sign: int) -> None:
        meter = held.usage.meter
        for node in self._path(self.state.nodes[held.leaf]):
            node.units_held[meter] = node.units_held.get(meter, ZERO) + sign * held.units

    def _held_usage(self, node: NodeState, meter: str) -> list[Event]:
        """The usage held at ``node`` for ``meter`` by open reservations, slices and sessions:
        a new reservation is priced as if it had been used, so holds never fall short when
        tiers rise."""
        if not node.units_held.get(meter):
            return []
        found: list[Event] = []
        for held in self._all_held():
            if held.usage.meter == meter and node.tenant in self._path_names(held.leaf):
                found.append(held.usage)
        return found

    def _all_held(self) -> Iterator[Held]:
        for reservation in self.state.reservations.values():
            yield reservation.held
        for grant in self.state.slices.values():
            if grant.held is not None:
                yield grant.held
        for session in self.state.sessions.values():
            if session.held is not None:
                yield session.held

    def _apply(
        self,
        plan: Plan,
        time: Instant,
        reference: str,
        alerts: list[Alert],
        *,
        guarantee: Held | None = None,
    ) -> Decimal:
        """Rate and charge the plan at every tenant on the path; the payer's amount. Usage
        of a closed period counts towards that period, not towards the current one's quotas,
        caps and budgets."""
        event = plan.event
        amounts: dict[str, Decimal] = {}
        late: set[str] = set()
        for step in plan.steps:
            amount = self._rate_step(step, event, time, reference)
            amounts[step.node.tenant] = amount
            if step.closed is not None:
                late.add(step.node.tenant)
            if guarantee is not None:
                amount -= self._honour_guarantee(plan, step, amount, guarantee, time, reference)
                amounts[step.node.tenant] = amount
            if step.node.wallet is not None:
                self._post(
                    step.node,
                    amount,
                    REVENUE_USAGE,
                    PK.charge,
                    time,
                    reference,
                    alerts,
                    current=step.closed is None,
                )
        for node, payer in self._draws(plan):
            if node.tenant not in late:
                node.drawn += amounts.get(payer.tenant, ZERO)
        for node in plan.path:
            if node.tenant not in late and _quota(node, event.meter) is not None:
                node.units[event.meter] = node.units.get(event.meter, ZERO) + plan.units
                self._quota_alerts(node, event.meter, time, alerts)
        return next((amounts[s.node.tenant] for s in plan.steps if s.node.wallet is not None), ZERO)

    def _honour_guarantee(
        self,
        plan: Plan,
        step: Step,
        amount: Decimal,
        guarantee: Held,
        time: Instant,
        reference: str,
    ) -> Decimal:
        """Reserved usage is charged at most what the payer can pay once its hold is given
        back: tier prices move with the order of usage (a hold released ahead of it, cheaper
        units taken by a record) and the held money itself can be gone (spent by a record,
        expired), so a capture can be rated above what is there. What the payer's available
        credit (and a pooled sub-tenant's remaining cap) cannot cover is credited on a
        statement as a line of its own, so that the live balance and the statements agree and
        a reserved use never takes a balance past its limit. Returns the credit (0 if none)."""
        wallet = step.node.wallet
        if wallet is None or amount <= 0:
            return ZERO
        # Credit spendable at this instant: a grant expiring now no longer counts, even
        # before its expiry is posted.
        payable = max(ZERO, wallet.available(time))
        for pooled, payer in self._draws(plan):
            room = _cap_room(pooled)
            if payer is step.node and room is not None:
                payable = min(payable, max(ZERO, room))
        if amount <= payable:
            return ZERO
        excess = amount - payable
        # A late capture's period is closed; the credit is a credit note in the current one.
        state = step.state if step.closed is None else step.node.period
        assert state is not None
        rater = step.rater if step.closed is None else self._rater(step.node, state)
        credit = rater.add_one_time(
            state,
            f"guarantee:{reference}",
            "price held by the reservation",
            -excess,
            Decimal(1),
            time,
        )
        return -credit

    def _rate_step(self, step: Step, event: Event, time: Instant, reference: str) -> Decimal:
        if step.closed is None:
            amount = step.rater.rate(step.state, event, step.source)
            assert isinstance(amount, Decimal), "a planned event is always rateable"
            return amount
        late = step.rater.rate_late(step.state, step.closed.issued, event, time)
        assert not isinstance(late, Rejection), "a planned late event is always rateable"
        step.closed.issued = msgspec.structs.replace(late.revised, revision=late.delta.revision)
        self.state.statements.append((step.node.tenant, late.delta))
        closing = late.delta.closing_amount
        if step.node.wallet is not None and closing:
            self._post_closing(
                step.node,
                late.delta.rounding_difference,
                closing - late.delta.rounding_difference,
                time,
                reference,
            )
        return late.marginal

    def _post(
        self,
        node: NodeState,
        amount: Decimal,
        revenue: str,
        kind: PK,
        time: Instant,
        reference: str,
        alerts: list[Alert],
        *,
        current: bool = True,
    ) -> None:
        """Charge a funded tenant; ``current`` counts it towards this period's budget."""
        if node.wallet is None or not amount:
            return
        node.wallet.charge(amount, revenue, kind, time, reference)
        if current:
            node.spent += amount
        self._after_charge(node, time, alerts)

    def _after_charge(self, node: NodeState, time: Instant, alerts: list[Alert]) -> None:
        wallet = node.wallet
        assert wallet is not None
        balance = wallet.balance()
        settings = node.settings
        for threshold in settings.balance_alerts:
            if balance < threshold:
                _fire(
                    node,
                    f"balance_below:{threshold}",
                    alerts,
                    AlertKind.balance_below,
                    time,
                    f"balance {balance} is below {threshold}",
                    threshold,
                )
        if settings.budget:
            for step in BUDGET_STEPS:
                if node.spent * 100 >= settings.budget * step:
                    _fire(
                        node,
                        f"budget:{step}",
                        alerts,
                        AlertKind.budget_reached,
                        time,
                        f"{step} % of the budget of {settings.budget} spent",
                        node.spent,
                    )
        if settings.auto_top_up_below is not None and balance < settings.auto_top_up_below:
            _fire(
                node,
                "auto_top_up",
                alerts,
                AlertKind.auto_top_up,
                time,
                f"balance {balance} is below {settings.auto_top_up_below}",
                balance,
            )
        if not node.cut_off and balance + wallet.credit_limit < 0:
            node.cut_off = True
            alerts.append(
                Alert(
                    kind=AlertKind.cut_off,
                    tenant=node.tenant,
                    at=time,
                    detail="the balance is past the credit limit",
                    amount=balance,
                )
            )

    def _quota_alerts(
        self, node: NodeState, meter: str, time: Instant, alerts: list[Alert]
    ) -> None:
        quota = _quota(node, meter)
        assert quota is not None
        used = node.units.get(meter, ZERO)
        if quota.soft is not None and used >= quota.soft:
            _fire(
                node,
                f"soft:{meter}",
                alerts,
                AlertKind.soft_limit_reached,
                time,
                f"{used} of {meter} used, soft limit {quota.soft}",
                used,
            )
        if quota.hard is not None and used >= quota.hard:
            _fire(
                node,
                f"quota:{meter}",
                alerts,
                AlertKind.quota_reached,
                time,
                f"{used} of {meter} used, quota {quota.hard}",
                used,
            )

    # Periods --------------------------------------------------------------------------------

    def _rater(self, node: NodeState, state: PeriodState) -> PeriodRater:
        """The rater a period was opened with (its tariff version and time zone)."""
        cached = self._raters.get(node.tenant)
        if cached is not None and cached[0] is state:
            return cached[1]
        time_zone = node.period_time_zone or node.settings.time_zone
        rater = self.tariffs.rater_for(state.tariff, state.version, time_zone)
        assert rater is not None, f"tariff {state.tariff} v{state.version} disappeared"
        self._raters[node.tenant] = (state, rater)
        return rater

    def _period_for(
        self, node: NodeState, at: Instant, time: Instant
    ) -> tuple[PeriodState, ClosedPeriod | None] | Outcome:
        assert node.period is not None
        current = node.period
        if at >= current.period.start:
            return current, None
        for closed in node.closed:
            period = closed.state.period
            if period.start <= at < period.end:
                if time >= closed.accepts_until:
                    break
                return closed.state, closed
        return denied(
            Reason.event_too_late,
            "usage_time",
            "the usage falls in a period that no longer accepts late events",
        )

    def _open_period(
        self,
        node: NodeState,
        rater: PeriodRater,
        period: Period,
        start: Instant,
        previous: PeriodState | None,
        alerts: list[Alert],
    ) -> None:
        self._note_timer(period.end)
        self._gauge_tenants = None
        same_tariff = previous is not None and previous.tariff == rater.tariff
        node.period_number = node.period_number + 1 if same_tariff else 1
        state, due = rater.open(
            period,
            period_number=node.period_number,
            active_from=start if start > period.start else None,
            previous=previous,
        )
        node.period = state
        node.period_time_zone = rater.time_zone
        if node.wallet is not None:
            node.wallet.credit_limit = _credit_limit(node.settings, rater)
        self._post(
            node, due, REVENUE_FEES, PK.fee, start, f"{node.tenant}:period:{period.start}", alerts
        )

    def _close_period(self, node: NodeState, alerts: list[Alert]) -> None:
        state = node.period
        assert state is not None
        end = state.period.end
        for session in list(self.state.sessions.values()):
            if node.tenant in self._path_names(session.tenant):
                self._charge_segment(session, end, f"{session.session_id}:{end}", alerts)
        rater = self._rater(node, state)
        gauges = rater.accrue(state, end)
        self._post(
            node, gauges, REVENUE_USAGE, PK.charge, end, f"{node.tenant}:gauges:{end}", alerts
        )
        statement = rater.close(state)
        self.state.statements.append((node.tenant, statement))
        if node.wallet is not None:
            closing = statement.closing_amount - statement.rounding_difference
            self._post_closing(
                node,
                statement.rounding_difference,
                closing,
                end,
                f"{node.tenant}:close:{state.period.start}",
            )
        node.closed.append(
            ClosedPeriod(
                state=state,
                issued=statement,
                accepts_until=end + rater.version.late_event_grace_seconds,
            )
        )
        node.units, node.drawn, node.spent, node.fired = {}, ZERO, ZERO, []
        tariff = node.settings.tariff
        if tariff is None:
            # The tariff was taken away: the tenant is no longer rated from here on.
            node.period = None
            self._gauge_tenants = None
            return
        next_rater = self.tariffs.rater(tariff, end, node.settings.time_zone) or rater
        self._open_period(node, next_rater, next_rater.period_at(end), end, state, alerts)
        for session in list(self.state.sessions.values()):
            if node.tenant in self._path_names(session.tenant):
                self._regrant_or_cut_off(session, end, alerts)

    def _post_closing(
        self, node: NodeState, rounding: Decimal, closing: Decimal, time: Instant, reference: str
    ) -> None:
        wallet = node.wallet
        assert wallet is not None
        if closing:
            wallet.charge(closing, REVENUE_FEES, PK.fee, time, reference)
        if rounding:
            wallet.charge(rounding, REVENUE_ROUNDING, PK.rounding, time, reference)

    # Time -----------------------------------------------------------------------------------

    def _timers(self) -> Iterator[tuple[Instant, int, str]]:
        """Everything due without a command: (instant, order within an instant, key)."""
        for reservation in self.state.reservations.values():
            yield reservation.expires_at, _RESERVATION, "r:" + reservation.reservation_id
        for grant in self.state.slices.values():
            yield grant.expires_at, _SLICE, "g:" + grant.grant_id
        for session in self.state.sessions.values():
            if session.granted_until is not None:
                yield session.granted_until, _SESSION, "s:" + session.session_id
        for node in self.state.nodes.values():
            if node.wallet is not None:
                for credit in node.wallet.grants:
                    if credit.expires_at is not None:
                        yield credit.expires_at, _CREDIT, "c:" + node.tenant
            if node.period is not None:
                yield node.period.period.end, _PERIOD_END, "p:" + node.tenant
            for closed in node.closed[:1]:
                yield closed.accepts_until, _LATE_WINDOW, "l:" + node.tenant

    def _advance(self, now: Instant) -> list[Alert]:
        alerts: list[Alert] = []
        if not self._due_known:
            self._due, self._due_known = self._earliest_timer(), True
        while self._due is not None and self._due <= now:
            due = [timer for timer in self._timers() if timer[0] <= now]
            if not due:
                self._due = self._earliest_timer()
                continue
            at, order, key = min(due)
            self._fire_timer(at, order, key[2:], alerts)
            self._due = self._earliest_timer()
        for tenant in self._gauges():
            node = self.state.nodes[tenant]
            assert node.period is not None
            accrued = self._rater(node, node.period).accrue(node.period, now)
            self._post(
                node, accrued, REVENUE_USAGE, PK.charge, now, f"{node.tenant}:gauges:{now}", alerts
            )
        return alerts

    def _note_timer(self, at: Instant) -> None:
        if self._due_known and (self._due is None or at < self._due):
            self._due = at

    def _gauges(self) -> list[str]:
        if self._gauge_tenants is None:
            self._gauge_tenants = [
                node.tenant
                for node in self.state.nodes.values()
                if node.period is not None and self._rater(node, node.period).gauges
            ]
        return self._gauge_tenants

    def _fire_timer(self, at: Instant, order: int, key: str, alerts: list[Alert]) -> None:
        if order == _PERIOD_END:
            self._close_period(self.state.nodes[key], alerts)
        elif order == _RESERVATION:
            reservation = self.state.reservations.pop(key)
            self._unhold(reservation.held)
        elif order == _SLICE:
            grant = self.state.slices[key]
            rest = grant.quantity - grant.used
            if self.state.nodes[grant.tenant].settings.grant_expiry is GrantExpiry.release:
                rest = ZERO
            self._settle_slice(grant, rest, at, f"{key}:expired", alerts, final=True)
        elif order == _SESSION:
            self._regrant_or_cut_off(self.state.sessions[key], at, alerts)
        elif order == _CREDIT:
            node = self.state.nodes[key]
            assert node.wallet is not None
            for grant_expired, posting in node.wallet.expire(at):
                alerts.append(
                    Alert(
                        kind=AlertKind.credit_expired,
                        tenant=node.tenant,
                        at=at,
                        detail=f"credit {grant_expired.grant_id} expired",
                        amount=posting.amount,
                    )
                )
        else:
            node = self.state.nodes[key]
            node.closed.pop(0)

    # Helpers --------------------------------------------------------------------------------

    def _path(self, node: NodeState) -> list[NodeState]:
        path = [node]
        nodes = self.state.nodes
        while path[-1].settings.parent is not None:
            path.append(nodes[path[-1].settings.parent])
        return path

    def _path_names(self, tenant: str) -> list[str]:
        return [n.tenant for n in self._path(self.state.nodes[tenant])]

    def _accepted(
        self,
        node: NodeState,
        *,
        amount: Decimal = ZERO,
        expires_at: Instant | None = None,
        granted_until: Instant | None = None,
    ) -> Outcome:
        payer = self.payer(node)
        wallet = payer.wallet if payer is not None else None
        available = None
        if payer is not None and wallet is not None:
            available = _finite(self._within_caps(node, payer, wallet.available_now()))
        return Outcome(
            accepted=True,
            amount=amount,
            balance=wallet.balance() if wallet else None,
            available=available,
            expires_at=expires_at,
            granted_until=granted_until,
        )

    def _remembered(self, command_id: str) -> Remembered | None:
        state = self.state
        remembered = state.remembered.get(command_id)
        if remembered is None and state.remembered_before:
            remembered = state.remembered_before.get(command_id)
        return remembered

    def _remember(self, command: c.Command, time: Instant, outcome: Outcome) -> None:
        state = self.state
        if (
            len(state.remembered) >= REMEMBERED_MAX // 2
            or time - state.remembered_since >= REMEMBERED_SECONDS
        ):
            # Two generations make forgetting cheap: the older one stops being looked up as
            # a whole, and is released in chunks from here on (FORGET_CHUNK).
            self._forgetting = state.remembered_before
            state.remembered_before = state.remembered
            state.remembered = {}
            state.remembered_since = time
        remembered = state.remembered
        remembered[command.id] = Remembered(command=command, at=time, outcome=outcome)
        if self._forgetting and not len(remembered) % FORGET_EVERY:
            forgetting = self._forgetting
            for _ in range(min(FORGET_CHUNK, len(forgetting))):
                forgetting.popitem()


def _same_content(before: c.Command, now: c.Command) -> bool:
    """Whether a repeated id carries the same command: everything but the time the host
    stamped on it counts, so that a retry received later is recognised."""
    return before.__class__ is now.__class__ and msgspec.structs.replace(
        before, time=0
    ) == msgspec.structs.replace(now, time=0)


def _event(command: c.AuthorizeAndRecord | c.Record | c.Authorize) -> Event:
    return Event(
        id=command.id,
        meter=command.meter,
        time=command.at,
        quantity=command.quantity,
        properties=command.properties,
        duration_seconds=command.duration_seconds,
    )


def _slice_usage(grant: Slice, quantity: Decimal, time: Instant, reference: str) -> Event:
    return Event(
        id=reference, meter=grant.meter, time=time, quantity=quantity, properties=grant.properties
    )


def _alone(node: NodeState) -> bool:
    """Whether the tenant is alone in its tree, rated, with a balance of its own and no
    quotas: then each use is charged by itself, to it alone (the one-step path, and linear
    slices priced by their caller)."""
    return (
        node.wallet is not None
        and node.period is not None
        and not node.children
        and node.settings.parent is None
        and not node.settings.quotas
    )


def _denied_cut_off() -> Outcome:
    return denied(Reason.account_cut_off, None, "the account was cut off; a top-up reopens it")


def _denied_credit(cost: Decimal, available: Decimal) -> Outcome:
    return denied(Reason.insufficient_credit, None, f"costs {cost}, {available} available")


def _quantity_problem(quantity: Decimal, *, whole: bool) -> str | None:
    """Why ``quantity`` is not a quantity a meter takes (``whole``: a count), if it is not."""
    try:
        check_quantity("quantity", quantity)
    except ValueError as error:
        return str(error)
    if whole and quantity % 1:
        return "quantity: a count meter counts whole occurrences"
    return None


def _quota(node: NodeState, meter: str) -> Quota | None:
    for quota in node.settings.quotas:
        if quota.meter == meter:
            return quota
    return None


def _cap_room(node: NodeState) -> Decimal | None:
    """What a capped pooled tenant may still draw this period (below zero once usage that
    already happened took it past its cap); None without a cap."""
    cap = node.settings.cap
    return None if cap is None else cap - node.drawn - node.drawn_held


def _payer_amount(plan: Plan) -> Decimal:
    return next((s.cost for s in plan.steps if s.node.wallet is not None), ZERO)


def _held_by_payer(held: Held | None, leaf: NodeState, tree: TenantTree) -> Decimal:
    payer = tree.payer(leaf)
    if held is None or payer is None:
        return ZERO
    return sum((h.amount for h in held.holds if h.tenant == payer.tenant and not h.capped), ZERO)


def _credit_limit(settings: TenantSettings, rater: PeriodRater) -> Decimal:
    if settings.credit_limit is not None:
        return settings.credit_limit
    return ZERO if rater.version.payment_mode is PaymentMode.prepaid else UNLIMITED


def _finite(amount: Decimal) -> Decimal | None:
    return amount if amount.is_finite() else None


def _units(rater: PeriodRater, event: Event) -> Decimal:
    """What usage counts towards quotas: the meter's value of the event (its quantity, or the
    property the meter reads)."""
    meter = rater.meters.get(event.meter)
    if meter is None:
        return event.quantity
    value = event_value(meter, event)
    return value if isinstance(value, Decimal) else event.quantity


def _fire(
    node: NodeState,
    key: str,
    alerts: list[Alert],
    kind: AlertKind,
    time: Instant,
    detail: str,
    amount: Decimal | None = None,
) -> None:
    if key in node.fired:
        return
    node.fired.append(key)
    alerts.append(Alert(kind=kind, tenant=node.tenant, at=time, detail=detail, amount=amount))


def _unfire(node: NodeState, key: str) -> None:
    if key in node.fired:
        node.fired.remove(key)
