"""The file journal: torn tails cut on reopen, segments, group commit, one writer."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from persistence.journal import FileJournal, JournalCorrupt, JournalFailed
from persistence.journal import file as file_module

HOST = "h1"


def segments(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / HOST).glob("*.seg"))


def written(
    batches: list[list[bytes]],
    tmp_path: Path,
    segment_bytes_max: int = file_module.SEGMENT_BYTES_MAX,
) -> None:
    journal = FileJournal(tmp_path, HOST, segment_bytes_max=segment_bytes_max)
    for batch in batches:
        journal.append(batch)
    journal.close()


def reopened_after_damage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> FileJournal:
    with caplog.at_level(logging.WARNING, logger=file_module.__name__):
        journal = FileJournal(tmp_path, HOST)
    assert "cutting a torn tail" in caplog.text
    return journal


def test_a_torn_batch_is_cut_whole_and_numbering_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written([[b"one"], [b"two", b"three"]], tmp_path)
    (segment,) = segments(tmp_path)
    os.truncate(segment, segment.stat().st_size - 3)  # into "three"

    journal = reopened_after_damage(tmp_path, caplog)
    assert journal.last_sequence() == 1  # "two" was never acknowledged either
    assert journal.append([b"two again"]) == 2
    journal.close()
    journal = FileJournal(tmp_path, HOST)
    assert list(journal.read()) == [(1, b"one"), (2, b"two again")]


@pytest.mark.parametrize("kept_bytes", [1, 19, 20, 24, 39])
def test_a_tail_cut_anywhere_in_the_last_frame_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kept_bytes: int
) -> None:
    written([[b"one"], [b"x" * 16]], tmp_path)
    (segment,) = segments(tmp_path)
    second_frame_at = segment.stat().st_size - 40  # header 20, length table 4, record 16
    os.truncate(segment, second_frame_at + kept_bytes)

    journal = reopened_after_damage(tmp_path, caplog)
    assert journal.last_sequence() == 1
    assert segment.stat().st_size == second_frame_at
    assert journal.append([b"two"]) == 2


def test_a_flipped_byte_in_the_last_record_is_detected_and_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written([[b"one", b"two"], [b"three"]], tmp_path)
    (segment,) = segments(tmp_path)
    data = bytearray(segment.read_bytes())
    data[-2] ^= 0x01  # in the payload of "three"
    segment.write_bytes(data)

    journal = reopened_after_damage(tmp_path, caplog)
    assert "bad checksum in the frame from sequence 3" in caplog.text
    assert list(journal.read()) == [(1, b"one"), (2, b"two")]
    assert journal.append([b"four"]) == 3


def test_zeros_after_the_last_record_are_cut_without_losing_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written([[b"one", b"two"]], tmp_path)
    (segment,) = segments(tmp_path)
    with open(segment, "ab") as file:
        file.write(bytes(4096))

    journal = reopened_after_damage(tmp_path, caplog)
    assert list(journal.read()) == [(1, b"one"), (2, b"two")]


def test_a_segment_torn_while_being_created_is_repaired(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written([[b"one", b"two"]], tmp_path)
    (tmp_path / HOST / f"{3:020d}.seg").write_bytes(file_module.MAGIC[:3])

    journal = reopened_after_damage(tmp_path, caplog)
    assert journal.last_sequence() == 2
    assert journal.append([b"three"]) == 3
    assert [record for _, record in journal.read()] == [b"one", b"two", b"three"]


def test_a_foreign_file_is_not_cut_as_a_torn_tail(tmp_path: Path) -> None:
    written([[b"one"]], tmp_path)
    (tmp_path / HOST / f"{2:020d}.seg").write_bytes(b"not a journal at all")
    with pytest.raises(JournalCorrupt, match="not a journal segment"):
        FileJournal(tmp_path, HOST)


def test_segments_rotate_and_trim_deletes_only_covered_ones(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path, HOST, segment_bytes_max=256)
    for batch in range(20):
        journal.append([f"batch {batch:02} record {number}".encode() for number in range(3)])
    firsts = [int(path.stem) for path in segments(tmp_path)]
    assert len(firsts) > 5 and firsts[0] == 1
    assert all(path.stat().st_size <= 256 for path in segments(tmp_path))

    journal.trim(30)
    kept = [int(path.stem) for path in segments(tmp_path)]
    assert kept[0] <= 31 and kept == [first for first in firsts if first >= kept[0]]
    assert len(kept) < len(firsts)
    assert [sequence for sequence, _ in journal.read()] == list(range(31, 61))
    journal.close()

    journal = FileJournal(tmp_path, HOST, segment_bytes_max=256)
    assert [sequence for sequence, _ in journal.read(after=40)] == list(range(41, 61))
    journal.trim(60)
    assert len(segments(tmp_path)) == 1  # the last segment keeps the numbering
    assert journal.append([b"after"]) == 61


def test_a_batch_larger_than_a_segment_gets_one_of_its_own(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path, HOST, segment_bytes_max=100)
    journal.append([b"a"])
    journal.append([b"b" * 60, b"c" * 60])
    journal.append([b"d"])
    assert [int(path.stem) for path in segments(tmp_path)] == [1, 2, 4]
    assert [sequence for sequence, _ in journal.read()] == [1, 2, 3, 4]


def test_damage_in_an_older_segment_is_corruption_not_a_tail(tmp_path: Path) -> None:
    written([[b"record %d" % number] for number in range(12)], tmp_path, segment_bytes_max=64)
    first = segments(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF
    first.write_bytes(data)

    journal = FileJournal(tmp_path, HOST, segment_bytes_max=64)
    assert journal.last_sequence() == 12
    with pytest.raises(JournalCorrupt, match="bad checksum"):
        list(journal.read())


def test_a_missing_segment_is_corruption(tmp_path: Path) -> None:
    written([[b"record %d" % number] for number in range(12)], tmp_path, segment_bytes_max=64)
    segments(tmp_path)[1].unlink()
    journal = FileJournal(tmp_path, HOST)
    with pytest.raises(JournalCorrupt, match="missing"):
        list(journal.read())


def test_a_batch_is_one_write_and_one_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = FileJournal(tmp_path, HOST)
    journal.append([b"opens the first segment"])
    calls: list[str] = []
    real_write, real_writev, real_sync = os.write, os.writev, file_module._sync

    def write(fd: int, data: bytes) -> int:
        calls.append("write")
        return real_write(fd, data)

    def writev(fd: int, parts: list[bytes]) -> int:
        calls.append("write")
        return real_writev(fd, parts)

    def sync(fd: int) -> None:
        calls.append("sync")
        real_sync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "writev", writev)
    monkeypatch.setattr(file_module, "_sync", sync)
    assert journal.append([b"%0100d" % number for number in range(1_000)]) == 1_001
    assert calls == ["write", "sync"]


def test_a_failed_flush_stops_the_journal_until_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = FileJournal(tmp_path, HOST)
    journal.append([b"one"])

    def failing_sync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(file_module, "_sync", failing_sync)
    with pytest.raises(JournalFailed, match="Input/output error"):
        journal.append([b"two"])
    with pytest.raises(JournalFailed):
        journal.append([b"three"])
    monkeypatch.undo()
    journal.close()

    journal = FileJournal(tmp_path, HOST)
    assert [record for _, record in journal.read()] == [b"one"]  # the partial write was undone


def test_a_second_writer_is_kept_out(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path, HOST)
    with pytest.raises(JournalFailed, match="another writer"):
        FileJournal(tmp_path, HOST)
    journal.close()
    FileJournal(tmp_path, HOST).close()
    FileJournal(tmp_path, "other-host").close()


def test_without_fsync_nothing_is_flushed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sync(fd: int) -> None:
        raise AssertionError("flushed")

    monkeypatch.setattr(file_module, "_sync", no_sync)
    journal = FileJournal(tmp_path, HOST, fsync=False, segment_bytes_max=64)
    for number in range(10):
        journal.append([b"record %d" % number])
    journal.trim(5)
    assert journal.last_sequence() == 10
