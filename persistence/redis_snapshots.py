"""Snapshots in Redis, for a fast warm restart: one hash per host holding ``sequence`` and
``data``. Redis keeps them as durably as it is configured to (AOF or RDB); the SQL store is
the durable one, and the journal is the truth either way.

A save is one Lua script, so that it is atomic and refuses a snapshot older than the stored
one, as :class:`persistence.sql.SqlSnapshotStore` does.
"""

from __future__ import annotations

import re
from typing import Final

import redis

KEY_PREFIX: Final = "meterwerk:snapshot:"
HOST_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
SEQUENCE_MAX: Final = 2**63 - 1
SNAPSHOT_BYTES_MAX: Final = 512 * 1024**2
"""Redis keeps at most 512 MiB in one value."""
TIMEOUT_SECONDS: Final = 10.0

# Sequences are compared as decimal strings (length first), not as Lua numbers, which are
# doubles and would round past 2**53.
_SAVE: Final = """
local stored = redis.call('HGET', KEYS[1], 'sequence')
if stored and (#stored > #ARGV[1] or (#stored == #ARGV[1] and stored > ARGV[1])) then
  return redis.error_reply('older snapshot: the stored one is at ' .. stored)
end
redis.call('HSET', KEYS[1], 'sequence', ARGV[1], 'data', ARGV[2])
return 1
"""


class RedisSnapshotStore:
    """:class:`engine.ports.SnapshotStore` in Redis."""

    def __init__(
        self, url: str, *, key_prefix: str = KEY_PREFIX, timeout_seconds: float = TIMEOUT_SECONDS
    ) -> None:
        self.key_prefix = key_prefix
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            decode_responses=False,
        )
        self._save = self.client.register_script(_SAVE)

    def save(self, host: str, sequence: int, data: bytes) -> None:
        if not 0 <= sequence <= SEQUENCE_MAX:
            raise ValueError(f"snapshot sequence {sequence} out of range")
        if len(data) > SNAPSHOT_BYTES_MAX:
            raise ValueError(f"snapshot of {len(data)} bytes; the limit is {SNAPSHOT_BYTES_MAX}")
        try:
            self._save(keys=[self._key(host)], args=[str(sequence), data])
        except redis.ResponseError as error:
            if "older snapshot" in str(error):
                raise ValueError(f"host {host!r}: {error}") from None
            raise

    def load(self, host: str) -> tuple[int, bytes] | None:
        sequence, data = self.client.hmget(self._key(host), ["sequence", "data"])
        if sequence is None or data is None:
            return None
        assert isinstance(data, bytes), "the client must not decode responses"
        return int(sequence), data

    def close(self) -> None:
        self.client.close()

    def _key(self, host: str) -> str:
        if not HOST_PATTERN.fullmatch(host):
            raise ValueError(f"host name {host!r} must be 1-128 letters, digits, '_', '.' or '-'")
        return f"{self.key_prefix}{host}"
