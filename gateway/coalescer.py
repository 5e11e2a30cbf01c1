"""Concurrent requests for the same host travel in one call.

One Ray call costs about a millisecond whatever it carries, and a host applies a batch of a
thousand commands in about as long as a few single ones (one journal flush for the batch), so
the gateway gathers what arrives for a host into one call. Each request is a *unit* (one
command, or an ingestion request's events for that host) that is never split across calls.

The bounds: at most ``batch_max`` commands per call, ``calls_in_flight_max`` calls per host
at a time (Ray applies one host's calls in the order they were sent), and ``queued_max``
commands waiting per host; past that a request is refused at once with :class:`HostBusy`
(429 with Retry-After) instead of queueing without limit.

When the host is idle a unit leaves on the next turn of the event loop, with whatever arrived
in the same turn; while calls are in flight, a lane lingers up to ``linger_seconds`` to fill
the next call.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final, Protocol

from engine.accounts import Command, Outcome
from gateway.hosts import HostBusy, HostUnavailable

BATCH_MAX: Final = 1_000
CALLS_IN_FLIGHT_MAX: Final = 4
QUEUED_MAX: Final = 10_000
LINGER_SECONDS: Final = 0.001

Item = tuple[str, Command]
CallObserver = Callable[[str, int, float, bool], None]
"""Told of every call when it ends: host, commands, seconds, whether it failed."""


class Sender(Protocol):
    """What the coalescer needs of :class:`gateway.hosts.HostTransport`."""

    async def apply(self, host: str, items: Sequence[Item]) -> list[Outcome]: ...


class _Unit:
    __slots__ = ("future", "items")

    def __init__(self, items: Sequence[Item], future: asyncio.Future[list[Outcome]]) -> None:
        self.items = items
        self.future = future


class _Lane:
    """The queue of one host."""

    def __init__(self, host: str, calls_in_flight_max: int) -> None:
        self.host = host
        self.units: deque[_Unit] = deque()
        self.queued = 0
        self.in_flight = 0
        self.slots = asyncio.Semaphore(calls_in_flight_max)
        self.flusher: asyncio.Task[None] | None = None

    def take(self, batch_max: int) -> list[_Unit]:
        """Units for one call, oldest first; units whose caller has gone are dropped."""
        taken: list[_Unit] = []
        size = 0
        while self.units and size + len(self.units[0].items) <= batch_max:
            unit = self.units.popleft()
            self.queued -= len(unit.items)
            if not unit.future.done():
                taken.append(unit)
                size += len(unit.items)
        return taken


class Coalescer:
    def __init__(
        self,
        transport: Sender,
        *,
        batch_max: int = BATCH_MAX,
        calls_in_flight_max: int = CALLS_IN_FLIGHT_MAX,
        queued_max: int = QUEUED_MAX,
        linger_seconds: float = LINGER_SECONDS,
    ) -> None:
        assert 1 <= batch_max <= queued_max and calls_in_flight_max >= 1
        self.transport = transport
        self.batch_max = batch_max
        self.calls_in_flight_max = calls_in_flight_max
        self.queued_max = queued_max
        self.linger_seconds = linger_seconds
        self._lanes: dict[str, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls_total = 0
        self.commands_total = 0
        self.on_call: CallObserver | None = None

    async def submit(self, host: str, items: Sequence[Item]) -> list[Outcome]:
        """The outcomes of ``items`` (at most ``batch_max``), applied in order in one call."""
        if not 1 <= len(items) <= self.batch_max:
            raise ValueError(f"a unit holds 1 to {self.batch_max} commands")
        lane = self._lanes.get(host)
        if lane is None:
            lane = self._lanes[host] = _Lane(host, self.calls_in_flight_max)
        if lane.queued + len(items) > self.queued_max:
            raise HostBusy(f"{lane.queued} commands are waiting for host {host}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Outcome]] = loop.create_future()
        lane.units.append(_Unit(items, future))
        lane.queued += len(items)
        if lane.flusher is None:
            lane.flusher = self._spawn(self._flush(lane))
        return await future

    def queued(self, host: str) -> int:
        lane = self._lanes.get(host)
        return 0 if lane is None else lane.queued

    def lanes(self) -> list[tuple[str, int, int]]:
        """``(host, commands waiting, calls in flight)`` of every host called so far."""
        return [(lane.host, lane.queued, lane.in_flight) for lane in self._lanes.values()]

    async def aclose(self, timeout_seconds: float = 10.0) -> None:
        """Wait for the calls in flight to be answered."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_seconds)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _flush(self, lane: _Lane) -> None:
        try:
            while lane.units:
                if lane.in_flight and lane.queued < self.batch_max:
                    await asyncio.sleep(self.linger_seconds)
                else:
                    await asyncio.sleep(0)
                await lane.slots.acquire()
                units = lane.take(self.batch_max)
                if not units:
                    lane.slots.release()
                    continue
                lane.in_flight += 1
                self._spawn(self._call(lane, units))
        finally:
            lane.flusher = None

    async def _call(self, lane: _Lane, units: list[_Unit]) -> None:
        items = [item for unit in units for item in unit.items]
        self.calls_total += 1
        self.commands_total += len(items)
        began = time.perf_counter()
        failed = True
        try:
            outcomes = await self.transport.apply(lane.host, items)
            failed = False
        except BaseException as error:
            # A cancelled call (the gateway shutting down) leaves its requests unanswered.
            failure = error if isinstance(error, Exception) else HostUnavailable("cancelled")
            for unit in units:
                if not unit.future.done():
                    unit.future.set_exception(failure)
            if failure is not error:
                raise
        else:
            start = 0
            for unit in units:
                end = start + len(unit.items)
                if not unit.future.done():
                    unit.future.set_result(outcomes[start:end])
                start = end
        finally:
            lane.in_flight -= 1
            lane.slots.release()
            if self.on_call is not None:
                self.on_call(lane.host, len(items), time.perf_counter() - began, failed)
