"""``GET /metrics``: the gateway's and the hosts' figures after traffic, the Grafana dashboard
against what is exported, and ``/readyz`` with a journal that cannot be written."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.host import HostStats, JournalHealth
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.hosts import HostUnavailable, RayHosts
from tests.gateway.conftest import Stack, gateway_client, headers, in_process_client

pytestmark = pytest.mark.anyio

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "meterwerk.json"
METRIC_NAME = re.compile(r"\bmeterwerk_[A-Za-z0-9_:]+")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> str:
    answer = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return answer.text


async def record(client: httpx.AsyncClient, key: str, tenant: str, n: int) -> httpx.Response:
    body = {"id": f"m-{tenant}-{n}", "tenant": tenant, "meter": "calls"}
    return await client.post("/v1/record", json=body, headers=headers(key))


# The figures move with traffic --------------------------------------------------------------


async def test_a_denial_an_acceptance_and_events_move_their_counters(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    tenant = stack.tenant(credit="0.25")  # one call's worth
    assert (await record(client, stack.admin_key, tenant, 1)).json()["accepted"] is True
    refused = (await record(client, stack.admin_key, tenant, 2)).json()
    assert refused["reason"] == "insufficient_credit"
    events = [{"id": f"e-{n}", "tenant": tenant, "meter": "calls"} for n in range(3)]
    events.append({"id": "e-x", "tenant": "t-nobody", "meter": "calls"})
    ingested = await client.post(
        "/v1/events", json={"events": events}, headers=headers(stack.admin_key)
    )
    assert ingested.json()["accepted"] == 3

    found = samples(await scrape(client))
    decisions = "meterwerk_decisions_total"
    assert value(found, decisions, command="record", outcome="accepted", reason="none") == 1
    assert (
        value(found, decisions, command="record", outcome="refused", reason="insufficient_credit")
        == 1
    )
    assert value(found, decisions, command="event", outcome="error", reason="unknown_tenant") == 1
    assert value(found, "meterwerk_events_ingested_total", outcome="accepted") == 3
    assert value(found, "meterwerk_events_ingested_total", outcome="refused") == 1
    requests = "meterwerk_http_requests_total"
    assert value(found, requests, route="/v1/record", method="POST", status="200") == 2
    assert value(found, requests, route="/v1/events", method="POST", status="200") == 1
    duration = "meterwerk_http_request_duration_seconds_count"
    assert value(found, duration, route="/v1/record", outcome="ok") == 2
    [host] = stack.hosts.names
    assert value(found, "meterwerk_host_call_commands_count", host=host) >= 2
    assert value(found, "meterwerk_host_call_duration_seconds_count", host=host, outcome="ok") >= 2


async def test_the_hosts_figures_are_gathered_at_scrape_time(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    [host] = stack.hosts.names
    before = samples(await scrape(client))
    tenant = stack.tenant(credit="5")
    await record(client, stack.admin_key, tenant, 1)
    after = samples(await scrape(client))
    applied = "meterwerk_host_commands_applied_total"
    # Configure and top up (sent directly), then the record.
    assert value(after, applied, host=host) - value(before, applied, host=host) == 3
    flushes = "meterwerk_host_journal_flush_seconds_count"
    assert value(after, flushes, host=host) > value(before, flushes, host=host)
    assert value(after, "meterwerk_host_journal_flush_seconds_bucket", host=host, le="+Inf") == (
        value(after, flushes, host=host)
    )
    assert value(after, "meterwerk_host_up", host=host) == 1
    assert value(after, "meterwerk_host_journal_writable", host=host) == 1
    assert value(after, "meterwerk_host_accounts", host=host) >= 1
    assert value(after, "meterwerk_host_recoveries_total", host=host) == 1
    assert value(after, "meterwerk_host_snapshot_age_seconds", host=host) >= 0
    assert value(after, "meterwerk_host_queue_depth", host=host) == 0
    assert value(after, "meterwerk_host_calls_in_flight", host=host) == 0


class SilentHosts(RayHosts):
    """Hosts that serve but do not give their figures."""

    async def stats(self, host: str, timeout_seconds: float) -> HostStats:
        raise HostUnavailable("timed out")


async def test_a_host_without_figures_is_down_and_the_scrape_still_answers(stack: Stack) -> None:
    async with gateway_client(SilentHosts(stack.hosts), stack.url) as client:
        found = samples(await scrape(client))
    [host] = stack.hosts.names
    assert found[("meterwerk_host_up", frozenset({("host", host)}))] == 0
    assert value(found, "meterwerk_host_commands_applied_total", host=host) == 0


async def test_failure_policy_outcomes_and_grants_are_counted(stack: Stack) -> None:
    app = create_app(stack.hosts, stack.url)
    async with in_process_client(app) as client:
        metrics = app.state.gateway.metrics
        metrics.count_failure_policy("allow_overdraft", "allowed")
        metrics.count_failure_policy("deny", "denied")
        metrics.count_failure_policy("deny", "denied")
        metrics.set_grants_outstanding(7)
        found = samples(await scrape(client))
    policy = "meterwerk_failure_policy_total"
    assert value(found, policy, policy="deny", outcome="denied") == 2
    assert value(found, policy, policy="allow_overdraft", outcome="allowed") == 1
    assert value(found, "meterwerk_grants_outstanding") == 7


async def test_unknown_routes_get_one_label_and_metrics_can_be_turned_off(stack: Stack) -> None:
    async with gateway_client(stack.hosts, stack.url) as client:
        for n in range(3):
            await client.get(f"/nowhere/{n}")
        found = samples(await scrape(client))
    requests = "meterwerk_http_requests_total"
    assert value(found, requests, route="unmatched", method="GET", status="404") == 3
    config = GatewayConfig(metrics_enabled=False)
    async with gateway_client(stack.hosts, stack.url, config) as client:
        answer = await client.get("/metrics")
    assert (answer.status_code, answer.json()["code"]) == (404, "no_such_route")


# The dashboard queries only what is exported ------------------------------------------------


def exported_names(text: str) -> set[str]:
    """Every series name an exposition can carry, also for families with no sample yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type in ("histogram", "summary"):
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, PromQL)`` of every panel target and template variable."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            yield f"${variable['name']}", query["query"]


async def test_every_metric_the_dashboard_queries_is_exported(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_names(await scrape(client))
    queried = {
        (where, name)
        for where, expr in dashboard_queries(dashboard)
        for name in METRIC_NAME.findall(expr)
    }
    panels_with_queries = {where for where, _ in queried}
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(graphs) >= 15 and all(p["title"] in panels_with_queries for p in graphs)
    missing = sorted((where, name) for where, name in queried if name not in exported)
    assert not missing, f"queried but not exported: {missing}"
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "host"}


# Readiness ----------------------------------------------------------------------------------


class UnwritableJournal(RayHosts):
    """Hosts that answer but whose journal cannot take the next batch."""

    async def ping(self, host: str, timeout_seconds: float) -> JournalHealth | None:
        await super().ping(host, timeout_seconds)
        return JournalHealth(writable=False, reason="the journal directory is not writable")


async def test_a_host_whose_journal_is_not_writable_is_not_ready(stack: Stack) -> None:
    async with gateway_client(stack.hosts, stack.url) as client:
        ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()["ready"]) == (200, True)
    async with gateway_client(UnwritableJournal(stack.hosts), stack.url) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "ready": False,
        "hosts": {name: "journal_not_writable" for name in stack.hosts.names},
    }


def test_prometheus_scrapes_the_port_meterwerk_serve_listens_on() -> None:
    import yaml

    from meterwerk.serve import ServeOptions

    config = yaml.safe_load((DASHBOARD.parents[1] / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    [targets] = [static["targets"] for static in job["static_configs"]]
    defaults = ServeOptions()
    assert job["metrics_path"] == "/metrics"
    assert f"{defaults.bind}:{defaults.port}" in targets


def test_the_lock_free_families_expose_what_prometheus_client_would() -> None:
    """Tally and Spread count in plain integers; their exposition is prometheus_client's own
    Counter's and Histogram's for the same observations (``_created`` aside), values on a
    bucket's bound included."""
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.exposition import generate_latest

    from gateway.metrics import SECONDS_BUCKETS, Spread, Tally

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = Tally("t_requests", "Requests.", ["route", "status"], ours)
    spread = Spread("t_seconds", "Seconds.", ["route"], SECONDS_BUCKETS, ours)
    counter = Counter("t_requests", "Requests.", ["route", "status"], registry=theirs)
    histogram = Histogram(
        "t_seconds", "Seconds.", ["route"], buckets=SECONDS_BUCKETS, registry=theirs
    )
    observations = [0.0, 0.0004, 0.0005, 0.001, 0.0011, 0.3, 10.0, 11.0, 0.0005]
    for index, seconds in enumerate(observations):
        route, status = ("/a", "200") if index % 3 else ("/b", "429")
        tally.labels(route, status).inc()
        counter.labels(route, status).inc()
        spread.labels(route).observe(seconds)
        histogram.labels(route).observe(seconds)
    tally.labels("/a", "200").inc(5)
    counter.labels("/a", "200").inc(5)

    def without_created(registry: CollectorRegistry) -> dict[Any, float]:
        found = samples(generate_latest(registry).decode())
        return {key: value for key, value in found.items() if not key[0].endswith("_created")}

    assert without_created(ours) == without_created(theirs)
