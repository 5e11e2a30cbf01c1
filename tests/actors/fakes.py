"""In-memory stand-ins for the storage ports, for tests of the host core."""

from __future__ import annotations

from collections.abc import Iterator, Sequence


class MemoryJournal:
    def __init__(self) -> None:
        self.records: list[tuple[int, bytes]] = []
        self.sequence = 0
        self.appends = 0

    def append(self, records: Sequence[bytes]) -> int:
        for record in records:
            self.sequence += 1
            self.records.append((self.sequence, record))
        self.appends += 1
        return self.sequence

    def read(self, after: int = 0) -> Iterator[tuple[int, bytes]]:
        return iter([item for item in self.records if item[0] > after])

    def trim(self, through: int) -> None:
        self.records = [item for item in self.records if item[0] > through]

    def last_sequence(self) -> int:
        return self.sequence

    def close(self) -> None:
        pass


class MemorySnapshots:
    def __init__(self) -> None:
        self.saved: dict[str, tuple[int, bytes]] = {}

    def save(self, host: str, sequence: int, data: bytes) -> None:
        self.saved[host] = (sequence, data)

    def load(self, host: str) -> tuple[int, bytes] | None:
        return self.saved.get(host)

    def close(self) -> None:
        pass


class MemoryStatements:
    def __init__(self) -> None:
        self.items: dict[tuple[str, int, int], bytes] = {}

    def put(self, items: Sequence[tuple[str, int, int, bytes]]) -> None:
        for tenant, start, revision, data in items:
            self.items.setdefault((tenant, start, revision), data)

    def close(self) -> None:
        pass
