"""The journal contract, the same for every backend: gapless sequences in order, across
reopens and trims, with bounded inputs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.ports import Journal
from persistence.journal import (
    RECORD_BYTES_MAX,
    FileJournal,
    MemoryJournal,
    open_journal,
)

Opener = Callable[..., Journal]


@pytest.fixture(params=["memory", "file", "postgres", "redis"])
def open_host(request: pytest.FixtureRequest, tmp_path: Path, unique_host: str) -> Iterator[Opener]:
    """Opens the journal of one host, as often as the test likes: a second call after
    ``close`` is a restart. Everything the test stored is removed afterwards."""
    backend: str = request.param
    opened: list[Journal] = []
    location: str | None = None
    if backend == "file":
        location = str(tmp_path)
    elif backend == "postgres":
        location = request.getfixturevalue("postgres_url")
    elif backend == "redis":
        location = request.getfixturevalue("redis_url")

    def open_(**options: Any) -> Journal:
        if location is None:
            previous = opened[-1] if opened else None
            assert previous is None or isinstance(previous, MemoryJournal)
            journal: Journal = (
                previous.reopen() if previous else MemoryJournal(unique_host, **options)
            )
        else:
            journal = open_journal(location, unique_host, **options)
        opened.append(journal)
        return journal

    yield open_
    for journal in opened:
        journal.close()
    if backend == "postgres":
        _delete_postgres_host(str(location), unique_host)
    elif backend == "redis":
        _delete_redis_host(str(location), unique_host)


def _delete_postgres_host(url: str, host: str) -> None:
    import psycopg

    from persistence.journal.schema import JOURNAL_TABLE, TRIMMED_TABLE

    with psycopg.connect(url, autocommit=True) as connection:
        for table in (JOURNAL_TABLE, TRIMMED_TABLE):
            connection.execute(f"DELETE FROM {table} WHERE host = %s", (host,))


def _delete_redis_host(url: str, host: str) -> None:
    import redis

    from persistence.journal.redis_stream import stream_key

    client = redis.Redis.from_url(url)
    client.delete(stream_key(host))
    client.close()


def records(count: int, tag: str = "r") -> list[bytes]:
    return [f"{tag}{number}".encode() for number in range(count)]


def test_an_empty_journal_has_nothing_to_read(open_host: Opener) -> None:
    journal = open_host()
    assert journal.last_sequence() == 0
    assert list(journal.read()) == []
    assert journal.append([]) == 0
    journal.trim(0)
    assert list(journal.read()) == []


def test_records_come_back_in_order_with_gapless_sequences(open_host: Opener) -> None:
    journal = open_host()
    assert journal.append([b"a", b"b"]) == 2
    assert journal.append([b"c"]) == 3
    assert journal.append([]) == 3
    assert journal.last_sequence() == 3
    assert list(journal.read()) == [(1, b"a"), (2, b"b"), (3, b"c")]
    assert list(journal.read(after=1)) == [(2, b"b"), (3, b"c")]
    assert list(journal.read(after=3)) == []
    assert list(journal.read(after=99)) == []


def test_a_reopened_journal_continues_the_numbering(open_host: Opener) -> None:
    journal = open_host()
    journal.append(records(5, "first"))
    journal.close()

    journal = open_host()
    assert journal.last_sequence() == 5
    assert journal.append(records(3, "second")) == 8
    journal.close()

    journal = open_host()
    assert [sequence for sequence, _ in journal.read()] == list(range(1, 9))
    assert [record for _, record in journal.read(after=4)] == [
        b"first4",
        *records(3, "second"),
    ]


def test_trim_forgets_what_a_snapshot_covers(open_host: Opener) -> None:
    journal = open_host()
    for batch in range(5):
        journal.append(records(4, f"b{batch}-"))
    journal.trim(6)
    assert [sequence for sequence, _ in journal.read()] == list(range(7, 21))
    assert [sequence for sequence, _ in journal.read(after=2)] == list(range(7, 21))
    assert [sequence for sequence, _ in journal.read(after=10)] == list(range(11, 21))
    journal.trim(3)  # an older snapshot's trim changes nothing
    assert journal.last_sequence() == 20
    journal.close()

    journal = open_host()
    assert next(iter(journal.read())) == (7, b"b1-2")
    assert journal.append([b"more"]) == 21


def test_trimming_everything_keeps_the_numbering(open_host: Opener) -> None:
    journal = open_host()
    journal.append(records(3))
    journal.trim(3)
    assert list(journal.read()) == []
    journal.close()

    journal = open_host()
    assert journal.last_sequence() == 3
    assert list(journal.read()) == []
    assert journal.append([b"next"]) == 4
    assert list(journal.read()) == [(4, b"next")]


def test_trimming_past_the_end_is_a_bug(open_host: Opener) -> None:
    journal = open_host()
    journal.append(records(2))
    with pytest.raises(ValueError, match="last sequence is 2"):
        journal.trim(3)
    with pytest.raises(ValueError):
        journal.trim(-1)


def test_a_large_batch_of_any_bytes_round_trips(open_host: Opener) -> None:
    journal = open_host()
    batch = [bytes([number % 256]) * (number % 300) for number in range(2_500)]
    batch[7] = bytes(range(256))
    assert journal.append(batch) == 2_500
    assert journal.append([b"x" * RECORD_BYTES_MAX]) == 2_501
    assert list(journal.read()) == list(enumerate([*batch, b"x" * RECORD_BYTES_MAX], 1))


def test_oversize_records_are_refused_before_anything_is_written(open_host: Opener) -> None:
    journal = open_host()
    journal.append([b"kept"])
    with pytest.raises(ValueError, match="record 1 is"):
        journal.append([b"ok", b"x" * (RECORD_BYTES_MAX + 1)])
    assert journal.last_sequence() == 1
    assert list(journal.read()) == [(1, b"kept")]
    assert journal.append([b"next"]) == 2


def test_a_batch_over_its_byte_limit_is_refused(open_host: Opener) -> None:
    journal = open_host(batch_bytes_max=1_000)
    with pytest.raises(ValueError, match="batch is 1001 bytes"):
        journal.append([b"x" * 500, b"x" * 501])
    assert journal.last_sequence() == 0


def test_a_closed_journal_refuses_use(open_host: Opener) -> None:
    journal = open_host()
    journal.close()
    with pytest.raises(ValueError, match="closed"):
        journal.append([b"late"])


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "x" * 129, "tab\t"])
def test_host_names_stay_plain(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="host name"):
        FileJournal(tmp_path, name)
    with pytest.raises(ValueError, match="host name"):
        MemoryJournal(name)


def test_open_journal_picks_the_backend_by_location(
    tmp_path: Path, postgres_url: str, redis_url: str, unique_host: str
) -> None:
    for location in (tmp_path / "a", str(tmp_path / "b"), f"file://{tmp_path}/c"):
        journal = open_journal(location, unique_host)
        assert isinstance(journal, FileJournal)
        journal.close()
    assert (tmp_path / "c" / unique_host).is_dir()

    from persistence.journal import PostgresJournal, RedisStreamJournal

    journal = open_journal(postgres_url, unique_host)
    assert isinstance(journal, PostgresJournal)
    journal.close()
    journal = open_journal(redis_url, unique_host)
    assert isinstance(journal, RedisStreamJournal)
    journal.close()
    with pytest.raises(ValueError, match="expected a directory"):
        open_journal("s3://bucket/journal", unique_host)


def test_memory_journal_reopens_over_the_same_records() -> None:
    journal = MemoryJournal("h")
    journal.append([b"one"])
    again = journal.reopen()
    assert list(again.read()) == [(1, b"one")]
    assert again.append([b"two"]) == 2
