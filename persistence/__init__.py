"""Storage for meterwerk: the catalogue, credentials, statement queue and snapshots in SQL
(SQLite by default, Postgres by URL), snapshots in Redis, and the journal backends
(``persistence.journal``). ``persistence.migrate.migrate(url)`` creates or upgrades the
schema. See README.md beside this file."""

from persistence.catalogue import BillingAddress, Catalogue, FailurePolicy, Tenant
from persistence.credentials import ApiKey, ApiKeys, User, Users
from persistence.database import default_url, engine_for
from persistence.sql import QueuedStatement, SqlSnapshotStore, SqlStatementQueue

__all__ = [
    "ApiKey",
    "ApiKeys",
    "BillingAddress",
    "Catalogue",
    "FailurePolicy",
    "QueuedStatement",
    "SqlSnapshotStore",
    "SqlStatementQueue",
    "Tenant",
    "User",
    "Users",
    "default_url",
    "engine_for",
]
