"""The host's command channel over a real loopback socket: answers by call id, group commit,
faults, a wrong token, a deadline, and a server that goes away."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence

import pytest

from actors.channel import ChannelClient, ChannelClosed, ChannelFault, ChannelServer

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    """An applier that answers each payload reversed, remembers its batches, and can be held
    (to let requests pile up) or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.fail_batch = False

    def __call__(self, payloads: Sequence[bytes]) -> list[bytes | Exception]:
        self.entered.set()
        self.release.wait(10)
        self.batches.append(list(payloads))
        if self.fail_batch:
            raise OSError("disk gone")
        return [ValueError("refused") if p == b"bad" else p[::-1] for p in payloads]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(recorder: Recorder) -> Iterator[ChannelServer]:
    server = ChannelServer(recorder)
    yield server
    server.close()


async def test_concurrent_calls_are_each_answered_with_their_own_answer(
    server: ChannelServer,
) -> None:
    client = await ChannelClient.connect(server.endpoint)
    payloads = [f"request-{n}".encode() for n in range(200)]
    answers = await asyncio.gather(*(client.call(p, 5.0) for p in payloads))
    assert answers == [p[::-1] for p in payloads]
    client.close()


async def test_requests_arriving_during_a_batch_are_applied_together_next(
    server: ChannelServer, recorder: Recorder
) -> None:
    client = await ChannelClient.connect(server.endpoint)
    recorder.release.clear()
    first = asyncio.ensure_future(client.call(b"first", 5.0))
    await asyncio.to_thread(recorder.entered.wait, 5)
    later = [asyncio.ensure_future(client.call(b"later-%d" % n, 5.0)) for n in range(5)]
    await asyncio.sleep(0.2)  # they reach the server while the first batch is held
    recorder.release.set()
    assert await first == b"tsrif"
    assert await asyncio.gather(*later) == [(b"later-%d" % n)[::-1] for n in range(5)]
    assert recorder.batches == [[b"first"], [b"later-%d" % n for n in range(5)]]
    client.close()


async def test_a_refused_request_faults_alone_and_a_failed_batch_faults_all(
    server: ChannelServer, recorder: Recorder
) -> None:
    client = await ChannelClient.connect(server.endpoint)
    with pytest.raises(ChannelFault, match="ValueError: refused"):
        await client.call(b"bad", 5.0)
    assert await client.call(b"ok", 5.0) == b"ko"
    recorder.fail_batch = True
    results = await asyncio.gather(
        client.call(b"a", 5.0), client.call(b"b", 5.0), return_exceptions=True
    )
    assert all(isinstance(r, ChannelFault) and "disk gone" in str(r) for r in results)
    recorder.fail_batch = False
    assert await client.call(b"again", 5.0) == b"niaga", "the channel survives a failed batch"
    client.close()


async def test_a_connection_without_the_token_is_closed_unanswered(
    server: ChannelServer, recorder: Recorder
) -> None:
    address, port, _ = server.endpoint
    client = await ChannelClient.connect((address, port, "not-the-token"))
    with pytest.raises(ChannelClosed):
        await client.call(b"charge me", 5.0)
    assert recorder.batches == []
    assert client.closed


async def test_a_late_answer_times_out_and_the_next_call_still_works(
    server: ChannelServer, recorder: Recorder
) -> None:
    client = await ChannelClient.connect(server.endpoint)
    recorder.release.clear()
    with pytest.raises(TimeoutError):
        await client.call(b"slow", 0.05)
    recorder.release.set()
    assert await client.call(b"next", 5.0) == b"txen"  # the late answer was dropped
    assert recorder.batches[0] == [b"slow"], "the late request was still applied"
    client.close()


async def test_calls_waiting_when_the_host_goes_away_fail_as_closed(
    recorder: Recorder,
) -> None:
    server = ChannelServer(recorder)
    client = await ChannelClient.connect(server.endpoint)
    assert await client.call(b"x", 5.0) == b"x"
    recorder.release.clear()
    waiting = asyncio.ensure_future(client.call(b"y", 5.0))
    await asyncio.to_thread(recorder.entered.wait, 5)
    server.close()  # as the host's process ending closes its sockets
    recorder.release.set()
    with pytest.raises(ChannelClosed):
        await waiting
    assert client.closed
    with pytest.raises(ChannelClosed):
        await client.call(b"z", 5.0)
