"""The catalogue, API keys, users, the statement queue, snapshots and the Postgres journal.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Types are written out here rather than imported from ``persistence.columns``, so that this
revision keeps creating the same tables whatever the models become. Money is NUMERIC(34, 18)
on Postgres and its exact decimal text on SQLite (which has no decimal type).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from persistence.journal.schema import JOURNAL_TABLE, POSTGRES_DDL, TRIMMED_TABLE

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def money() -> sa.types.TypeEngine[Any]:
    return sa.Numeric(34, 18).with_variant(sa.String(36), "sqlite")


def document() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def instant() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("root_id", sa.String(64), nullable=False),
        sa.Column("parent_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("locale", sa.String(35), nullable=False),
        sa.Column("address_line1", sa.String(200), nullable=False),
        sa.Column("address_line2", sa.String(200), nullable=False),
        sa.Column("address_postal_code", sa.String(16), nullable=False),
        sa.Column("address_city", sa.String(200), nullable=False),
        sa.Column("address_region", sa.String(200), nullable=False),
        sa.Column("address_country", sa.String(2), nullable=False),
        sa.Column("vat_id", sa.String(32), nullable=True),
        sa.Column("payment_mode", sa.String(16), nullable=False),
        sa.Column("credit_limit", money(), nullable=True),
        sa.Column("failure_policy", sa.String(16), nullable=False),
        sa.Column("overdraft_cap", money(), nullable=True),
        sa.Column("settings", document(), nullable=False),
        sa.Column("created_at", instant(), nullable=False),
        sa.CheckConstraint(
            "(failure_policy = 'allow_overdraft') = (overdraft_cap IS NOT NULL)",
            name=op.f("ck_tenants_overdraft_cap"),
        ),
        sa.CheckConstraint(
            "failure_policy IN ('deny', 'allow_overdraft')",
            name=op.f("ck_tenants_failure_policy"),
        ),
        sa.CheckConstraint(
            "payment_mode IN ('prepaid', 'postpaid')", name=op.f("ck_tenants_payment_mode")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["tenants.id"], name=op.f("fk_tenants_parent_id_tenants")
        ),
        sa.ForeignKeyConstraint(
            ["root_id"], ["tenants.id"], name=op.f("fk_tenants_root_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )
    op.create_index(op.f("ix_tenants_parent_id"), "tenants", ["parent_id"])
    op.create_index(op.f("ix_tenants_root_id_id"), "tenants", ["root_id", "id"])

    op.create_table(
        "meters",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("document", document(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_meters")),
    )
    op.create_table(
        "tariffs",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_tariffs")),
    )
    op.create_table(
        "tariff_versions",
        sa.Column("tariff_key", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("effective_from", instant(), nullable=False),
        sa.Column("document", document(), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_tariff_versions_version")),
        sa.ForeignKeyConstraint(
            ["tariff_key"],
            ["tariffs.key"],
            name=op.f("fk_tariff_versions_tariff_key_tariffs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tariff_key", "version", name=op.f("pk_tariff_versions")),
    )
    op.create_table(
        "tariff_assignments",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("tariff_key", sa.String(64), nullable=False),
        sa.Column("effective_from", instant(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tariff_key"], ["tariffs.key"], name=op.f("fk_tariff_assignments_tariff_key_tariffs")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_tariff_assignments_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "effective_from", name=op.f("pk_tariff_assignments")),
    )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(200), nullable=False),
        sa.Column("scopes", document(), nullable=False),
        sa.Column("tenant_root", sa.String(64), nullable=True),
        sa.Column("created_at", instant(), nullable=False),
        sa.Column("revoked_at", instant(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_root"], ["tenants.id"], name=op.f("fk_api_keys_tenant_root_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    op.create_index(op.f("ix_api_keys_tenant_root"), "api_keys", ["tenant_root"])
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("created_at", instant(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )

    op.create_table(
        "statement_queue",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("statement", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("created_at", instant(), nullable=False),
        sa.Column("taken_at", instant(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'taken')", name=op.f("ck_statement_queue_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statement_queue")),
        sa.UniqueConstraint(
            "tenant",
            "period_start",
            "revision",
            name=op.f("uq_statement_queue_tenant_period_start_revision"),
        ),
    )
    op.create_index(op.f("ix_statement_queue_status_id"), "statement_queue", ["status", "id"])

    op.create_table(
        "snapshots",
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", instant(), nullable=False),
        sa.CheckConstraint("sequence >= 0", name=op.f("ck_snapshots_sequence")),
        sa.PrimaryKeyConstraint("host", "sequence", name=op.f("pk_snapshots")),
    )

    create_journal_tables()


def create_journal_tables() -> None:
    """The Postgres journal backend creates its tables itself if they are missing, with the
    statements in ``persistence/journal/schema.py``; on Postgres this runs the same ones. On
    SQLite (which uses the file journal) the tables exist only to match the models."""
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES_DDL:
            op.execute(statement)
        return
    existing = sa.inspect(op.get_bind())
    if not existing.has_table(JOURNAL_TABLE):
        op.create_table(
            JOURNAL_TABLE,
            sa.Column("host", sa.Text(), nullable=False),
            sa.Column("sequence", sa.BigInteger(), nullable=False),
            sa.Column("record", sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint("host", "sequence", name=f"{JOURNAL_TABLE}_pkey"),
        )
    if not existing.has_table(TRIMMED_TABLE):
        op.create_table(
            TRIMMED_TABLE,
            sa.Column("host", sa.Text(), nullable=False),
            sa.Column("through", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("host", name=f"{TRIMMED_TABLE}_pkey"),
        )


def downgrade() -> None:
    op.drop_table(TRIMMED_TABLE)
    op.drop_table(JOURNAL_TABLE)
    op.drop_table("snapshots")
    op.drop_index(op.f("ix_statement_queue_status_id"), table_name="statement_queue")
    op.drop_table("statement_queue")
    op.drop_table("users")
    op.drop_index(op.f("ix_api_keys_tenant_root"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tariff_assignments")
    op.drop_table("tariff_versions")
    op.drop_table("tariffs")
    op.drop_table("meters")
    op.drop_index(op.f("ix_tenants_root_id_id"), table_name="tenants")
    op.drop_index(op.f("ix_tenants_parent_id"), table_name="tenants")
    op.drop_table("tenants")
