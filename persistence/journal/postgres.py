"""A journal in Postgres: one row per record in ``meterwerk_journal`` (see ``schema.py``).

One ``append`` is one transaction (a single pipelined ``executemany``, or ``COPY`` for large
batches), and returns after the commit, which with ``synchronous_commit`` other than ``off`` is
flushed to the server's WAL (and, with ``remote_write``/``on`` plus synchronous standbys, to
them). A session that finds ``synchronous_commit = off`` turns it on for itself.

A writer holds a session advisory lock on its host, so a second writer is refused at open; the
primary key fences it in any case. The instance keeps the last sequence in memory: one writer
per host. Uses psycopg 3 directly: this is the hot path, and SQLAlchemy would add only cost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from persistence.hosts import check_host
from persistence.journal._base import (
    BATCH_BYTES_MAX,
    RECORD_BYTES_MAX,
    JournalFailed,
    check_batch,
    check_sequence,
    check_trim,
    gapless,
)
from persistence.journal.schema import JOURNAL_TABLE, POSTGRES_DDL, TRIMMED_TABLE

logger = logging.getLogger(__name__)

READ_CHUNK_RECORDS = 1_000
"""Records per query while reading; memory is at most this many times ``record_bytes_max``."""

COPY_FROM_RECORDS = 64
"""Batches of at least this many records go in with COPY, smaller ones with INSERT."""

_DDL_LOCK = 0x6D77_6A6F_7572_6E6C  # "mwjournl": serialises CREATE TABLE IF NOT EXISTS

_INSERT = f"INSERT INTO {JOURNAL_TABLE} (host, sequence, record) VALUES (%s, %s, %b)"
_COPY = f"COPY {JOURNAL_TABLE} (host, sequence, record) FROM STDIN (FORMAT BINARY)"
_SELECT = (
    f"SELECT sequence, record FROM {JOURNAL_TABLE}"
    " WHERE host = %s AND sequence > %s AND sequence <= %s ORDER BY sequence LIMIT %s"
)
_LAST = (
    f"SELECT greatest((SELECT max(sequence) FROM {JOURNAL_TABLE} WHERE host = %s),"
    f" (SELECT through FROM {TRIMMED_TABLE} WHERE host = %s), 0)"
)
_TRIMMED = f"SELECT coalesce((SELECT through FROM {TRIMMED_TABLE} WHERE host = %s), 0)"
_DELETE = f"DELETE FROM {JOURNAL_TABLE} WHERE host = %s AND sequence <= %s"
_SET_TRIMMED = (
    f"INSERT INTO {TRIMMED_TABLE} (host, through) VALUES (%s, %s) ON CONFLICT (host) DO UPDATE"
    f" SET through = greatest(excluded.through, {TRIMMED_TABLE}.through)"
)
_HOST_LOCK = "SELECT pg_try_advisory_lock(hashtextextended('meterwerk_journal:' || %s, 0))"


class PostgresJournal:
    def __init__(
        self,
        url: str,
        host: str,
        *,
        create_tables: bool = True,
        connect_timeout_seconds: int = 5,
        read_chunk_records: int = READ_CHUNK_RECORDS,
        record_bytes_max: int = RECORD_BYTES_MAX,
        batch_bytes_max: int = BATCH_BYTES_MAX,
    ) -> None:
        self.host = check_host(host)
        self.read_chunk_records = read_chunk_records
        self.record_bytes_max = record_bytes_max
        self.batch_bytes_max = batch_bytes_max
        self._failed: str | None = None
        self._closed = False
        self._connection: psycopg.Connection[Any] = psycopg.connect(
            url, autocommit=True, connect_timeout=connect_timeout_seconds
        )
        try:
            self._prepare(create_tables)
            self._last = int(self._scalar(_LAST, (host, host)))
        except BaseException:
            self._connection.close()
            raise

    def _prepare(self, create_tables: bool) -> None:
        connection = self._connection
        if create_tables:
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                for statement in POSTGRES_DDL:
                    connection.execute(statement)
        if self._scalar("SHOW synchronous_commit") == "off":
            logger.warning("journal: synchronous_commit is off on the server; turning it on")
            connection.execute("SET synchronous_commit = on")
        if not self._scalar(_HOST_LOCK, (self.host,)):
            raise JournalFailed(f"journal host {self.host!r} is open in another writer")

    # The port.

    def append(self, records: Sequence[bytes]) -> int:
        self._check_usable()
        check_batch(records, self.record_bytes_max, self.batch_bytes_max)
        if not records:
            return self._last
        check_sequence(self._last, len(records))
        host, first = self.host, self._last + 1
        try:
            with self._connection.transaction(), self._connection.cursor() as cursor:
                if len(records) >= COPY_FROM_RECORDS:
                    with cursor.copy(_COPY) as copy:
                        copy.set_types(["text", "int8", "bytea"])
                        for sequence, record in enumerate(records, first):
                            copy.write_row((host, sequence, record))
                else:
                    cursor.executemany(
                        _INSERT,
                        [
                            (host, sequence, record)
                            for sequence, record in enumerate(records, first)
                        ],
                    )
        except BaseException as error:
            # A lost connection during COMMIT leaves the outcome unknown, and a key conflict
            # means a second writer: either way this instance's numbering can no longer be
            # trusted.
            self._failed = f"journal {self.host!r}: append failed ({error}); reopen and recover"
            raise JournalFailed(self._failed) from error
        self._last += len(records)
        return self._last

    def read(self, after: int = 0) -> Iterator[tuple[int, bytes]]:
        self._check_usable()
        start = max(after, int(self._scalar(_TRIMMED, (self.host,))))
        return gapless(self._read(start, self._last), start, self._last)

    def trim(self, through: int) -> None:
        self._check_usable()
        check_trim(through, self._last)
        with self._connection.transaction():
            self._connection.execute(_DELETE, (self.host, through))
            self._connection.execute(_SET_TRIMMED, (self.host, through))

    def last_sequence(self) -> int:
        return self._last

    def close(self) -> None:
        self._closed = True
        self._connection.close()  # ends the session, and with it the host's advisory lock

    # Helpers.

    def _read(self, start: int, last: int) -> Iterator[tuple[int, bytes]]:
        after = start
        with self._connection.cursor(binary=True) as cursor:
            while after < last:
                cursor.execute(_SELECT, (self.host, after, last, self.read_chunk_records))
                rows = cursor.fetchall()
                if not rows:
                    return
                for sequence, record in rows:
                    yield sequence, bytes(record)
                after = rows[-1][0]

    def _scalar(self, query: str, params: tuple[Any, ...] | None = None) -> Any:
        """The one value a query that always returns one row returns."""
        row = self._connection.execute(query, params).fetchone()
        assert row is not None
        return row[0]

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError(f"journal {self.host!r} is closed")
        if self._failed is not None:
            raise JournalFailed(self._failed)
