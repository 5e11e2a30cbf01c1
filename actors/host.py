"""The core of an account host: many tenant trees, one journal, snapshots, timers.

This module has no Ray in it, so that it can be tested directly; ``actors/ray_host.py`` wraps
it in a Ray actor. Every batch of commands is appended to the journal, durably, before any of
it is applied (write-ahead), and answered after. After a crash the newest snapshot is loaded
and the journal after it is replayed; replay is lazy per tree (a tree is brought up to date
on its first command, or by the background catch-up), so a host serves again after reading
its journal, without waiting for every tree to replay.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from decimal import Decimal
from typing import Final

import msgspec

from engine.accounts import (
    Advance,
    Alert,
    Command,
    ConfigureTenant,
    Outcome,
    TenantTree,
    queries,
)
from engine.accounts import Reason as AccountReason
from engine.accounts.commands import denied
from engine.accounts.queries import PeriodUsage, Quote, QuoteQuery
from engine.accounts.state import TreeState
from engine.accounts.tariffs import TariffSource
from engine.numbers import engine_context_installed, use_engine_context
from engine.ports import Journal, SnapshotStore, StatementQueue
from engine.statements import Statement

log = logging.getLogger(__name__)

BATCH_MAX: Final = 10_000
JOURNAL_FLUSH_BUCKETS_SECONDS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0
)  # fmt: skip
"""Upper bounds of the journal flush histogram a host keeps (one more bucket: above them)."""
JOURNAL_FREE_BYTES_MIN: Final = 64 * 1024 * 1024
"""A file journal with less free disk than one segment is reported as not writable."""
ALERTS_KEPT: Final = 10_000
SNAPSHOT_SCHEMA: Final = 2
"""2: trees may be taken after ``sequence`` (``tree_sequences``); a host of schema 1 would
replay their records twice, so it refuses such a snapshot."""
_SEPARATOR: Final = b"\x00"  # tenant ids never contain NUL

_encode_command = msgspec.msgpack.Encoder().encode
_encode_state = msgspec.msgpack.Encoder().encode
_decode_command = msgspec.msgpack.Decoder(Command).decode


class HostSnapshot(msgspec.Struct, kw_only=True):
    schema: int = SNAPSHOT_SCHEMA
    host: str
    sequence: int
    """The journal after this position is replayed: every tree's state includes it."""
    trees: dict[str, TreeState]
    tree_sequences: dict[str, int] = {}
    """Trees taken later than ``sequence``, each with the position its state includes: their
    records up to it are not replayed."""


class _SnapshotParts(msgspec.Struct, kw_only=True):
    """A :class:`HostSnapshot` as written: its trees encoded one by one (the same encoding),
    so that a snapshot can be taken a few trees at a time."""

    schema: int = SNAPSHOT_SCHEMA
    host: str
    sequence: int
    trees: dict[str, msgspec.Raw]
    tree_sequences: dict[str, int]


class _Taking:
    """A snapshot being taken a few trees at a time, between batches."""

    __slots__ = ("began_at", "pending", "sequence", "tree_sequences", "trees")

    def __init__(self, roots: list[str], sequence: int, began_at: float) -> None:
        self.pending = roots
        self.sequence = sequence
        self.began_at = began_at
        self.trees: dict[str, msgspec.Raw] = {}
        self.tree_sequences: dict[str, int] = {}


class HostStats(msgspec.Struct, kw_only=True):
    host: str
    trees: int
    trees_waiting_for_replay: int
    commands_total: int
    batches_total: int
    journal_flushes_total: int
    journal_flush_seconds_total: float
    journal_sequence: int
    snapshots_total: int
    snapshot_sequence: int
    snapshot_age_seconds: float
    recoveries_total: int
    replayed_commands_total: int
    timers_fired_total: int
    # Added for /metrics; defaults keep older encodings decodable.
    accounts: int = 0
    timers_pending: int = 0
    statements_queued_total: int = 0
    journal_flush_buckets_seconds: tuple[float, ...] = ()
    journal_flush_counts: tuple[int, ...] = ()
    """Flushes per bucket of ``journal_flush_buckets_seconds``, not cumulative; the last
    counts the flushes above the highest bound."""
    journal_writable: bool = True


class JournalHealth(msgspec.Struct, frozen=True, kw_only=True):
    """Whether the host can append to its journal now, and if not, why."""

    writable: bool
    reason: str | None = None


def journal_record(root: str, command: Command) -> bytes:
    """A journal record: the root id, NUL, the command in MessagePack. The root comes first
    so that recovery can group records by tree without decoding them."""
    return root.encode() + _SEPARATOR + _encode_command(command)


def split_record(record: bytes) -> tuple[str, bytes]:
    root, _, body = record.partition(_SEPARATOR)
    return root.decode(), body


SNAPSHOT_EVERY_COMMANDS: Final = 1_000_000
"""A snapshot after this many commands (or ``snapshot_every_seconds``): a snapshot encodes
every tree with its idempotency window and held the host for about a fifth of its time under
batch ingestion at 200,000; a restart with 1,000,000 commands after the snapshot serves again
in 1.4 s (``meterwerk bench recovery``)."""
SNAPSHOT_EVERY_SECONDS: Final = 300.0
SNAPSHOT_SLICE_SECONDS: Final = 0.01
"""With a ``snapshot_saver``, a snapshot is taken a few trees at a time, about this long after
each batch, and stored in the background: no request waits for a whole snapshot. Under batch
ingestion (``meterwerk bench http``) a snapshot of eight trees with full idempotency windows
was 112 MB and took 0.49 s to encode and about as long to store in SQLite, and every request
waiting meanwhile waited for both (p99 of a batch request: 1.1 to 1.5 s). A tree is encoded
whole: one with a full idempotency window (100,000 ids) takes about 60 ms."""


class HostCore:
    def __init__(
        self,
        name: str,
        *,
        journal: Journal,
        snapshots: SnapshotStore,
        statements: StatementQueue,
        tariffs: TariffSource,
        snapshot_every_commands: int = SNAPSHOT_EVERY_COMMANDS,
        snapshot_every_seconds: float = SNAPSHOT_EVERY_SECONDS,
        snapshot_saver: Executor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.journal = journal
        self.snapshots = snapshots
        self.statements = statements
        self.tariffs = tariffs
        self.snapshot_every_commands = snapshot_every_commands
        self.snapshot_every_seconds = snapshot_every_seconds
        self.snapshot_saver = snapshot_saver
        """Where snapshots due by count or age are stored while the host goes on; None:
        stored before the batch that made one due is answered."""
        self.clock = clock
        self.trees: dict[str, TenantTree] = {}
        self.waiting: dict[str, list[bytes]] = {}
        """Journal records not yet replayed, by tree (filled by :meth:`recover`)."""
        self.alerts: deque[Alert] = deque(maxlen=ALERTS_KEPT)
        self._timers: list[tuple[int, str]] = []
        self._scheduled: dict[str, int] = {}
        """The instant each tree is in ``_timers`` for, so that it is pushed once per change."""
        self._sequence = 0
        self._snapshot_sequence = 0
        self._snapshot_at = clock()
        """When the last stored snapshot was taken."""
        self._snapshot_taken_at = self._snapshot_at
        self._commands_since_snapshot = 0
        """Commands since the last snapshot was taken (stored or not)."""
        self._saving: tuple[int, float, Future[None]] | None = None
        """The snapshot being stored by ``snapshot_saver``: its sequence, when it was taken."""
        self._taking: _Taking | None = None
        """The snapshot being taken a few trees at a time before it is stored."""
        self.stats_counters = {
            "commands_total": 0,
            "batches_total": 0,
            "journal_flushes_total": 0,
            "journal_flush_seconds_total": 0.0,
            "snapshots_total": 0,
            "recoveries_total": 0,
            "replayed_commands_total": 0,
            "timers_fired_total": 0,
            "statements_queued_total": 0,
        }
        self._flush_counts = [0] * (len(JOURNAL_FLUSH_BUCKETS_SECONDS) + 1)
        self._journal_error: str | None = None
        """Why the last append failed; None once an append succeeds."""

    # Recovery -------------------------------------------------------------------------------

    def recover(self) -> int:
        """Load the newest snapshot and queue the journal after it for replay; the number of
        records to replay. Cheap: no command is decoded here."""
        self.trees.clear()
        self.waiting.clear()
        loaded = self.snapshots.load(self.name)
        after = 0
        taken_later: dict[str, int] = {}
        if loaded is not None:
            after, data = loaded
            snapshot = msgspec.msgpack.decode(data, type=HostSnapshot)
            assert snapshot.schema <= SNAPSHOT_SCHEMA, "a snapshot from a newer version"
            for root, state in snapshot.trees.items():
                self.trees[root] = TenantTree(state, self.tariffs)
            taken_later = snapshot.tree_sequences
        if after > self.journal.last_sequence():
            # A journal that ends before the snapshot lost records (say, a Redis without
            # persistence that restarted): new appends would reuse sequence numbers.
            raise RuntimeError(
                f"host {self.name}: the journal ends at {self.journal.last_sequence()} but the "
                f"snapshot covers {after}; refusing to start on a journal that lost records"
            )
        count = 0
        for sequence, record in self.journal.read(after):
            self._sequence = sequence
            root, _ = split_record(record)
            if taken_later and sequence <= taken_later.get(root, 0):
                continue  # in the tree's state already
            self.waiting.setdefault(root, []).append(record)
            count += 1
        self._sequence = max(self._sequence, after, self.journal.last_sequence())
        self._snapshot_sequence = after
        self._commands_since_snapshot = count
        self.stats_counters["recoveries_total"] += 1
        for root in self.trees:
            self._schedule(root)
        log.info("host %s: snapshot at %d, %d records to replay", self.name, after, count)
        return count

    def catch_up(self, trees_max: int = 100) -> int:
        """Replay waiting records of up to ``trees_max`` trees; how many trees are left."""
        if not engine_context_installed():
            use_engine_context()
        for root in list(self.waiting)[:trees_max]:
            self._activate(root)
        return len(self.waiting)

    def _activate(self, root: str) -> TenantTree | None:
        """The tree of ``root``, replaying its waiting records first."""
        if not self.waiting:
            return self.trees.get(root)
        records = self.waiting.pop(root, None)
        tree = self.trees.get(root)
        if records:
            for record in records:
                command = _decode_command(split_record(record)[1])
                tree, _ = self._apply_one(root, tree, command)
            self.stats_counters["replayed_commands_total"] += len(records)
            self._drain(root)
            self._schedule(root)
        return tree

    # Commands -------------------------------------------------------------------------------

    def apply(self, items: Sequence[tuple[str, Command]]) -> list[Outcome]:
        """Apply a batch in order: journal it (one durable flush), then apply, then answer."""
        if len(items) > BATCH_MAX:
            raise ValueError(f"a batch holds at most {BATCH_MAX} commands")
        if not engine_context_installed():
            use_engine_context()  # decimal contexts are per thread; the engine needs its own
        if not items:
            return []
        self._append([journal_record(root, command) for root, command in items])
        outcomes = []
        touched: set[str] = set()
        for root, command in items:
            tree, outcome = self._apply_one(root, self._activate(root), command)
            outcomes.append(outcome)
            if tree is not None:
                touched.add(root)
        for root in touched:
            self._drain(root)
            self._schedule(root)
        self.stats_counters["commands_total"] += len(items)
        self.stats_counters["batches_total"] += 1
        self._maybe_snapshot()
        return outcomes

    def _apply_one(
        self, root: str, tree: TenantTree | None, command: Command
    ) -> tuple[TenantTree | None, Outcome]:
        """Apply one command to its tree; a tree is created by configuring its root."""
        if tree is None:
            if not (isinstance(command, ConfigureTenant) and command.tenant == root):
                return None, denied(
                    AccountReason.unknown_tenant, "tenant", f"no tree {root!r} on this host"
                )
            tree = self.trees[root] = TenantTree.new(root, self.tariffs)
        return tree, tree.handle(command)

    def _append(self, records: list[bytes]) -> None:
        began = time.perf_counter()
        try:
            self._sequence = self.journal.append(records)
        except Exception as error:
            # Kept for /readyz: a failed journal refuses appends until the host recovers.
            self._journal_error = f"{type(error).__name__}: {error}"
            raise
        seconds = time.perf_counter() - began
        self._journal_error = None
        self.stats_counters["journal_flushes_total"] += 1
        self.stats_counters["journal_flush_seconds_total"] += seconds
        self._flush_counts[bisect_left(JOURNAL_FLUSH_BUCKETS_SECONDS, seconds)] += 1
        self._commands_since_snapshot += len(records)

    def _drain(self, root: str) -> None:
        """Hand the tree's closed-period statements to the queue and keep its alerts."""
        tree = self.trees.get(root)
        if tree is None:
            return
        if tree.state.statements:
            items = [_queue_item(t, s) for t, s in tree.take_statements()]
            self.statements.put(items)
            self.stats_counters["statements_queued_total"] += len(items)
        if tree.state.alerts:
            self.alerts.extend(tree.take_alerts())

    # Timers ---------------------------------------------------------------------------------

    def _schedule(self, root: str) -> None:
        tree = self.trees.get(root)
        due = tree.next_timer() if tree is not None else None
        if due is not None and self._scheduled.get(root) != due:
            self._scheduled[root] = due
            heapq.heappush(self._timers, (due, root))

    def next_timer(self) -> int | None:
        return self._timers[0][0] if self._timers else None

    def tick(self, now: int) -> int:
        """Fire every timer due by ``now``: one journaled ``Advance`` per tree that has one."""
        due: dict[str, None] = {}
        while self._timers and self._timers[0][0] <= now:
            at, root = heapq.heappop(self._timers)
            if self._scheduled.get(root) == at:
                del self._scheduled[root]
            tree = self.trees.get(root)
            if tree is not None and root not in self.waiting:
                next_due = tree.next_timer()
                if next_due is not None and next_due <= now:
                    due[root] = None
        if not due:
            return 0
        self.apply([(root, Advance(id=f"advance:{now}", tenant=root, time=now)) for root in due])
        self.stats_counters["timers_fired_total"] += len(due)
        return len(due)

    # Snapshots ------------------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        self.continue_snapshot()
        if (
            self._saving is None
            and self._taking is None
            and (
                self._commands_since_snapshot >= self.snapshot_every_commands
                or (
                    self._commands_since_snapshot
                    and self.clock() - self._snapshot_taken_at >= self.snapshot_every_seconds
                )
            )
        ):
            if self.snapshot_saver is None:
                self.snapshot()
                return
            self._taking = self._begin_snapshot()
            self.continue_snapshot()

    def continue_snapshot(self) -> None:
        """Go on with a snapshot taken in the background: encode some more trees, hand a
        complete one to ``snapshot_saver``, trim the journal once one is stored."""
        self.settle_snapshot()
        taking = self._taking
        if taking is None:
            return
        assert self.snapshot_saver is not None
        data = self._take(taking, SNAPSHOT_SLICE_SECONDS)
        if data is not None:
            self._taking = None
            future = self.snapshot_saver.submit(
                self.snapshots.save, self.name, taking.sequence, data
            )
            self._saving = (taking.sequence, taking.began_at, future)

    def snapshot(self) -> int:
        """Store every tree at the current journal position, then trim the journal there; a
        snapshot still being stored in the background is waited for first, one being taken
        is given up for this one."""
        self.settle_snapshot(wait=True)
        self._taking = None
        taking = self._begin_snapshot()
        data = self._take(taking, None)
        assert data is not None
        self.snapshots.save(self.name, taking.sequence, data)
        self._stored(taking.sequence, taking.began_at)
        return taking.sequence

    def _begin_snapshot(self) -> _Taking:
        self.catch_up(trees_max=len(self.waiting))
        self._snapshot_taken_at = self.clock()
        self._commands_since_snapshot = 0
        return _Taking(list(self.trees), self._sequence, self._snapshot_taken_at)

    def _take(self, taking: _Taking, seconds: float | None) -> bytes | None:
        """Encode trees for about ``seconds`` (at least one; None: all of them), and the whole
        snapshot once none is left. A tree taken after the journal moved on notes its own
        position, so that recovery skips its records up to there; the journal is trimmed only
        to where the snapshot began."""
        began = time.perf_counter()
        while taking.pending:
            root = taking.pending.pop()
            tree = self.trees.get(root)
            if tree is not None:
                # Replayed when the taking began, and nothing waits for replay after that.
                assert root not in self.waiting, "a tree's state taken before its replay"
                taking.trees[root] = msgspec.Raw(_encode_state(tree.state))
                if self._sequence > taking.sequence:
                    taking.tree_sequences[root] = self._sequence
            if seconds is not None and time.perf_counter() - began >= seconds:
                return None
        parts = _SnapshotParts(
            host=self.name,
            sequence=taking.sequence,
            trees=taking.trees,
            tree_sequences=taking.tree_sequences,
        )
        return msgspec.msgpack.encode(parts)

    def settle_snapshot(self, *, wait: bool = False) -> None:
        """Trim the journal once a snapshot stored in the background is safe (``wait``: wait
        for it). A failed store trims nothing; the next one is due as if it had been stored."""
        if self._saving is None:
            return
        sequence, taken_at, future = self._saving
        if not wait and not future.done():
            return
        self._saving = None
        try:
            future.result()
        except Exception:
            log.exception("host %s: storing the snapshot at %d failed", self.name, sequence)
            return
        self._stored(sequence, taken_at)

    def _stored(self, sequence: int, taken_at: float) -> None:
        self.journal.trim(sequence)
        self._snapshot_sequence = sequence
        self._snapshot_at = taken_at
        self.stats_counters["snapshots_total"] += 1

    def use_tariffs(self, tariffs: TariffSource) -> None:
        """Rate every tree with ``tariffs`` from now on (the catalogue was reloaded)."""
        self.tariffs = tariffs
        for tree in self.trees.values():
            tree.use_tariffs(tariffs)

    # Reading --------------------------------------------------------------------------------

    def tree(self, root: str) -> TenantTree | None:
        """The tree of ``root``, brought up to date; None if it is not on this host. Asking
        may replay it, which, like applying, needs the engine's decimal context (installed
        per thread)."""
        if not engine_context_installed():
            use_engine_context()
        return self._activate(root)

    def stats(self) -> HostStats:
        counters = self.stats_counters
        return HostStats(
            host=self.name,
            trees=len(self.trees),
            trees_waiting_for_replay=len(self.waiting),
            commands_total=int(counters["commands_total"]),
            batches_total=int(counters["batches_total"]),
            journal_flushes_total=int(counters["journal_flushes_total"]),
            journal_flush_seconds_total=float(counters["journal_flush_seconds_total"]),
            journal_sequence=self._sequence,
            snapshots_total=int(counters["snapshots_total"]),
            snapshot_sequence=self._snapshot_sequence,
            snapshot_age_seconds=self.clock() - self._snapshot_at,
            recoveries_total=int(counters["recoveries_total"]),
            replayed_commands_total=int(counters["replayed_commands_total"]),
            timers_fired_total=int(counters["timers_fired_total"]),
            # Counting sub-tenants walks every tree: cheap at scrape time, not per command.
            accounts=sum(len(tree.state.nodes) for tree in self.trees.values()),
            timers_pending=len(self._scheduled),
            statements_queued_total=int(counters["statements_queued_total"]),
            journal_flush_buckets_seconds=JOURNAL_FLUSH_BUCKETS_SECONDS,
            journal_flush_counts=tuple(self._flush_counts),
            journal_writable=self.journal_health().writable,
        )

    def journal_health(self) -> JournalHealth:
        """Whether the next append can succeed, as far as a cheap check can tell: the last
        append did not fail, the journal is open and usable, and a file journal's directory
        is writable with room for a segment."""
        if self._journal_error is not None:
            return JournalHealth(
                writable=False, reason=f"the last append failed: {self._journal_error}"
            )
        try:
            # Every backend checks that it is open and has not failed before it looks at the
            # records, and an empty append writes nothing: the port's own usability check.
            self.journal.append([])
        except Exception as error:
            return JournalHealth(writable=False, reason=f"{type(error).__name__}: {error}")
        problem = _directory_problem(getattr(self.journal, "path", None))
        return JournalHealth(writable=problem is None, reason=problem)

    def balance(self, root: str, tenant: str) -> tuple[Decimal, Decimal | None] | None:
        tree = self.tree(root)
        if tree is None or tenant not in tree.state.nodes:
            return None
        return tree.balance(tenant), tree.available(tenant)

    def usage(self, root: str, tenant: str, now: int) -> PeriodUsage | Outcome | None:
        """The tenant's open period so far; None if its tree is not on this host. Read-only:
        a timer due by ``now`` is let pass on a copy (see ``engine.accounts.queries``)."""
        tree = self.tree(root)
        return None if tree is None else queries.period_usage(tree, tenant, now)

    def quote(self, root: str, query: QuoteQuery, now: int) -> Quote | Outcome | None:
        """The price of ``query`` now, changing nothing; None if its tree is not here."""
        tree = self.tree(root)
        return None if tree is None else queries.quote(tree, query, now)


def _directory_problem(path: object) -> str | None:
    """Why a file journal's directory cannot take the next segment, or None. A filesystem
    remounted read-only and a full disk are how a file journal usually stops being writable,
    and both show here before the next append fails. Other backends have no ``path``."""
    if not isinstance(path, str | os.PathLike):
        return None
    if not os.access(path, os.W_OK):
        return f"the journal directory {os.fspath(path)} is not writable"
    if hasattr(os, "statvfs"):
        disk = os.statvfs(path)
        free_bytes = disk.f_bavail * disk.f_frsize
        if free_bytes < JOURNAL_FREE_BYTES_MIN:
            return f"the journal's disk has {free_bytes} bytes free"
    return None


def _queue_item(tenant: str, statement: Statement) -> tuple[str, int, int, bytes]:
    return (tenant, statement.period_start, statement.revision, msgspec.json.encode(statement))
