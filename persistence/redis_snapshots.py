"""Snapshots in Redis, for a fast warm restart: one hash per host holding ``sequence`` and
``data``. Redis keeps them as durably as it is configured to (AOF or RDB); the SQL store is
the durable one, and the journal is the truth either way.

A save is one Lua script, so that it is atomic and refuses a snapshot older than the stored
one, as :class:`persistence.sql.SqlSnapshotStore` does.
"""

from __future__ import annotations

from typing import Final

import redis

from persistence.hosts import check_host, check_snapshot

KEY_PREFIX: Final = "meterwerk:snapshot:"
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
        check_snapshot(host, sequence, data, SNAPSHOT_BYTES_MAX)
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
        return f"{self.key_prefix}{check_host(host)}"
