"""Where a tenant sits: its lineage (its ancestors and itself, root first). The root places
its tree on a host; the lineage decides which application keys may act for it.

A tenant's parent never changes (it is fixed at creation), so a found lineage is kept for
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

Lineage = tuple[str, ...]
"""A tenant's root first, then each sub-tenant down to the tenant itself."""


class TenantRoots:
    def __init__(
        self,
        catalogue: Catalogue,
        *,
        found_seconds: float = FOUND_SECONDS,
        missing_seconds: float = MISSING_SECONDS,
    ) -> None:
        self.catalogue = catalogue
        self._cache: LookupCache[str, Lineage] = LookupCache(
            "tenant-lineages",
            ttl_seconds=found_seconds,
            missing_ttl_seconds=missing_seconds,
            size_max=SIZE_MAX,
        )

    def known(self, tenant: str) -> tuple[float, Lineage | None] | None:
        """The cache's fresh entry for ``tenant`` (its lineage, None if it is missing), or
        None if it must be looked up, without waiting."""
        return self._cache.fresh(tenant)

    async def lineage_of(self, tenant: str) -> Lineage | None:
        return await self._cache.get(tenant, lambda: self.catalogue.lineage(tenant))

    async def root_of(self, tenant: str) -> str | None:
        lineage = await self.lineage_of(tenant)
        return lineage[0] if lineage else None

    def forget(self, tenant: str) -> None:
        self._cache.forget(tenant)

    def close(self) -> None:
        self._cache.close()
