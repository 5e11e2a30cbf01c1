"""Rating a period: the exact marginal amount of every event, and the statement at its close.

A :class:`PeriodRater` is one tariff version compiled for one tenant time zone. It keeps no
state of its own: the period-to-date state is a :class:`PeriodState` that the caller owns,
snapshots and restores.

Incremental equals whole-period by construction: every charge remembers the quantity it has
priced, and an event's marginal amount is ``amount(new quantity) - amount(priced quantity)``
computed by the same price model that produces the statement lines. The sum of the marginal
amounts therefore telescopes to the period's amount exactly, whatever the order of events.
"""

from __future__ import annotations

import copy
import decimal
from collections.abc import Mapping, Sequence
from decimal import Decimal
from zoneinfo import ZoneInfo

import msgspec

from engine.charges import Charge, TimeBasis
from engine.instants import Instant
from engine.meters import (
    QUANTUM_INVERSE,
    AggregateState,
    Aggregation,
    CountState,
    Event,
    Meter,
    SumState,
    TimeWeightedState,
    Usage,
    event_value,
    new_state,
)
from engine.numbers import MAGNITUDE_MAX, ONE, ZERO, divide, engine_context_installed, round_amount
from engine.periods import Period, next_period, period_containing, zone
from engine.pricing import OTHER_VALUES, ByAttribute, PerUnit, SimplePrice, TimeOfUse
from engine.rejections import Rejection
from engine.statements import (
    BreakdownLine,
    LineKind,
    Statement,
    StatementLine,
    delta,
    make_statement,
)
from engine.tariffs import DiscountKind, FeeTiming, TariffVersion


class BucketState(msgspec.Struct, kw_only=True):
    """One rated bucket of a charge: a time window, an attribute value, a group."""

    aggregate: AggregateState
    route: str = ""
    dimensions: dict[str, str] = {}
    priced_quantity: Decimal = ZERO
    priced_events: int = 0
    amount: Decimal = ZERO


class ChargeState(msgspec.Struct, kw_only=True):
    buckets: dict[str, BucketState] = msgspec.field(default_factory=dict)
    raw_amount: Decimal = ZERO
    charged_amount: Decimal = ZERO


class FeeState(msgspec.Struct, kw_only=True):
    """A recurring fee's quantity over the period: ``(from instant, quantity)`` in time order."""

    changes: list[tuple[Instant, Decimal]] = msgspec.field(default_factory=list)


class OneTimeItem(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    at: Instant


class Attribution(msgspec.Struct, kw_only=True, array_like=True):
    """What one sub-tenant contributed to one charge: event values and marginal amounts."""

    quantity: Decimal = ZERO
    amount: Decimal = ZERO


class PeriodState(msgspec.Struct, kw_only=True):
    period: Period
    tariff: str
    version: int
    period_number: int = 1
    charges: dict[str, ChargeState] = msgspec.field(default_factory=dict)
    fees: dict[str, FeeState] = msgspec.field(default_factory=dict)
    one_time: list[OneTimeItem] = msgspec.field(default_factory=list)
    charged_live: Decimal = ZERO
    """The sum of every amount this state has handed out: what the account has posted."""
    breakdown: dict[str, dict[str, Attribution]] = msgspec.field(default_factory=dict)
    """Marginal amounts by the sub-tenant that caused them, then by charge."""


_BUDGETED = (Aggregation.sum, Aggregation.count)


def _plain_value(meter: Meter, value: Decimal) -> bool:
    """Whether ``value`` is what :func:`event_value` accepts, checked the quick way; where it
    is not, :func:`event_value` says why."""
    if value == ONE:  # the quantity nearly every event has
        return True
    try:
        return (
            value.is_finite()
            and ZERO <= value < MAGNITUDE_MAX
            and not (value * QUANTUM_INVERSE) % 1
            and not (meter.aggregation is Aggregation.count and value % 1)
        )
    except decimal.Inexact:  # the strict context: more digits than the engine carries
        return False


class LateRating(msgspec.Struct, frozen=True, kw_only=True):
    marginal: Decimal
    """What the late event adds at once, as any event would."""
    revised: Statement
    """The period's statement as it now stands; keep it to diff the next late event against."""
    delta: Statement
    """The change against the issued statement, to be invoiced on its own."""


class CompiledCharge:
    """A charge with its meter and price tables resolved once, for the hot path."""

    __slots__ = (
        "attribute",
        "charge",
        "divisor",
        "fast",
        "free_units",
        "key",
        "maximum",
        "meter",
        "prices",
        "schedule",
        "single",
        "time_basis",
        "unit_price",
        "zone",
    )

    def __init__(self, charge: Charge, meter: Meter, time_zone: ZoneInfo) -> None:
        self.charge = charge
        self.key = charge.key
        self.meter = meter
        self.zone = time_zone
        self.free_units = charge.free_units
        self.maximum = charge.maximum_amount
        self.time_basis: TimeBasis | None = charge.time_basis
        self.divisor = charge.time_basis.unit_seconds if charge.time_basis else 1
        price = charge.price
        self.attribute: str | None = None
        self.schedule = None
        self.single: SimplePrice | None = None
        if isinstance(price, TimeOfUse):
            self.prices: dict[str, SimplePrice] = price.price_table()
            self.schedule = price.schedule()
        elif isinstance(price, ByAttribute):
            self.prices = price.price_table()
            self.attribute = price.property
        else:
            self.prices = {"": price}
            self.single = price
        # A per-unit price: the marginal amount is the change of quantity times the price.
        self.unit_price = price.unit_price if isinstance(price, PerUnit) else None
        # One bucket, no routing, no conversion: the path most events take.
        self.fast = (
            self.single is not None
            and not meter.group_by
            and self.time_basis is None
            and meter.unique_property is None
        )

    @property
    def needs_check(self) -> bool:
        return self.attribute is not None or self.meter.unique_property is not None

    # Checks come before any change, so that a rejected event changes nothing.
    def check(self, event: Usage) -> Rejection | None:
        if self.attribute is not None:
            value = event.properties.get(self.attribute)
            if value not in self.prices and OTHER_VALUES not in self.prices:
                return Rejection.of(
                    "no_price_for_attribute",
                    f"properties.{self.attribute}",
                    f"charge {self.key!r} has no price for {value!r}",
                )
        unique = self.meter.unique_property
        if unique is not None and unique not in event.properties:
            return Rejection.of(
                "missing_property", f"properties.{unique}", "a unique_count meter counts it"
            )
        return None

    def apply(self, state: ChargeState, event: Usage, value: Decimal, period: Period) -> Decimal:
        """Add the event and return the change in the charge's amount (its marginal amount)."""
        if self.fast:
            marginal = self._apply_fast(state, event, value, period)
            assert marginal is not None
            return marginal
        group = self.meter.group(event.properties) if self.meter.group_by else ""
        unique = event.properties.get(self.meter.unique_property or "")
        touched: list[BucketState] = []
        for route, share in self._shares(event, value):
            bucket = self._bucket(state, route, group, period)
            bucket.aggregate.add(share, event.time, unique)
            touched.append(bucket)
        return self._reprice(state, touched, event.time)

    def _apply_fast(
        self,
        state: ChargeState,
        event: Usage,
        value: Decimal,
        period: Period,
        budget: Decimal | None = None,
    ) -> Decimal | None:
        """:meth:`apply` and :meth:`_reprice` for a single bucket, written out for speed.

        With a ``budget``, a positive marginal amount above it changes nothing and gives None
        (counts and sums only; other aggregations must be quoted first).
        """
        bucket = state.buckets.get("")
        if bucket is None:
            bucket = self._bucket(state, "", "", period)
        aggregate = bucket.aggregate
        kind = aggregate.__class__
        if kind is SumState or kind is CountState:
            events = aggregate.events + 1
            quantity = total = aggregate.total + value  # type: ignore[union-attr]
        else:
            assert budget is None, "only counts and sums are rated within a budget"
            aggregate.add(value, event.time, None)
            quantity = aggregate.quantity(event.time)
            events = aggregate.events
            total = ZERO
        free = self.free_units
        if free:
            quantity = quantity - free if quantity > free else ZERO
        unit_price = self.unit_price
        if unit_price is not None:
            change = (quantity - bucket.priced_quantity) * unit_price
        else:
            change = self.single.marginal(  # type: ignore[union-attr]
                bucket.priced_quantity, quantity, bucket.priced_events, events
            )
        raw = state.raw_amount + change
        maximum = self.maximum
        charged = raw if maximum is None or raw <= maximum else maximum
        marginal = charged - state.charged_amount
        if budget is not None and marginal > 0 and marginal > budget:
            return None
        if kind is SumState or kind is CountState:
            aggregate.events = events
            aggregate.total = total  # type: ignore[union-attr]
        bucket.priced_quantity = quantity
        bucket.priced_events = events
        if change:
            bucket.amount += change
            state.raw_amount = raw
            state.charged_amount = charged
        return marginal

    def peek(
        self, state: ChargeState | None, value: Decimal, ahead: Decimal = ZERO
    ) -> Decimal | None:
        """The marginal amount of one more event of ``value`` after ``ahead`` units, without
        changing anything, for single-bucket counts and sums; None where only rating a copy
        can tell."""
        if not self.fast:
            return None
        aggregation = self.meter.aggregation
        if aggregation is not Aggregation.sum and aggregation is not Aggregation.count:
            return None
        bucket = state.buckets.get("") if state is not None else None
        if bucket is None:
            priced, priced_events, events, total = ZERO, 0, 0, ZERO
        else:
            aggregate = bucket.aggregate
            priced, priced_events = bucket.priced_quantity, bucket.priced_events
            events = aggregate.events
            total = aggregate.total if isinstance(aggregate, SumState | CountState) else ZERO
        before, after = total + ahead, total + ahead + value
        events_before = events + (1 if ahead else 0)
        before, after = self._after_free(before), self._after_free(after)
        model = self.single
        assert model is not None
        raw = state.raw_amount if state is not None else ZERO
        if ahead:
            raw += model.marginal(priced, before, priced_events, events_before)
        charged_before = self._capped(raw)
        raw += model.marginal(before, after, events_before, events_before + 1)
        return self._capped(raw) - charged_before

    def _after_free(self, quantity: Decimal) -> Decimal:
        free = self.free_units
        if not free:
            return quantity
        return quantity - free if quantity > free else ZERO

    def _capped(self, raw: Decimal) -> Decimal:
        maximum = self.maximum
        return raw if maximum is None or raw <= maximum else maximum

    def accrue(self, state: ChargeState, as_of: Instant) -> Decimal:
        """Bring every gauge of the charge up to ``as_of`` and return the added amount."""
        return self._reprice(state, list(state.buckets.values()), as_of)

    def _shares(self, event: Usage, value: Decimal) -> list[tuple[str, Decimal]]:
        basis = self.time_basis
        if self.attribute is not None:
            chosen = event.properties.get(self.attribute, "")
            route = chosen if chosen in self.prices else OTHER_VALUES
            if basis is None:
                return [(route, value)]
            return [(route, value * basis.billable_seconds(event.duration_seconds))]
        if self.schedule is None:
            if basis is None:
                return [("", value)]
            return [("", value * basis.billable_seconds(event.duration_seconds))]
        spread = self.meter.aggregation is Aggregation.sum and event.duration_seconds > 0
        if not spread:
            route = self.schedule.window_at(event.time, self.zone)
            seconds = basis.billable_seconds(event.duration_seconds) if basis else None
            return [(route, value if seconds is None else value * seconds)]
        return self._spread(event, value)

    def _spread(self, event: Usage, value: Decimal) -> list[tuple[str, Decimal]]:
        """Split usage over time at window boundaries, to the second."""
        assert self.schedule is not None
        pieces = self.schedule.split(event.time, event.duration_seconds, self.zone)
        basis = self.time_basis
        if basis is not None:
            extra = basis.billable_seconds(event.duration_seconds) - event.duration_seconds
            shares = [(route, value * seconds) for route, seconds in pieces]
            route, last = shares[-1]
            shares[-1] = (route, last + value * extra)
            return shares
        shares = []
        remaining = value
        for route, seconds in pieces[:-1]:
            share = divide(value * seconds, event.duration_seconds)
            shares.append((route, share))
            remaining -= share
        shares.append((pieces[-1][0], remaining))
        return shares

    def _bucket(self, state: ChargeState, route: str, group: str, period: Period) -> BucketState:
        key = f"{route}|{group}" if route and group else route or group
        bucket = state.buckets.get(key)
        if bucket is None:
            bucket = BucketState(
                aggregate=new_state(self.meter, period.start, period.end - period.start),
                route=route,
                dimensions=self._dimensions(route, group),
            )
            state.buckets[key] = bucket
        return bucket

    def _dimensions(self, route: str, group: str) -> dict[str, str]:
        dimensions: dict[str, str] = {}
        if self.schedule is not None:
            dimensions["window"] = route
        elif self.attribute is not None:
            dimensions[self.attribute] = route
        for part in group.split(",") if group else ():
            name, _, text = part.partition("=")
            dimensions[name] = text
        return dimensions

    def _reprice(
        self, state: ChargeState, buckets: Sequence[BucketState], as_of: Instant
    ) -> Decimal:
        per = self.divisor
        # A time-based charge keeps its quantity in value-seconds and prices it per unit of
        # time with one division per line, so that a whole number of seconds costs exactly
        # what it should (100,000 vCPU-seconds at 0.036 per hour is 1.00, not 1.00…008).
        free = self.free_units * per
        for bucket in buckets:
            aggregate = bucket.aggregate
            quantity = aggregate.quantity(as_of)
            if free:
                quantity = quantity - free if quantity > free else ZERO
            if quantity == bucket.priced_quantity and aggregate.events == bucket.priced_events:
                continue
            model = self.single or self.prices[bucket.route]
            if per == 1:
                change = model.marginal(
                    bucket.priced_quantity, quantity, bucket.priced_events, aggregate.events
                )
            else:
                change = model.amount_in(quantity, aggregate.events, per) - model.amount_in(
                    bucket.priced_quantity, bucket.priced_events, per
                )
            bucket.priced_quantity = quantity
            bucket.priced_events = aggregate.events
            bucket.amount += change
            state.raw_amount += change
        charged = state.raw_amount
        if self.maximum is not None and charged > self.maximum:
            charged = self.maximum
        marginal = charged - state.charged_amount
        state.charged_amount = charged
        return marginal

    def price_of(self, bucket: BucketState) -> SimplePrice:
        return self.single or self.prices[bucket.route]

    def quantity_unit(self) -> str:
        """``hour`` for time-based charges, ``GB-day`` for gauges, else the meter's unit."""
        if self.time_basis is not None:
            return self.time_basis.unit.value
        if self.meter.time_unit is not None:
            return f"{self.meter.unit}-{self.meter.time_unit.value}"
        return self.meter.unit


class PeriodRater:
    """One tariff version compiled for one tenant time zone (the version's own zone, if it
    names one, takes precedence)."""

    def __init__(
        self, tariff: str, version: TariffVersion, meters: Mapping[str, Meter], time_zone: str
    ) -> None:
        assert engine_context_installed(), "call engine.numbers.use_engine_context() first"
        self.tariff = tariff
        self.version = version
        self.time_zone = version.time_zone or time_zone
        self.zone = zone(self.time_zone)
        self.meters = dict(meters)
        self.charges = [CompiledCharge(c, meters[c.meter], self.zone) for c in version.charges]
        self.by_meter: dict[str, list[CompiledCharge]] = {}
        for compiled in self.charges:
            self.by_meter.setdefault(compiled.meter.key, []).append(compiled)
        self.checked_meters = {c.meter.key for c in self.charges if c.needs_check}
        self.fast_by_meter = {
            key: charges[0]
            for key, charges in self.by_meter.items()
            if len(charges) == 1
            and charges[0].fast
            and not charges[0].meter.filters
            and charges[0].meter.value_property is None
        }
        self.gauges = [c for c in self.charges if c.meter.aggregation is Aggregation.time_weighted]

    def period_at(self, instant: Instant) -> Period:
        """The billing period of this version that contains ``instant``."""
        return period_containing(self.version.period, self.time_zone, instant)

    def next_period(self, period: Period) -> Period:
        return next_period(self.version.period, self.time_zone, period)

    def unit_price(self, meter: str) -> Decimal | None:
        """The flat price of one unit of ``meter``'s quantity when every charge on it is
        linear in the events' quantities, whatever came before and whatever they carry: a
        plain count or sum read from the quantity, priced per unit with no free units, no
        minimum or maximum, no time basis, no routing and no grouping. None otherwise (also
        for a meter this version does not know); zero for a known meter it does not price.

        A caller may then price ``q`` units as ``q * unit_price`` without the period state,
        and the tree charges exactly that when the units are rated."""
        definition = self.meters.get(meter)
        if (
            definition is None
            or definition.aggregation not in _BUDGETED
            or definition.value_property is not None
            or definition.filters
            or definition.group_by
        ):
            return None
        total = ZERO
        for compiled in self.by_meter.get(meter, ()):
            charge = compiled.charge
            if (
                not isinstance(charge.price, PerUnit)
                or charge.free_units
                or charge.minimum_amount is not None
                or charge.maximum_amount is not None
                or charge.time_basis is not None
            ):
                return None
            total += charge.price.unit_price
        return total

    # Opening -------------------------------------------------------------------------------

    def open(
        self,
        period: Period,
        *,
        period_number: int = 1,
        active_from: Instant | None = None,
        previous: PeriodState | None = None,
    ) -> tuple[PeriodState, Decimal]:
        """A new period's state and the amount due at its opening (fees in advance, setup fees).

        ``active_from`` is when the assignment starts if that is after the period start (the
        fees are then prorated); ``previous`` carries gauges and fee quantities over.
        """
        start = max(period.start, active_from or period.start)
        state = PeriodState(
            period=period,
            tariff=self.tariff,
            version=self.version.version,
            period_number=period_number,
        )
        self._carry_gauges(state, previous, start)
        due = ZERO
        for fee in self.version.recurring_fees:
            quantity = self._carried_fee_quantity(previous, fee.key, fee.quantity)
            state.fees[fee.key] = FeeState(changes=[(start, quantity)])
            if fee.timing is FeeTiming.advance:
                due += self._prorated(fee.amount * quantity, start, period)
        if period_number == 1:
            for one_time in self.version.one_time_fees:
                state.one_time.append(
                    OneTimeItem(
                        key=one_time.key,
                        description=one_time.label,
                        quantity=Decimal(1),
                        unit_price=one_time.amount,
                        at=start,
                    )
                )
                due += one_time.amount
        state.charged_live += due
        return state, due

    def _carry_gauges(
        self, state: PeriodState, previous: PeriodState | None, start: Instant
    ) -> None:
        if previous is None:
            return
        for compiled in self.gauges:
            old = previous.charges.get(compiled.key)
            if old is None:
                continue
            charge_state = state.charges.setdefault(compiled.key, ChargeState())
            for key, bucket in old.buckets.items():
                aggregate = bucket.aggregate
                assert isinstance(aggregate, TimeWeightedState)
                charge_state.buckets[key] = BucketState(
                    aggregate=new_state(
                        compiled.meter,
                        start,
                        state.period.end - state.period.start,
                        aggregate.closing_value(),
                    ),
                    route=bucket.route,
                    dimensions=dict(bucket.dimensions),
                )

    @staticmethod
    def _carried_fee_quantity(previous: PeriodState | None, key: str, default: Decimal) -> Decimal:
        if previous is None or key not in previous.fees:
            return default
        return previous.fees[key].changes[-1][1]

    @staticmethod
    def _prorated(
        amount: Decimal, start: Instant, period: Period, until: Instant | None = None
    ) -> Decimal:
        """``amount`` for ``[start, until)`` of the period (until defaults to its end).

        Every proration is the difference of two elapsed shares of the period, so the shares of
        adjacent intervals add up to exactly one: fees in advance and in arrears agree to the
        last decimal, and a full period costs exactly the full fee.
        """
        length = period.end - period.start
        end = period.end if until is None else until
        share = divide(end - period.start, length) - divide(start - period.start, length)
        return amount * share

    # Usage ---------------------------------------------------------------------------------

    def attribute_rest(self, state: PeriodState, source: str) -> None:
        """Attribute to ``source`` what the period has rated but not yet attributed (a tenant's
        own usage from before its first sub-tenant)."""
        for key, charge_state in state.charges.items():
            amount, quantity = charge_state.charged_amount, ZERO
            for bucket in charge_state.buckets.values():
                aggregate = bucket.aggregate
                quantity += (
                    aggregate.total
                    if isinstance(aggregate, SumState | CountState)
                    else bucket.priced_quantity
                )
            for entries in state.breakdown.values():
                entry = entries.get(key)
                if entry is not None:
                    amount -= entry.amount
                    quantity -= entry.quantity
            if amount or quantity:
                entry = state.breakdown.setdefault(source, {}).setdefault(key, Attribution())
                entry.amount += amount
                entry.quantity += quantity

    def rate(
        self, state: PeriodState, event: Usage, source: str | None = None
    ) -> Decimal | Rejection:
        """Record ``event`` into the period and return its exact marginal amount.

        ``source`` names the sub-tenant the usage came from; the amounts are then also kept
        by sub-tenant for the statement's breakdown.
        """
        fast = self.fast_by_meter.get(event.meter)
        if fast is not None and source is None:
            # One plain charge on a plain meter: the path most events take, written out.
            value = event.quantity
            if not _plain_value(fast.meter, value):
                return event_value(fast.meter, event)
            charge_state = state.charges.get(fast.key)
            if charge_state is None:
                charge_state = state.charges[fast.key] = ChargeState()
            marginal = fast._apply_fast(charge_state, event, value, state.period)
            assert marginal is not None
            state.charged_live += marginal
            return marginal
        prepared = self._prepare(event)
        if not isinstance(prepared, tuple):
            return prepared
        compiled_charges, value = prepared
        marginal = ZERO
        charges = state.charges
        for compiled in compiled_charges:
            charge_state = charges.get(compiled.key)
            if charge_state is None:
                charge_state = charges[compiled.key] = ChargeState()
            amount = compiled.apply(charge_state, event, value, state.period)
            if source is not None:
                entry = state.breakdown.setdefault(source, {}).setdefault(
                    compiled.key, Attribution()
                )
                entry.quantity += value
                entry.amount += amount
            marginal += amount
        state.charged_live += marginal
        return marginal

    def rate_within(
        self, state: PeriodState, event: Usage, budget: Decimal
    ) -> tuple[bool, Decimal] | Rejection:
        """Rate ``event`` only if its marginal amount is at most ``budget`` (or not positive):
        ``(True, amount)`` once recorded, ``(False, cost)`` when it would cost more, changing
        nothing. One computation serves both the decision and the record."""
        fast = self.fast_by_meter.get(event.meter)
        if fast is not None and fast.meter.aggregation in _BUDGETED:
            value = event.quantity
            if _plain_value(fast.meter, value):
                charge_state = state.charges.get(fast.key)
                fresh = charge_state is None
                if charge_state is None:
                    charge_state = ChargeState()
                marginal = fast._apply_fast(charge_state, event, value, state.period, budget)
                if marginal is None:
                    over = fast.peek(None if fresh else charge_state, value)
                    assert over is not None
                    return False, over
                if fresh:
                    state.charges[fast.key] = charge_state
                state.charged_live += marginal
                return True, marginal
        cost = self.quote(state, event)
        if isinstance(cost, Rejection):
            return cost
        if cost > 0 and cost > budget:
            return False, cost
        amount = self.rate(state, event)
        if isinstance(amount, Rejection):
            return amount
        return True, amount

    def _prepare(self, event: Usage) -> tuple[list[CompiledCharge], Decimal] | Decimal | Rejection:
        """The charges an event feeds and its value; ZERO if none prices it; or why not."""
        compiled_charges = self.by_meter.get(event.meter)
        if compiled_charges is None:
            if event.meter in self.meters:
                return ZERO  # a known meter that this tariff does not price
            return Rejection.of("unknown_meter", "meter", f"no meter {event.meter!r}")
        meter = compiled_charges[0].meter
        value = event_value(meter, event)
        if isinstance(value, Rejection):
            return value
        if meter.filters and not meter.matches(event.properties):
            return ZERO
        if event.meter in self.checked_meters:
            for compiled in compiled_charges:
                rejection = compiled.check(event)
                if rejection is not None:
                    return rejection
        return compiled_charges, value

    def quote(
        self, state: PeriodState, event: Usage, ahead: Sequence[Usage] = ()
    ) -> Decimal | Rejection:
        """What rating ``event`` would cost now, without recording it.

        The ``ahead`` usage is priced in first, as if already recorded: a reservation is
        quoted behind the usage other reservations hold, so that rising tiers never leave a
        hold short.
        """
        prepared = self._prepare(event)
        if not isinstance(prepared, tuple):
            return prepared
        compiled_charges, value = prepared
        held = ZERO
        for usage in ahead:
            amount = event_value(compiled_charges[0].meter, usage)
            if isinstance(amount, Rejection):
                return amount
            held += amount
        total = ZERO
        for compiled in compiled_charges:
            peeked = compiled.peek(state.charges.get(compiled.key), value, held)
            if peeked is None:
                return self._quote_on_copy(state, event, ahead)
            total += peeked
        return total

    def _quote_on_copy(
        self, state: PeriodState, event: Usage, ahead: Sequence[Usage]
    ) -> Decimal | Rejection:
        trial = PeriodState(
            period=state.period,
            tariff=state.tariff,
            version=state.version,
            charges={
                compiled.key: copy.deepcopy(state.charges[compiled.key])
                for compiled in self.by_meter.get(event.meter, ())
                if compiled.key in state.charges
            },
        )
        for usage in ahead:
            self.rate(trial, usage)
        return self.rate(trial, event)

    def accrue(self, state: PeriodState, as_of: Instant) -> Decimal:
        """Integrate every gauge up to ``as_of`` (at most the period end); the added amount."""
        as_of = min(as_of, state.period.end)
        added = ZERO
        for compiled in self.gauges:
            charge_state = state.charges.get(compiled.key)
            if charge_state is not None:
                added += compiled.accrue(charge_state, as_of)
        state.charged_live += added
        return added

    # Fees ----------------------------------------------------------------------------------

    def change_fee_quantity(
        self, state: PeriodState, key: str, quantity: Decimal, at: Instant
    ) -> Decimal | Rejection:
        """Seats or a subscription changing (0 stops it); in advance, the prorated difference is
        due now; in arrears, it is rated at close."""
        fee = next((f for f in self.version.recurring_fees if f.key == key), None)
        if fee is None:
            return Rejection.of("unknown_fee", "fee", f"no recurring fee {key!r}")
        if quantity < 0 or not quantity.is_finite():
            return Rejection.of("invalid_value", "quantity", "must not be negative")
        period = state.period
        at = min(max(at, period.start), period.end)
        fee_state = state.fees.setdefault(key, FeeState(changes=[(period.start, ZERO)]))
        before = fee_state.changes[-1][1]
        fee_state.changes.append((at, quantity))
        if fee.timing is FeeTiming.arrears:
            return ZERO
        due = self._prorated(fee.amount * (quantity - before), at, period)
        state.charged_live += due
        return due

    def add_one_time(
        self,
        state: PeriodState,
        key: str,
        description: str,
        unit_price: Decimal,
        quantity: Decimal,
        at: Instant,
    ) -> Decimal:
        item = OneTimeItem(
            key=key, description=description, quantity=quantity, unit_price=unit_price, at=at
        )
        state.one_time.append(item)
        amount = quantity * unit_price
        state.charged_live += amount
        return amount

    # Late events ---------------------------------------------------------------------------

    def rate_late(
        self, state: PeriodState, issued: Statement, event: Event, now: Instant
    ) -> LateRating | Rejection:
        """Rate an event into a period that is already closed.

        Within the tariff's grace window after the period end, the event is rated into the
        closed period and the change comes back as a delta statement; the issued statement is
        never altered. Later than that, the event is rejected with ``event_too_late``.
        """
        period = state.period
        if not period.start <= event.time < period.end:
            return Rejection.of("outside_period", "time", "the event is not in this period")
        if now >= period.end + self.version.late_event_grace_seconds:
            return Rejection.of(
                "event_too_late",
                "time",
                f"the period closed more than {self.version.late_event_grace_seconds} s ago",
            )
        marginal = self.rate(state, event)
        if isinstance(marginal, Rejection):
            return marginal
        revised = self.close(state)
        return LateRating(marginal=marginal, revised=revised, delta=delta(issued, revised))

    # Closing -------------------------------------------------------------------------------

    def close(self, state: PeriodState) -> Statement:
        """Rate the whole period into a statement. Gauges are integrated up to the period end;
        that tail, fees in arrears, minimums, discounts and rounding are what closing adds
        (``statement.closing_amount``). Closing again after a late event gives the revision."""
        charged_before_close = state.charged_live
        self.accrue(state, state.period.end)
        state.charged_live = charged_before_close
        lines: list[StatementLine] = []
        for compiled in self.charges:
            lines.extend(self._charge_lines(compiled, state.charges.get(compiled.key)))
        lines.extend(self._fee_lines(state))
        lines.extend(self._one_time_lines(state))
        lines.extend(self._discount_lines(state, lines))
        return make_statement(
            tariff=state.tariff,
            version=state.version,
            currency=self.version.currency,
            period_start=state.period.start,
            period_end=state.period.end,
            period_index=state.period.index,
            lines=lines,
            charged_live=charged_before_close,
            breakdown=self._breakdown(state),
        )

    def _breakdown(self, state: PeriodState) -> tuple[BreakdownLine, ...]:
        return tuple(
            BreakdownLine(
                tenant=tenant,
                charge=charge,
                quantity=entry.quantity,
                amount_raw=entry.amount,
                amount=self._round(entry.amount),
            )
            for tenant in sorted(state.breakdown)
            for charge, entry in sorted(state.breakdown[tenant].items())
        )

    def _round(self, amount: Decimal) -> Decimal:
        return round_amount(amount, self.version.minor_units, self.version.rounding)

    def _charge_lines(
        self, compiled: CompiledCharge, state: ChargeState | None
    ) -> list[StatementLine]:
        charge = compiled.charge
        lines: list[StatementLine] = []
        buckets = state.buckets if state else {}
        if not buckets and compiled.fast:
            # A charge without usage still shows its lines, at zero, on the statement.
            empty = BucketState(aggregate=new_state(compiled.meter, 0, 1))
            lines.extend(self._bucket_lines(compiled, "", empty))
        for bucket_key in sorted(buckets):
            lines.extend(self._bucket_lines(compiled, bucket_key, buckets[bucket_key]))
        usage = sum((line.amount for line in lines), ZERO)
        raw = state.raw_amount if state else ZERO
        charged = state.charged_amount if state else ZERO
        if charge.maximum_amount is not None:
            capped = min(ZERO, charge.maximum_amount - usage)
            if capped or charged != raw:
                lines.append(
                    self._limit_line(
                        compiled, LineKind.maximum, "maximum price reached", charged - raw, capped
                    )
                )
                usage += capped
        if charge.minimum_amount is not None and usage < charge.minimum_amount:
            lines.append(
                self._limit_line(
                    compiled,
                    LineKind.minimum,
                    "minimum charge",
                    max(ZERO, charge.minimum_amount - charged),
                    charge.minimum_amount - usage,
                )
            )
        return lines

    def _bucket_lines(
        self, compiled: CompiledCharge, bucket_key: str, bucket: BucketState
    ) -> list[StatementLine]:
        model = compiled.price_of(bucket)
        if compiled.divisor == 1:
            price_lines = model.lines(bucket.priced_quantity, bucket.priced_events)
        else:
            price_lines = model.lines_in(
                bucket.priced_quantity, bucket.priced_events, compiled.divisor
            )
        assert sum((p.amount for p in price_lines), ZERO) == bucket.amount, "lines != rated"
        prefix = f"{compiled.key}/{bucket_key}/" if bucket_key else f"{compiled.key}/"
        where = ", ".join(f"{k}={v}" for k, v in bucket.dimensions.items())
        label = f"{compiled.charge.label} ({where})" if where else compiled.charge.label
        lines = [
            StatementLine(
                line_id=prefix + price_line.key,
                kind=LineKind.usage,
                description=f"{label}: {price_line.description}",
                quantity=price_line.quantity,
                unit=price_line.unit or compiled.quantity_unit(),
                unit_price=price_line.unit_price,
                amount_raw=price_line.amount,
                amount=self._round(price_line.amount),
                charge=compiled.key,
                dimensions=dict(bucket.dimensions),
            )
            for price_line in price_lines
        ]
        if compiled.free_units:
            used_free = min(compiled.free_units, self._bucket_quantity(compiled, bucket))
            lines.insert(
                0,
                StatementLine(
                    line_id=prefix + "free",
                    kind=LineKind.usage,
                    description=f"{label}: free units (up to {compiled.free_units})",
                    quantity=used_free,
                    unit=compiled.quantity_unit(),
                    unit_price=ZERO,
                    amount_raw=ZERO,
                    amount=ZERO,
                    charge=compiled.key,
                    dimensions=dict(bucket.dimensions),
                ),
            )
        return lines

    @staticmethod
    def _bucket_quantity(compiled: CompiledCharge, bucket: BucketState) -> Decimal:
        quantity = bucket.aggregate.quantity(0)
        return divide(quantity, compiled.divisor) if compiled.divisor != 1 else quantity

    def _limit_line(
        self, compiled: CompiledCharge, kind: LineKind, text: str, raw: Decimal, amount: Decimal
    ) -> StatementLine:
        return StatementLine(
            line_id=f"{compiled.key}/{kind.value}",
            kind=kind,
            description=f"{compiled.charge.label}: {text}",
            quantity=Decimal(1),
            unit="",
            unit_price=None,
            amount_raw=raw,
            amount=amount,
            charge=compiled.key,
        )

    def _fee_lines(self, state: PeriodState) -> list[StatementLine]:
        period = state.period
        length = period.end - period.start
        lines: list[StatementLine] = []
        for fee in self.version.recurring_fees:
            fee_state = state.fees.get(fee.key)
            if fee_state is None:
                continue
            changes = fee_state.changes
            for position, (start, quantity) in enumerate(changes):
                if fee.timing is FeeTiming.advance:
                    before = changes[position - 1][1] if position else ZERO
                    units, until = quantity - before, period.end
                else:
                    following = position + 1
                    until = changes[following][0] if following < len(changes) else period.end
                    units = quantity
                if not units or until <= start:
                    continue
                raw = self._prorated(fee.amount * units, start, period, until)
                share = (
                    ""
                    if until - start == length
                    else (f", prorated {until - start} s of {length} s")
                )
                lines.append(
                    StatementLine(
                        line_id=f"{fee.key}/{position}",
                        kind=LineKind.recurring_fee,
                        description=f"{fee.label} ({fee.timing.value}{share})",
                        quantity=units,
                        unit="",
                        unit_price=fee.amount,
                        amount_raw=raw,
                        amount=self._round(raw),
                        charge=fee.key,
                    )
                )
        return lines

    def _one_time_lines(self, state: PeriodState) -> list[StatementLine]:
        return [
            StatementLine(
                line_id=f"one-time/{position}/{item.key}",
                kind=LineKind.one_time_fee,
                description=item.description,
                quantity=item.quantity,
                unit="",
                unit_price=item.unit_price,
                amount_raw=item.quantity * item.unit_price,
                amount=self._round(item.quantity * item.unit_price),
                charge=item.key,
            )
            for position, item in enumerate(state.one_time)
        ]

    def _discount_lines(
        self, state: PeriodState, lines: list[StatementLine]
    ) -> list[StatementLine]:
        """Discounts in their order. Each takes at most what its lines come to, and never more
        than is left of the statement after the discounts before it."""
        discounts: list[StatementLine] = []
        left = sum((line.amount for line in lines), ZERO)
        for discount in self.version.discounts:
            if discount.periods is not None and state.period_number > discount.periods:
                continue
            scope = set(discount.applies_to)
            in_scope = sum(
                (line.amount for line in lines if not scope or line.charge in scope), ZERO
            )
            base = min(in_scope, left)
            if base <= 0:
                continue
            if discount.kind is DiscountKind.percent:
                amount = -min(self._round(base * discount.value / 100), base)
            else:
                amount = -min(discount.value, base)
            left += amount
            discounts.append(
                StatementLine(
                    line_id=f"discount/{discount.key}",
                    kind=LineKind.discount,
                    description=discount.label,
                    quantity=Decimal(1),
                    unit="",
                    unit_price=None,
                    amount_raw=amount,
                    amount=amount,
                )
            )
        return discounts
