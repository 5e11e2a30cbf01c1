"""The Postgres and Redis journals: all-or-nothing appends, one writer, lost data detected."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from persistence.journal import JournalCorrupt, JournalFailed


@pytest.fixture
def postgres(postgres_url: str, unique_host: str) -> Iterator[str]:
    yield postgres_url
    import psycopg

    from persistence.journal.schema import JOURNAL_TABLE, TRIMMED_TABLE

    with psycopg.connect(postgres_url, autocommit=True) as connection:
        for table in (JOURNAL_TABLE, TRIMMED_TABLE):
            connection.execute(f"DELETE FROM {table} WHERE host = %s", (unique_host,))


@pytest.fixture
def redis_client(redis_url: str, unique_host: str) -> Iterator[object]:
    import redis

    from persistence.journal.redis_stream import stream_key

    client = redis.Redis.from_url(redis_url)
    yield client
    client.delete(stream_key(unique_host))
    client.close()


def test_postgres_keeps_a_second_writer_out(postgres: str, unique_host: str) -> None:
    from persistence.journal.postgres import PostgresJournal

    journal = PostgresJournal(postgres, unique_host)
    with pytest.raises(JournalFailed, match="another writer"):
        PostgresJournal(postgres, unique_host)
    journal.close()
    PostgresJournal(postgres, unique_host).close()


@pytest.mark.parametrize("batch_size", [2, 100])  # INSERT and COPY
def test_postgres_appends_a_batch_wholly_or_not_at_all(
    postgres: str, unique_host: str, batch_size: int
) -> None:
    import psycopg

    from persistence.journal.postgres import PostgresJournal
    from persistence.journal.schema import JOURNAL_TABLE

    journal = PostgresJournal(postgres, unique_host)
    journal.append([b"one"])
    with psycopg.connect(postgres, autocommit=True) as intruder:
        intruder.execute(
            f"INSERT INTO {JOURNAL_TABLE} VALUES (%s, %s, %s)", (unique_host, 1 + batch_size, b"!")
        )
    with pytest.raises(JournalFailed, match="append failed"):
        journal.append([b"x"] * batch_size)
    with pytest.raises(JournalFailed):
        journal.append([b"y"])
    journal.close()

    journal = PostgresJournal(postgres, unique_host)
    with pytest.raises(JournalCorrupt, match="record 2 is missing"):
        list(journal.read())
    journal.close()


def test_redis_refuses_a_stale_writer_without_writing(
    redis_url: str, redis_client: object, unique_host: str
) -> None:
    from persistence.journal.redis_stream import RedisStreamJournal

    first = RedisStreamJournal(redis_url, unique_host)
    stale = RedisStreamJournal(redis_url, unique_host)
    first.append([b"a", b"b"])
    with pytest.raises(JournalFailed, match="append failed"):
        stale.append([b"1", b"2", b"3"])
    assert list(first.read()) == [(1, b"a"), (2, b"b")]
    first.close()
    stale.close()


def test_redis_notices_records_the_server_lost(
    redis_url: str, redis_client: object, unique_host: str
) -> None:
    from persistence.journal.redis_stream import RedisStreamJournal, stream_key

    journal = RedisStreamJournal(redis_url, unique_host)
    journal.append([b"a", b"b"])
    redis_client.delete(stream_key(unique_host))  # type: ignore[attr-defined]
    with pytest.raises(JournalCorrupt, match="ends at 0"):
        list(journal.read())
    journal.close()


def test_redis_fails_an_append_the_replicas_did_not_acknowledge(
    redis_url: str, redis_client: object, unique_host: str
) -> None:
    from persistence.journal.redis_stream import RedisStreamJournal

    replicas = redis_client.info("replication")["connected_slaves"]  # type: ignore[attr-defined]
    journal = RedisStreamJournal(
        redis_url, unique_host, replicas_ack=replicas + 1, replicas_timeout_ms=10
    )
    with pytest.raises(JournalFailed, match="replicas acknowledged"):
        journal.append([b"a"])
    journal.close()


def test_redis_reloads_its_script_when_the_server_lost_it(
    redis_url: str, redis_client: object, unique_host: str
) -> None:
    from persistence.journal.redis_stream import RedisStreamJournal

    journal = RedisStreamJournal(redis_url, unique_host)
    journal.append([b"a"])
    # As after a restart or SCRIPT FLUSH, without flushing a server other tests share.
    journal._append_sha = "0" * 40
    assert journal.append([b"b"]) == 2
    assert list(journal.read()) == [(1, b"a"), (2, b"b")]
    journal.close()
