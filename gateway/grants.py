"""Grants held by this gateway process: one-step records answered without a Ray hop.

When a (tenant, meter) is busy, the gateway asks the tenant's account for a **slice**
(``OpenGrant(linear=True)``): money the account holds for some units, at a flat unit price
that the account names. Until the slice is nearly spent or near its expiry, a one-step
record for that tenant and meter (no properties, no duration, no usage time, whole units)
is answered here: accepted, ``amount`` = quantity x unit price, ``grant`` = the slice. Every
``grants_report_seconds`` the answered uses go to the account in one ``ReportGrant`` each
(through the coalescer, so journaled before they count), naming every use by its id, so that
the account remembers it as an answered record: a retry that reaches the account later gets
the same answer and is never charged twice. A slice that is nearly spent, near its expiry,
or left at shutdown is reported ``final``, which gives its unused rest back.

Nothing here blocks a request: slices open and are reported in the background, and a request
that cannot be answered from a slice takes the host path as before. Every structure is
bounded (slices, uses waiting per slice, ids remembered, keys counted, keys backing off).

The guarantees, and what a crash of this process can cost, are in the README ("Grants").
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import logging
import math
import uuid
from collections.abc import Callable, Coroutine, Sequence
from decimal import Decimal
from typing import Any, Final

import msgspec

from engine.accounts import Command, GrantedUse, OpenGrant, Outcome, Reason, ReportGrant
from engine.accounts.commands import GRANTED_USES_MAX, ONE_UNIT
from engine.numbers import PRECISION_DIGITS
from gateway import errors
from gateway.coalescer import Coalescer
from gateway.config import GatewayConfig
from gateway.hosts import HostBusy, HostUnavailable
from gateway.messages import CommandRequest, Decision, RecordRequest

log = logging.getLogger("meterwerk.gateway.grants")

Key = tuple[str, str, str]
"""(root, tenant, meter)."""

_EXACT: Final = decimal.Context(
    prec=PRECISION_DIGITS,
    traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
"""Prices times quantities are exact here as in the engine, whatever context the thread has;
an inexact result would be a bug, and raises."""
SPENT_FRACTION: Final = Decimal("0.1")
"""A slice with less than this share of its units left is reported final, and a new one may
open, so that the last units do not leave requests on the host path one by one."""
KEYS_COUNTED_MAX: Final = 10_000
"""Distinct (tenant, meter) keys whose request rate is counted per second."""
BACKOFF_MAX: Final = 10_000
"""Keys remembered as not worth a slice for a while."""
FORGET_PER_ADD: Final = 2
"""Forgotten answers released per answer remembered, twice as fast as they come: a full
generation is released before the next one fills."""


class _Slot:
    """One slice this process holds, and the uses it answered from it."""

    __slots__ = (
        "answered",
        "answers_until",
        "expires_at",
        "grant",
        "host",
        "key",
        "left",
        "low",
        "one",
        "opened_at",
        "pending",
        "quantity",
        "reports",
        "retired",
        "sending",
        "tail",
        "unit_price",
        "units",
    )

    def __init__(
        self,
        key: Key,
        host: str,
        grant: str,
        quantity: Decimal,
        price: Decimal,
        expires: int,
        margin_seconds: float,
        now: float,
    ) -> None:
        self.key = key
        self.host = host
        self.grant = grant
        self.quantity = quantity
        self.unit_price = price
        self.expires_at = expires
        self.answers_until = expires - margin_seconds
        """No answers from it from then on, so that its final report reaches the account
        before it expires."""
        self.left = int(quantity)
        """Units not answered yet (whole units: see _local), as an int: compared and
        counted down once per answer."""
        self.low = math.ceil(quantity * SPENT_FRACTION)
        """Fewer units left than this, and the slice is retired."""
        self.pending: list[GrantedUse] = []
        """Uses answered and not yet sent in a report, but those of one unit."""
        self.units: list[str] = []
        """The ids of the one-unit uses answered and not yet sent in a report."""
        self.opened_at = now
        self.answered = 0
        """Requests answered from it: its rate decides whether the next slice opens at once
        when it retires."""
        self.tail = _tail(grant, price)
        """The JSON answer to a one-unit record from it, after its id."""
        self.one = Answered(
            tenant=key[1], meter=key[2], quantity=ONE_UNIT, amount=price, grant=grant
        )
        """What each one-unit record it answers is remembered as."""
        self.sending: ReportGrant | None = None
        """The report sent and not yet answered; sent again as it is until it is."""
        self.reports = 0
        self.retired = False
        """No more answers from it: its final report is due."""


class Answered(msgspec.Struct, frozen=True, gc=False):
    """A record answered here, for a retry: what it must repeat (its tenant, meter and
    quantity), and what the answer said (the amount, the slice). Every one-unit record a
    slice answers shares the slice's one instance (:attr:`_Slot.one`), so that remembering
    an id costs its key alone: while each had objects of its own, leaving remembered
    answers out saved about 8 % of the gateway's CPU per request (measured side by side
    under wrk). Like the answer, it holds nothing that can form a cycle, so the garbage
    collector never tracks it (nor the dicts that hold it)."""

    tenant: str
    meter: str
    quantity: Decimal
    amount: Decimal
    grant: str

    def decision(self, command_id: str) -> Decision:
        return Decision(id=command_id, accepted=True, amount=self.amount, grant=self.grant)


_encode = msgspec.json.Encoder().encode
_HEAD: Final = b'{"id":'
_NO_ID: Final = _HEAD + b'""'


def _tail(grant: str, unit_price: Decimal) -> bytes:
    """What follows the id in the JSON answer to a one-unit record from slice ``grant``:
    the answer is then ``{"id":`` + the id in JSON + this, exactly what encoding its
    :class:`Decision` gives, for a concatenation instead of a Struct and its encoding."""
    encoded = _encode(Decision(id="", accepted=True, amount=unit_price, grant=grant))
    assert encoded.startswith(_NO_ID), encoded
    return encoded[len(_NO_ID) :]


def answered_key(root: str, command_id: str) -> str:
    """The key of a command id within its tree: a tree's root never holds a ``/`` (see
    ``TENANT_ID_REGEX``), and a string, unlike a tuple, is never tracked by the collector."""
    return root + "/" + command_id


def _same(answered: Answered, message: CommandRequest) -> bool:
    """Whether ``message`` repeats the record ``answered`` (a retry), not only its id."""
    return (
        isinstance(message, RecordRequest)
        and _local(message)
        and message.quantity == answered.quantity
        and (message.tenant, message.meter) == (answered.tenant, answered.meter)
    )


class AnsweredIds:
    """The ids answered here, for retries: at most ``maximum`` in two generations of half as
    many; a generation is forgotten as a whole once the newer one is full or ``seconds``
    old, so each id is remembered at least that long unless ``maximum // 2`` newer ones come.

    A forgotten generation is released a few entries with each id added, not at once:
    freeing 50,000 answers at once took about 9 ms (measured in isolation), a pause for
    every request in flight once every 50,000 records."""

    def __init__(self, maximum: int, seconds: float) -> None:
        self.half = max(1, maximum // 2)
        self.seconds = seconds
        self.current: dict[str, Answered] = {}
        self.previous: dict[str, Answered] = {}
        self.since = 0.0
        self.forgetting: list[dict[str, Answered]] = []
        """Forgotten generations, oldest first, being released: never looked into."""

    def get(self, key: str) -> Answered | None:
        found = self.current.get(key)
        return found if found is not None else self.previous.get(key)

    def add(self, key: str, answered: Answered, now: float) -> None:
        if len(self.current) >= self.half or now - self.since >= self.seconds:
            if self.previous:
                self.forgetting.append(self.previous)
            self.previous, self.current, self.since = self.current, {}, now
        self.current[key] = answered
        if self.forgetting:
            self._release(FORGET_PER_ADD)

    def _release(self, count: int) -> None:
        oldest = self.forgetting[0]
        for _ in range(min(count, len(oldest))):
            oldest.popitem()
        if not oldest:
            del self.forgetting[0]

    def held(self) -> int:
        """Entries held, those being released included."""
        return len(self.current) + len(self.previous) + sum(map(len, self.forgetting))


class _Counted:
    """A key's requests and units in one second, counted in place."""

    __slots__ = ("requests", "units")

    def __init__(self, quantity: Decimal) -> None:
        self.requests = 1
        self.units = quantity


class _Rates:
    """Requests and units per (root, tenant, meter) in the current and the last second."""

    def __init__(self) -> None:
        self.second = 0
        self.current: dict[Key, _Counted] = {}
        self.last: dict[Key, _Counted] = {}

    def count(self, key: Key, quantity: Decimal, now: float) -> int:
        """Count one request; the requests of the busier of this second so far and the
        last one (:meth:`units` gives that second's units)."""
        second = int(now)
        if second != self.second:
            self.last = self.current if second == self.second + 1 else {}
            self.current, self.second = {}, second
        counted = self.current.get(key)
        if counted is not None:
            counted.requests += 1
            counted.units += quantity
        elif len(self.current) < KEYS_COUNTED_MAX:
            counted = self.current[key] = _Counted(quantity)
        busier = self._busier(key, counted)
        return 0 if busier is None else busier.requests

    def units(self, key: Key) -> Decimal:
        """The units of the busier of this second so far and the last one."""
        busier = self._busier(key, self.current.get(key))
        return Decimal(0) if busier is None else busier.units

    def _busier(self, key: Key, counted: _Counted | None) -> _Counted | None:
        last = self.last.get(key)
        if last is not None and (counted is None or last.requests > counted.requests):
            return last
        return counted


def _local(message: RecordRequest) -> bool:
    """Whether a one-step record may be answered from a slice: priced by its quantity alone
    (no properties, no duration, no backfill), in whole units (what every meter accepts)."""
    return (
        not message.properties
        and message.duration_seconds == 0
        and message.usage_time is None
        and (message.quantity is ONE_UNIT or message.quantity % 1 == 0)
    )


class GrantBook:
    """The slices of one gateway process, and its answers from them."""

    def __init__(
        self,
        coalescer: Coalescer,
        host_of: Callable[[str], str],
        config: GatewayConfig,
        clock: Callable[[], float],
        on_count: Callable[[int], None] | None = None,
    ) -> None:
        assert config.grants_pending_max <= GRANTED_USES_MAX
        self.coalescer = coalescer
        self.host_of = host_of
        self.config = config
        self.clock = clock
        self.on_count = on_count
        self.margin_seconds = 2 * config.grants_report_seconds + config.call_timeout_seconds
        """Local answers stop this long before a slice expires, so that its final report
        reaches the account in time."""
        self.pending_max = config.grants_pending_max
        self.slots: dict[Key, _Slot] = {}
        self.retiring: list[_Slot] = []
        """Slices that answer no more and wait for their final report to be answered."""
        self.opening: set[Key] = set()
        self.backoff: dict[Key, float] = {}
        self.known: dict[Key, tuple[Decimal, Decimal, Decimal]] = {}
        """What the account last said of a key: (available, amount, quantity) of a use."""
        self.answered = AnsweredIds(config.grants_remembered_max, config.grants_remembered_seconds)
        self.rates = _Rates()
        self.prefix = f"grant:{uuid.uuid4().hex[:12]}"
        self.opened = 0
        self.closed = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.reporter: asyncio.Task[None] | None = None

    # The hot path ---------------------------------------------------------------------------

    def answer(self, root: str, message: CommandRequest) -> bytes | None:
        """The JSON answer to ``message`` from this process, or None for the host path. A
        retry of an id answered here gets the same answer; the id with other content is
        409."""
        ident = answered_key(root, message.id)
        seen = self.answered.get(ident)
        if seen is not None:
            if not _same(seen, message):
                raise errors.refused(
                    Reason.idempotency_conflict,
                    "this id was used before for a different command",
                    "id",
                )
            return _encode(seen.decision(message.id))
        if self.closed or not isinstance(message, RecordRequest) or not _local(message):
            return None
        quantity = message.quantity
        units = 1 if quantity is ONE_UNIT else int(quantity)
        now = self.clock()
        key = (root, message.tenant, message.meter)
        slot = self.slots.get(key)
        if slot is not None:
            if (
                now < slot.answers_until
                and units <= slot.left
                and len(slot.units if quantity is ONE_UNIT else slot.pending) < self.pending_max
            ):
                return self._spend(slot, ident, message, units, now)
            if now >= slot.answers_until or units > slot.left:
                self._retire(slot, now)
                if key in self.opening:
                    return None  # the next slice is on its way
            else:
                return None  # its uses wait for a report: the host path meanwhile
        # Only what a slice does not answer is counted: a slice counts its own answers.
        requests = self.rates.count(key, quantity, now)
        if requests >= self.config.grants_min_rate:
            self._open_soon(key, self.rates.units(key), now)
        return None

    def observe(self, root: str, message: CommandRequest, outcome: Outcome) -> None:
        """Learn from the host's answer to a record that could have been local what the
        tenant can afford, to size its next slice."""
        if (
            isinstance(message, RecordRequest)
            and outcome.accepted
            and outcome.available is not None
            and outcome.amount > 0
            and _local(message)
        ):
            key = (root, message.tenant, message.meter)
            if key in self.known or len(self.known) < KEYS_COUNTED_MAX:
                self.known[key] = (outcome.available, outcome.amount, message.quantity)

    def _spend(
        self, slot: _Slot, ident: str, message: RecordRequest, units: int, now: float
    ) -> bytes:
        quantity = message.quantity
        if quantity is ONE_UNIT:  # one unit costs the unit price itself, and has its answer
            slot.units.append(message.id)
            self.answered.add(ident, slot.one, now)
            answer = _HEAD + _encode(message.id) + slot.tail
        else:
            amount = _EXACT.multiply(slot.unit_price, quantity)
            slot.pending.append(GrantedUse(id=message.id, quantity=quantity, amount=amount))
            answered = Answered(
                tenant=message.tenant,
                meter=message.meter,
                quantity=quantity,
                amount=amount,
                grant=slot.grant,
            )
            self.answered.add(ident, answered, now)
            answer = _encode(answered.decision(message.id))
        slot.left -= units
        slot.answered += 1
        if slot.left < slot.low:
            self._retire(slot, now)
        return answer

    # Opening slices -------------------------------------------------------------------------

    def _open_soon(self, key: Key, units_per_second: Decimal, now: float) -> None:
        if (
            key in self.opening
            or key in self.slots
            or self.backoff.get(key, 0.0) > now
            or len(self.slots) + len(self.retiring) + len(self.opening) >= self.config.grants_max
        ):
            return
        quantity = self._size(key, units_per_second)
        if quantity < 1:
            self._back_off(key, now)
            return
        self.opening.add(key)
        self._spawn(self._open(key, quantity))

    def _size(self, key: Key, units_per_second: Decimal) -> Decimal:
        """About half a validity's worth of the key's rate, at most ``grants_units_max``, and
        at most half of what the tenant could afford when last seen."""
        config = self.config
        wanted = _EXACT.multiply(units_per_second, Decimal(config.grants_validity_seconds))
        quantity = min(_EXACT.divide_int(wanted, Decimal(2)) + 1, Decimal(config.grants_units_max))
        known = self.known.get(key)
        if known is not None:
            available, amount, per = known
            affordable = _EXACT.divide_int(_EXACT.multiply(max(available, Decimal(0)), per), amount)
            quantity = min(quantity, _EXACT.divide_int(affordable, Decimal(2)))
        return quantity

    async def _open(self, key: Key, quantity: Decimal) -> None:
        root, tenant, meter = key
        self.opened += 1
        command = OpenGrant(
            id=f"{self.prefix}:{self.opened}",
            tenant=tenant,
            time=int(self.clock()),
            meter=meter,
            quantity=quantity,
            validity_seconds=self.config.grants_validity_seconds,
            linear=True,
        )
        try:
            outcome = await self._until_answered(self.host_of(root), root, command)
        finally:
            self.opening.discard(key)
        if outcome is None or not outcome.accepted:
            if outcome is not None and outcome.reason is not Reason.insufficient_credit:
                log.info("no grant for %s: %s %s", key, outcome.reason, outcome.message)
            self._back_off(key, self.clock())
            return
        self._hold(key, command, outcome)

    async def _until_answered(self, host: str, root: str, command: OpenGrant) -> Outcome | None:
        """The answer to ``command``, sent again with its id while the host is busy or away
        (it may have been applied: a slice held and never used would be charged at its
        expiry); None once the slice would have expired anyway, or on a host's fault."""
        deadline = command.time + command.validity_seconds
        while True:
            try:
                [outcome] = await self.coalescer.submit(host, [(root, command)])
                return outcome
            except (HostBusy, HostUnavailable):
                if self.clock() >= deadline:
                    return None
                await asyncio.sleep(min(1.0, 10 * self.config.grants_report_seconds))
            except Exception:
                log.exception("opening grant %s failed", command.id)
                return None

    def _hold(self, key: Key, command: OpenGrant, outcome: Outcome) -> None:
        assert outcome.unit_price is not None and outcome.expires_at is not None, outcome
        slot = _Slot(
            key,
            self.host_of(key[0]),
            command.id,
            command.quantity,
            outcome.unit_price,
            outcome.expires_at,
            self.margin_seconds,
            self.clock(),
        )
        if self.closed or slot.opened_at >= slot.expires_at - 2 * self.margin_seconds:
            self._retire(slot)  # too late to be worth it: give it back at once
        else:
            self.slots[key] = slot
        self._count()
        self._ensure_reporter()

    def _back_off(self, key: Key, now: float) -> None:
        if len(self.backoff) >= BACKOFF_MAX:
            self.backoff = {k: until for k, until in self.backoff.items() if until > now}
            if len(self.backoff) >= BACKOFF_MAX:
                del self.backoff[next(iter(self.backoff))]
        self.backoff[key] = now + self.config.grants_backoff_seconds

    # Reporting ------------------------------------------------------------------------------

    def _retire(self, slot: _Slot, now: float | None = None) -> None:
        """No more answers from ``slot``; given ``now``, and while it was busy, the next
        slice for its key opens at once, sized by its rate."""
        if slot.retired:
            return
        slot.retired = True
        if self.slots.get(slot.key) is slot:
            del self.slots[slot.key]
        self.retiring.append(slot)
        self._count()
        if now is not None and not self.closed:
            seconds = max(int(now - slot.opened_at), 1)
            if slot.answered >= self.config.grants_min_rate * seconds:
                used = slot.quantity - slot.left  # whole units: see _local
                self._open_soon(slot.key, _EXACT.divide_int(used, Decimal(seconds)), now)

    def _ensure_reporter(self) -> None:
        if self.reporter is None or self.reporter.done():
            self.reporter = asyncio.get_running_loop().create_task(self._report_loop())

    async def _report_loop(self) -> None:
        while self.slots or self.retiring:
            await asyncio.sleep(self.config.grants_report_seconds)
            try:
                await self.report_once()
            except Exception:
                log.exception("reporting grants failed")

    async def report_once(self) -> None:
        """Send every slice's uses answered since its last report (final where due), and
        take the answers."""
        now = self.clock()
        for slot in list(self.slots.values()):
            if now >= slot.answers_until:
                self._retire(slot, now)
        by_host: dict[str, list[_Slot]] = {}
        for slot in [*self.slots.values(), *self.retiring]:
            if self._next_report(slot, now) is not None:
                by_host.setdefault(slot.host, []).append(slot)
        chunk = self.config.batch_max
        await asyncio.gather(
            *(
                self._send(host, slots[start : start + chunk])
                for host, slots in by_host.items()
                for start in range(0, len(slots), chunk)
            )
        )
        self._count()

    def _next_report(self, slot: _Slot, now: float) -> ReportGrant | None:
        """The report a slice sends now: the unanswered one again, or a new one for its
        waiting uses (final when retiring and none are left over); None if nothing is due."""
        if slot.sending is not None:
            return slot.sending
        if not slot.pending and not slot.units and not slot.retired:
            return None
        records = tuple(slot.pending[:GRANTED_USES_MAX])
        del slot.pending[: len(records)]
        units = tuple(slot.units[:GRANTED_USES_MAX])
        del slot.units[: len(units)]
        slot.reports += 1
        slot.sending = ReportGrant(
            id=f"{slot.grant}:{slot.reports}",
            tenant=slot.key[1],
            time=int(now),
            grant=slot.grant,
            used=sum((record.quantity for record in records), Decimal(len(units))),
            final=slot.retired and not slot.pending and not slot.units,
            records=records,
            units=units,
        )
        return slot.sending

    async def _send(self, host: str, slots: Sequence[_Slot]) -> None:
        items: list[tuple[str, Command]] = []
        for slot in slots:
            assert slot.sending is not None
            items.append((slot.key[0], slot.sending))
        try:
            outcomes = await self.coalescer.submit(host, items)
        except (HostBusy, HostUnavailable):
            self._unanswered(slots)
            return
        except Exception:
            log.exception("reporting grants to %s failed", host)
            self._unanswered(slots)
            return
        for slot, outcome in zip(slots, outcomes, strict=True):
            self._answered(slot, outcome)

    def _unanswered(self, slots: Sequence[_Slot]) -> None:
        """The reports are sent again; a slice past its expiry is gone at the account, and
        its uses with it (charged in full under the default expiry policy)."""
        now = self.clock()
        for slot in slots:
            if now >= slot.expires_at:
                self._drop(slot, "its host did not answer before the slice expired")

    def _answered(self, slot: _Slot, outcome: Outcome) -> None:
        report = slot.sending
        assert report is not None
        slot.sending = None
        if not outcome.accepted:
            self._drop(slot, f"its report was refused: {outcome.reason} {outcome.message}")
            return
        if outcome.available is not None:
            self.known[slot.key] = (outcome.available, slot.unit_price, Decimal(1))
        if report.final:
            self.retiring.remove(slot)

    def _drop(self, slot: _Slot, why: str) -> None:
        sending = slot.sending
        lost = len(slot.pending) + len(slot.units)
        lost += len(sending.records) + len(sending.units) if sending else 0
        log.warning("grant %s ends unreported (%d uses), as %s", slot.grant, lost, why)
        if self.slots.get(slot.key) is slot:
            del self.slots[slot.key]
        if slot in self.retiring:
            self.retiring.remove(slot)

    # Lifecycle ------------------------------------------------------------------------------

    def outstanding(self) -> int:
        return len(self.slots) + len(self.retiring)

    def _count(self) -> None:
        if self.on_count is not None:
            self.on_count(self.outstanding())

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def aclose(self, timeout_seconds: float | None = None) -> None:
        """Answer nothing more here; report every slice final (the unused rest goes back),
        within ``timeout_seconds`` (two call deadlines by default)."""
        self.closed = True
        deadline = timeout_seconds or 2 * self.config.call_timeout_seconds
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=deadline)
        for slot in list(self.slots.values()):
            self._retire(slot)
        if self.reporter is not None:
            self.reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reporter
        while self.retiring and loop.time() < until:
            await self.report_once()
            if self.retiring:
                await asyncio.sleep(self.config.grants_report_seconds)
        for slot in list(self.retiring):
            self._drop(slot, "the gateway stopped before its final report was answered")
        self._count()
