"""The host's journal health (for ``/readyz``) and the figures it gives ``/metrics``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

import actors.host
from persistence.journal.file import FileJournal
from persistence.journal.memory import MemoryJournal as PortJournal
from tests.actors.fakes import MemoryJournal
from tests.actors.test_host import Storage, call, setup


class FailingJournal(MemoryJournal):
    """A journal whose disk went away: every append with records fails."""

    def append(self, records: Sequence[bytes]) -> int:
        if records:
            raise OSError(5, "Input/output error")
        return super().append(records)


def test_a_healthy_journal_is_writable() -> None:
    core = Storage().host()
    assert core.journal_health() == actors.host.JournalHealth(writable=True)
    assert core.stats().journal_writable is True


def test_a_failed_append_makes_the_journal_unwritable_until_one_succeeds() -> None:
    storage = Storage()
    core = storage.host()
    setup(core, "acme")
    core.journal = FailingJournal()
    with pytest.raises(OSError):
        core.apply([call("acme", 1)])
    health = core.journal_health()
    assert not health.writable
    assert health.reason is not None and "Input/output error" in health.reason
    assert core.stats().journal_writable is False
    core.journal = storage.journal
    core.apply([call("acme", 2)])
    assert core.journal_health().writable


def test_a_closed_journal_is_not_writable() -> None:
    storage = Storage()
    journal = PortJournal()
    storage.journal = journal  # type: ignore[assignment]
    core = storage.host()
    journal.close()
    health = core.journal_health()
    assert not health.writable and health.reason == "ValueError: journal is closed"


def test_a_file_journal_on_a_full_disk_is_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage()
    journal = FileJournal(tmp_path, "host-0", fsync=False)
    storage.journal = journal  # type: ignore[assignment]
    core = storage.host()
    assert core.journal_health().writable
    monkeypatch.setattr(actors.host, "JOURNAL_FREE_BYTES_MIN", 2**62)
    health = core.journal_health()
    assert not health.writable and health.reason is not None and "bytes free" in health.reason
    journal.close()


def test_the_stats_carry_a_flush_histogram_and_the_accounts() -> None:
    core = Storage().host()
    setup(core, "acme")
    setup(core, "globex")
    core.apply([call("acme", n) for n in range(3)])
    stats = core.stats()
    assert len(stats.journal_flush_counts) == len(stats.journal_flush_buckets_seconds) + 1
    assert sum(stats.journal_flush_counts) == stats.journal_flushes_total == 3
    assert stats.accounts == 2
    assert stats.statements_queued_total == 0
