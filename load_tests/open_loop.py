"""An open-loop HTTP load generator: requests at a fixed rate, whatever the answers do.

wrk is a closed loop: each connection sends its next request when the previous answer came,
so a server that stalls is sent less and its stall shows in few samples (coordinated
omission). wrk2 fixes that with a fixed rate, but it is not packaged in Debian. This one wakes
every millisecond (the resolution of the event loop's timers; a finer sleep spins a core) and
sends the requests that have fallen due, request ``k`` at ``start + k / rate``, each on an idle
connection of a bounded pool, or queued until one is idle. A latency runs from the tick at
which its request fell due: time queued for a connection, because the server had not yet
answered, counts; the generator's own timer granularity (under a millisecond) does not.

It speaks just enough HTTP/1.1 for the gateway and the trivial endpoint: keep-alive, answers
with ``Content-Length``. Latencies are floats in seconds; they never touch money.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Final, cast

import msgspec

CONNECTIONS_MAX: Final = 1_024
RATE_MAX: Final = 100_000.0
TICK_SECONDS: Final = 0.001
ANSWER_BYTES_MAX: Final = 1024**2
"""A longer answer is a fault of the server under test."""

RequestMaker = Callable[[int], bytes]
"""The bytes of request ``k`` (the whole HTTP request)."""


class OpenLoopResult(msgspec.Struct, frozen=True, kw_only=True):
    rate_target: float
    rate_achieved: float
    requests: int
    failures: int
    """Answers other than 2xx, and requests not answered by the end."""
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, done: Callable[[_Connection, int, bool], None]) -> None:
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.sequence = -1
        self.due_at = 0.0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.sequence >= 0:
            sequence, self.sequence = self.sequence, -1
            self.done(self, sequence, False)

    def send(self, sequence: int, request: bytes, due_at: float) -> None:
        assert self.transport is not None and self.sequence < 0
        self.sequence = sequence
        self.due_at = due_at
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        length = _content_length(bytes(self.buffer[:end]))
        if length > ANSWER_BYTES_MAX:
            raise RuntimeError(f"an answer of {length} bytes")
        if len(self.buffer) < end + 4 + length:
            return
        ok = self.buffer[9:10] == b"2"  # "HTTP/1.1 2xx"
        if self.sequence < 0:
            raise RuntimeError(f"an answer to no request: {bytes(self.buffer[:300])!r}")
        del self.buffer[: end + 4 + length]
        sequence, self.sequence = self.sequence, -1
        self.done(self, sequence, ok)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    raise RuntimeError("an answer without Content-Length")


async def run_open_loop(
    host: str,
    port: int,
    make_request: RequestMaker,
    *,
    rate: float,
    seconds: float,
    connections: int,
) -> OpenLoopResult:
    """Send ``rate`` requests per second for ``seconds`` over at most ``connections``."""
    if not (0 < rate <= RATE_MAX and seconds > 0 and 1 <= connections <= CONNECTIONS_MAX):
        raise ValueError("rate, seconds or connections out of bounds")
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    latencies: list[float] = []
    failures = 0
    idle: deque[_Connection] = deque()
    waiting: deque[tuple[int, float]] = deque()

    def done(connection: _Connection, sequence: int, ok: bool) -> None:
        nonlocal failures
        latencies.append(time.perf_counter() - connection.due_at)
        failures += not ok
        if connection.lost:
            return
        if waiting:
            next_sequence, due_at = waiting.popleft()
            connection.send(next_sequence, make_request(next_sequence), due_at)
        else:
            idle.append(connection)

    opened = [
        (await loop.create_connection(lambda: _Connection(done), host, port))[1]
        for _ in range(connections)
    ]
    idle.extend(opened)
    start = time.perf_counter()
    sent = 0
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        for sequence in range(sent, due):
            if idle:
                idle.popleft().send(sequence, make_request(sequence), now)
            else:
                waiting.append((sequence, now))
        sent = due
        await asyncio.sleep(TICK_SECONDS)
    drain_until = time.perf_counter() + 5.0
    while len(latencies) < total and time.perf_counter() < drain_until:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    for connection in opened:
        if connection.transport is not None:
            connection.transport.close()
    answered = len(latencies)
    failures += total - answered
    ordered = sorted(latencies) or [float("nan")]
    return OpenLoopResult(
        rate_target=rate,
        rate_achieved=answered / elapsed,
        requests=total,
        failures=failures,
        latency_p50_ms=_percentile(ordered, 0.50) * 1_000,
        latency_p99_ms=_percentile(ordered, 0.99) * 1_000,
        latency_max_ms=ordered[-1] * 1_000,
    )


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
