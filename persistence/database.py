"""Engines by URL: SQLite (the embedded default) or Postgres through psycopg 3."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url

SQLITE_BUSY_TIMEOUT_SECONDS: Final = 30.0
"""How long a SQLite writer waits for another process's write to finish (hosts share a file)."""
POOL_SIZE: Final = 5
POOL_OVERFLOW_MAX: Final = 5
POOL_TIMEOUT_SECONDS: Final = 30.0


def default_url(data_dir: str | Path) -> str:
    return f"sqlite:///{Path(data_dir) / 'meterwerk.db'}"


def engine_for(url: str | URL) -> Engine:
    """An engine for ``url``. SQLite gets WAL (readers never wait for the writer) and foreign
    keys; ``postgresql://`` means ``postgresql+psycopg://``."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(
            parsed,
            pool_pre_ping=True,
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW_MAX,
            pool_timeout=POOL_TIMEOUT_SECONDS,
        )
    raise ValueError(f"unsupported database {parsed.drivername!r}: use sqlite or postgresql")


def is_file_sqlite(url: URL) -> bool:
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and database not in ("", ":memory:")


def _sqlite_engine(url: URL) -> Engine:
    if is_file_sqlite(url) and url.query.get("uri") is None:
        Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL (the default) syncs every commit: a statement handed over is kept on power loss.
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def check_limit(limit: int, limit_max: int) -> int:
    """A page or batch size between 1 and ``limit_max``, else ValueError."""
    if not 1 <= limit <= limit_max:
        raise ValueError(f"limit must be between 1 and {limit_max}")
    return limit


class Store:
    """What every SQL store shares: an engine (its own, made from a URL, or one passed in and
    shared, which ``close`` then leaves open) and a clock for ``created_at`` columns."""

    def __init__(self, url: str | Engine, *, clock: Clock = utc_now) -> None:
        self._owns_engine = not isinstance(url, Engine)
        self.engine = engine_for(url) if isinstance(url, str) else url
        self.clock = clock

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def insert(self, model: type[Any]) -> postgresql.Insert | sqlite.Insert:
        """An INSERT into ``model``'s table that can say ON CONFLICT, in the engine's dialect."""
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(model)
        return sqlite.insert(model)
