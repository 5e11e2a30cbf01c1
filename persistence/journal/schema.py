"""The Postgres tables of the journal, in one place: ``PostgresJournal`` creates them if they
are missing, and the Alembic migration runs the same statements. No driver is imported here.

``meterwerk_journal`` holds the records. ``meterwerk_journal_trimmed`` remembers, per host,
the sequence the last trim went through: once every record is trimmed, it keeps the numbering,
and it tells a reader where the journal now begins."""

from __future__ import annotations

JOURNAL_TABLE = "meterwerk_journal"
TRIMMED_TABLE = "meterwerk_journal_trimmed"

POSTGRES_DDL: tuple[str, ...] = (
    f"""CREATE TABLE IF NOT EXISTS {JOURNAL_TABLE} (
    host text NOT NULL,
    sequence bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (host, sequence)
)""",
    f"""CREATE TABLE IF NOT EXISTS {TRIMMED_TABLE} (
    host text PRIMARY KEY,
    through bigint NOT NULL
)""",
)

POSTGRES_DROP: tuple[str, ...] = (
    f"DROP TABLE IF EXISTS {TRIMMED_TABLE}",
    f"DROP TABLE IF EXISTS {JOURNAL_TABLE}",
)
