"""Each tenant's failure policy, read from the catalogue, and the gateway's price estimate for
usage it allows while the tenant's host does not answer.

The policy is looked up only when a host fails to answer, so the hot path never pays for it;
it is cached for a minute (``POLICY_SECONDS``), so that a changed policy takes effect soon.

**The estimate.** A degraded allowance is priced without the host, from the catalogue: the
payer's tariff (the nearest tenant on the way to the root with a balance of its own), in the
version in effect now, rating the usage as if it were the first of the period, with the
charges' free units taken out. The host has the period's usage, so it alone knows the exact
price; without it, free units the tenant may already have used must not make degraded usage
free. The estimate only bounds what the gateway allows against the overdraft cap; the host
charges the exact price when the usage is recorded.
"""

from __future__ import annotations

import decimal
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Final

import msgspec

from engine.accounts.settings import Funding
from engine.instants import Instant
from engine.meters import Event, Meter
from engine.numbers import ENGINE_CONTEXT, ZERO
from engine.rating import PeriodRater, PeriodState
from engine.tariffs import TariffVersion
from gateway.cache import LookupCache
from persistence.catalogue import Catalogue, FailurePolicy, Tenant

POLICY_SECONDS: Final = 60.0
MISSING_SECONDS: Final = 1.0
SIZE_MAX: Final = 100_000
DEPTH_MAX: Final = 32
"""The most ancestors walked to find a tenant's payer; a deeper tree is priced as unknown."""
_ESTIMATE_ID: Final = "estimate"


class Pricing:
    """One tariff version compiled without free units, for estimates."""

    def __init__(
        self, tariff: str, version: TariffVersion, meters: dict[str, Meter], time_zone: str
    ) -> None:
        charges = tuple(msgspec.structs.replace(c, free_units=ZERO) for c in version.charges)
        self.tariff = tariff
        self.version = msgspec.structs.replace(version, charges=charges)
        self.meters = meters
        self.time_zone = time_zone
        self._rater: PeriodRater | None = None

    def estimate(
        self,
        meter: str,
        quantity: Decimal,
        properties: dict[str, str],
        duration_seconds: int,
        at: Instant,
    ) -> Decimal | None:
        """The estimated price of the usage, or None if the tariff cannot price it."""
        # The engine's arithmetic needs its own decimal context; a local one leaves the
        # server's thread as it was.
        with decimal.localcontext(ENGINE_CONTEXT):
            rater = self._compiled()
            state = PeriodState(
                period=rater.period_at(at), tariff=self.tariff, version=self.version.version
            )
            event = Event(
                id=_ESTIMATE_ID,
                meter=meter,
                time=at,
                quantity=quantity,
                properties=properties,
                duration_seconds=duration_seconds,
            )
            cost = rater.quote(state, event)
        return max(cost, ZERO) if isinstance(cost, Decimal) else None

    def _compiled(self) -> PeriodRater:
        if self._rater is None:
            self._rater = PeriodRater(self.tariff, self.version, self.meters, self.time_zone)
        return self._rater


class TenantPolicy(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    policy: FailurePolicy
    overdraft_cap: Decimal = ZERO
    session_grant_seconds: int = 3_600
    pricing: Pricing | None = None
    """Only for ``allow_overdraft``; None when no tariff prices the tenant's usage."""


class TenantPolicies:
    """Tenant → its failure policy, cached from the SQL catalogue."""

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        clock: Callable[[], float] = time.time,
        ttl_seconds: float = POLICY_SECONDS,
    ) -> None:
        self.catalogue = catalogue
        self.clock = clock
        self._cache: LookupCache[str, TenantPolicy] = LookupCache(
            "tenant-policies",
            ttl_seconds=ttl_seconds,
            missing_ttl_seconds=MISSING_SECONDS,
            size_max=SIZE_MAX,
            threads_max=2,
        )

    async def of(self, tenant: str) -> TenantPolicy | None:
        """The tenant's policy; None for a tenant the catalogue does not know."""
        return await self._cache.get(tenant, lambda: self._load(tenant))

    def close(self) -> None:
        self._cache.close()

    def _load(self, tenant_id: str) -> TenantPolicy | None:
        tenant = self.catalogue.tenant(tenant_id)
        if tenant is None:
            return None
        if tenant.failure_policy is FailurePolicy.deny or tenant.overdraft_cap is None:
            return TenantPolicy(tenant=tenant.id, policy=FailurePolicy.deny)
        return TenantPolicy(
            tenant=tenant.id,
            policy=tenant.failure_policy,
            overdraft_cap=tenant.overdraft_cap,
            session_grant_seconds=tenant.settings.session_grant_seconds,
            pricing=self._pricing(tenant),
        )

    def _pricing(self, tenant: Tenant) -> Pricing | None:
        payer = self._payer(tenant)
        key = payer.settings.tariff if payer is not None else None
        tariff = self.catalogue.tariff(key) if key is not None else None
        if payer is None or tariff is None:
            return None
        version = tariff.version_at(int(self.clock()))
        if version is None:
            return None
        meters: dict[str, Meter] = {}
        for charge in version.charges:
            meter = self.catalogue.meter(charge.meter)
            if meter is None:
                return None
            meters[meter.key] = meter
        return Pricing(tariff.key, version, meters, payer.settings.time_zone)

    def _payer(self, tenant: Tenant) -> Tenant | None:
        """The nearest tenant on the way to the root with a balance of its own."""
        found: Tenant | None = tenant
        for _ in range(DEPTH_MAX):
            if found is None or found.settings.funding is Funding.own:
                return found
            parent = found.settings.parent
            found = self.catalogue.tenant(parent) if parent is not None else None
        return None
