"""A journal in local segment files, one directory per host.

Layout: ``{directory}/{host}/`` holds segment files named by the sequence of their first record
(``00000000000000000001.seg``), a ``trimmed`` file with the sequence the last trim went
through, and a ``lock`` file that keeps a second writer out. A segment starts with an 8-byte
magic that names the format version, then one frame per ``append``::

    frame := body_bytes u32 | count u32 | first_sequence u64 | crc32 u32      (little-endian)
             | record lengths (count x u32) | the records, back to back

``body_bytes`` counts the lengths and the records. The CRC32 (zlib) covers the first 16 header
bytes and the body, so every record is checksummed, and the whole batch is checked in one pass
of C code instead of a Python loop per record. One ``append`` is one write (``os.writev``) and
one ``fdatasync`` (group commit), so after a crash only the last frame can be torn. On open the
last segment is scanned, and everything from its first frame that is short, has a bad checksum
or breaks the sequence is cut (with a warning): a torn batch goes whole, never half replayed,
as it was never acknowledged. A bad frame in an older segment is not a torn write: reading it
raises ``JournalCorrupt``.

Segments rotate at ``segment_bytes_max``, so ``trim`` deletes whole segments whose records a
snapshot covers; the last segment is always kept, and with it the numbering.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import sys
import zlib
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from persistence.hosts import check_host
from persistence.journal._base import (
    BATCH_BYTES_MAX,
    RECORD_BYTES_MAX,
    JournalCorrupt,
    JournalFailed,
    check_batch,
    check_sequence,
    check_trim,
    gapless,
    length_table,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

SEGMENT_BYTES_MAX = 64 * 1024 * 1024
MAGIC = b"MWJRNL01"
_FRAME_PREFIX = struct.Struct("<IIQ")  # body_bytes, count, first_sequence
_FRAME_HEADER = struct.Struct("<IIQI")  # ... and the CRC32
_CRC = struct.Struct("<I")
_LENGTHS_LITTLE = sys.byteorder == "little"
_SUFFIX = ".seg"
_TRIMMED = "trimmed"
_LOCK = "lock"
_READ_BUFFER_BYTES = 1024 * 1024

# fdatasync flushes the data and the size, which is all a reader needs; fsync also flushes
# times. macOS has no fdatasync.
_sync = getattr(os, "fdatasync", os.fsync)


class FileJournal:
    """A journal in segment files under ``{directory}/{host}``. ``fsync=False`` skips the
    flushes: for tests and benchmarks only, as a crash then loses acknowledged records."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        host: str,
        fsync: bool = True,
        *,
        segment_bytes_max: int = SEGMENT_BYTES_MAX,
        record_bytes_max: int = RECORD_BYTES_MAX,
        batch_bytes_max: int = BATCH_BYTES_MAX,
    ) -> None:
        self.host = check_host(host)
        self.path = Path(directory) / host
        self.fsync = fsync
        self.segment_bytes_max = segment_bytes_max
        self.record_bytes_max = record_bytes_max
        self.batch_bytes_max = batch_bytes_max
        self._fd: int | None = None  # the last segment, open for appending
        self._size = 0  # bytes of whole records (and the magic) in the last segment
        self._failed: str | None = None
        self._closed = False
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = _lock(self.path / _LOCK)
        try:
            self._trimmed = _read_trimmed(self.path / _TRIMMED)
            self._segments = _segment_firsts(self.path)
            self._last = self._open_last_segment()
        except BaseException:
            self.close()
            raise

    # The port.

    def append(self, records: Sequence[bytes]) -> int:
        self._check_usable()
        batch_bytes = check_batch(records, self.record_bytes_max, self.batch_bytes_max)
        if not records:
            return self._last
        check_sequence(self._last, len(records))
        frame = _encode(records, self._last + 1)
        frame_bytes = sum(len(part) for part in frame)
        try:
            if self._fd is None or (
                self._size > len(MAGIC) and self._size + frame_bytes > self.segment_bytes_max
            ):
                self._rotate()
            assert self._fd is not None
            _write_all(self._fd, frame)
            if self.fsync:
                _sync(self._fd)
        except BaseException as error:
            self._fail(f"append of {len(records)} records ({batch_bytes} bytes) failed: {error}")
            raise JournalFailed(self._failed) from error
        self._size += frame_bytes
        self._last += len(records)
        return self._last

    def read(self, after: int = 0) -> Iterator[tuple[int, bytes]]:
        self._check_usable()
        start = max(after, self._trimmed)
        records = self._read(list(self._segments), start, self._size)
        return gapless(records, start, self._last)

    def trim(self, through: int) -> None:
        self._check_usable()
        check_trim(through, self._last)
        if through <= self._trimmed:
            return
        _write_atomically(self.path / _TRIMMED, f"{through}\n".encode(), self.fsync)
        self._trimmed = through
        # A segment holds the records from its first to the next segment's first, exclusive.
        # The last segment stays: it is where appends go, and its name keeps the numbering.
        deleted = 0
        while len(self._segments) > 1 and self._segments[1] <= through + 1:
            os.unlink(self._segment_path(self._segments.pop(0)))
            deleted += 1
        if deleted and self.fsync:
            _sync_directory(self.path)

    def last_sequence(self) -> int:
        return self._last

    def close(self) -> None:
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the lock
            self._lock_fd = None

    # Opening and recovery.

    def _open_last_segment(self) -> int:
        """Cut a torn tail off the last segment, open it for appends, return the last
        sequence."""
        if not self._segments:
            return self._trimmed
        first = self._segments[-1]
        path = self._segment_path(first)
        size_on_disk = path.stat().st_size
        scan = _Scan(path, first, size_on_disk, self.record_bytes_max)
        for _ in scan:
            pass
        size = scan.offset
        if scan.problem is not None:
            size = self._cut_tail(path, scan, size_on_disk)
        last = scan.sequence
        if last < self._trimmed:
            raise JournalCorrupt(
                f"{path}: the journal ends at {last} but was trimmed through {self._trimmed}"
            )
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._size = size
        return last

    def _cut_tail(self, path: Path, scan: _Scan, size_on_disk: int) -> int:
        """Cut the segment after its last good record; return its new size."""
        if scan.offset == 0:
            # Not even the magic is whole. Only a crash while creating the segment, before
            # any record was acknowledged, leaves that, and it leaves zeros or a prefix.
            head = path.read_bytes()[: len(MAGIC)]
            if head.strip(b"\0") and not MAGIC.startswith(head):
                raise JournalCorrupt(f"{path} is not a journal segment (header {head!r})")
        logger.warning(
            "journal %s: cutting a torn tail of %d bytes at offset %d after sequence %d (%s)",
            path,
            size_on_disk - scan.offset,
            scan.offset,
            scan.sequence,
            scan.problem,
        )
        with open(path, "r+b") as file:
            file.truncate(scan.offset)
            if scan.offset == 0:
                file.write(MAGIC)
            file.flush()
            os.fsync(file.fileno())
        return max(scan.offset, len(MAGIC))

    # Appending.

    def _rotate(self) -> None:
        first = self._last + 1
        fd = os.open(
            self._segment_path(first),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
            0o644,
        )
        try:
            _write_all(fd, [MAGIC])
            if self.fsync:
                _sync(fd)
                # Without this the new file's name may not survive a crash, and with it the
                # records about to be acknowledged.
                _sync_directory(self.path)
        except BaseException:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._size = len(MAGIC)
        self._segments.append(first)

    def _fail(self, reason: str) -> None:
        """After a failed write or flush the file's contents are unknown: try to take back a
        partial write, and refuse further use until the journal is reopened and scanned."""
        self._failed = f"journal {self.path}: {reason}; reopen it and recover"
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)

    # Reading.

    def _read(
        self, segments: list[int], start: int, last_segment_size: int
    ) -> Iterator[tuple[int, bytes]]:
        # Begin at the last segment whose first record is at or before the first one wanted.
        index = 0
        while index + 1 < len(segments) and segments[index + 1] <= start + 1:
            index += 1
        for position in range(index, len(segments)):
            first = segments[position]
            path = self._segment_path(first)
            is_last = position == len(segments) - 1
            end = last_segment_size if is_last else path.stat().st_size
            scan = _Scan(path, first, end, self.record_bytes_max)
            for sequence, record in scan:
                if sequence > start:
                    yield sequence, record
            if scan.problem is not None:
                raise JournalCorrupt(
                    f"{path}: unreadable at offset {scan.offset} after sequence "
                    f"{scan.sequence} ({scan.problem})"
                )

    def _segment_path(self, first: int) -> Path:
        return self.path / f"{first:020d}{_SUFFIX}"

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError(f"journal {self.path} is closed")
        if self._failed is not None:
            raise JournalFailed(self._failed)


class _Scan:
    """Iterates over a segment's records up to ``end`` bytes, checking each frame, and stops
    at the first frame that is not whole and valid. Afterwards ``offset`` is the end of the
    last good frame, ``sequence`` its last sequence, and ``problem`` why it stopped early (or
    None)."""

    def __init__(self, path: Path, first: int, end: int, record_bytes_max: int) -> None:
        self.path = path
        self.end = end
        self.record_bytes_max = record_bytes_max
        self.offset = 0
        self.sequence = first - 1
        self.problem: str | None = None

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        with open(self.path, "rb", buffering=_READ_BUFFER_BYTES) as file:
            if self.end < len(MAGIC) or file.read(len(MAGIC)) != MAGIC:
                self.problem = "bad or short segment header"
                return
            self.offset = len(MAGIC)
            while self.offset < self.end:
                frame = self._next_frame(file)
                if frame is None:
                    return
                first, records, frame_bytes = frame
                self.offset += frame_bytes
                self.sequence = first + len(records) - 1
                yield from enumerate(records, first)

    def _next_frame(self, file: BinaryIO) -> tuple[int, list[bytes], int] | None:
        header = file.read(_FRAME_HEADER.size)
        if len(header) < _FRAME_HEADER.size or self.offset + len(header) > self.end:
            self.problem = "short frame header"
            return None
        body_bytes, count, first, crc = _FRAME_HEADER.unpack(header)
        if first != self.sequence + 1:
            self.problem = f"a frame from sequence {first} where {self.sequence + 1} belongs"
            return None
        table_bytes = 4 * count
        if (
            count == 0
            or table_bytes > body_bytes
            or self.offset + len(header) + body_bytes > self.end
        ):
            self.problem = f"a frame of {body_bytes} bytes and {count} records runs past the end"
            return None
        body = file.read(body_bytes)
        if len(body) < body_bytes or zlib.crc32(body, zlib.crc32(header[:16])) != crc:
            self.problem = f"bad checksum in the frame from sequence {first}"
            return None
        lengths = array("I", body[:table_bytes])
        if not _LENGTHS_LITTLE:
            lengths.byteswap()
        if sum(lengths) != body_bytes - table_bytes or max(lengths) > self.record_bytes_max:
            self.problem = f"record lengths that do not fit the frame from sequence {first}"
            return None
        records, position = [], table_bytes
        for length in lengths:
            records.append(body[position : position + length])
            position += length
        return first, records, len(header) + body_bytes


def _encode(records: Sequence[bytes], first: int) -> list[bytes]:
    """One frame, as the parts of one ``writev``: header, length table, records."""
    table = length_table(records)
    payload = b"".join(records)
    prefix = _FRAME_PREFIX.pack(len(table) + len(payload), len(records), first)
    crc = zlib.crc32(payload, zlib.crc32(table, zlib.crc32(prefix)))
    return [prefix + _CRC.pack(crc), table, payload]


def _write_all(fd: int, parts: list[bytes]) -> None:
    # One call in practice; a regular file takes a short write only near the 2 GiB per-call
    # limit or when the disk fills up, which then raises on the next call.
    written = os.writev(fd, parts)
    if written == sum(len(part) for part in parts):
        return
    rest = memoryview(b"".join(parts))[written:]
    while rest:
        rest = rest[os.write(fd, rest) :]


def _segment_firsts(directory: Path) -> list[int]:
    firsts = []
    for path in directory.iterdir():
        if path.suffix == _SUFFIX and path.stem.isdigit():
            firsts.append(int(path.stem))
    return sorted(firsts)


def _read_trimmed(path: Path) -> int:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return 0
    if not text.isdigit():
        raise JournalCorrupt(f"{path} holds {text!r}, not a sequence")
    return int(text)


def _write_atomically(path: Path, data: bytes, fsync: bool) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        if fsync:
            os.fsync(file.fileno())
    os.replace(temporary, path)
    if fsync:
        _sync_directory(path.parent)


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(path: Path) -> int:
    """Hold an exclusive lock on the host's directory for as long as the journal is open: two
    writers would interleave their records."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalFailed(f"journal {path.parent} is open in another writer") from None
    return fd
