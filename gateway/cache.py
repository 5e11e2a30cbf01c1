"""A small cache for lookups that block (SQL, scrypt), shared by the request handlers.

Lookups run on a thread pool of their own, so that a burst of slow ones (a key's scrypt hash
takes milliseconds) cannot take the threads the rest of the server needs. Concurrent requests
for the same key wait for one lookup (single flight). Entries live ``ttl_seconds``; a missing
value (None) lives ``missing_ttl_seconds``; the oldest entry goes when ``size_max`` is
reached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LookupCache(Generic[K, V]):
    def __init__(
        self,
        name: str,
        *,
        ttl_seconds: float,
        missing_ttl_seconds: float,
        size_max: int,
        threads_max: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert size_max >= 1 and threads_max >= 1
        self.ttl_seconds = ttl_seconds
        self.missing_ttl_seconds = missing_ttl_seconds
        self.size_max = size_max
        self.clock = clock
        self._entries: dict[K, tuple[float, V | None]] = {}
        self._loading: dict[K, asyncio.Future[V | None]] = {}
        self._executor = ThreadPoolExecutor(max_workers=threads_max, thread_name_prefix=name)

    def fresh(self, key: K) -> tuple[float, V | None] | None:
        """The entry for ``key`` (its expiry, and its value, None if known to be missing) if
        it has not expired, without waiting: the hot path's hit takes no coroutine."""
        entry = self._entries.get(key)
        return entry if entry is not None and entry[0] > self.clock() else None

    async def get(self, key: K, load: Callable[[], V | None]) -> V | None:
        entry = self.fresh(key)
        if entry is not None:
            return entry[1]
        loading = self._loading.get(key)
        if loading is not None:
            return await asyncio.shield(loading)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V | None] = loop.run_in_executor(self._executor, load)
        self._loading[key] = future
        try:
            value = await asyncio.shield(future)
        finally:
            del self._loading[key]
        self._put(key, value)
        return value

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)

    def forget_values(self, matches: Callable[[V], bool]) -> None:
        """Drop every entry whose value ``matches``: O(entries), for rare events such as a
        revoked key."""
        for key in [k for k, (_, v) in self._entries.items() if v is not None and matches(v)]:
            del self._entries[key]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _put(self, key: K, value: V | None) -> None:
        ttl = self.ttl_seconds if value is not None else self.missing_ttl_seconds
        if ttl <= 0:
            return
        self._entries.pop(key, None)
        while len(self._entries) >= self.size_max:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (self.clock() + ttl, value)
