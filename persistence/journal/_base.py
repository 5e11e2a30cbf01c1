"""What every journal backend shares: its errors, its limits and the checks on its inputs."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator, Sequence

RECORD_BYTES_MAX = 1024 * 1024
"""The largest record any backend accepts. A record is one host command, a few hundred bytes."""

BATCH_BYTES_MAX = 64 * 1024 * 1024
"""The largest batch (sum of record sizes) one ``append`` accepts."""

SEQUENCE_MAX = 2**53
"""Sequences stay below 2**53 so that every store (and Lua's doubles in Redis) holds them
exactly. At a million records a second that is 285 years."""

assert array("I").itemsize == 4, "length tables are u32"


class JournalError(Exception):
    """A fault of the journal's storage, not a domain rejection."""


class JournalCorrupt(JournalError):
    """Stored records cannot be read back as they were written: a bad checksum or a gap
    anywhere except a torn tail, which is cut on open instead."""


class JournalFailed(JournalError):
    """An append failed part-way or its outcome is unknown (an I/O error, a lost connection, a
    second writer). The instance refuses further use; reopen it and recover from the newest
    snapshot and the journal, which then holds the batch either wholly or not at all."""


def check_batch(records: Sequence[bytes], record_bytes_max: int, batch_bytes_max: int) -> int:
    """Return the batch's total size in bytes, or raise ValueError for an oversize record or
    batch, before anything is written."""
    sizes = list(map(len, records))
    largest = max(sizes, default=0)
    if largest > record_bytes_max:
        raise ValueError(
            f"journal record {sizes.index(largest)} is {largest} bytes; "
            f"the limit is {record_bytes_max}"
        )
    total = sum(sizes)
    if total > batch_bytes_max:
        raise ValueError(f"journal batch is {total} bytes; the limit is {batch_bytes_max}")
    return total


def length_table(records: Sequence[bytes]) -> bytes:
    """The records' lengths as little-endian u32s: with the records joined back to back, this
    is how a file frame and the Redis append script carry a batch in two strings."""
    lengths = array("I", map(len, records))
    if sys.byteorder != "little":
        lengths.byteswap()
    return lengths.tobytes()


def check_sequence(last: int, count: int) -> None:
    if last + count >= SEQUENCE_MAX:
        raise JournalFailed(f"journal sequence would pass {SEQUENCE_MAX}")


def check_trim(through: int, last: int) -> None:
    """A snapshot covers only records the journal has; trimming past the end is a bug."""
    if through < 0 or through > last:
        raise ValueError(f"cannot trim journal through {through}: its last sequence is {last}")


def gapless(
    records: Iterator[tuple[int, bytes]], after: int, last: int
) -> Iterator[tuple[int, bytes]]:
    """Pass through the records after ``after`` up to ``last``, checking that they are all
    there: a record missing from the middle or the end is corruption, never a silent gap in a
    replay."""
    expected = after + 1
    for sequence, record in records:
        if sequence > last:
            break
        if sequence != expected:
            raise JournalCorrupt(f"journal record {expected} is missing; found {sequence}")
        expected += 1
        yield sequence, record
    if expected <= last:
        raise JournalCorrupt(f"journal ends at {expected - 1}; its last sequence is {last}")
