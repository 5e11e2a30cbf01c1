"""The coalescer against an in-memory transport: calls are gathered, bounded, and answered in
order; a full queue refuses at once; a failed call fails every request in it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from decimal import Decimal
from typing import Any

import pytest

from engine.accounts import AuthorizeAndRecord, Command, Outcome
from gateway.coalescer import Coalescer
from gateway.hosts import HostBusy, HostUnavailable

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeHosts:
    """Answers each command with its position in the host's history, after ``delay``."""

    names = ("h0", "h1")

    def __init__(self, delay_seconds: float = 0.005, fail: Exception | None = None) -> None:
        self.delay_seconds = delay_seconds
        self.fail = fail
        self.calls: list[tuple[str, list[str]]] = []
        self.sent: list[int] = []
        """The size of each call, as it was sent."""
        self.in_flight = self.in_flight_max = 0

    def host_of(self, root: str) -> str:
        return "h0"

    def send(self, host: str, items: Sequence[tuple[str, Command]]) -> Awaitable[list[Outcome]]:
        self.sent.append(len(items))
        return self.apply(host, items)

    async def apply(self, host: str, items: Sequence[tuple[str, Command]]) -> list[Outcome]:
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        self.calls.append((host, [command.id for _, command in items]))
        try:
            await asyncio.sleep(self.delay_seconds)
            if self.fail is not None:
                raise self.fail
            done = sum(len(ids) for _, ids in self.calls[:-1])
            return [
                Outcome(accepted=True, amount=Decimal(done + n), message=command.id)
                for n, (_, command) in enumerate(items)
            ]
        finally:
            self.in_flight -= 1


def call(n: int) -> tuple[str, Command]:
    return "acme", AuthorizeAndRecord(id=f"c{n}", tenant="acme", time=0, meter="calls")


async def test_concurrent_units_share_calls_within_the_bounds() -> None:
    hosts = FakeHosts()
    coalescer = Coalescer(hosts, batch_max=10, calls_in_flight_max=2, queued_max=1_000)
    answers = await asyncio.gather(*(coalescer.submit("h0", [call(n)]) for n in range(95)))
    assert [answer[0].message for answer in answers] == [f"c{n}" for n in range(95)]
    assert all(len(ids) <= 10 for _, ids in hosts.calls)
    assert len(hosts.calls) < 20 and hosts.in_flight_max <= 2
    sent = [command_id for _, ids in hosts.calls for command_id in ids]
    assert sent == [f"c{n}" for n in range(95)], "sent in the order submitted"


async def test_a_call_leaves_mid_turn_once_send_at_commands_wait() -> None:
    hosts = FakeHosts()
    coalescer = Coalescer(hosts, batch_max=100, calls_in_flight_max=4, send_at=16)
    submitted: list[int] = []
    submitted_when_sent: list[int] = []
    send = hosts.send

    def watched_send(host: str, items: Sequence[tuple[str, Command]]) -> Any:
        submitted_when_sent.append(len(submitted))
        return send(host, items)

    hosts.send = watched_send  # type: ignore[method-assign]

    async def submit(n: int) -> list[Outcome]:
        submitted.append(n)
        return await coalescer.submit("h0", [call(n)])

    answers = await asyncio.gather(*(submit(n) for n in range(40)))
    assert [answer[0].message for answer in answers] == [f"c{n}" for n in range(40)]
    assert hosts.sent == [16, 16, 8]
    assert submitted_when_sent == [16, 32, 40], "the first two left while requests still came"


async def test_a_unit_is_never_split_across_calls() -> None:
    hosts = FakeHosts()
    coalescer = Coalescer(hosts, batch_max=10, calls_in_flight_max=1, queued_max=100)
    units = [[call(10 * u + n) for n in range(7)] for u in range(4)]
    answers = await asyncio.gather(*(coalescer.submit("h0", unit) for unit in units))
    assert [len(answer) for answer in answers] == [7] * 4
    assert sorted(len(ids) for _, ids in hosts.calls) == [7] * 4
    with pytest.raises(ValueError):
        await coalescer.submit("h0", [call(n) for n in range(11)])


async def test_a_full_queue_refuses_at_once() -> None:
    hosts = FakeHosts(delay_seconds=0.05)
    coalescer = Coalescer(hosts, batch_max=5, calls_in_flight_max=1, queued_max=5)
    results = await asyncio.gather(
        *(coalescer.submit("h0", [call(n)]) for n in range(30)), return_exceptions=True
    )
    busy = [result for result in results if isinstance(result, HostBusy)]
    assert busy and len(busy) < 30
    assert all(isinstance(result, list | HostBusy) for result in results)


async def test_a_failed_call_fails_every_request_in_it_and_the_next_call_goes_on() -> None:
    hosts = FakeHosts(fail=HostUnavailable("gone"))
    coalescer = Coalescer(hosts, batch_max=10)
    results = await asyncio.gather(
        *(coalescer.submit("h0", [call(n)]) for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(result, HostUnavailable) for result in results)
    hosts.fail = None
    assert (await coalescer.submit("h0", [call(9)]))[0].accepted


async def test_a_request_given_up_before_its_call_is_not_sent() -> None:
    hosts = FakeHosts(delay_seconds=0.05)
    coalescer = Coalescer(hosts, batch_max=1, calls_in_flight_max=1)
    first = asyncio.ensure_future(coalescer.submit("h0", [call(1)]))
    second = asyncio.ensure_future(coalescer.submit("h0", [call(2)]))
    await asyncio.sleep(0.01)
    second.cancel()
    await first
    await coalescer.aclose()
    assert [ids for _, ids in hosts.calls] == [["c1"]]
