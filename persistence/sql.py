"""The SQL adapters of the engine's storage ports, and the catalogue and credentials stores.

Every class takes a URL (and then owns its engine) or a shared :class:`sqlalchemy.Engine`.
The schema must exist: call :func:`persistence.migrate.migrate` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec
from sqlalchemy import delete, func, select, update

from persistence.catalogue import Catalogue
from persistence.credentials import ApiKey, ApiKeys, User, Users
from persistence.database import Store, check_limit, engine_for
from persistence.hosts import check_snapshot
from persistence.models import SnapshotRow, StatementQueueRow

__all__ = [
    "ApiKey",
    "ApiKeys",
    "Catalogue",
    "QueuedStatement",
    "SqlSnapshotStore",
    "SqlStatementQueue",
    "User",
    "Users",
    "engine_for",
]

SNAPSHOT_BYTES_MAX: Final = 1024**3
"""Postgres keeps at most 1 GiB in one bytea value."""
STATEMENT_BYTES_MAX: Final = 16 * 1024**2
PUT_CHUNK: Final = 1_000
TAKE_LIMIT_MAX: Final = 10_000


class SqlSnapshotStore(Store):
    """:class:`engine.ports.SnapshotStore` in SQL: one row per host, the newest.

    Saving a snapshot older than the stored one is refused: the journal may already be trimmed
    past it, so it could never be recovered from (two hosts sharing a name would do this).
    """

    def save(self, host: str, sequence: int, data: bytes) -> None:
        check_snapshot(host, sequence, data, SNAPSHOT_BYTES_MAX)
        values = {"host": host, "sequence": sequence, "data": data, "created_at": self.clock()}
        # Write first, read after: a SQLite transaction that reads before it writes can fail
        # outright when another process wrote in between, instead of waiting its turn.
        upsert = self.insert(SnapshotRow).values(values)
        upsert = upsert.on_conflict_do_update(
            index_elements=["host", "sequence"],
            set_={"data": upsert.excluded.data, "created_at": upsert.excluded.created_at},
        )
        with self.engine.begin() as connection:
            connection.execute(upsert)
            newest = connection.execute(
                select(func.max(SnapshotRow.sequence)).where(SnapshotRow.host == host)
            ).scalar_one()
            if newest > sequence:
                raise ValueError(
                    f"host {host!r} already has a snapshot at {newest}, newer than {sequence}"
                )
            connection.execute(
                delete(SnapshotRow).where(SnapshotRow.host == host, SnapshotRow.sequence < sequence)
            )

    def load(self, host: str) -> tuple[int, bytes] | None:
        query = (
            select(SnapshotRow.sequence, SnapshotRow.data)
            .where(SnapshotRow.host == host)
            .order_by(SnapshotRow.sequence.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else (row.sequence, bytes(row.data))


class QueuedStatement(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    tenant: str
    period_start: int
    revision: int
    statement: bytes


class SqlStatementQueue(Store):
    """:class:`engine.ports.StatementQueue` in SQL. ``put`` inserts each
    ``(tenant, period_start, revision)`` once (ON CONFLICT DO NOTHING); ``take`` hands pending
    statements to the invoice pipeline, each to one caller only."""

    def put(self, items: Sequence[tuple[str, int, int, bytes]]) -> None:
        now = self.clock()
        rows = [_queue_row(item, now) for item in items]
        statement = self.insert(StatementQueueRow).on_conflict_do_nothing(
            index_elements=["tenant", "period_start", "revision"]
        )
        with self.engine.begin() as connection:
            for start in range(0, len(rows), PUT_CHUNK):
                connection.execute(statement, rows[start : start + PUT_CHUNK])

    def take(self, limit: int = 100) -> list[QueuedStatement]:
        """Mark up to ``limit`` pending statements taken and return them, oldest first.
        Concurrent callers never get the same statement (on Postgres, rows another caller is
        taking are skipped; SQLite runs one writer at a time)."""
        check_limit(limit, TAKE_LIMIT_MAX)
        queue = StatementQueueRow
        # A CTE, because Postgres may run a subquery in IN once per candidate row, and a
        # LIMIT … SKIP LOCKED run again picks more rows; a CTE that locks rows runs once.
        picked = (
            select(queue.id)
            .where(queue.status == "pending")
            .order_by(queue.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("picked")
        )
        taking = (
            update(queue)
            .where(queue.id.in_(select(picked.c.id)), queue.status == "pending")
            .values(status="taken", taken_at=self.clock())
            .returning(queue.id, queue.tenant, queue.period_start, queue.revision, queue.statement)
        )
        with self.engine.begin() as connection:
            rows = connection.execute(taking).all()
        taken = [
            QueuedStatement(
                id=row.id,
                tenant=row.tenant,
                period_start=row.period_start,
                revision=row.revision,
                statement=bytes(row.statement),
            )
            for row in rows
        ]
        return sorted(taken, key=lambda item: item.id)


def _queue_row(item: tuple[str, int, int, bytes], now: object) -> dict[str, object]:
    tenant, period_start, revision, statement = item
    if not 1 <= len(tenant) <= 64:
        raise ValueError(f"tenant id {tenant!r} must be 1-64 characters")
    if revision < 0:
        raise ValueError(f"statement revision {revision} is negative")
    if len(statement) > STATEMENT_BYTES_MAX:
        raise ValueError(f"statement of {len(statement)} bytes; limit {STATEMENT_BYTES_MAX}")
    return {
        "tenant": tenant,
        "period_start": period_start,
        "revision": revision,
        "statement": statement,
        "status": "pending",
        "created_at": now,
    }
