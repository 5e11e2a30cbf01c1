"""The ports the engine's hosts need from storage. ``persistence/`` implements them; tests use
in-memory fakes. Records and snapshots are opaque bytes: what they mean is the engine's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol


class Journal(Protocol):
    """An append-only log of one host's commands, in order, with gapless sequence numbers.

    ``append`` returns only once the records are durable (one flush per call: group commit)
    and gives the sequence number of the last one. ``read`` yields ``(sequence, record)`` after
    a sequence number, in order. ``trim`` forgets records up to a sequence number a stored
    snapshot covers. After a crash, a torn last write is detected and cut, never replayed.
    """

    def append(self, records: Sequence[bytes]) -> int: ...

    def read(self, after: int = 0) -> Iterator[tuple[int, bytes]]: ...

    def trim(self, through: int) -> None: ...

    def last_sequence(self) -> int: ...

    def close(self) -> None: ...


class SnapshotStore(Protocol):
    """The newest snapshot of each host, and the journal sequence number it covers."""

    def save(self, host: str, sequence: int, data: bytes) -> None: ...

    def load(self, host: str) -> tuple[int, bytes] | None: ...

    def close(self) -> None: ...


class StatementQueue(Protocol):
    """Statements of closed periods for the invoice pipeline. ``put`` is idempotent by
    ``(tenant, period_start, revision)``: a host that replays its journal after a crash may
    hand the same statement in again."""

    def put(self, items: Sequence[tuple[str, int, int, bytes]]) -> None: ...

    def close(self) -> None: ...
