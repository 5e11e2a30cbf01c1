"""The gateway's port to the account hosts, and its adapter over :class:`actors.ray_host.Hosts`.

The port speaks asyncio and raises three faults the gateway understands: :class:`HostBusy`
(the host's call queue is full: 429), :class:`HostUnavailable` (the host is gone, restarting
or late: 503, the request is denied) and :class:`HostFailed` (the host raised: a bug, 500).
This is the only gateway module that knows Ray's exceptions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from decimal import Decimal
from typing import Any, Protocol

import ray.exceptions

from actors.channel import ChannelClient, ChannelClosed, ChannelFault
from actors.host import HostStats, JournalHealth
from actors.ray_host import Hosts, decode_outcomes, encode_items
from engine.accounts import Command, Outcome, PeriodUsage, Quote, QuoteQuery


class HostBusy(Exception):
    pass


class HostUnavailable(Exception):
    pass


class HostFailed(Exception):
    pass


class HostTransport(Protocol):
    @property
    def names(self) -> Sequence[str]: ...

    def host_of(self, root: str) -> str: ...

    async def apply(self, host: str, items: Sequence[tuple[str, Command]]) -> list[Outcome]: ...

    def send(self, host: str, items: Sequence[tuple[str, Command]]) -> Awaitable[list[Outcome]]:
        """:meth:`apply`, started at once where it can be: what to await for the outcomes."""
        ...

    async def balance(
        self, host: str, root: str, tenant: str
    ) -> tuple[Decimal, Decimal | None] | None: ...

    async def usage(
        self, host: str, root: str, tenant: str, now: int
    ) -> PeriodUsage | Outcome | None:
        """The tenant's open period so far (None: no such tree on the host)."""
        ...

    async def quote(
        self, host: str, root: str, query: QuoteQuery, now: int
    ) -> Quote | Outcome | None:
        """The price of ``query`` now, changing nothing (None: no such tree on the host)."""
        ...

    async def ping(self, host: str, timeout_seconds: float) -> JournalHealth | None:
        """Raises if the host does not answer in time; else its journal's health (None: not
        known, taken as writable)."""
        ...

    async def stats(self, host: str, timeout_seconds: float) -> HostStats: ...

    async def reload_tariffs(self) -> None:
        """Have every host read the catalogue's meters and tariffs again (after the admin API
        changed them); raises if a host does not answer in time."""
        ...

    def close(self) -> None:
        """Let go of connections this event loop opened (at the gateway's shutdown)."""
        ...


class RayHosts:
    """:class:`HostTransport` over the named Ray actors: batches over each host's command
    channel (``actors/channel.py``), everything else as Ray calls. Every call has a deadline;
    when it passes, the call may still be applied by the host later (a retry with the same ids
    is applied once)."""

    def __init__(self, hosts: Hosts, *, timeout_seconds: float = 5.0) -> None:
        self.hosts = hosts
        self.names = hosts.names
        self.timeout_seconds = timeout_seconds
        self._channels: dict[str, ChannelClient] = {}
        self._connecting: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Lock] = {}

    def host_of(self, root: str) -> str:
        return self.hosts.host_of(root)

    async def apply(self, host: str, items: Sequence[tuple[str, Command]]) -> list[Outcome]:
        return await self.send(host, items)

    def send(self, host: str, items: Sequence[tuple[str, Command]]) -> Awaitable[list[Outcome]]:
        """Write the batch to the host's channel now, if it is open, and return what to await
        for the outcomes (else connect first, when awaited)."""
        channel = self._open_channel(host)
        if channel is None:
            return self._connect_and_send(host, items)
        return self._outcomes(host, channel, items)

    def _open_channel(self, host: str) -> ChannelClient | None:
        """This event loop's open channel to ``host``, if there is one."""
        channel = self._channels.get(host)
        if channel is None or channel.closed or channel.loop is not asyncio.get_running_loop():
            return None
        return channel

    async def _connect_and_send(
        self, host: str, items: Sequence[tuple[str, Command]]
    ) -> list[Outcome]:
        channel = await self._connect(host)
        return await self._outcomes(host, channel, items)

    def _outcomes(
        self, host: str, channel: ChannelClient, items: Sequence[tuple[str, Command]]
    ) -> Awaitable[list[Outcome]]:
        """Write ``items`` to ``channel`` now; what to await for their outcomes."""
        return self._decoded(
            host, len(items), channel.request(encode_items(items), self.timeout_seconds)
        )

    async def _decoded(self, host: str, count: int, answer: Awaitable[bytes]) -> list[Outcome]:
        try:
            data = await answer
        except ChannelFault as error:
            raise HostFailed(str(error)) from error
        except (ChannelClosed, TimeoutError) as error:
            raise HostUnavailable(str(error) or "timed out") from error
        outcomes = decode_outcomes(data)
        if len(outcomes) != count:
            raise HostFailed(f"host {host} answered {len(outcomes)} of {count} commands")
        return outcomes

    async def _connect(self, host: str) -> ChannelClient:
        """The channel to ``host``, opened anew where the host is now (after a restart its
        address changes); one connection attempt per host at a time."""
        loop = asyncio.get_running_loop()
        lock = self._connecting.setdefault((loop, host), asyncio.Lock())
        async with lock:
            channel = self._open_channel(host)
            if channel is not None:  # another request opened it meanwhile
                return channel
            handle = self.hosts.handles[host]
            endpoint = await self._call(lambda: handle.channel.remote(), self.timeout_seconds)
            try:
                channel = await asyncio.wait_for(
                    ChannelClient.connect(endpoint), self.timeout_seconds
                )
            except (OSError, TimeoutError) as error:
                raise HostUnavailable(f"host {host}'s channel: {error!r}") from error
            self._channels[host] = channel
            return channel

    def close(self) -> None:
        """Close this event loop's channels (at the gateway's shutdown)."""
        loop = asyncio.get_running_loop()
        for host, channel in list(self._channels.items()):
            if channel.loop is loop:
                channel.close()
                del self._channels[host]
        self._connecting = {key: lock for key, lock in self._connecting.items() if key[0] != loop}

    async def balance(
        self, host: str, root: str, tenant: str
    ) -> tuple[Decimal, Decimal | None] | None:
        handle = self.hosts.handles[host]
        found = await self._call(lambda: handle.balance.remote(root, tenant), self.timeout_seconds)
        if found is None:
            return None
        balance, available = found
        return Decimal(balance), None if available is None else Decimal(available)

    async def usage(
        self, host: str, root: str, tenant: str, now: int
    ) -> PeriodUsage | Outcome | None:
        handle = self.hosts.handles[host]
        found: PeriodUsage | Outcome | None = await self._call(
            lambda: handle.usage.remote(root, tenant, now), self.timeout_seconds
        )
        return found

    async def quote(
        self, host: str, root: str, query: QuoteQuery, now: int
    ) -> Quote | Outcome | None:
        handle = self.hosts.handles[host]
        found: Quote | Outcome | None = await self._call(
            lambda: handle.quote.remote(root, query, now), self.timeout_seconds
        )
        return found

    async def ping(self, host: str, timeout_seconds: float) -> JournalHealth | None:
        handle = self.hosts.handles[host]
        health: JournalHealth = await self._call(lambda: handle.health.remote(), timeout_seconds)
        return health

    async def stats(self, host: str, timeout_seconds: float) -> HostStats:
        handle = self.hosts.handles[host]
        stats: HostStats = await self._call(lambda: handle.stats.remote(), timeout_seconds)
        return stats

    async def reload_tariffs(self) -> None:
        handles = list(self.hosts.handles.values())
        await asyncio.gather(
            *(
                self._call(lambda h=handle: h.reload_tariffs.remote(), self.timeout_seconds)
                for handle in handles
            )
        )

    async def _call(self, submit: Any, timeout_seconds: float) -> Any:
        try:
            ref = submit()
            return await asyncio.wait_for(_resolved(ref), timeout_seconds)
        except ray.exceptions.RayTaskError as error:  # the host raised: a bug, not a fault
            raise HostFailed(str(error)) from error
        except ray.exceptions.PendingCallsLimitExceeded as error:
            raise HostBusy(str(error)) from error
        except (ray.exceptions.RayActorError, TimeoutError) as error:
            # RayActorError covers ActorDiedError and ActorUnavailableError (restarting).
            raise HostUnavailable(str(error) or "timed out") from error
        except ray.exceptions.RayError as error:
            raise HostUnavailable(str(error)) from error


async def _resolved(ref: Any) -> Any:
    return await ref


def readiness(answer: JournalHealth | BaseException | None) -> str:
    """A host's state for ``/readyz`` from its ping: ``ok``, ``unreachable`` or
    ``journal_not_writable``."""
    if isinstance(answer, BaseException):
        return "unreachable"
    if answer is not None and not answer.writable:
        return "journal_not_writable"
    return "ok"
