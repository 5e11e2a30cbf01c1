"""The gateway's port to the account hosts, and its adapter over :class:`actors.ray_host.Hosts`.

The port speaks asyncio and raises three faults the gateway understands: :class:`HostBusy`
(the host's call queue is full: 429), :class:`HostUnavailable` (the host is gone, restarting
or late: 503, the request is denied) and :class:`HostFailed` (the host raised: a bug, 500).
This is the only gateway module that knows Ray's exceptions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol

import ray.exceptions

from actors.ray_host import Hosts, decode_outcomes
from engine.accounts import Command, Outcome


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

    async def balance(
        self, host: str, root: str, tenant: str
    ) -> tuple[Decimal, Decimal | None] | None: ...

    async def ping(self, host: str, timeout_seconds: float) -> None: ...


class RayHosts:
    """:class:`HostTransport` over the named Ray actors. Every call has a deadline; when it
    passes, the call may still be applied by the host later (a retry with the same ids is
    applied once)."""

    def __init__(self, hosts: Hosts, *, timeout_seconds: float = 5.0) -> None:
        self.hosts = hosts
        self.names = hosts.names
        self.timeout_seconds = timeout_seconds

    def host_of(self, root: str) -> str:
        return self.hosts.host_of(root)

    async def apply(self, host: str, items: Sequence[tuple[str, Command]]) -> list[Outcome]:
        data = await self._call(lambda: self.hosts.send(host, items), self.timeout_seconds)
        outcomes = decode_outcomes(data)
        if len(outcomes) != len(items):
            raise HostFailed(f"host {host} answered {len(outcomes)} of {len(items)} commands")
        return outcomes

    async def balance(
        self, host: str, root: str, tenant: str
    ) -> tuple[Decimal, Decimal | None] | None:
        handle = self.hosts.handles[host]
        found = await self._call(lambda: handle.balance.remote(root, tenant), self.timeout_seconds)
        if found is None:
            return None
        balance, available = found
        return Decimal(balance), None if available is None else Decimal(available)

    async def ping(self, host: str, timeout_seconds: float) -> None:
        handle = self.hosts.handles[host]
        await self._call(lambda: handle.ping.remote(), timeout_seconds)

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
