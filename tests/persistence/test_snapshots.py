"""Snapshots in Redis (database 15 of the test server, under a key prefix of each test's own)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from engine.ports import SnapshotStore
from persistence.redis_snapshots import RedisSnapshotStore


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisSnapshotStore]:
    prefix = f"test:{uuid.uuid4().hex}:snapshot:"
    opened = RedisSnapshotStore(redis_url, key_prefix=prefix)
    try:
        yield opened
    finally:
        keys = list(opened.client.scan_iter(match=f"{prefix}*"))
        if keys:
            opened.client.delete(*keys)
        opened.close()


def test_load_gives_the_newest_snapshot_of_each_host(store: RedisSnapshotStore) -> None:
    port: SnapshotStore = store
    assert port.load("host-a") is None
    port.save("host-a", 10, b"first")
    port.save("host-b", 3, b"other host")
    port.save("host-a", 25, b"\x00second\xff" * 1000)
    assert port.load("host-a") == (25, b"\x00second\xff" * 1000)
    assert port.load("host-b") == (3, b"other host")
    assert len(list(store.client.scan_iter(match=f"{store.key_prefix}*"))) == 2


def test_an_older_snapshot_is_refused_and_changes_nothing(store: RedisSnapshotStore) -> None:
    store.save("host-a", 40, b"newest")
    store.save("host-a", 40, b"same sequence, new data")
    with pytest.raises(ValueError, match="older snapshot"):
        store.save("host-a", 39, b"stale")
    assert store.load("host-a") == (40, b"same sequence, new data")


@pytest.mark.parametrize(
    ("stored", "older"),
    [(100, 99), (2**60, 2**60 - 1)],  # 2**60 and 2**60 - 1 are one double: Lua would tie them
    ids=["shorter", "beyond-double-precision"],
)
def test_sequences_compare_as_whole_numbers(
    store: RedisSnapshotStore, stored: int, older: int
) -> None:
    store.save("host-a", older, b"older")
    store.save("host-a", stored, b"newer")
    with pytest.raises(ValueError, match="older snapshot"):
        store.save("host-a", older, b"older again")
    store.save("host-a", 2**63 - 1, b"newest")
    assert store.load("host-a") == (2**63 - 1, b"newest")


def test_host_names_are_checked(store: RedisSnapshotStore) -> None:
    with pytest.raises(ValueError, match="host name"):
        store.save("a b", 1, b"")
    with pytest.raises(ValueError, match="sequence"):
        store.save("host-a", -1, b"")
