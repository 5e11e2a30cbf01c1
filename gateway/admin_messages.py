"""What the admin API accepts and answers, as msgspec Structs.

Requests forbid unknown fields and carry their limits in their types. Meters, tariffs and
tariff versions travel as the engine's own documents (``engine.meters.Meter``,
``engine.tariffs.Tariff``, ``engine.tariffs.TariffVersion``; see ``docs/tariffs.md``), so that
the engine alone decides what they mean; tenant settings are the engine's
``TenantSettings``. Lists are pages in key order: ``next`` is the ``after`` of the next page,
null on the last one.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Final

import msgspec

from engine.accounts import CreditKind, TenantSettings, TopUp
from engine.accounts.commands import Id, TenantId
from engine.instants import Instant
from engine.meters import Key, Meter
from engine.pricing.base import check_price
from engine.tariffs import PaymentMode, Tariff
from gateway.keys import Scope
from gateway.messages import Timestamp, instant_of
from persistence.catalogue import BillingAddress, FailurePolicy, Tenant

PAGE_LIMIT_DEFAULT: Final = 100
PAGE_LIMIT_MAX: Final = 1_000
CHILDREN_MAX: Final = 100
"""Children listed with a tenant; the rest page through ``GET /v1/admin/tenants?parent=``."""
QUOTAS_MAX: Final = 64
BALANCE_ALERTS_MAX: Final = 16

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Line = Annotated[str, msgspec.Meta(max_length=200)]
Cursor = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=PAGE_LIMIT_MAX)]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
Locale = Annotated[str, msgspec.Meta(min_length=2, max_length=35)]
VatId = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


class _In(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class _Out(msgspec.Struct, frozen=True, kw_only=True):
    pass


# Pages --------------------------------------------------------------------------------------


class PageQuery(_In, frozen=True, kw_only=True):
    """The query of a list: at most ``limit`` items with keys after ``after``."""

    limit: Limit = PAGE_LIMIT_DEFAULT
    after: Cursor | None = None


class TenantQuery(PageQuery, frozen=True, kw_only=True):
    root: TenantId | None = None
    """Only the tenants of this tree."""
    parent: TenantId | None = None
    """Only the children of this tenant."""


class KeyQuery(PageQuery, frozen=True, kw_only=True):
    tenant_root: TenantId | None = None
    """Only the application keys of this tree."""


# Tenants ------------------------------------------------------------------------------------


class Address(_In, frozen=True, kw_only=True):
    line1: Line = ""
    line2: Line = ""
    postal_code: Annotated[str, msgspec.Meta(max_length=16)] = ""
    city: Line = ""
    region: Line = ""
    country: Annotated[str, msgspec.Meta(pattern=r"^([A-Z]{2})?$")] = ""
    """ISO 3166-1 alpha-2, or empty."""

    def billing(self) -> BillingAddress:
        return BillingAddress(**msgspec.structs.asdict(self))

    @classmethod
    def of(cls, address: BillingAddress) -> Address:
        return cls(**msgspec.structs.asdict(address))


class TenantFields(_In, frozen=True, kw_only=True):
    """A tenant's settings as ``PUT /v1/admin/tenants/{tenant}`` replaces them. The parent
    (``settings.parent``) and the funding are fixed when the tenant is created."""

    name: Name
    currency: Currency
    settings: TenantSettings
    locale: Locale = "en"
    address: Address = Address()
    vat_id: VatId | None = None
    payment_mode: PaymentMode = PaymentMode.prepaid
    failure_policy: FailurePolicy = FailurePolicy.deny
    overdraft_cap: Decimal | None = None
    """Required with ``allow_overdraft``, and only with it."""

    def __post_init__(self) -> None:
        if len(self.settings.quotas) > QUOTAS_MAX:
            raise ValueError(f"settings.quotas: at most {QUOTAS_MAX}")
        if len(self.settings.balance_alerts) > BALANCE_ALERTS_MAX:
            raise ValueError(f"settings.balance_alerts: at most {BALANCE_ALERTS_MAX}")

    def tenant(self, tenant_id: str) -> Tenant:
        """The catalogue's tenant; raises ValueError naming the field (an unknown currency or
        time zone) for what the types alone do not check."""
        return Tenant(
            id=tenant_id,
            name=self.name,
            currency=self.currency,
            settings=self.settings,
            locale=self.locale,
            address=self.address.billing(),
            vat_id=self.vat_id,
            payment_mode=self.payment_mode,
            failure_policy=self.failure_policy,
            overdraft_cap=self.overdraft_cap,
        )


class TenantCreate(TenantFields, frozen=True, kw_only=True):
    """A new tenant: a root (no ``settings.parent``) or a sub-tenant of ``settings.parent``,
    with a balance of its own (``settings.funding: own``, needs a tariff) or drawing from its
    parent's (``pool``, optionally capped per period by ``settings.cap``)."""

    id: TenantId


class TenantView(_Out, frozen=True, kw_only=True):
    id: str
    name: str
    currency: str
    settings: TenantSettings
    locale: str
    address: Address
    vat_id: str | None
    payment_mode: PaymentMode
    failure_policy: FailurePolicy
    overdraft_cap: Decimal | None

    @classmethod
    def of(cls, tenant: Tenant) -> TenantView:
        return cls(
            id=tenant.id,
            name=tenant.name,
            currency=tenant.currency,
            settings=tenant.settings,
            locale=tenant.locale,
            address=Address.of(tenant.address),
            vat_id=tenant.vat_id,
            payment_mode=tenant.payment_mode,
            failure_policy=tenant.failure_policy,
            overdraft_cap=tenant.overdraft_cap,
        )


class TenantDetail(TenantView, frozen=True, kw_only=True):
    root: str
    """The root of the tenant's tree: what places it on a host, and what an application key
    names."""
    children: list[str]
    """The first ``CHILDREN_MAX`` children's ids, in order."""
    children_next: str | None
    """If there are more: ``after`` for ``GET /v1/admin/tenants?parent=<id>``."""

    @classmethod
    def of_tree(
        cls, tenant: Tenant, root: str, children: list[str], children_next: str | None
    ) -> TenantDetail:
        view = msgspec.structs.asdict(TenantView.of(tenant))
        return cls(**view, root=root, children=children, children_next=children_next)


class TenantPage(_Out, frozen=True, kw_only=True):
    items: list[TenantView]
    next: str | None


class TariffAssignmentRequest(_In, frozen=True, kw_only=True):
    """Bill the tenant with ``tariff`` from its next period on (at once if it had none);
    null drops a pooled tenant's tariff."""

    tariff: Key | None


class CreditRequest(_In, frozen=True, kw_only=True):
    """A top-up or credit grant. ``id`` makes it idempotent: a retry with the same id and
    content gets the original answer; the same id with other content is 409."""

    id: Id
    amount: Decimal
    kind: CreditKind = CreditKind.paid
    priority: Annotated[int, msgspec.Meta(ge=0, le=1_000)] = 100
    """Lower is spent first."""
    expires_at: Timestamp | None = None
    """When the unspent rest lapses (seconds since the epoch, or RFC 3339); null: never."""

    def __post_init__(self) -> None:
        check_price("amount", self.amount)
        if self.amount <= 0:
            raise ValueError("amount: must be greater than zero")

    def command(self, tenant: str, now: Instant) -> TopUp:
        return TopUp(
            id=self.id,
            tenant=tenant,
            time=now,
            amount=self.amount,
            kind=self.kind,
            priority=self.priority,
            expires_at=instant_of(self.expires_at),
        )


# Meters and tariffs -------------------------------------------------------------------------


class MeterPage(_Out, frozen=True, kw_only=True):
    items: list[Meter]
    next: str | None


class TariffPage(_Out, frozen=True, kw_only=True):
    items: list[Tariff]
    next: str | None


class Problem(_Out, frozen=True, kw_only=True):
    field: str
    message: str


class TariffValidation(_Out, frozen=True, kw_only=True):
    """Whether ``POST /v1/admin/tariffs`` would accept the document: a document that does
    not decode is 422 instead, naming the field."""

    valid: bool
    problems: list[Problem]


# API keys -----------------------------------------------------------------------------------


class KeyCreate(_In, frozen=True, kw_only=True):
    """``["admin"]`` without a tenant: every route, every tenant. ``["usage"]`` with the root
    of a tenant tree: the hot-path routes for that tree's tenants."""

    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=2)]
    tenant_root: TenantId | None = None

    def __post_init__(self) -> None:
        if len(set(self.scopes)) != len(self.scopes):
            raise ValueError("scopes: each scope once")
        if Scope.admin in self.scopes and self.tenant_root is not None:
            raise ValueError("tenant_root: an admin key acts for every tenant; leave it out")
        if Scope.admin not in self.scopes and self.tenant_root is None:
            raise ValueError("tenant_root: an application key names the root of its tree")


class KeyView(_Out, frozen=True, kw_only=True):
    """A key as it is listed: never its secret."""

    id: str
    prefix: str
    """The first characters of the key, to recognise it."""
    scopes: list[str]
    tenant_root: str | None
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyView, frozen=True, kw_only=True):
    key: str
    """The whole key, ``mwk_<id>_<secret>``: shown in this answer only, stored as a hash."""


class KeyPage(_Out, frozen=True, kw_only=True):
    items: list[KeyView]
    next: str | None
