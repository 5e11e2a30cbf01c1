"""The tables. Migrations in ``migrations/versions`` create exactly these; a test compares them.

Documents (meters, tariff versions, tenant settings) are stored as the JSON the engine's
Structs encode to, so that the engine alone decides what they mean. Money is :class:`Money`,
never a float. Secrets are stored only as hashes (see ``hashing.py``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from persistence.columns import Document, Money, UtcDateTime

ID_LENGTH: Final = 64
KEY_LENGTH: Final = 64
NAME_LENGTH: Final = 200

NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite gives an autoincrementing rowid only to a column declared exactly INTEGER PRIMARY KEY.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TenantRow(Base):
    """A tenant. ``parent_id``, ``time_zone`` and ``credit_limit`` are copies of fields of
    ``settings`` (the engine's TenantSettings), kept as columns for keys and queries."""

    __tablename__ = "tenants"
    __table_args__ = (
        CheckConstraint("payment_mode IN ('prepaid', 'postpaid')", name="payment_mode"),
        CheckConstraint("failure_policy IN ('deny', 'allow_overdraft')", name="failure_policy"),
        CheckConstraint(
            "(failure_policy = 'allow_overdraft') = (overdraft_cap IS NOT NULL)",
            name="overdraft_cap",
        ),
        Index(None, "root_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    root_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("tenants.id"))
    parent_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id"), index=True
    )
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    currency: Mapped[str] = mapped_column(String(3))
    time_zone: Mapped[str] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(35))
    address_line1: Mapped[str] = mapped_column(String(NAME_LENGTH))
    address_line2: Mapped[str] = mapped_column(String(NAME_LENGTH))
    address_postal_code: Mapped[str] = mapped_column(String(16))
    address_city: Mapped[str] = mapped_column(String(NAME_LENGTH))
    address_region: Mapped[str] = mapped_column(String(NAME_LENGTH))
    address_country: Mapped[str] = mapped_column(String(2))
    vat_id: Mapped[str | None] = mapped_column(String(32))
    payment_mode: Mapped[str] = mapped_column(String(16))
    credit_limit: Mapped[Decimal | None] = mapped_column(Money())
    failure_policy: Mapped[str] = mapped_column(String(16))
    overdraft_cap: Mapped[Decimal | None] = mapped_column(Money())
    settings: Mapped[Any] = mapped_column(Document())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class MeterRow(Base):
    __tablename__ = "meters"

    key: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    document: Mapped[Any] = mapped_column(Document())


class TariffRow(Base):
    __tablename__ = "tariffs"

    key: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))


class TariffVersionRow(Base):
    __tablename__ = "tariff_versions"
    __table_args__ = (
        PrimaryKeyConstraint("tariff_key", "version"),
        CheckConstraint("version >= 1", name="version"),
    )

    tariff_key: Mapped[str] = mapped_column(
        String(KEY_LENGTH), ForeignKey("tariffs.key", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    effective_from: Mapped[datetime] = mapped_column(UtcDateTime())
    document: Mapped[Any] = mapped_column(Document())


class TariffAssignmentRow(Base):
    """From ``effective_from`` on, ``tenant_id`` is billed with ``tariff_key``."""

    __tablename__ = "tariff_assignments"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "effective_from"),)

    tenant_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("tenants.id"))
    tariff_key: Mapped[str] = mapped_column(String(KEY_LENGTH), ForeignKey("tariffs.key"))
    effective_from: Mapped[datetime] = mapped_column(UtcDateTime())


class ApiKeyRow(Base):
    """An API key. ``secret_hash`` is a salted scrypt hash; the plaintext is never stored.
    ``tenant_root`` limits the key to one tenant tree; None makes it an admin key."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[Any] = mapped_column(Document())
    tenant_root: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class StatementQueueRow(Base):
    """Statements of closed periods waiting for the invoice pipeline. One row per
    ``(tenant, period_start, revision)``: a replayed hand-over inserts nothing."""

    __tablename__ = "statement_queue"
    __table_args__ = (
        UniqueConstraint("tenant", "period_start", "revision"),
        CheckConstraint("status IN ('pending', 'taken')", name="status"),
        Index(None, "status", "id"),
    )

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(ID_LENGTH))
    period_start: Mapped[int] = mapped_column(BigInteger)
    revision: Mapped[int] = mapped_column(Integer)
    statement: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    taken_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class SnapshotRow(Base):
    """The newest snapshot of each host (saving one deletes the older ones)."""

    __tablename__ = "snapshots"
    __table_args__ = (
        PrimaryKeyConstraint("host", "sequence"),
        CheckConstraint("sequence >= 0", name="sequence"),
    )

    host: Mapped[str] = mapped_column(String(128))
    sequence: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class JournalRow(Base):
    """The Postgres journal backend's records (``persistence/journal/``, which creates its
    tables itself when they are missing, with the same columns). Primary keys keep the names
    Postgres gives unnamed ones, so that both describe the same tables."""

    __tablename__ = "meterwerk_journal"
    __table_args__ = (PrimaryKeyConstraint("host", "sequence", name="meterwerk_journal_pkey"),)

    host: Mapped[str] = mapped_column(Text)
    sequence: Mapped[int] = mapped_column(BigInteger)
    record: Mapped[bytes] = mapped_column(LargeBinary)


class JournalTrimmedRow(Base):
    """Per host, the sequence the journal's last trim went through."""

    __tablename__ = "meterwerk_journal_trimmed"
    __table_args__ = (PrimaryKeyConstraint("host", name="meterwerk_journal_trimmed_pkey"),)

    host: Mapped[str] = mapped_column(Text)
    through: Mapped[int] = mapped_column(BigInteger)
