"""Prometheus metrics of one gateway app, served at ``GET /metrics``.

Each app has a registry of its own rather than prometheus_client's global one, so that
several apps in one process (the tests) neither share nor clash over series. The gateway's
own figures (requests, decisions, events, calls to the hosts) are counted as they happen, in
plain integers on the event loop's thread (:class:`Tally`, :class:`Spread`); prometheus_client's
own Counter and Histogram take a lock per increment, which came to a tenth of the gateway's
CPU on a request answered from a grant. The hosts' figures are asked for at scrape time
(``host_metrics.py``).

No label carries a tenant, key or command id: every label has a small, fixed set of values
(routes, methods, statuses, reasons, hosts), so the series stay bounded whatever the traffic.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter as Occurrences
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Generic, TypeVar

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.accounts import Outcome, Reason
from gateway.coalescer import Coalescer
from gateway.errors import DECISIONS
from gateway.host_metrics import HostFigures
from gateway.hosts import HostTransport

HOST_STATS_TIMEOUT_SECONDS: Final = 1.0
"""How long a scrape waits for a host's figures; Prometheus's own timeout is 10 s."""
ROUTES_MAX: Final = 100
"""Distinct route labels; past that a route counts as ``other`` (a mount with a parameter in
its prefix could otherwise mint a label per value)."""
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SECONDS_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip
COMMANDS_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000)


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 429:
        return "busy"
    if status == 503:
        return "unavailable"
    return "rejected" if status < 500 else "error"


class Count:
    """One series of a :class:`Tally`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


S = TypeVar("S")


class _Family(Collector, Generic[S]):
    """A metric family counted in plain integers: only the event loop's thread counts and
    scrapes, so no lock is needed (prometheus_client's metrics take one per increment). A
    series is made by ``make`` the first time its label values are seen."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        registry: CollectorRegistry,
        make: Callable[[], S],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = list(labels)
        self.make = make
        self.series: dict[tuple[str, ...], S] = {}
        registry.register(self)

    def labels(self, *values: str) -> S:
        assert len(values) == len(self.label_names), (self.name, values)
        series = self.series.get(values)
        if series is None:
            series = self.series[values] = self.make()
        return series

    def describe(self) -> Iterator[Metric]:
        yield from self.collect()


class Tally(_Family[Count]):
    """A counter family (prometheus_client's Counter, lock-free)."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], registry: CollectorRegistry
    ) -> None:
        super().__init__(name, documentation, labels, registry, Count)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.label_names)
        for values, series in list(self.series.items()):
            family.add_metric(values, series.value)
        yield family


class Observations:
    """One series of a :class:`Spread`: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        # Bucket ``le`` holds the values at most its bound: the first bound >= value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class Spread(_Family[Observations]):
    """A histogram family (prometheus_client's Histogram, lock-free)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        assert list(buckets) == sorted(set(buckets)), "bucket bounds rise"
        bounds = tuple(float(bound) for bound in buckets)
        # The bounds written as prometheus_client writes them ("0.005", "1.0", "+Inf").
        self.names = [floatToGoString(bound) for bound in bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labels, registry, lambda: Observations(bounds))

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.label_names)
        for values, series in list(self.series.items()):
            cumulative, buckets = 0, []
            for name, count in zip(self.names, series.counts, strict=True):
                cumulative += count
                buckets.append((name, float(cumulative)))
            family.add_metric(values, buckets, series.total)
        yield family


class _Decisions(dict[tuple[str, Reason | None], Count]):
    """Each (command, reason)'s count of outcomes, made the first time it is seen: counting
    one is then a lookup and an increment."""

    def __init__(self, family: Tally) -> None:
        super().__init__()
        self.family = family

    def __missing__(self, key: tuple[str, Reason | None]) -> Count:
        command, reason = key
        # A refusal is a decision (200, accepted false); any other reason answered a request
        # that was wrong (a 4xx), and is counted apart so that the dashboard's refusals are
        # business decisions only.
        outcome = "accepted" if reason is None else "refused" if reason in DECISIONS else "error"
        child = self[key] = self.family.labels(command, outcome, reason or "none")
        return child


class Metrics:
    """The metrics of one gateway app, and the hooks that move them."""

    def __init__(
        self,
        transport: HostTransport,
        *,
        host_stats_timeout_seconds: float = HOST_STATS_TIMEOUT_SECONDS,
    ) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Tally(
            "meterwerk_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_seconds = Spread(
            "meterwerk_http_request_duration_seconds",
            "Time to answer a request, by route template and outcome "
            "(ok, rejected, busy, unavailable, error).",
            ["route", "outcome"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.decisions = Tally(
            "meterwerk_decisions",
            "Outcomes of commands, by command, outcome and reason (none when accepted).",
            ["command", "outcome", "reason"],
            registry=registry,
        )
        self.events = Tally(
            "meterwerk_events_ingested",
            "Usage events received at /v1/events, accepted or refused.",
            ["outcome"],
            registry=registry,
        )
        self.call_commands = Spread(
            "meterwerk_host_call_commands",
            "Commands per call to a host (the coalescer's batch size).",
            ["host"],
            buckets=COMMANDS_BUCKETS,
            registry=registry,
        )
        self.call_seconds = Spread(
            "meterwerk_host_call_duration_seconds",
            "Round trip of a call to a host, ok or failed.",
            ["host", "outcome"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.grants_outstanding = Gauge(
            "meterwerk_grants_outstanding",
            "Grants this gateway holds to spend locally.",
            registry=registry,
        )
        self.failure_policy = Tally(
            "meterwerk_failure_policy",
            "Requests a failure policy answered while a host was unreachable.",
            ["policy", "outcome"],
            registry=registry,
        )
        self.hosts = HostFigures(transport, host_stats_timeout_seconds)
        registry.register(self.hosts)
        self._route_labels: dict[tuple[int, str], str] = {}
        # Each series is looked up once per label values, not per request.
        self._request_children: dict[tuple[str, str, int], tuple[Count, Observations]] = {}
        self._decisions = _Decisions(self.decisions)
        self._call_children: dict[tuple[str, bool], tuple[Observations, Observations]] = {}

    def follow(self, coalescer: Coalescer) -> None:
        """Count ``coalescer``'s calls, and read its queues at scrape time."""
        coalescer.on_call = self.observe_call
        self.hosts.lanes = coalescer.lanes

    # Hooks ----------------------------------------------------------------------------------

    def observe_request(self, scope: Scope, status: int, seconds: float) -> None:
        self.observe(self._route_label(scope), scope.get("method", ""), status, seconds)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request to the route labelled ``route`` (its template)."""
        key = (route, method if method in METHODS else "other", status)
        children = self._request_children.get(key)
        if children is None:
            route, method, _ = key
            children = self._request_children[key] = (
                self.requests.labels(route, method, str(status)),
                self.request_seconds.labels(route, _outcome(status)),
            )
        # Count.inc and Observations.observe, inlined: this runs once per request.
        count, spread = children
        count.value += 1
        spread.counts[bisect_left(spread.bounds, seconds)] += 1
        spread.total += seconds

    def decided(self, command: str, outcome: Outcome) -> None:
        """Count one command's outcome."""
        self._decisions[command, outcome.reason].value += 1

    def ingested(self, outcomes: Sequence[Outcome]) -> None:
        """Count a batch of events' outcomes, one increment per distinct reason."""
        accepted = 0
        for reason, count in Occurrences(outcome.reason for outcome in outcomes).items():
            self._decisions["event", reason].value += count
            accepted += count if reason is None else 0
        self.events.labels("accepted").inc(accepted)
        self.events.labels("refused").inc(len(outcomes) - accepted)

    def observe_call(self, host: str, commands: int, seconds: float, failed: bool) -> None:
        children = self._call_children.get((host, failed))
        if children is None:
            children = self._call_children[(host, failed)] = (
                self.call_commands.labels(host),
                self.call_seconds.labels(host, "failed" if failed else "ok"),
            )
        children[0].observe(commands)
        children[1].observe(seconds)

    def set_grants_outstanding(self, count: int) -> None:
        self.grants_outstanding.set(count)

    def count_failure_policy(self, policy: str, outcome: str) -> None:
        """Count a request answered by ``policy`` (``deny``, ``allow_overdraft``) because its
        host was unreachable; ``outcome`` is what the policy did, one of a few fixed words."""
        self.failure_policy.labels(policy, outcome).inc()

    # Scraping -------------------------------------------------------------------------------

    async def exposition(self) -> bytes:
        """Every metric in Prometheus's text format, the hosts' figures fetched first."""
        await self.hosts.refresh()
        return generate_latest(self.registry)

    def _route_label(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return "unmatched"
        # Under a mount, the prefix the mount matched sits between the app's root path and
        # the route's own template.
        root = scope.get("root_path", "")
        prefix = root[len(scope.get("app_root_path", root)) :]
        # Routes compare by value and so cannot be hashed; they live as long as the app.
        key = (id(route), prefix)
        label = self._route_labels.get(key)
        if label is None:
            if len(self._route_labels) >= ROUTES_MAX:
                return "other"
            label = self._route_labels[key] = prefix + getattr(route, "path", "?")
        return label


class RequestMetrics:
    """ASGI middleware that counts and times every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        # An exception that escapes is answered 500 by Starlette's outermost middleware.
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self.metrics.observe_request(scope, status, time.perf_counter() - began)


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``, without a key like most Prometheus targets (see the README); 404
    when ``GatewayConfig.metrics_enabled`` is off."""
    gateway = request.app.state.gateway
    if not gateway.config.metrics_enabled:
        raise HTTPException(404, "no such route")
    metrics: Metrics = gateway.metrics
    return Response(await metrics.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4)
