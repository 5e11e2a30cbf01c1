"""Durable journal appends per second, per backend, for batches of 1, 100 and 1,000 records.

Run: ``python -m load_tests.bench_journal [--seconds 1]``. Each figure is records per second
through ``append`` (which returns only once the batch is durable), with records of 100 bytes
built beforehand, and its ratio to a baseline measured in the same run at the same batch size:
one ``os.write`` of the batch's bare bytes and one ``os.fsync`` into a file in the same
directory, the least any durable append on this disk can cost.

Locations: the file journal and the baseline write in a temporary directory (set
``METERWERK_BENCH_DIR`` to put them on the disk of interest; on tmpfs fsync costs nothing).
Postgres and Redis come from ``METERWERK_BENCH_POSTGRES_URL`` and ``METERWERK_BENCH_REDIS_URL``
(defaults: local test servers); an unreachable one is reported and skipped. Their durability
settings are printed beside the figures: Redis answers after an fsync only with ``appendonly
yes`` and ``appendfsync always``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.ports import Journal

BATCH_SIZES = (1, 100, 1_000)
RECORD_BYTES = 100
POSTGRES_URL = os.environ.get(
    "METERWERK_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("METERWERK_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


def _records(count: int) -> list[bytes]:
    return [(b"%08d:" % number).ljust(RECORD_BYTES, b"r") for number in range(count)]


def _per_second(
    append: Callable[[list[bytes]], object], batch: list[bytes], seconds: float
) -> float:
    append(batch)  # warm up: the first append opens a segment, a statement, a script
    appended, elapsed = 0, 0.0
    while elapsed < seconds:
        began = time.perf_counter()
        append(batch)
        elapsed += time.perf_counter() - began
        appended += len(batch)
    return appended / elapsed


def _baseline(directory: Path, batch: list[bytes], seconds: float) -> float:
    data = b"".join(batch)
    fd = os.open(directory / "baseline", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append(_: list[bytes]) -> None:
        os.write(fd, data)
        os.fsync(fd)

    try:
        return _per_second(append, batch, seconds)
    finally:
        os.close(fd)
        os.unlink(directory / "baseline")


def _open_file(directory: Path, host: str) -> tuple[Journal, Callable[[], None]]:
    from persistence.journal import FileJournal

    return FileJournal(directory, host), lambda: shutil.rmtree(directory / host)


def _open_postgres(host: str) -> tuple[Journal, Callable[[], None]]:
    import psycopg

    from persistence.journal.postgres import PostgresJournal
    from persistence.journal.schema import JOURNAL_TABLE, TRIMMED_TABLE

    def clean() -> None:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            for table in (JOURNAL_TABLE, TRIMMED_TABLE):
                connection.execute(f"DELETE FROM {table} WHERE host = %s", (host,))

    return PostgresJournal(POSTGRES_URL, host), clean


def _open_redis(host: str) -> tuple[Journal, Callable[[], None]]:
    import redis

    from persistence.journal.redis_stream import RedisStreamJournal, stream_key

    def clean() -> None:
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(stream_key(host))
        client.close()

    return RedisStreamJournal(REDIS_URL, host), clean


def _server_settings() -> dict[str, Any]:
    settings: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as connection:
            settings["postgres"] = {
                name: connection.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in ("fsync", "synchronous_commit", "wal_sync_method")
            }
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, decode_responses=True)
        settings["redis"] = client.config_get("append*")
        client.close()
    return settings


def _measure_backend(
    opener: Callable[[str], tuple[Journal, Callable[[], None]]],
    batches: dict[int, list[bytes]],
    seconds: float,
) -> dict[str, float] | str:
    host = f"bench-{uuid.uuid4().hex[:12]}"
    try:
        journal, clean = opener(host)
    except Exception as error:
        return f"unavailable: {type(error).__name__}: {error}"
    try:
        return {
            str(size): _per_second(journal.append, batch, seconds)
            for size, batch in batches.items()
        }
    finally:
        journal.close()
        clean()


def measure(seconds: float = 1.0) -> dict[str, Any]:
    batches = {size: _records(size) for size in BATCH_SIZES}
    directory = Path(
        tempfile.mkdtemp(prefix="meterwerk-bench-", dir=os.environ.get("METERWERK_BENCH_DIR"))
    )
    try:
        baseline = {
            str(size): _baseline(directory, batch, seconds) for size, batch in batches.items()
        }
        openers: dict[str, Callable[[str], tuple[Journal, Callable[[], None]]]] = {
            "file": lambda host: _open_file(directory, host),
            "postgres": _open_postgres,
            "redis": _open_redis,
        }
        figures = {
            name: _measure_backend(opener, batches, seconds) for name, opener in openers.items()
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "benchmark": "persistence.journal.append",
        "python": platform.python_version(),
        "record_bytes": RECORD_BYTES,
        "directory": str(directory),
        "servers": _server_settings(),
        "baseline_write_fsync_records_per_s": {
            size: round(value) for size, value in baseline.items()
        },
        "records_per_s": {
            name: value
            if isinstance(value, str)
            else {size: round(rate) for size, rate in value.items()}
            for name, value in figures.items()
        },
        "ratio_to_baseline": {
            name: {size: round(rate / baseline[size], 3) for size, rate in value.items()}
            for name, value in figures.items()
            if not isinstance(value, str)
        },
    }


def run(seconds: float = 1.0) -> int:
    figures = measure(seconds)
    baseline = figures["baseline_write_fsync_records_per_s"]
    header = "".join(f"{f'batch {size}':>26}" for size in baseline)
    print(f"{'records/s (ratio to baseline)':<30}{header}")
    print(
        f"{'baseline os.write+os.fsync':<30}"
        + "".join(f"{value:>18,}        " for value in baseline.values())
    )
    for name, rates in figures["records_per_s"].items():
        if isinstance(rates, str):
            print(f"{name:<30}{rates}")
            continue
        ratios = figures["ratio_to_baseline"][name]
        cells = "".join(f"{rates[size]:>18,} ({ratios[size]:5.2f})" for size in rates)
        print(f"{name:<30}{cells}")
    for server, settings in figures["servers"].items():
        print(f"{server} settings: {settings}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    raise SystemExit(run(parser.parse_args().seconds))
