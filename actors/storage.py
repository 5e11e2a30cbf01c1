"""Where a host keeps its journal, snapshots and statements, chosen by configuration.

The embedded default needs nothing installed: a file journal and SQLite under one data
directory. Postgres or Redis are chosen by URL.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from actors.host import SNAPSHOT_EVERY_COMMANDS, SNAPSHOT_EVERY_SECONDS
from engine.accounts.tariffs import CatalogTariffs, TariffSource
from engine.ports import Journal, SnapshotStore, StatementQueue
from engine.tariffs import Catalog, decode_catalog


class StorageConfig(msgspec.Struct, frozen=True, kw_only=True):
    data_dir: str
    journal_url: str | None = None
    """None: a file journal under ``data_dir/journal``; or ``postgresql://…``, ``redis://…``."""
    database_url: str | None = None
    """None: SQLite at ``data_dir/meterwerk.db``; or ``postgresql+psycopg://…``."""
    redis_snapshots_url: str | None = None
    """Also keep snapshots in Redis, for a fast warm restart."""
    catalog_path: str | None = None
    """A catalogue document to rate with; None reads the catalogue from the database."""
    snapshot_every_commands: int = SNAPSHOT_EVERY_COMMANDS
    snapshot_every_seconds: float = SNAPSHOT_EVERY_SECONDS
    fsync: bool = True

    @property
    def sql_url(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.data_dir) / 'meterwerk.db'}"


class LayeredSnapshots:
    """Snapshots saved to SQL and to Redis; loaded from whichever is newer."""

    def __init__(self, durable: SnapshotStore, fast: SnapshotStore) -> None:
        self.durable = durable
        self.fast = fast

    def save(self, host: str, sequence: int, data: bytes) -> None:
        self.durable.save(host, sequence, data)
        self.fast.save(host, sequence, data)

    def load(self, host: str) -> tuple[int, bytes] | None:
        found = [s for s in (self.fast.load(host), self.durable.load(host)) if s is not None]
        return max(found, key=lambda snapshot: snapshot[0]) if found else None

    def close(self) -> None:
        self.durable.close()
        self.fast.close()


def open_storage(
    config: StorageConfig, host: str, *, tariffs_only: bool = False
) -> tuple[Journal, SnapshotStore, StatementQueue, TariffSource]:
    from persistence.migrate import migrate
    from persistence.sql import SqlSnapshotStore, SqlStatementQueue

    os.makedirs(config.data_dir, exist_ok=True)
    tariffs = load_tariffs(config)
    if tariffs_only:
        return None, None, None, tariffs  # type: ignore[return-value]
    migrate(config.sql_url)
    journal = open_host_journal(config, host)
    snapshots: SnapshotStore = SqlSnapshotStore(config.sql_url)
    if config.redis_snapshots_url:
        from persistence.redis_snapshots import RedisSnapshotStore

        snapshots = LayeredSnapshots(snapshots, RedisSnapshotStore(config.redis_snapshots_url))
    return journal, snapshots, SqlStatementQueue(config.sql_url), tariffs


def open_host_journal(config: StorageConfig, host: str) -> Journal:
    from persistence.journal import open_journal

    location = config.journal_url or str(Path(config.data_dir) / "journal")
    journal: Journal = open_journal(location, host)
    return journal


def load_tariffs(config: StorageConfig) -> TariffSource:
    if config.catalog_path is not None:
        return CatalogTariffs(decode_catalog(Path(config.catalog_path).read_bytes()))
    from persistence.sql import Catalogue

    catalogue = Catalogue(config.sql_url)
    try:
        meters = tuple(catalogue.list_meters(limit=100_000))
        tariffs = tuple(catalogue.list_tariffs(limit=100_000))
    finally:
        catalogue.close()
    return CatalogTariffs(Catalog(meters=meters, tariffs=tariffs))
