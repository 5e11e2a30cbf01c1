"""The host core: write-ahead journal, recovery after a crash, snapshots, timers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import msgspec
import pytest

from actors.host import HostCore, HostSnapshot
from engine.accounts import (
    Authorize,
    AuthorizeAndRecord,
    ConfigureTenant,
    Outcome,
    QuoteQuery,
    Reason,
    TenantSettings,
    TopUp,
)
from engine.instants import parse
from tests.actors.fakes import MemoryJournal, MemorySnapshots, MemoryStatements
from tests.engine.helpers import calls_catalog, catalog_tariffs

MARCH = parse("2024-03-01T00:00:00Z")


class Storage:
    def __init__(self) -> None:
        self.journal = MemoryJournal()
        self.snapshots = MemorySnapshots()
        self.statements = MemoryStatements()
        self.tariffs = catalog_tariffs(calls_catalog("0.25"))

    def host(self, **options: object) -> HostCore:
        core = HostCore(
            "host-0",
            journal=self.journal,
            snapshots=self.snapshots,
            statements=self.statements,
            tariffs=self.tariffs,
            clock=lambda: 0.0,
            **options,  # type: ignore[arg-type]
        )
        core.recover()
        return core


def setup(core: HostCore, tenant: str, credit: str = "10") -> None:
    outcomes = core.apply(
        [
            (
                tenant,
                ConfigureTenant(
                    id=f"{tenant}-c",
                    tenant=tenant,
                    time=MARCH,
                    settings=TenantSettings(tariff="api"),
                ),
            ),
            (tenant, TopUp(id=f"{tenant}-t", tenant=tenant, time=MARCH, amount=Decimal(credit))),
        ]
    )
    assert all(outcome.accepted for outcome in outcomes)


def call(tenant: str, number: int, at: int = MARCH + 60) -> tuple[str, AuthorizeAndRecord]:
    return tenant, AuthorizeAndRecord(
        id=f"{tenant}-{number}", tenant=tenant, time=at, meter="calls"
    )


def test_a_batch_is_journaled_in_one_flush_before_it_is_answered() -> None:
    storage = Storage()
    core = storage.host()
    setup(core, "acme")
    appends = storage.journal.appends
    outcomes = core.apply([call("acme", n) for n in range(5)])
    assert [o.amount for o in outcomes] == [Decimal("0.25")] * 5
    assert storage.journal.appends == appends + 1
    assert storage.journal.sequence == 7


def test_a_crashed_host_recovers_every_acknowledged_command_exactly_once() -> None:
    storage = Storage()
    core = storage.host()
    setup(core, "acme")
    setup(core, "bolt")
    core.apply([call("acme", n) for n in range(8)] + [call("bolt", n) for n in range(3)])
    # A crash: the process is gone; a new one recovers from the same storage.
    recovered = storage.host()
    assert set(recovered.waiting) == {"acme", "bolt"}  # replay waits for each tree's turn
    assert recovered.balance("acme", "acme") == (Decimal("8.00"), Decimal("8.00"))
    assert recovered.balance("bolt", "bolt") == (Decimal("9.25"), Decimal("9.25"))
    # The client retries an answered command and an unanswered one: each counts once.
    retried = recovered.apply([call("acme", 7), call("acme", 8)])
    assert [o.accepted for o in retried] == [True, True]
    assert recovered.balance("acme", "acme") == (Decimal("7.75"), Decimal("7.75"))


def test_recovery_starts_from_the_snapshot_and_replays_only_the_journal_after_it() -> None:
    storage = Storage()
    core = storage.host(snapshot_every_commands=10)
    setup(core, "acme", credit="100")
    core.apply([call("acme", n) for n in range(9)])  # 11 commands: a snapshot, then trim
    assert storage.snapshots.load("host-0") is not None
    assert storage.journal.records == []
    core.apply([call("acme", n) for n in range(9, 12)])
    recovered = storage.host()
    assert len(recovered.waiting["acme"]) == 3
    assert recovered.balance("acme", "acme") == (Decimal("97.00"), Decimal("97.00"))


class SlowSnapshots(MemorySnapshots):
    """Stores only when let through; fails while ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.failing = False

    def save(self, host: str, sequence: int, data: bytes) -> None:
        assert self.go.wait(10)
        if self.failing:
            raise OSError("disk full")
        super().save(host, sequence, data)


def snapshot_taken(storage: Storage, saver: ThreadPoolExecutor) -> HostCore:
    """A host storing its snapshots with ``saver``, one due every 10 commands, after 11: acme
    set up with 100 and charged nine calls, so one snapshot has been taken at 11."""
    core = storage.host(snapshot_every_commands=10, snapshot_saver=saver)
    setup(core, "acme", credit="100")
    core.apply([call("acme", n) for n in range(9)])
    return core


def test_a_snapshot_is_stored_in_the_background_and_the_journal_trimmed_once_it_is() -> None:
    storage = Storage()
    storage.snapshots = slow = SlowSnapshots()
    with ThreadPoolExecutor(1) as saver:
        core = snapshot_taken(storage, saver)
        # The store has not finished: the host goes on answering, the journal keeps it all.
        assert [o.accepted for o in core.apply([call("acme", 9)])] == [True]
        assert slow.load("host-0") is None
        assert len(storage.journal.records) == 12
        slow.go.set()
        core.settle_snapshot(wait=True)
        assert slow.load("host-0") is not None and slow.load("host-0")[0] == 11  # type: ignore[index]
        assert [sequence for sequence, _ in storage.journal.records] == [12]
        assert core.stats().snapshot_sequence == 11
    recovered = storage.host()
    assert len(recovered.waiting["acme"]) == 1
    assert recovered.balance("acme", "acme") == (Decimal("97.50"), Decimal("97.50"))


def test_a_snapshot_taken_a_tree_at_a_time_recovers_each_tree_exactly_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("actors.host.SNAPSHOT_SLICE_SECONDS", 0.0)  # one tree per batch
    storage = Storage()
    with ThreadPoolExecutor(1) as saver:
        core = storage.host(snapshot_every_commands=10, snapshot_saver=saver)
        for tenant in ("acme", "bolt", "cora"):
            setup(core, tenant, credit="100")
        core.apply([call("acme", n) for n in range(4)])  # 10: due; cora taken at 10
        core.apply([call("bolt", 1)])  # 11; bolt taken at 11
        core.apply([call("acme", 4)])  # 12; acme taken at 12, the snapshot is complete
        core.apply([call("cora", 1), call("acme", 5)])  # 13, 14: after it
        core.settle_snapshot(wait=True)
        assert storage.snapshots.load("host-0")[0] == 10  # type: ignore[index]
        assert [sequence for sequence, _ in storage.journal.records] == [11, 12, 13, 14]
    recovered = storage.host()
    # bolt's 11 and acme's 12 are in their trees' states; cora's 13 and acme's 14 are not.
    assert {root: len(records) for root, records in recovered.waiting.items()} == {
        "cora": 1,
        "acme": 1,
    }
    assert recovered.balance("acme", "acme") == (Decimal("98.50"), Decimal("98.50"))
    assert recovered.balance("bolt", "bolt") == (Decimal("99.75"), Decimal("99.75"))
    assert recovered.balance("cora", "cora") == (Decimal("99.75"), Decimal("99.75"))
    # Retries of answered commands on either side of the snapshot count once.
    assert recovered.apply([call("bolt", 1), call("acme", 5)])[0].accepted
    assert recovered.balance("acme", "acme") == (Decimal("98.50"), Decimal("98.50"))
    assert recovered.balance("bolt", "bolt") == (Decimal("99.75"), Decimal("99.75"))


def test_a_snapshot_of_schema_1_still_recovers() -> None:
    storage = Storage()
    core = storage.host(snapshot_every_commands=10)
    setup(core, "acme", credit="100")
    core.apply([call("acme", n) for n in range(9)])
    core.apply([call("acme", 9)])
    sequence, data = storage.snapshots.load("host-0")  # type: ignore[misc]
    old = msgspec.msgpack.decode(data, type=HostSnapshot)
    assert old.tree_sequences == {}
    old.schema = 1
    storage.snapshots.save("host-0", sequence, msgspec.msgpack.encode(old))
    recovered = storage.host()
    assert recovered.balance("acme", "acme") == (Decimal("97.50"), Decimal("97.50"))


def test_a_snapshot_that_fails_to_store_trims_nothing_and_the_next_one_is_stored() -> None:
    storage = Storage()
    storage.snapshots = slow = SlowSnapshots()
    slow.failing = True
    slow.go.set()
    with ThreadPoolExecutor(1) as saver:
        core = snapshot_taken(storage, saver)
        core.settle_snapshot(wait=True)
        assert slow.load("host-0") is None
        assert len(storage.journal.records) == 11  # nothing trimmed: recovery needs it all
        slow.failing = False
        core.apply([call("acme", n) for n in range(9, 19)])  # 10 more: due again
        core.settle_snapshot(wait=True)
        assert slow.load("host-0") is not None and slow.load("host-0")[0] == 21  # type: ignore[index]
        assert storage.journal.records == []
    recovered = storage.host()
    assert recovered.balance("acme", "acme") == (Decimal("95.25"), Decimal("95.25"))


def test_a_snapshot_asked_for_waits_for_the_one_being_stored() -> None:
    storage = Storage()
    storage.snapshots = slow = SlowSnapshots()
    with ThreadPoolExecutor(1) as saver:
        core = snapshot_taken(storage, saver)
        threading.Timer(0.05, slow.go.set).start()
        assert core.snapshot() == 11  # stored in this thread after the background one
        assert storage.journal.records == []
        assert core.stats().snapshots_total == 2


def test_timers_expire_reservations_and_close_periods_and_the_statements_are_queued() -> None:
    storage = Storage()
    core = storage.host()
    setup(core, "acme")
    core.apply(
        [
            (
                "acme",
                Authorize(id="r1", tenant="acme", time=MARCH + 60, meter="calls", ttl_seconds=30),
            )
        ]
    )
    assert core.balance("acme", "acme") == (Decimal("10"), Decimal("9.75"))
    assert core.next_timer() == MARCH + 90
    assert core.tick(MARCH + 90) == 1
    assert core.balance("acme", "acme") == (Decimal("10"), Decimal("10"))
    core.apply([call("acme", 1)])
    april = parse("2024-04-01T00:00:00Z")
    assert core.tick(april) == 1
    assert list(storage.statements.items) == [("acme", MARCH, 0)]
    # The same statement handed in again after a replay is not queued twice.
    storage.host().catch_up()
    assert list(storage.statements.items) == [("acme", MARCH, 0)]


def test_a_command_for_an_unknown_tree_is_refused_and_a_batch_has_a_bound() -> None:
    core = Storage().host()
    outcome = core.apply([call("nobody", 1)])[0]
    assert (outcome.accepted, outcome.reason) == (False, Reason.unknown_tenant)
    with pytest.raises(ValueError, match="at most"):
        core.apply([call("acme", n) for n in range(10_001)])


def test_a_question_replays_a_waiting_tree_in_the_engine_context_whatever_thread_asks() -> None:
    storage = Storage()
    core = storage.host()
    setup(core, "acme")
    core.apply([call("acme", n) for n in range(3)])
    storage.tariffs = catalog_tariffs(calls_catalog("0.25"))  # a new process compiles anew
    recovered = storage.host()
    assert "acme" in recovered.waiting
    answers: list[object] = []
    query = QuoteQuery(tenant="acme", meter="calls")
    # A new thread starts with Python's default decimal context, not the engine's.
    asker = threading.Thread(
        target=lambda: answers.append(recovered.quote("acme", query, MARCH + 120))
    )
    asker.start()
    asker.join()
    [quote] = answers
    assert quote is not None and not isinstance(quote, Outcome)
    assert (quote.amount, quote.available) == (Decimal("0.25"), Decimal("9.25"))


def test_reloaded_tariffs_rate_every_tree_from_then_on() -> None:
    storage = Storage()
    core = storage.host()
    setup(core, "acme")
    assert core.apply([call("acme", 1)])[0].amount == Decimal("0.25")
    # The catalogue was edited in place (the version kept its number): the cached rater goes.
    core.use_tariffs(catalog_tariffs(calls_catalog("0.50")))
    assert core.apply([call("acme", 2)])[0].amount == Decimal("0.50")
