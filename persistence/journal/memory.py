"""An in-memory journal for tests of other packages. Not durable: it lives as long as the
process. ``reopen()`` gives a new instance over the same records, to test recovery."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

from persistence.hosts import check_host
from persistence.journal._base import (
    BATCH_BYTES_MAX,
    RECORD_BYTES_MAX,
    check_batch,
    check_sequence,
    check_trim,
)


class _Storage:
    __slots__ = ("first", "records")

    def __init__(self) -> None:
        self.first = 1  # the sequence of records[0]
        self.records: list[bytes] = []


class MemoryJournal:
    def __init__(
        self,
        host: str = "memory",
        *,
        record_bytes_max: int = RECORD_BYTES_MAX,
        batch_bytes_max: int = BATCH_BYTES_MAX,
        _storage: _Storage | None = None,
    ) -> None:
        self.host = check_host(host)
        self.record_bytes_max = record_bytes_max
        self.batch_bytes_max = batch_bytes_max
        self._storage = _Storage() if _storage is None else _storage
        self._closed = False

    def append(self, records: Sequence[bytes]) -> int:
        self._check_open()
        check_batch(records, self.record_bytes_max, self.batch_bytes_max)
        check_sequence(self.last_sequence(), len(records))
        # Copies, so that a caller reusing a bytearray cannot change what was journalled.
        self._storage.records.extend(bytes(record) for record in records)
        return self.last_sequence()

    def read(self, after: int = 0) -> Iterator[tuple[int, bytes]]:
        self._check_open()
        storage = self._storage
        start = max(after + 1, storage.first)
        # A copy of the references: appends and trims during the read do not change it.
        records = storage.records[start - storage.first :]
        return zip(itertools.count(start), records, strict=False)

    def trim(self, through: int) -> None:
        self._check_open()
        check_trim(through, self.last_sequence())
        storage = self._storage
        if through >= storage.first:
            del storage.records[: through - storage.first + 1]
            storage.first = through + 1

    def last_sequence(self) -> int:
        return self._storage.first + len(self._storage.records) - 1

    def close(self) -> None:
        self._closed = True

    def reopen(self) -> MemoryJournal:
        """A new instance over the same records, as if the process had restarted."""
        self.close()
        return MemoryJournal(
            self.host,
            record_bytes_max=self.record_bytes_max,
            batch_bytes_max=self.batch_bytes_max,
            _storage=self._storage,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("journal is closed")
