"""Which tree a tenant belongs to: the root that places it on a host.

A tenant's root never changes (its parent is fixed at creation), so a found root is kept for
long; an unknown tenant is remembered only for a moment, so that a tenant created a moment
ago is found soon after.
"""

from __future__ import annotations

from typing import Final

from gateway.cache import LookupCache
from persistence.catalogue import Catalogue

FOUND_SECONDS: Final = 3_600.0
MISSING_SECONDS: Final = 1.0
SIZE_MAX: Final = 1_000_000


class TenantRoots:
    def __init__(
        self,
        catalogue: Catalogue,
        *,
        found_seconds: float = FOUND_SECONDS,
        missing_seconds: float = MISSING_SECONDS,
    ) -> None:
        self.catalogue = catalogue
        self._cache: LookupCache[str, str] = LookupCache(
            "tenant-roots",
            ttl_seconds=found_seconds,
            missing_ttl_seconds=missing_seconds,
            size_max=SIZE_MAX,
        )

    async def root_of(self, tenant: str) -> str | None:
        return await self._cache.get(tenant, lambda: self.catalogue.root_of(tenant))

    def forget(self, tenant: str) -> None:
        self._cache.forget(tenant)

    def close(self) -> None:
        self._cache.close()
