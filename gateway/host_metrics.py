"""The hosts' figures for ``/metrics``, asked of every host when Prometheus scrapes.

prometheus_client collects synchronously, and the hosts answer asynchronously, so the
``/metrics`` route first awaits :meth:`HostFigures.refresh` (every host at once, each with a
short deadline) and then collects what it found. A host that did not answer in time is
``meterwerk_host_up 0`` and has no other series in that scrape: the scrape itself succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from actors.host import HostStats
from gateway.hosts import HostTransport

log = logging.getLogger(__name__)

LaneFigures = Callable[[], Iterable[tuple[str, int, int]]]
"""``(host, commands waiting, calls in flight)`` of this gateway's queues."""

_FIGURES: Final = (
    # name, kind, help, HostStats attribute
    ("meterwerk_host_commands_applied", "counter", "Commands applied.", "commands_total"),
    ("meterwerk_host_batches", "counter", "Batches applied, one journal flush each.",
     "batches_total"),
    ("meterwerk_host_snapshot_age_seconds", "gauge", "Seconds since the last snapshot (or the "
     "host's start).", "snapshot_age_seconds"),
    ("meterwerk_host_snapshots", "counter", "Snapshots stored.", "snapshots_total"),
    ("meterwerk_host_recoveries", "counter", "Recoveries from snapshot and journal.",
     "recoveries_total"),
    ("meterwerk_host_replayed_commands", "counter", "Journaled commands replayed after a "
     "recovery.", "replayed_commands_total"),
    ("meterwerk_host_trees", "gauge", "Tenant trees loaded.", "trees"),
    ("meterwerk_host_trees_waiting_for_replay", "gauge", "Trees with journal records not "
     "replayed yet.", "trees_waiting_for_replay"),
    ("meterwerk_host_accounts", "gauge", "Tenant accounts loaded, roots and sub-tenants.",
     "accounts"),
    ("meterwerk_host_timers_pending", "gauge", "Trees with a timer scheduled.", "timers_pending"),
    ("meterwerk_host_timers_fired", "counter", "Trees advanced by a timer.", "timers_fired_total"),
    ("meterwerk_host_statements_queued", "counter", "Statements of closed periods handed to "
     "the invoice queue.", "statements_queued_total"),
    ("meterwerk_host_journal_sequence", "gauge", "Sequence number of the journal's last "
     "record.", "journal_sequence"),
    ("meterwerk_host_journal_writable", "gauge", "1 if the journal can take the next batch.",
     "journal_writable"),
)  # fmt: skip


class HostFigures:
    """A collector of the hosts' figures as of the last :meth:`refresh`, and of this
    gateway's queue and calls per host as of now."""

    def __init__(self, transport: HostTransport, timeout_seconds: float) -> None:
        self.transport = transport
        self.timeout_seconds = timeout_seconds
        self.lanes: LaneFigures = _no_lanes
        self._stats: dict[str, HostStats | None] = {}

    async def refresh(self) -> None:
        names = list(self.transport.names)
        found = await asyncio.gather(*(self._stats_of(name) for name in names))
        self._stats = dict(zip(names, found, strict=True))

    async def _stats_of(self, host: str) -> HostStats | None:
        try:
            return await asyncio.wait_for(
                self.transport.stats(host, self.timeout_seconds), self.timeout_seconds
            )
        except Exception as error:  # a host that does not answer is reported down
            log.warning("metrics: host %s gave no figures: %r", host, error)
            return None

    def describe(self) -> list[Metric]:
        return []  # the hosts are asked only when scraped

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "meterwerk_host_up", "1 if the host gave its figures to this scrape.", labels=["host"]
        )
        for host, found in self._stats.items():
            up.add_metric([host], 0 if found is None else 1)
        yield up
        yield from self._lane_figures()
        answered = [(host, found) for host, found in self._stats.items() if found is not None]
        for name, kind, documentation, attribute in _FIGURES:
            family_of = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = family_of(name, documentation, labels=["host"])
            for host, found in answered:
                family.add_metric([host], float(getattr(found, attribute)))
            yield family
        yield _flush_histogram(answered)

    def _lane_figures(self) -> Iterator[Metric]:
        lanes = {name: (0, 0) for name in self.transport.names}
        for host, queued, in_flight in self.lanes():
            lanes[host] = (queued, in_flight)
        depth = GaugeMetricFamily(
            "meterwerk_host_queue_depth",
            "Commands waiting in this gateway for a call to the host.",
            labels=["host"],
        )
        calls = GaugeMetricFamily(
            "meterwerk_host_calls_in_flight",
            "Calls from this gateway to the host not answered yet.",
            labels=["host"],
        )
        for host, (queued, in_flight) in lanes.items():
            depth.add_metric([host], queued)
            calls.add_metric([host], in_flight)
        yield depth
        yield calls


def _no_lanes() -> list[tuple[str, int, int]]:
    return []


def _flush_histogram(answered: list[tuple[str, HostStats]]) -> Metric:
    family = HistogramMetricFamily(
        "meterwerk_host_journal_flush_seconds",
        "Time to append and flush one batch to the journal.",
        labels=["host"],
    )
    for host, stats in answered:
        counts = stats.journal_flush_counts
        if len(counts) != len(stats.journal_flush_buckets_seconds) + 1:
            continue  # a host without the histogram (an older version)
        bounds = [*map(repr, stats.journal_flush_buckets_seconds), "+Inf"]
        cumulative = 0
        buckets = []
        for bound, count in zip(bounds, counts, strict=True):
            cumulative += count
            buckets.append((bound, float(cumulative)))
        family.add_metric([host], buckets, sum_value=stats.journal_flush_seconds_total)
    return family
