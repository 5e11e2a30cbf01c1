"""Concurrent requests for the same host travel in one call.

One Ray call costs about a millisecond whatever it carries, and a host applies a batch of a
thousand commands in about as long as a few single ones (one journal flush for the batch), so
the gateway gathers what arrives for a host into one call. Each request is a *unit* (one
command, or an ingestion request's events for that host) that is never split across calls.

The bounds: at most ``batch_max`` commands per call, ``calls_in_flight_max`` calls per host
at a time (Ray applies one host's calls in the order they were sent), and ``queued_max``
commands waiting per host; past that a request is refused at once with :class:`HostBusy`
(429 with Retry-After) instead of queueing without limit.

A call leaves as soon as ``send_at`` commands wait and a call slot is free, in the middle of
the event loop's turn: the host starts on them while the gateway handles the rest of the turn's
requests (with one call per turn, the gateway and the host took turns being idle under load).
What is left leaves on the next turn, with whatever arrived in the same turn; while calls are
in flight, a lane lingers up to ``linger_seconds`` to fill the next call.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Final, Protocol

from engine.accounts import Command, Outcome
from gateway.hosts import HostBusy, HostUnavailable

BATCH_MAX: Final = 1_000
CALLS_IN_FLIGHT_MAX: Final = 4
QUEUED_MAX: Final = 10_000
LINGER_SECONDS: Final = 0.0
SEND_AT: Final = 16

Item = tuple[str, Command]
CallObserver = Callable[[str, int, float, bool], None]
"""Told of every call when it ends: host, commands, seconds, whether it failed."""


class Sender(Protocol):
    """What the coalescer needs of :class:`gateway.hosts.HostTransport`."""

    def send(self, host: str, items: Sequence[Item]) -> Awaitable[list[Outcome]]:
        """Start the call (at once where the transport can) and return what to await for
        its outcomes."""
        ...


class _Unit:
    __slots__ = ("future", "items")

    def __init__(self, items: Sequence[Item], future: asyncio.Future[list[Outcome]]) -> None:
        self.items = items
        self.future = future


class _Lane:
    """The queue of one host."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.units: deque[_Unit] = deque()
        self.queued = 0
        self.in_flight = 0
        self.slot_freed: asyncio.Future[None] | None = None
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
        send_at: int = SEND_AT,
    ) -> None:
        assert 1 <= batch_max <= queued_max and calls_in_flight_max >= 1 and send_at >= 1
        self.transport = transport
        self.batch_max = batch_max
        self.calls_in_flight_max = calls_in_flight_max
        self.queued_max = queued_max
        self.linger_seconds = linger_seconds
        self.send_at = send_at
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
            lane = self._lanes[host] = _Lane(host)
        if lane.queued + len(items) > self.queued_max:
            raise HostBusy(f"{lane.queued} commands are waiting for host {host}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Outcome]] = loop.create_future()
        lane.units.append(_Unit(items, future))
        lane.queued += len(items)
        if lane.queued >= self.send_at and lane.in_flight < self.calls_in_flight_max:
            self._dispatch(lane)
        if lane.units and lane.flusher is None:
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
                while lane.in_flight >= self.calls_in_flight_max:
                    lane.slot_freed = asyncio.get_running_loop().create_future()
                    await lane.slot_freed
                self._dispatch(lane)
        finally:
            lane.flusher = None

    def _dispatch(self, lane: _Lane) -> None:
        """Send the oldest units (up to ``batch_max`` commands) in one call, now."""
        units = lane.take(self.batch_max)
        if not units:
            return
        items = [item for unit in units for item in unit.items]
        lane.in_flight += 1
        self.calls_total += 1
        self.commands_total += len(items)
        began = time.perf_counter()
        try:
            answer = self.transport.send(lane.host, items)
        except Exception as error:
            self._answer(lane, units, len(items), began, error)
            return
        self._spawn(self._await(lane, units, len(items), began, answer))

    async def _await(
        self,
        lane: _Lane,
        units: list[_Unit],
        commands: int,
        began: float,
        answer: Awaitable[list[Outcome]],
    ) -> None:
        try:
            outcomes = await answer
        except BaseException as error:
            # A cancelled call (the gateway shutting down) leaves its requests unanswered.
            failure = error if isinstance(error, Exception) else HostUnavailable("cancelled")
            self._answer(lane, units, commands, began, failure)
            if failure is not error:
                raise
        else:
            self._answer(lane, units, commands, began, outcomes)

    def _answer(
        self,
        lane: _Lane,
        units: list[_Unit],
        commands: int,
        began: float,
        result: list[Outcome] | Exception,
    ) -> None:
        """Settle each unit of a call with its outcomes (or the call's failure), and free the
        call's slot."""
        failed = isinstance(result, Exception)
        start = 0
        for unit in units:
            end = start + len(unit.items)
            if not unit.future.done():
                if isinstance(result, Exception):
                    unit.future.set_exception(result)
                else:
                    unit.future.set_result(result[start:end])
            start = end
        lane.in_flight -= 1
        if lane.slot_freed is not None and not lane.slot_freed.done():
            lane.slot_freed.set_result(None)
        if self.on_call is not None:
            self.on_call(lane.host, commands, time.perf_counter() - began, failed)
