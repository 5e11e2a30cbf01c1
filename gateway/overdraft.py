"""The ``allow_overdraft`` failure policy at work: usage the gateway allows while a tenant's
host does not answer, counted against the tenant's overdraft cap and recorded with the host
once it answers again.

When an authorisation, a one-step record or a session start fails with
:class:`~gateway.hosts.HostUnavailable`, :meth:`Overdrafts.degrade` applies the tenant's
policy. ``deny`` answers 503 as before. ``allow_overdraft`` answers the request as accepted,
``degraded``, with the gateway's estimate of its price (see ``gateway/policy.py``), as long as
this process's outstanding allowances for the tenant stay within its ``overdraft_cap``:

- a one-step record becomes a plain ``Record`` with the same id in the retry queue;
- an authorisation and a session are held here; their capture, release, heartbeat and stop
  are answered here (:meth:`Overdrafts.answer_locally`) and a capture or stop becomes a
  ``Record`` with the capture's or stop's id. An unreported session is recorded up to its
  ``granted_until``; an uncaptured reservation is released at its expiry, as the host would.

The queue is flushed through the coalescer once a second while it holds anything; a record
leaves it when the host has answered it, and its estimate leaves the tenant's outstanding
total then. The ids are the client's, so a record the host applied already (the original
command reached it after the deadline) is applied once: the host answers the repeat with the
original outcome, or with ``idempotency_conflict`` when the original was the one-step
record, which the queue takes as recorded.

**What can be lost.** The queue and the holds live in this process only: if it dies before
they are flushed, their usage goes unrecorded, at most ``overdraft_cap`` per tenant per
gateway process. Usage the host refuses when it arrives (its period closed past the late
window, a tenant deleted meanwhile) is lost too, and logged. Both are counted in
``meterwerk_failure_policy_total{outcome="lost"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Final

import msgspec

from engine.accounts import (
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
from engine.instants import Instant
from engine.numbers import ZERO
from gateway import errors
from gateway.coalescer import Coalescer
from gateway.hosts import HostBusy, HostTransport, HostUnavailable
from gateway.messages import Decision
from gateway.policy import Pricing, TenantPolicies, TenantPolicy
from persistence.catalogue import FailurePolicy

log = logging.getLogger(__name__)

ITEMS_MAX: Final = 10_000
"""Records queued plus reservations and sessions held, over all tenants of this process."""
TENANTS_MAX: Final = 10_000
"""Tenants with outstanding allowances at a time."""
RETRY_SECONDS: Final = 1.0
SESSION_SECONDS_MAX: Final = 600
"""The longest a session started without its host is granted; it is not extended."""
ID_LENGTH_MAX: Final = 128
ALLOWED_MESSAGE: Final = (
    "the account host did not answer; allowed on the tenant's overdraft policy, to be "
    "recorded when the host answers again"
)

Count = Callable[[str, str], None]


class _Refused(Exception):
    """Why the overdraft does not allow a request; ``outcome`` is what the metric counts."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


_UNPRICED: Final = ("unpriced", "and the gateway cannot price this usage without it")
_CAP_EXCEEDED: Final = (
    "cap_exceeded",
    "and the tenant's overdraft allowance on this gateway is used up",
)


class _Held(msgspec.Struct, kw_only=True):
    """A reservation or session this gateway answered for."""

    root: str
    usage: Authorize | StartSession
    amount: Decimal
    until: Instant
    """The reservation's expiry, or the session's ``granted_until``."""
    decision: Decision
    pricing: Pricing


class _Queued(msgspec.Struct, kw_only=True):
    root: str
    record: Record
    amount: Decimal
    decision: Decision


class Overdrafts:
    def __init__(
        self,
        policies: TenantPolicies,
        transport: HostTransport,
        coalescer: Coalescer,
        now: Callable[[], Instant],
        count: Count,
        *,
        items_max: int = ITEMS_MAX,
        tenants_max: int = TENANTS_MAX,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.policies = policies
        self.transport = transport
        self.coalescer = coalescer
        self.now = now
        self.count = count
        self.items_max = items_max
        self.tenants_max = tenants_max
        self.retry_seconds = retry_seconds
        self.outstanding: dict[str, Decimal] = {}
        """Per tenant: the estimates of what is held and queued, at most its cap."""
        self.reservations: dict[tuple[str, str], _Held] = {}
        """(tenant, reservation id) → what is held."""
        self.sessions: dict[tuple[str, str], _Held] = {}
        """(tenant, session id) → what is held."""
        self.queued: dict[tuple[str, str], _Queued] = {}
        """(root, record id) → a record waiting for its host, in the order allowed."""
        self._flusher: asyncio.Task[None] | None = None

    # Degrading ------------------------------------------------------------------------------

    async def degrade(self, root: str, command: Command) -> Decision:
        """The answer for ``command`` whose host did not answer: a degraded decision, or
        503 ``host_unavailable`` (raised) when the tenant's policy does not allow it."""
        if not isinstance(command, Authorize | AuthorizeAndRecord | StartSession):
            raise errors.host_unavailable()
        try:
            policy = await self.policies.of(command.tenant)
        except Exception:  # the catalogue is away too: the default policy applies
            log.exception("the failure policy of %s could not be read", command.tenant)
            policy = None
        if policy is None or policy.policy is FailurePolicy.deny:
            self.count(FailurePolicy.deny.value, "denied")
            raise errors.host_unavailable()
        if policy.pricing is None:  # no tariff in the catalogue prices the tenant's usage
            self.count(policy.policy.value, _UNPRICED[0])
            raise errors.host_unavailable(
                f"the account host did not answer in time, {_UNPRICED[1]}"
            )
        self.expire(self.now())
        try:
            decision = self._allow(root, command, policy, policy.pricing)
        except _Refused as refused:
            self.count(policy.policy.value, refused.outcome)
            message = f"the account host did not answer in time, {refused}"
            raise errors.host_unavailable(message) from None
        self.count(policy.policy.value, "allowed")
        self._start_flusher()
        return decision

    def _allow(
        self,
        root: str,
        command: Authorize | AuthorizeAndRecord | StartSession,
        policy: TenantPolicy,
        pricing: Pricing,
    ) -> Decision:
        repeated = self._repeated(root, command)
        if repeated is not None:
            return repeated
        if len(self.reservations) + len(self.sessions) + len(self.queued) >= self.items_max:
            raise _Refused("queue_full", "and this gateway holds all the usage it may")
        if isinstance(command, StartSession):
            return self._start_session(root, command, policy, pricing)
        amount = pricing.estimate(
            command.meter,
            command.quantity,
            dict(command.properties),
            command.duration_seconds,
            command.at,
        )
        if amount is None:
            raise _Refused(*_UNPRICED)
        self._take(policy, amount)
        if isinstance(command, Authorize):
            until = command.time + command.ttl_seconds
            decision = _degraded(command.id, amount, expires_at=until)
            self.reservations[(command.tenant, command.id)] = _Held(
                root=root, usage=command, amount=amount, until=until, decision=decision,
                pricing=pricing,
            )  # fmt: skip
            return decision
        decision = _degraded(command.id, amount)
        self._enqueue(root, _record(command, command.id, command.time), amount, decision)
        return decision

    def _repeated(self, root: str, command: Command) -> Decision | None:
        """A retry of a request allowed already gets the same answer."""
        found: _Held | _Queued | None
        if isinstance(command, StartSession):
            found = self.sessions.get((command.tenant, command.session))
        else:
            found = self.reservations.get((command.tenant, command.id))
            found = found or self.queued.get((root, command.id))
        return found.decision if found is not None else None

    def _start_session(
        self, root: str, command: StartSession, policy: TenantPolicy, pricing: Pricing
    ) -> Decision:
        """Grant the longest time the tenant's room under its cap covers, at most
        ``SESSION_SECONDS_MAX``; it is not extended until the host answers again."""
        room = policy.overdraft_cap - self.outstanding.get(command.tenant, ZERO)
        properties = dict(command.properties)

        def price(seconds: int) -> Decimal | None:
            return pricing.estimate(
                command.meter, command.quantity, properties, seconds, command.time
            )

        def cost(seconds: int) -> Decimal | None:
            found = price(seconds)
            return found if found is not None and found <= room else None

        if price(1) is None:
            raise _Refused(*_UNPRICED)
        longest = _longest(cost, min(policy.session_grant_seconds, SESSION_SECONDS_MAX))
        if longest is None:
            raise _Refused(*_CAP_EXCEEDED)
        seconds, amount = longest
        self._take(policy, amount)
        until = command.time + seconds
        decision = _degraded(command.id, amount, granted_until=until)
        self.sessions[(command.tenant, command.session)] = _Held(
            root=root, usage=command, amount=amount, until=until, decision=decision,
            pricing=pricing,
        )  # fmt: skip
        return decision

    # Answering for what is held here -------------------------------------------------------

    def answer_locally(self, root: str, command: Command) -> Decision | None:
        """The answer to a capture, release, heartbeat or stop of a reservation or session
        held here; None for anything else (the host answers it). Costs a type check when
        nothing is held."""
        if not (self.reservations or self.sessions):
            return None
        if isinstance(command, Capture | Release):
            held = self.reservations.get((command.tenant, command.reservation))
            if held is None or held.root != root:
                return None
            return self._settle_reservation(held, command)
        if isinstance(command, Heartbeat | StopSession):
            held = self.sessions.get((command.tenant, command.session))
            if held is None or held.root != root:
                return None
            return self._settle_session(held, command)
        return None

    def _settle_reservation(self, held: _Held, command: Capture | Release) -> Decision | None:
        usage = held.usage
        assert isinstance(usage, Authorize)
        if command.time >= held.until:
            self._release(self.reservations, held)
            return None  # expired: the host answers unknown_reservation, as it would
        if isinstance(command, Release):
            self._release(self.reservations, held)
            return _degraded(command.id, ZERO)
        quantity = usage.quantity if command.quantity is None else command.quantity
        estimate = held.pricing.estimate(
            usage.meter, quantity, dict(usage.properties), usage.duration_seconds, usage.at
        )
        if estimate is None or estimate > held.amount:
            return Decision(
                id=command.id,
                accepted=False,
                amount=ZERO,
                reason=Reason.insufficient_credit,
                message="more than was reserved, while the account host does not answer",
                degraded=True,
            )
        self._release(self.reservations, held)
        self._keep(usage.tenant, estimate)
        decision = _degraded(command.id, estimate)
        record = _record(usage, command.id, command.time, quantity=quantity)
        self._enqueue(held.root, record, estimate, decision)
        return decision

    def _settle_session(self, held: _Held, command: Heartbeat | StopSession) -> Decision:
        if isinstance(command, Heartbeat) and command.time < held.until:
            return _degraded(command.id, ZERO, granted_until=held.until)
        amount = self._end_session(held, min(command.time, held.until), command.id)
        decision = _degraded(command.id, amount, granted_until=held.until)
        if isinstance(command, Heartbeat):
            return msgspec.structs.replace(
                decision, message="the session was cut off: the overdraft allowance ran out"
            )
        return decision

    def _end_session(self, held: _Held, end: Instant, record_id: str) -> Decimal:
        """Queue the session's use up to ``end`` as a record; its estimate."""
        usage = held.usage
        assert isinstance(usage, StartSession)
        self._release(self.sessions, held)
        seconds = end - usage.time
        if seconds <= 0:
            return ZERO
        estimate = held.pricing.estimate(
            usage.meter, usage.quantity, dict(usage.properties), seconds, usage.time
        )
        amount = held.amount if estimate is None else min(estimate, held.amount)
        self._keep(usage.tenant, amount)
        record = _record(usage, record_id, end, duration_seconds=seconds)
        self._enqueue(held.root, record, amount, _degraded(record_id, amount))
        return amount

    def expire(self, now: Instant) -> None:
        """Release reservations past their expiry; record sessions up to ``granted_until``."""
        for held in [held for held in self.reservations.values() if held.until <= now]:
            self._release(self.reservations, held)
        for held in [held for held in self.sessions.values() if held.until <= now]:
            self._end_session(held, held.until, _derived_id(held.usage.id, ":cut-off"))

    # The ledger -----------------------------------------------------------------------------

    def _take(self, policy: TenantPolicy, amount: Decimal) -> None:
        """Count ``amount`` against the tenant's cap; refused if it does not fit."""
        before = self.outstanding.get(policy.tenant)
        if before is None and len(self.outstanding) >= self.tenants_max:
            raise _Refused(
                "queue_full", "and this gateway holds allowances for all the tenants it may"
            )
        after = (before or ZERO) + amount
        if after > policy.overdraft_cap:
            raise _Refused(*_CAP_EXCEEDED)
        self.outstanding[policy.tenant] = after

    def _keep(self, tenant: str, amount: Decimal) -> None:
        """Count ``amount`` in place of a hold just given back, which covered at least it."""
        self.outstanding[tenant] = self.outstanding.get(tenant, ZERO) + amount

    def _give_back(self, tenant: str, amount: Decimal) -> None:
        left = self.outstanding.get(tenant, ZERO) - amount
        if left > 0:
            self.outstanding[tenant] = left
        else:
            self.outstanding.pop(tenant, None)

    def _release(self, holds: dict[tuple[str, str], _Held], held: _Held) -> None:
        usage = held.usage
        key = usage.session if isinstance(usage, StartSession) else usage.id
        del holds[(usage.tenant, key)]
        self._give_back(usage.tenant, held.amount)

    def _enqueue(self, root: str, record: Record, amount: Decimal, decision: Decision) -> None:
        self.queued[(root, record.id)] = _Queued(
            root=root, record=record, amount=amount, decision=decision
        )

    # Flushing -------------------------------------------------------------------------------

    def _start_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_while_needed())

    async def _flush_while_needed(self) -> None:
        while self.queued or self.reservations or self.sessions:
            await asyncio.sleep(self.retry_seconds)
            self.expire(self.now())
            try:
                await self.flush()
            except Exception:  # a host that raised (a bug) must not stop the retries
                log.exception("recording usage allowed on overdraft failed; retrying")

    async def flush(self) -> int:
        """Send the queued records to their hosts, in order; how many the hosts answered."""
        by_host: dict[str, list[_Queued]] = {}
        for item in list(self.queued.values()):
            by_host.setdefault(self.transport.host_of(item.root), []).append(item)
        answered = 0
        chunk = self.coalescer.batch_max
        for host, items in by_host.items():
            for start in range(0, len(items), chunk):
                part = items[start : start + chunk]
                try:
                    outcomes = await self.coalescer.submit(
                        host, [(item.root, item.record) for item in part]
                    )
                except (HostUnavailable, HostBusy):
                    break  # still away: the next round tries again
                for item, outcome in zip(part, outcomes, strict=True):
                    self._recorded(item, outcome)
                answered += len(part)
        return answered

    def _recorded(self, item: _Queued, outcome: Outcome) -> None:
        del self.queued[(item.root, item.record.id)]
        self._give_back(item.record.tenant, item.amount)
        # A conflict means the original command of this id reached the host after all.
        if outcome.accepted or outcome.reason is Reason.idempotency_conflict:
            self.count(FailurePolicy.allow_overdraft.value, "recorded")
            return
        self.count(FailurePolicy.allow_overdraft.value, "lost")
        log.error(
            "usage allowed on overdraft was refused by its host (%s: %s): %s",
            outcome.reason,
            outcome.message,
            item.record,
        )

    async def aclose(self, timeout_seconds: float = 2.0) -> None:
        """Try once more to record what is queued; what remains is lost, and logged."""
        if self._flusher is not None:
            self._flusher.cancel()
        self.expire(self.now() + SESSION_SECONDS_MAX)
        if self.queued:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), timeout_seconds)
        for item in self.queued.values():
            self.count(FailurePolicy.allow_overdraft.value, "lost")
            log.error("gateway stopping: usage allowed on overdraft not recorded: %s", item.record)
        self.queued.clear()
        self.outstanding.clear()


def _degraded(
    command_id: str,
    amount: Decimal,
    *,
    expires_at: Instant | None = None,
    granted_until: Instant | None = None,
) -> Decision:
    return Decision(
        id=command_id,
        accepted=True,
        amount=amount,
        message=ALLOWED_MESSAGE,
        expires_at=expires_at,
        granted_until=granted_until,
        degraded=True,
    )


def _record(
    usage: Authorize | AuthorizeAndRecord | StartSession,
    record_id: str,
    time: Instant,
    *,
    quantity: Decimal | None = None,
    duration_seconds: int | None = None,
) -> Record:
    """Usage that happened, as a plain record (charged by the host whatever the balance),
    at the time it happened."""
    if isinstance(usage, StartSession):
        at, seconds = usage.time, 0
    else:
        at, seconds = usage.at, usage.duration_seconds
    return Record(
        id=record_id,
        tenant=usage.tenant,
        time=time,
        meter=usage.meter,
        quantity=usage.quantity if quantity is None else quantity,
        properties=dict(usage.properties),
        duration_seconds=seconds if duration_seconds is None else duration_seconds,
        usage_time=at,
    )


def _longest(cost: Callable[[int], Decimal | None], high: int) -> tuple[int, Decimal] | None:
    """The longest duration in ``[1, high]`` whose cost is known and affordable (``cost``
    gives None otherwise), with its cost; costs grow with the duration, so halving finds it."""
    found = cost(high)
    if found is not None:
        return high, found
    low_cost = cost(1)
    if low_cost is None:
        return None
    low, best = 1, low_cost
    while high - low > 1:
        middle = (low + high) // 2
        middle_cost = cost(middle)
        if middle_cost is None:
            high = middle
        else:
            low, best = middle, middle_cost
    return low, best


def _derived_id(base: str, suffix: str) -> str:
    """An id made from another, within the length the hosts accept."""
    if len(base) + len(suffix) <= ID_LENGTH_MAX:
        return base + suffix
    return hashlib.sha256(base.encode()).hexdigest()[:64] + suffix
