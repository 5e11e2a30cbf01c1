"""A host's command channel: length-prefixed frames over one TCP connection per gateway.

Ray stays the engine that places, names, starts and restarts the hosts; this channel only
carries the hot path's batches. A Ray actor call costs the caller about 0.7 ms of CPU and a
round trip of about 1.1 ms whatever it carries (a no-op actor answered at most 1,400 calls/s
on two cores), which was most of an authorise-and-record request's latency and a third of the
gateway's CPU. A frame over a loopback socket costs tens of microseconds.

A host opens a :class:`ChannelServer` on its node's address with a random token and hands
both out through a Ray call; a gateway connects with :class:`ChannelClient`, proves the token
in its first frame, and sends requests, each answered in order of application by call id.

The server is also where the host's group commit happens: requests that arrive while a batch
is being applied and flushed are applied together next, in one journal flush, and each is
answered after that flush.

Frames: ``length:u32 call:u32 kind:u8`` then ``length`` bytes of payload, big-endian. A
request's kind is :data:`REQUEST`; an answer's is :data:`ANSWER`, or :data:`FAULT` with the
host's error message as UTF-8. The first frame of a connection carries the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import logging
import queue
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Final

log = logging.getLogger(__name__)

HEADER: Final = struct.Struct("!IIB")
REQUEST: Final = 0
ANSWER: Final = 1
FAULT: Final = 2
HELLO: Final = 3
FRAME_BYTES_MAX: Final = 64 * 1024 * 1024
REQUESTS_PER_BATCH_MAX: Final = 64
"""Requests applied together at most (each up to the coalescer's 1,000 commands)."""

Applier = Callable[[Sequence[bytes]], list[bytes | Exception]]
"""Applies the payloads of several requests together (one journal flush) and answers each:
its answer's payload, or the error that refused it."""


class ChannelClosed(ConnectionError):
    """The connection to the host is gone (the host stopped, restarted or is unreachable)."""


class ChannelFault(Exception):
    """The host raised while applying the request (a bug or a failed journal)."""


class ChannelServer:
    """Accepts gateways' connections and applies their requests, one batch at a time."""

    def __init__(self, apply: Applier, address: str = "127.0.0.1") -> None:
        self.apply = apply
        self.token = secrets.token_hex(16)
        self._listener = socket.create_server((address, 0), backlog=64)
        self.address = address
        self.port: int = self._listener.getsockname()[1]
        self._requests: queue.SimpleQueue[tuple[_Connection, int, bytes] | None] = (
            queue.SimpleQueue()
        )
        self._closed = threading.Event()
        self._connections: set[_Connection] = set()
        self._threads = [
            threading.Thread(target=self._accept, name="channel-accept", daemon=True),
            threading.Thread(target=self._apply_batches, name="channel-apply", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def endpoint(self) -> tuple[str, int, str]:
        return (self.address, self.port, self.token)

    def close(self) -> None:
        """Stop accepting and drop every connection (their unanswered calls fail)."""
        self._closed.set()
        self._requests.put(None)
        _end(self._listener)
        for connection in list(self._connections):
            connection.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(sock)
            self._connections.add(connection)
            threading.Thread(
                target=self._read, args=(connection,), name="channel-read", daemon=True
            ).start()

    def _read(self, connection: _Connection) -> None:
        """Queue each request of one connection; the first frame must carry the token."""
        stream = io.BufferedReader(socket.SocketIO(connection.sock, "rb"), 256 * 1024)
        try:
            hello = _read_frame(stream)
            if (
                hello is None
                or hello[1] != HELLO
                or not hmac.compare_digest(hello[2], self.token.encode())
            ):
                log.warning("channel: a connection without the host's token was refused")
                return
            while not self._closed.is_set():
                frame = _read_frame(stream)
                if frame is None:
                    return
                call, kind, payload = frame
                if kind != REQUEST:
                    log.warning("channel: unexpected frame kind %d; closing", kind)
                    return
                self._requests.put((connection, call, payload))
        except (OSError, ValueError) as error:
            log.info("channel: connection ended: %s", error)
        finally:
            stream.close()
            connection.close()
            self._connections.discard(connection)

    def _apply_batches(self) -> None:
        """Take what has arrived (at least one request), apply it together, answer each."""
        while True:
            first = self._requests.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < REQUESTS_PER_BATCH_MAX:
                try:
                    more = self._requests.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._requests.put(None)
                    break
                batch.append(more)
            try:
                answers = self.apply([payload for _, _, payload in batch])
            except Exception as error:  # the whole batch failed (say, the journal)
                log.exception("channel: a batch of %d requests failed", len(batch))
                answers = [error] * len(batch)
            frames: dict[_Connection, list[bytes]] = {}
            for (connection, call, _), answer in zip(batch, answers, strict=True):
                if isinstance(answer, Exception):
                    frame = _frame(call, FAULT, f"{type(answer).__name__}: {answer}".encode())
                else:
                    frame = _frame(call, ANSWER, answer)
                frames.setdefault(connection, []).append(frame)
            for connection, parts in frames.items():
                connection.send(b"".join(parts))


class _Connection:
    __slots__ = ("lock", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def send(self, data: bytes) -> None:
        try:
            with self.lock:
                self.sock.sendall(data)
        except OSError:
            self.close()  # the gateway is gone; it treats its unanswered calls as failed

    def close(self) -> None:
        _end(self.sock)


def _end(sock: socket.socket) -> None:
    """Shut ``sock`` down (which wakes a thread blocked reading or accepting on it) and close
    it; either may find it gone already."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _frame(call: int, kind: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), call, kind) + payload


def _read_frame(stream: io.BufferedReader[socket.SocketIO]) -> tuple[int, int, bytes] | None:
    """``(call, kind, payload)``, or None at the end of the stream."""
    read = stream.read
    header = read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    length, call, kind = HEADER.unpack(header)
    if length > FRAME_BYTES_MAX:
        raise ValueError(f"a frame of {length} bytes is over the limit")
    payload = read(length)
    if len(payload) < length:
        return None
    return call, kind, payload


class ChannelClient:
    """One gateway's connection to one host's channel (asyncio).

    :meth:`call` sends a request and waits for its answer; when the connection ends, every
    call waiting on it fails with :class:`ChannelClosed`, and the client stays closed (the
    caller opens a new one, to wherever the host is now)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._next_call = 0
        self.closed = False
        self.loop = asyncio.get_running_loop()
        """The event loop the connection belongs to; unusable from another."""
        self._reading = self.loop.create_task(self._read())

    @classmethod
    async def connect(cls, endpoint: Sequence[object]) -> ChannelClient:
        address, port, token = endpoint
        reader, writer = await asyncio.open_connection(
            str(address), int(str(port)), limit=FRAME_BYTES_MAX
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(_frame(0, HELLO, str(token).encode()))
        return cls(reader, writer)

    async def call(self, payload: bytes, timeout_seconds: float) -> bytes:
        """The host's answer to ``payload``; raises :class:`ChannelClosed`,
        :class:`ChannelFault` or ``TimeoutError``. A request whose wait ended may still be
        applied by the host (a retry with the same ids is applied once)."""
        return await self.request(payload, timeout_seconds)

    def request(self, payload: bytes, timeout_seconds: float) -> asyncio.Future[bytes]:
        """Send ``payload`` now (into the socket, if it takes it) and return the future of
        its answer, as :meth:`call` answers it."""
        future: asyncio.Future[bytes] = self.loop.create_future()
        if self.closed:
            future.set_exception(ChannelClosed("the channel is closed"))
            return future
        self._next_call = call = (self._next_call + 1) & 0xFFFFFFFF
        self._waiting[call] = future
        deadline = self.loop.call_later(timeout_seconds, _expire, future)
        future.add_done_callback(lambda _: self._settled(call, deadline))
        self._writer.write(_frame(call, REQUEST, payload))
        return future

    def _settled(self, call: int, deadline: asyncio.TimerHandle) -> None:
        deadline.cancel()
        self._waiting.pop(call, None)

    def close(self) -> None:
        if not self.closed:
            self._fail(ChannelClosed("the channel was closed"))
            self._writer.close()
            self._reading.cancel()

    async def _read(self) -> None:
        reader = self._reader
        try:
            while True:
                header = await reader.readexactly(HEADER.size)
                length, call, kind = HEADER.unpack(header)
                payload = await reader.readexactly(length)
                future = self._waiting.get(call)
                if future is None or future.done():
                    continue  # its caller stopped waiting (a deadline)
                if kind == ANSWER:
                    future.set_result(payload)
                else:
                    future.set_exception(ChannelFault(payload.decode(errors="replace")))
        except (OSError, asyncio.IncompleteReadError) as error:
            self._fail(ChannelClosed(f"the host closed the channel: {error!r}"))
        except asyncio.CancelledError:
            self._fail(ChannelClosed("the channel was closed"))
            raise

    def _fail(self, error: Exception) -> None:
        """Fail every waiting call with ``error``; the client stays closed."""
        self.closed = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("the host did not answer in time"))
