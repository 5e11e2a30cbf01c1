"""A journal in a Redis stream: one stream per host, key ``meterwerk:journal:{host}``, one entry
per record with the explicit id ``{sequence}-0`` and the record in field ``r``.

One ``append`` is one Lua script that adds all its records (and, optionally, a ``WAIT``), in one
round trip; the records travel as one length table and one string, which the script splits. A
script runs atomically, and as stream ids must rise, a stale or second writer's first ``XADD``
fails before anything is written: a batch goes in wholly or not at all (Redis lets a script
that has begun writing finish even past ``maxmemory``). ``trim`` is ``XTRIM MINID``; Redis keeps
a stream's last id when all its entries are trimmed, so the numbering survives.

Durability is the server's configuration, not this module's:

- ``appendonly yes`` with ``appendfsync always``: Redis fsyncs its append-only file before it
  answers, so an acknowledged append survives a crash of the server or the machine. This is
  what "answer only after the journal has it" needs.
- ``appendfsync everysec`` (the default once AOF is on): a crash of the machine loses up to
  about a second of acknowledged appends; a crash of Redis alone loses none.
- ``appendonly no`` (RDB snapshots only, or nothing): a restart loses everything since the
  last RDB save. Fine for tests, not for money.

On open the journal reads ``CONFIG GET appendonly appendfsync`` and logs a warning when the
server is not set up for ``always``. With ``replicas_ack=n`` every append also waits (``WAIT``)
until ``n`` replicas have the write, and fails if they do not within the timeout: a copy on
another machine instead of (or besides) a local fsync. Replication acknowledges receipt, not a
replica's fsync.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from persistence.hosts import check_host
from persistence.journal._base import (
    BATCH_BYTES_MAX,
    RECORD_BYTES_MAX,
    JournalFailed,
    check_batch,
    check_sequence,
    check_trim,
    gapless,
    length_table,
)

logger = logging.getLogger(__name__)

KEY_PREFIX = "meterwerk:journal:"
READ_CHUNK_RECORDS = 1_000
"""Entries per XRANGE while reading; memory is at most this many times ``record_bytes_max``."""

# ARGV: the first sequence, the record count, their lengths (little-endian u32 each) and the
# records back to back. Two bulk strings instead of an argument per record: redis-py packs
# arguments in Python, at about 4 µs each, which was most of an append's time.
_APPEND = """
local key, first, count = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local lengths, records = ARGV[3], ARGV[4]
local position = 1
for i = 0, count - 1 do
    local length = struct.unpack('<I4', lengths, 4 * i + 1)
    local record = string.sub(records, position, position + length - 1)
    redis.call('XADD', key, string.format('%d-0', first + i), 'r', record)
    position = position + length
end
return count
"""


def stream_key(host: str) -> str:
    return KEY_PREFIX + check_host(host)


class RedisStreamJournal:
    def __init__(
        self,
        url: str,
        host: str,
        *,
        replicas_ack: int = 0,
        replicas_timeout_ms: int = 1_000,
        socket_timeout_seconds: float = 5.0,
        read_chunk_records: int = READ_CHUNK_RECORDS,
        record_bytes_max: int = RECORD_BYTES_MAX,
        batch_bytes_max: int = BATCH_BYTES_MAX,
    ) -> None:
        self.host = check_host(host)
        self.key = stream_key(host)
        self.replicas_ack = replicas_ack
        self.replicas_timeout_ms = replicas_timeout_ms
        self.read_chunk_records = read_chunk_records
        self.record_bytes_max = record_bytes_max
        self.batch_bytes_max = batch_bytes_max
        self._failed: str | None = None
        self._closed = False
        self._client: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_seconds,
            socket_connect_timeout=socket_timeout_seconds,
        )
        try:
            self._append_sha = self._client.script_load(_APPEND)
            _warn_unless_durable(self._client)
            self._last, _ = self._stream_bounds()
        except BaseException:
            self._client.close()
            raise

    # The port.

    def append(self, records: Sequence[bytes]) -> int:
        self._check_usable()
        check_batch(records, self.record_bytes_max, self.batch_bytes_max)
        if not records:
            return self._last
        check_sequence(self._last, len(records))
        arguments: list[int | bytes] = [
            self._last + 1,
            len(records),
            length_table(records),
            b"".join(records),
        ]
        try:
            results = self._run_append(arguments)
            if self.replicas_ack and results[-1] < self.replicas_ack:
                raise JournalFailed(
                    f"only {results[-1]} of {self.replicas_ack} replicas acknowledged the append"
                )
        except BaseException as error:
            # A second writer, a lost connection or missing replicas: what the stream holds
            # is no longer what this instance believes.
            self._failed = f"journal {self.key}: append failed ({error}); reopen and recover"
            raise JournalFailed(self._failed) from error
        self._last += len(records)
        return self._last

    def read(self, after: int = 0) -> Iterator[tuple[int, bytes]]:
        self._check_usable()
        last, trimmed = self._stream_bounds()
        # Fewer records than this instance appended means the server lost some (a restart
        # without its append-only file): the read then fails rather than replaying less.
        last = max(last, self._last)
        start = max(after, trimmed)
        return gapless(self._read(start, last), start, last)

    def trim(self, through: int) -> None:
        self._check_usable()
        check_trim(through, self._last)
        self._client.xtrim(self.key, minid=f"{through + 1}-0", approximate=False)

    def last_sequence(self) -> int:
        return self._last

    def close(self) -> None:
        self._closed = True
        self._client.close()

    # Helpers.

    def _run_append(self, arguments: list[int | bytes]) -> list[Any]:
        for attempt in range(2):
            pipeline = self._client.pipeline(transaction=False)
            pipeline.evalsha(self._append_sha, 1, self.key, *arguments)
            if self.replicas_ack:
                pipeline.wait(self.replicas_ack, self.replicas_timeout_ms)
            try:
                return list(pipeline.execute())
            except redis.exceptions.NoScriptError:
                # The server restarted or its script cache was flushed; nothing was written.
                if attempt:
                    raise
                self._append_sha = self._client.script_load(_APPEND)
        raise AssertionError("unreachable")

    def _stream_bounds(self) -> tuple[int, int]:
        """The stream's last sequence, and the sequence trims went through. Entries run
        gaplessly from 1 and trims remove a prefix, so the trimmed ones are the last id less
        the length."""
        try:
            info = self._client.xinfo_stream(self.key)
        except redis.ResponseError as error:
            if "no such key" in str(error):
                return 0, 0
            raise
        last = _sequence(info["last-generated-id"])
        return last, last - int(info["length"])

    def _read(self, start: int, last: int) -> Iterator[tuple[int, bytes]]:
        after = start
        while after < last:
            entries: Any = self._client.xrange(
                self.key, min=f"{after + 1}-0", max=f"{last}-0", count=self.read_chunk_records
            )
            if not entries:
                return
            for entry_id, fields in entries:
                yield _sequence(entry_id), fields[b"r"]
            after = _sequence(entries[-1][0])

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError(f"journal {self.key} is closed")
        if self._failed is not None:
            raise JournalFailed(self._failed)


def _sequence(entry_id: Any) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    sequence, _, _ = text.partition("-")
    return int(sequence)


def _warn_unless_durable(client: redis.Redis) -> None:
    try:
        config: Any = client.config_get("append*")
    except redis.ResponseError:  # CONFIG is often disabled on managed Redis
        logger.info("journal: cannot read the Redis persistence settings; check them")
        return
    appendonly = _text(config.get("appendonly", config.get(b"appendonly")))
    appendfsync = _text(config.get("appendfsync", config.get(b"appendfsync")))
    if appendonly != "yes" or appendfsync != "always":
        logger.warning(
            "journal: Redis has appendonly %s, appendfsync %s; acknowledged appends survive a "
            "crash only with appendonly yes and appendfsync always",
            appendonly,
            appendfsync,
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
