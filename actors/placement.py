"""Which host holds a tenant tree: a rendezvous (highest random weight) hash of the root id
over the host names, unless the root is pinned to a host of its own.

Any process computes the same answer from the same host list and pins, so a gateway finds a
tenant's host without asking anyone. Adding a host moves only the roots that now rank it
first (about 1/n of them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Final

CACHED_MAX: Final = 100_000
"""Roots whose host is remembered; the hash costs microseconds, paid on every request."""


def _weight(host: str, root: str) -> int:
    digest = hashlib.blake2b(f"{host}\x1f{root}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Placement:
    def __init__(self, hosts: Sequence[str], pins: Mapping[str, str] | None = None) -> None:
        if not hosts:
            raise ValueError("hosts: at least one host")
        if len(set(hosts)) != len(hosts):
            raise ValueError("hosts: names must be unique")
        self.hosts = tuple(hosts)
        self.pins = dict(pins or {})
        unknown = sorted(set(self.pins.values()) - set(self.hosts))
        if unknown:
            raise ValueError(f"pins: unknown hosts {unknown}")
        pinned = set(self.pins.values())
        self._candidates = [h for h in self.hosts if h not in pinned] or list(self.hosts)
        # A placement never changes, so an answer may be kept; the memo is emptied whole when
        # full, which keeps it bounded at no cost per lookup.
        self._found: dict[str, str] = {}

    def host_of(self, root: str) -> str:
        found = self._found.get(root)
        if found is not None:
            return found
        pinned = self.pins.get(root)
        if pinned is not None:
            return pinned
        found = max(self._candidates, key=lambda host: _weight(host, root))
        if len(self._found) >= CACHED_MAX:
            self._found.clear()
        self._found[root] = found
        return found


def host_names(count: int, prefix: str = "meterwerk-host") -> list[str]:
    return [f"{prefix}-{number}" for number in range(count)]
