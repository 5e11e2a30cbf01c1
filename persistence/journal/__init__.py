"""Journal backends for ``engine.ports.Journal``: one journal per host, records as opaque bytes.

- ``FileJournal``: checksummed segment files with one write and one fdatasync per append.
- ``PostgresJournal``: one row per record, one transaction per append.
- ``RedisStreamJournal``: one stream per host, one atomic script per append.
- ``MemoryJournal``: for tests of other packages; not durable.

``open_journal(location, host)`` picks one by its location. The Postgres and Redis drivers are
imported only when such a journal is opened.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from persistence.journal._base import (
    BATCH_BYTES_MAX,
    RECORD_BYTES_MAX,
    JournalCorrupt,
    JournalError,
    JournalFailed,
)
from persistence.journal.file import FileJournal
from persistence.journal.memory import MemoryJournal

if TYPE_CHECKING:
    from engine.ports import Journal
    from persistence.journal.postgres import PostgresJournal
    from persistence.journal.redis_stream import RedisStreamJournal

__all__ = [
    "BATCH_BYTES_MAX",
    "RECORD_BYTES_MAX",
    "FileJournal",
    "JournalCorrupt",
    "JournalError",
    "JournalFailed",
    "MemoryJournal",
    "PostgresJournal",
    "RedisStreamJournal",
    "open_journal",
]

_POSTGRES_SCHEMES = ("postgresql", "postgres")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def open_journal(location: str | os.PathLike[str], host: str, **options: Any) -> Journal:
    """Open the journal of ``host`` at ``location``:

    - ``file:///var/lib/meterwerk/journal`` or a plain directory path: ``FileJournal``
    - ``postgresql://user@db/meterwerk`` (or ``postgres://``): ``PostgresJournal``
    - ``redis://cache:6379/0`` (or ``rediss://``, ``unix://``): ``RedisStreamJournal``

    ``options`` go to the backend's constructor (``fsync``, ``replicas_ack``, limits).
    """
    text = os.fspath(location)
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme in ("", "file"):
        directory = unquote(urlsplit(text).path) if scheme else text
        if not directory:
            raise ValueError(f"journal location {text!r} names no directory")
        return FileJournal(directory, host, **options)
    if scheme in _POSTGRES_SCHEMES:
        from persistence.journal.postgres import PostgresJournal

        return PostgresJournal(text, host, **options)
    if scheme in _REDIS_SCHEMES:
        from persistence.journal.redis_stream import RedisStreamJournal

        return RedisStreamJournal(text, host, **options)
    raise ValueError(
        f"journal location {text!r}: expected a directory, file://, postgresql:// or redis://"
    )


def __getattr__(name: str) -> Any:
    # The drivers load on first use, so that a file journal needs neither psycopg nor redis.
    if name == "PostgresJournal":
        from persistence.journal.postgres import PostgresJournal

        return PostgresJournal
    if name == "RedisStreamJournal":
        from persistence.journal.redis_stream import RedisStreamJournal

        return RedisStreamJournal
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
