"""The catalogue in SQL: meters, tariffs with their versions, tenants, tariff assignments.

Documents are stored as the JSON the engine's Structs encode to and decoded back into them, so
the engine's checks run on every load as on every save. Lists are pages in key order: pass
the last key of a page as ``after`` to get the next (keyset pagination).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

import msgspec
from sqlalchemy import Connection, select

from engine.accounts.settings import TenantSettings
from engine.currencies import MINOR_UNITS
from engine.meters import Meter
from engine.periods import UnknownTimeZone, zone
from engine.pricing.base import check_price
from engine.tariffs import Catalog, PaymentMode, Tariff, TariffVersion, problems
from persistence.database import Store, check_limit
from persistence.models import (
    MeterRow,
    TariffAssignmentRow,
    TariffRow,
    TariffVersionRow,
    TenantRow,
)

LIST_LIMIT_MAX: Final = 100_000
"""The most rows one page may hold; a host loads the whole catalogue as one page."""
LINEAGE_MAX: Final = 64
"""The deepest a tenant may be nested; a longer chain of parents is a fault in the data."""
TENANT_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
LOCALE_PATTERN: Final = re.compile(r"[a-z]{2,3}([_-][A-Za-z0-9]{2,8})*")
COUNTRY_PATTERN: Final = re.compile(r"([A-Z]{2})?")


class FailurePolicy(StrEnum):
    """What the gateway does for a tenant whose host cannot be reached (RFC 4006 failure
    handling): deny, or allow up to ``overdraft_cap`` of unconfirmed spending."""

    deny = "deny"
    allow_overdraft = "allow_overdraft"


class BillingAddress(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    line1: str = ""
    line2: str = ""
    postal_code: str = ""
    city: str = ""
    region: str = ""
    country: str = ""
    """ISO 3166-1 alpha-2, or empty."""

    def __post_init__(self) -> None:
        if not COUNTRY_PATTERN.fullmatch(self.country):
            raise ValueError(f"country: {self.country!r} is not an ISO 3166-1 alpha-2 code")


class Tenant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tenant as the catalogue keeps it: the engine's settings and what billing needs.
    Its parent, time zone and credit limit are those of ``settings``."""

    id: str
    name: str
    currency: str
    settings: TenantSettings
    locale: str = "en"
    address: BillingAddress = BillingAddress()
    vat_id: str | None = None
    payment_mode: PaymentMode = PaymentMode.prepaid
    failure_policy: FailurePolicy = FailurePolicy.deny
    overdraft_cap: Decimal | None = None

    def __post_init__(self) -> None:
        if not TENANT_ID_PATTERN.fullmatch(self.id):
            raise ValueError(f"id: {self.id!r} must be 1-64 letters, digits or '_.:-'")
        if not 1 <= len(self.name) <= 200:
            raise ValueError("name: 1-200 characters")
        if self.currency not in MINOR_UNITS:
            raise ValueError(f"currency: unknown ISO 4217 currency {self.currency!r}")
        if not LOCALE_PATTERN.fullmatch(self.locale):
            raise ValueError(f"locale: {self.locale!r} is not a locale such as de_DE")
        try:
            zone(self.settings.time_zone)
        except UnknownTimeZone:
            raise ValueError(
                f"settings.time_zone: unknown IANA time zone {self.settings.time_zone!r}"
            ) from None
        if self.vat_id is not None and not 1 <= len(self.vat_id) <= 32:
            raise ValueError("vat_id: 1-32 characters")
        if (self.failure_policy is FailurePolicy.allow_overdraft) != (
            self.overdraft_cap is not None
        ):
            raise ValueError("overdraft_cap: required with allow_overdraft, and only with it")
        if self.overdraft_cap is not None:
            check_price("overdraft_cap", self.overdraft_cap)

    @property
    def parent(self) -> str | None:
        return self.settings.parent


class TariffAssignment(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    tariff: str
    effective_from: datetime


class Catalogue(Store):
    # Meters ---------------------------------------------------------------------------------

    def save_meter(self, meter: Meter) -> None:
        """Add or replace a meter. A change that a stored tariff's charges do not allow (a
        time basis on a meter that stops summing) is refused."""
        with self.engine.begin() as connection:
            if _exists(connection, MeterRow.key, meter.key):
                _check_tariffs_with(connection, meter)
            self._upsert(connection, MeterRow, {"key": meter.key, "document": _builtins(meter)})

    def meter(self, key: str) -> Meter | None:
        with self.engine.connect() as connection:
            document = connection.scalar(select(MeterRow.document).where(MeterRow.key == key))
        return None if document is None else msgspec.convert(document, type=Meter)

    def list_meters(self, *, limit: int = 100, after: str | None = None) -> list[Meter]:
        query = (
            select(MeterRow.document)
            .order_by(MeterRow.key)
            .limit(check_limit(limit, LIST_LIMIT_MAX))
        )
        if after is not None:
            query = query.where(MeterRow.key > after)
        with self.engine.connect() as connection:
            documents = connection.scalars(query).all()
        return [msgspec.convert(document, type=Meter) for document in documents]

    # Tariffs --------------------------------------------------------------------------------

    def save_tariff(self, tariff: Tariff) -> None:
        """Add or replace a tariff and its versions. Every charge's meter must be stored, and
        a stored version cannot be removed: periods already rated with it keep pointing at it.
        Whether a stored version may still change is for the caller, who knows the time."""
        with self.engine.begin() as connection:
            _check_meters_of(connection, tariff)
            self._upsert(connection, TariffRow, {"key": tariff.key, "name": tariff.name})
            stored = set(
                connection.scalars(
                    select(TariffVersionRow.version).where(
                        TariffVersionRow.tariff_key == tariff.key
                    )
                )
            )
            removed = sorted(stored - {version.version for version in tariff.versions})
            if removed:
                raise ValueError(f"versions: stored versions {removed} cannot be removed")
            for version in tariff.versions:
                self._upsert(connection, TariffVersionRow, _version_row(tariff.key, version))

    def tariff(self, key: str) -> Tariff | None:
        found = self._tariffs(select(TariffRow).where(TariffRow.key == key))
        return found[0] if found else None

    def list_tariffs(self, *, limit: int = 100, after: str | None = None) -> list[Tariff]:
        query = select(TariffRow).order_by(TariffRow.key).limit(check_limit(limit, LIST_LIMIT_MAX))
        if after is not None:
            query = query.where(TariffRow.key > after)
        return self._tariffs(query)

    def catalog(self) -> Catalog:
        """The whole catalogue, checked as one document (what an account host rates with)."""
        meters = self.list_meters(limit=LIST_LIMIT_MAX)
        tariffs = self.list_tariffs(limit=LIST_LIMIT_MAX)
        return Catalog(meters=tuple(meters), tariffs=tuple(tariffs))

    def _tariffs(self, query: Any) -> list[Tariff]:
        with self.engine.connect() as connection:
            tariffs = connection.execute(query).all()
            keys = [row.key for row in tariffs]
            versions = connection.execute(
                select(TariffVersionRow.tariff_key, TariffVersionRow.document)
                .where(TariffVersionRow.tariff_key.in_(keys))
                .order_by(TariffVersionRow.tariff_key, TariffVersionRow.version)
            ).all()
        by_tariff: dict[str, list[TariffVersion]] = {key: [] for key in keys}
        for row in versions:
            by_tariff[row.tariff_key].append(msgspec.convert(row.document, type=TariffVersion))
        return [
            Tariff(key=row.key, name=row.name, versions=tuple(by_tariff[row.key]))
            for row in tariffs
        ]

    # Tenants --------------------------------------------------------------------------------

    def save_tenant(self, tenant: Tenant) -> None:
        """Add a tenant, or change one. Its parent must be stored already and cannot change:
        a tenant stays in the tree (and on the host) it was created in."""
        with self.engine.begin() as connection:
            existing = connection.execute(
                select(TenantRow.parent_id, TenantRow.created_at).where(TenantRow.id == tenant.id)
            ).first()
            if existing is not None and existing.parent_id != tenant.parent:
                raise ValueError(f"settings.parent: tenant {tenant.id!r} cannot change parent")
            tariff = tenant.settings.tariff
            if tariff is not None and not _exists(connection, TariffRow.key, tariff):
                raise ValueError(f"settings.tariff: unknown tariff {tariff!r}")
            root = tenant.id if tenant.parent is None else _root_of(connection, tenant.parent)
            row = _tenant_row(tenant, root)
            row["created_at"] = existing.created_at if existing is not None else self.clock()
            self._upsert(connection, TenantRow, row)

    def tenant(self, tenant_id: str) -> Tenant | None:
        found = self._tenants(select(TenantRow).where(TenantRow.id == tenant_id))
        return found[0] if found else None

    def root_of(self, tenant_id: str) -> str | None:
        """The root of the tenant's tree (what places it on a host), or None if unknown."""
        with self.engine.connect() as connection:
            return connection.scalar(select(TenantRow.root_id).where(TenantRow.id == tenant_id))

    def lineage(self, tenant_id: str) -> tuple[str, ...] | None:
        """The tenant's ancestors and itself, root first (what an API key's scope is checked
        against), or None if the tenant is unknown."""
        found: list[str] = []
        with self.engine.connect() as connection:
            current: str | None = tenant_id
            while current is not None:
                if len(found) >= LINEAGE_MAX:
                    raise ValueError(f"tenant {tenant_id!r} is nested deeper than {LINEAGE_MAX}")
                row = connection.execute(
                    select(TenantRow.parent_id).where(TenantRow.id == current)
                ).first()
                if row is None:
                    return None
                found.append(current)
                current = row.parent_id
        return tuple(reversed(found))

    def list_tenants(
        self,
        *,
        limit: int = 100,
        after: str | None = None,
        root: str | None = None,
        parent: str | None = None,
    ) -> list[Tenant]:
        """A page of tenants by id; with ``root``, only that tree's; with ``parent``, only
        that tenant's children."""
        query = select(TenantRow).order_by(TenantRow.id).limit(check_limit(limit, LIST_LIMIT_MAX))
        if after is not None:
            query = query.where(TenantRow.id > after)
        if root is not None:
            query = query.where(TenantRow.root_id == root)
        if parent is not None:
            query = query.where(TenantRow.parent_id == parent)
        return self._tenants(query)

    def _tenants(self, query: Any) -> list[Tenant]:
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [_tenant(row) for row in rows]

    # Tariff assignments ---------------------------------------------------------------------

    def assign_tariff(self, tenant: str, tariff: str, effective_from: datetime) -> None:
        with self.engine.begin() as connection:
            row = {"tenant_id": tenant, "tariff_key": tariff, "effective_from": effective_from}
            self._upsert(connection, TariffAssignmentRow, row)

    def assignments(self, tenant: str) -> list[TariffAssignment]:
        query = (
            select(TariffAssignmentRow)
            .where(TariffAssignmentRow.tenant_id == tenant)
            .order_by(TariffAssignmentRow.effective_from)
            .limit(LIST_LIMIT_MAX)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [
            TariffAssignment(
                tenant=row.tenant_id, tariff=row.tariff_key, effective_from=row.effective_from
            )
            for row in rows
        ]

    def _upsert(self, connection: Connection, model: Any, values: dict[str, Any]) -> None:
        keys = [column.name for column in model.__table__.primary_key.columns]
        statement = self.insert(model).values(values)
        changes = {name: statement.excluded[name] for name in values if name not in keys}
        if changes:
            statement = statement.on_conflict_do_update(index_elements=keys, set_=changes)
        else:
            statement = statement.on_conflict_do_nothing(index_elements=keys)
        connection.execute(statement)


def _builtins(struct: msgspec.Struct) -> Any:
    return msgspec.to_builtins(struct)


def _exists(connection: Connection, column: Any, value: str) -> bool:
    return connection.scalar(select(column).where(column == value)) is not None


def _version_row(tariff_key: str, version: TariffVersion) -> dict[str, Any]:
    return {
        "tariff_key": tariff_key,
        "version": version.version,
        "effective_from": version.effective_from,
        "document": _builtins(version),
    }


def _meter_keys(tariff: Tariff) -> set[str]:
    return {charge.meter for version in tariff.versions for charge in version.charges}


def _check_meters_of(connection: Connection, tariff: Tariff) -> None:
    documents = connection.scalars(
        select(MeterRow.document).where(MeterRow.key.in_(_meter_keys(tariff)))
    )
    meters = {meter.key: meter for meter in _meters(documents)}
    _raise_first(tariff, meters)


def _check_tariffs_with(connection: Connection, meter: Meter) -> None:
    keys = connection.scalars(select(TariffRow.key)).all()
    for key in keys:
        versions = connection.scalars(
            select(TariffVersionRow.document)
            .where(TariffVersionRow.tariff_key == key)
            .order_by(TariffVersionRow.version)
        ).all()
        tariff = Tariff(
            key=key,
            versions=tuple(msgspec.convert(document, type=TariffVersion) for document in versions),
        )
        if meter.key in _meter_keys(tariff):
            _raise_first(tariff, {meter.key: meter})


def _raise_first(tariff: Tariff, meters: dict[str, Meter]) -> None:
    found = problems(tariff, meters)
    if found:
        field, message = found[0]
        raise ValueError(f"tariff {tariff.key!r}: {field}: {message}")


def _meters(documents: Iterable[Any]) -> list[Meter]:
    return [msgspec.convert(document, type=Meter) for document in documents]


def _root_of(connection: Connection, parent: str) -> str:
    root = connection.scalar(select(TenantRow.root_id).where(TenantRow.id == parent))
    if root is None:
        raise ValueError(f"settings.parent: unknown tenant {parent!r}")
    return root


def _tenant_row(tenant: Tenant, root: str) -> dict[str, Any]:
    address = tenant.address
    return {
        "id": tenant.id,
        "root_id": root,
        "parent_id": tenant.parent,
        "name": tenant.name,
        "currency": tenant.currency,
        "time_zone": tenant.settings.time_zone,
        "locale": tenant.locale,
        "address_line1": address.line1,
        "address_line2": address.line2,
        "address_postal_code": address.postal_code,
        "address_city": address.city,
        "address_region": address.region,
        "address_country": address.country,
        "vat_id": tenant.vat_id,
        "payment_mode": tenant.payment_mode.value,
        "credit_limit": tenant.settings.credit_limit,
        "failure_policy": tenant.failure_policy.value,
        "overdraft_cap": tenant.overdraft_cap,
        "settings": _builtins(tenant.settings),
    }


def _tenant(row: Any) -> Tenant:
    settings = msgspec.convert(row.settings, type=TenantSettings)
    assert settings.parent == row.parent_id, f"tenant {row.id}: parent column disagrees"
    return Tenant(
        id=row.id,
        name=row.name,
        currency=row.currency,
        settings=settings,
        locale=row.locale,
        address=BillingAddress(
            line1=row.address_line1,
            line2=row.address_line2,
            postal_code=row.address_postal_code,
            city=row.address_city,
            region=row.address_region,
            country=row.address_country,
        ),
        vat_id=row.vat_id,
        payment_mode=PaymentMode(row.payment_mode),
        failure_policy=FailurePolicy(row.failure_policy),
        overdraft_cap=row.overdraft_cap,
    )
