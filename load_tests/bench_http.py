"""HTTP throughput of the whole server, against a trivial endpoint measured in the same run.

``meterwerk bench http`` (or plain ``meterwerk bench``) needs ``wrk`` and, in one run on this
machine:

1. starts a trivial Starlette JSON endpoint under uvicorn with the gateway's settings, and
   measures its ceiling with wrk, sending it the same requests as the gateway gets in 2;
2. seeds a temporary data directory (``load_tests.seed``) and starts ``meterwerk serve`` on it
   as a subprocess: a local Ray with one account host per core but one, SQLite, the file
   journal with a flush per batch (every answer leaves after its command is on disk);
3. measures authorise-and-record (``POST /v1/record``, prepaid tenants with ample credit, each
   with its usage key) with wrk: requests per second, p50 and p99 latency;
4. measures the latency at half that rate with an open-loop generator (``open_loop.py``, as
   wrk2 would; wrk2 is not packaged in Debian), against the trivial endpoint first (the
   baseline: what the generator and the machine add at that rate on their own), then against
   the server;
5. measures batch ingestion (``POST /v1/events``, 1,000 events per request) in events per
   second;
6. starts the server again on the same data with gateway-held grants on
   (``METERWERK_GRANTS_ENABLED=true``) and measures authorise-and-record again;
7. reads every tenant's balance back, to check that what was counted as done was charged;
8. measures the trivial endpoint's ceiling again. The ceiling is the better of the two (a
   ceiling is the most the machine did): one measurement taken while the machine was slow
   for a while would otherwise make every ratio look better than it is. Every ratio is to
   that ceiling.

The load generator shares the machine's cores with the server, as the targets assume. The
last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from load_tests.http_tools import (
    Child,
    WrkResult,
    free_port,
    get_json,
    wait_until_ready,
    wrk,
)
from load_tests.open_loop import OpenLoopResult, RequestMaker, run_open_loop

HERE: Final = Path(__file__).resolve().parent
WRK_MISSING: Final = (
    "meterwerk bench http needs wrk, an HTTP load generator: apt-get install wrk (Debian, "
    "Ubuntu), brew install wrk (macOS), or build it from https://github.com/wg/wrk"
)
RECORD_PRICE: Final = Decimal("0.002")
"""The price of one ``api_calls`` record in ``load_tests.seed``'s ``load-api`` tariff."""
EVENT_PRICE: Final = Decimal("0.0001")
API_CREDIT: Final = Decimal(100_000_000)
BATCH: Final = 1_000
TARGET_RECORD_RATIO: Final = 0.5
TARGET_HALF_RATE_P99_MS: Final = 10.0
TARGET_EVENTS_PER_S: Final = 100_000
TARGET_GRANTS_RATIO: Final = 0.8
GRANT_REPORTS_SECONDS: Final = 1.0
"""Time for the gateway to report what its grants answered, before the balances are read."""


def trivial_app() -> Any:
    """The ceiling: a Starlette route that answers constant JSON without reading the body."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def answer(_request: Request) -> Response:
        return Response(b'{"accepted":true}', media_type="application/json")

    return Starlette(routes=[Route("/v1/record", answer, methods=["GET", "POST"])])


def serve_trivial(port: int) -> None:
    from meterwerk.serve import run_uvicorn

    run_uvicorn(trivial_app(), "127.0.0.1", port, log_level="warning")


class Bench:
    """One run: its temporary directory, its children, the figures measured so far."""

    def __init__(
        self, seconds: float, connections: int, threads: int, tenants: int, hosts: int | None
    ) -> None:
        self.seconds = seconds
        self.connections = connections
        self.threads = threads
        self.tenants = tenants
        self.hosts = hosts
        self.directory = Path(tempfile.mkdtemp(prefix="meterwerk-bench-http-"))
        self.figures: dict[str, Any] = {
            "benchmark": "http",
            "seconds": seconds,
            "connections": connections,
            "wrk_threads": threads,
            "tenants": tenants,
            "hosts": hosts,
        }
        # 2xx answers per URL, and connections over all runs (a run's requests in flight at
        # its end may be applied but are not counted): what the charges are checked against.
        self.answered: dict[str, int] = {}
        self.in_flight: dict[str, int] = {}
        self.trivial: Child | None = None
        """The trivial endpoint, kept (idle) between its measurements: the ceiling's, first
        and last, and the half-rate latency's."""
        self.ceilings: list[int] = []
        self.trivial_port = 0

    def close(self) -> None:
        if self.trivial is not None:
            self.trivial.stop()
            self.trivial = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def wrk(
        self,
        url: str,
        script: str,
        accounts: list[dict[str, str]],
        env: dict[str, str] | None = None,
        connections: int | None = None,
    ) -> WrkResult:
        """A warm-up of a fifth of the time, then the measurement."""
        env = {
            "METERWERK_TENANTS": ",".join(a["tenant"] for a in accounts),
            "METERWERK_KEYS": ",".join(a["key"] for a in accounts),
            **(env or {}),
        }
        connections = connections or self.connections
        results = [
            wrk(
                url,
                HERE / script,
                seconds=seconds,
                connections=connections,
                threads=self.threads,
                env={**env, "METERWERK_RUN": uuid.uuid4().hex[:12]},
            )
            for seconds in (max(1.0, self.seconds / 5), self.seconds)
        ]
        self.answered[url] = self.answered.get(url, 0) + sum(
            result.requests - result.errors for result in results
        )
        self.in_flight[url] = self.in_flight.get(url, 0) + len(results) * connections
        return results[-1]

    def measure_ceiling(self) -> None:
        """Measure the trivial endpoint (started the first time), kept idle in between."""
        if self.trivial is None:
            port = self.trivial_port = free_port()
            self.trivial = Child(
                [sys.executable, "-m", "load_tests.bench_http", "--trivial", str(port)],
                self.directory / "trivial.log",
            )
            wait_until_ready(f"http://127.0.0.1:{port}/v1/record", self.trivial, 30.0)
        fake = [{"tenant": "trivial", "key": "mwk_trivial"}]
        result = self.wrk(f"http://127.0.0.1:{self.trivial_port}/v1/record", "record.lua", fake)
        self.ceilings.append(round(result.requests_per_second))

    def set_ratios(self) -> None:
        """The ceiling (the best of its measurements), and every figure as a ratio to it."""
        figures = self.figures
        ceiling = figures["ceiling_rps"] = max(self.ceilings)
        figures["ceiling_runs"] = list(self.ceilings)
        for prefix in ("record", "grants_record"):
            figures[f"{prefix}_ratio"] = round(figures[f"{prefix}_rps"] / ceiling, 3)
        figures["events_ratio"] = round(figures["events_per_s"] / ceiling, 3)


def _seed(directory: Path, tenants: int, hosts: int | None) -> dict[str, list[dict[str, str]]]:
    data = directory / "data"
    child = Child(
        [
            sys.executable,
            "-m",
            "load_tests.seed",
            "--data-dir",
            str(data),
            "--api",
            str(tenants),
            "--api-credit",
            str(API_CREDIT),
            "--backfill",
            str(tenants),
            "--vm",
            "0",
            "--storage",
            "0",
            *_hosts_option(hosts),
        ],
        directory / "seed.log",
    )
    if child.wait(120.0) != 0:
        raise RuntimeError(f"seeding failed; see {directory / 'seed.log'}")
    seeded: dict[str, list[dict[str, str]]] = json.loads((data / "loadtest.json").read_bytes())[
        "scenarios"
    ]
    return seeded


def _measure_server(bench: Bench) -> None:
    seeded = _seed(bench.directory, bench.tenants, bench.hosts)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    child = _start_server(bench, port)
    try:
        result = _measure_records(bench, base, seeded["api"], "record")
        bench.figures["record_socket_errors"] = result.socket_errors
        _measure_half_rate(bench, port, seeded["api"])
        _measure_events(bench, base, seeded["backfill"])
    finally:
        child.stop()
    # The same data and port again, with gateway-held grants: the charges of both runs are
    # checked together at the end, after the grants' reports have arrived.
    child = _start_server(bench, port, {"METERWERK_GRANTS_ENABLED": "true"})
    try:
        _measure_records(bench, base, seeded["api"], "grants_record")
        time.sleep(GRANT_REPORTS_SECONDS)
        _check_charges(bench, base, seeded)
    finally:
        child.stop()


def _start_server(bench: Bench, port: int, env: dict[str, str] | None = None) -> Child:
    command = [sys.executable, "-m", "meterwerk.cli", "serve", "--port", str(port)]
    command += _hosts_option(bench.hosts)
    command += ["--data-dir", str(bench.directory / "data")]
    child = Child(command, bench.directory / "serve.log", env)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", child, 120.0)
    except BaseException:
        child.stop()
        raise
    return child


def _hosts_option(hosts: int | None) -> list[str]:
    """None: the server's default, one account host per core but one."""
    return [] if hosts is None else ["--hosts", str(hosts)]


def _measure_records(bench: Bench, base: str, api: list[dict[str, str]], prefix: str) -> WrkResult:
    """Figures ``<prefix>_rps``, ``_p50_ms``, ``_p99_ms``, ``_non_2xx`` (``_ratio`` once
    the ceiling is known)."""
    result = bench.wrk(f"{base}/v1/record", "record.lua", api)
    bench.figures.update(
        {
            f"{prefix}_rps": round(result.requests_per_second),
            f"{prefix}_p50_ms": result.latency_p50_ms,
            f"{prefix}_p99_ms": result.latency_p99_ms,
            f"{prefix}_non_2xx": result.non_2xx,
        }
    )
    return result


def _measure_half_rate(bench: Bench, port: int, api: list[dict[str, str]]) -> None:
    """The latency at half the measured rate, open loop: first against the trivial endpoint
    (the baseline: what the generator, the event loop and the machine add on their own at
    that rate), then against the server."""
    rate = bench.figures["record_rps"] / 2
    baseline = None
    if bench.trivial is not None:
        baseline = _open_loop(bench, bench.trivial_port, api, rate)
    result = _open_loop(bench, port, api, rate)
    bench.figures["half_rate"] = {
        "rate_target": round(result.rate_target),
        "rate_achieved": round(result.rate_achieved),
        "latency_p50_ms": round(result.latency_p50_ms, 2),
        "latency_p99_ms": round(result.latency_p99_ms, 2),
        "latency_max_ms": round(result.latency_max_ms, 2),
        "failures": result.failures,
    }
    if baseline is not None:
        bench.figures["half_rate"].update(
            trivial_latency_p50_ms=round(baseline.latency_p50_ms, 2),
            trivial_latency_p99_ms=round(baseline.latency_p99_ms, 2),
            trivial_failures=baseline.failures,
        )
    url = f"http://127.0.0.1:{port}/v1/record"
    bench.answered[url] += result.requests - result.failures
    bench.in_flight[url] += result.failures


def _open_loop(bench: Bench, port: int, api: list[dict[str, str]], rate: float) -> OpenLoopResult:
    run = uuid.uuid4().hex[:12]
    requests = [_record_request(port, account, run) for account in api]

    def make(sequence: int) -> bytes:
        return requests[sequence % len(requests)](sequence)

    result: OpenLoopResult = _run_async(
        run_open_loop(
            "127.0.0.1",
            port,
            make,
            rate=rate,
            seconds=bench.seconds,
            connections=bench.connections,
        )
    )
    return result


def _record_request(port: int, account: dict[str, str], run: str) -> RequestMaker:
    head = (
        f"POST /v1/record HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {account['key']}\r\nContent-Type: application/json\r\n"
    ).encode()
    tenant = account["tenant"]

    def make(sequence: int) -> bytes:
        body = f'{{"id":"{run}-{sequence}","tenant":"{tenant}","meter":"api_calls"}}'.encode()
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    return make


def _run_async(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _measure_events(bench: Bench, base: str, backfill: list[dict[str, str]]) -> None:
    connections = max(1, min(bench.connections, 8))
    result = bench.wrk(
        f"{base}/v1/events",
        "events.lua",
        backfill,
        env={"METERWERK_METER": "backfill_events", "METERWERK_BATCH": str(BATCH)},
        connections=connections,
    )
    events = result.requests_per_second * BATCH
    bench.figures.update(
        events_per_s=round(events),
        events_connections=connections,
        events_request_p99_ms=result.latency_p99_ms,
        events_non_2xx=result.non_2xx,
        events_refusals=result.refusals,
        events_socket_errors=result.socket_errors,
    )


def _check_charges(bench: Bench, base: str, seeded: dict[str, list[dict[str, str]]]) -> None:
    """What the accounts charged, from their balances: every answered request, and at most
    those in flight besides (a refusal answers 200 too, so the rate alone proves nothing)."""
    records = sum(
        (API_CREDIT - _balance(base, account)) / RECORD_PRICE for account in seeded["api"]
    )
    events = sum(-_balance(base, account) / EVENT_PRICE for account in seeded["backfill"])
    record_url, events_url = f"{base}/v1/record", f"{base}/v1/events"
    answered = {"records": bench.answered[record_url], "events": bench.answered[events_url] * BATCH}
    slack = {"records": bench.in_flight[record_url], "events": bench.in_flight[events_url] * BATCH}
    charged = {"records": int(records), "events": int(events)}
    bench.figures["charged"] = charged
    bench.figures["answered"] = answered
    bench.figures["charges_match"] = all(
        answered[kind] <= charged[kind] <= answered[kind] + slack[kind] for kind in charged
    )


def _balance(base: str, account: dict[str, str]) -> Decimal:
    answer = get_json(f"{base}/v1/tenants/{account['tenant']}/balance", account["key"])
    return Decimal(answer["balance"])


def measure(
    seconds: float, connections: int, threads: int, tenants: int, hosts: int | None
) -> dict[str, Any]:
    bench = Bench(seconds, connections, threads, tenants, hosts)
    try:
        bench.measure_ceiling()
        _measure_server(bench)
        bench.measure_ceiling()
        bench.set_ratios()
    finally:
        bench.close()
    return bench.figures


def run(
    seconds: float = 10.0,
    connections: int = 64,
    threads: int = 2,
    tenants: int = 4,
    hosts: int | None = None,
) -> int:
    if shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        return 2
    began = time.monotonic()
    figures = measure(seconds, connections, threads, tenants, hosts)
    figures["run_seconds"] = round(time.monotonic() - began, 1)
    _print(figures)
    print(json.dumps(figures))
    return 0


def _print(f: dict[str, Any]) -> None:
    half = f["half_rate"]
    ceiling = f["ceiling_rps"]
    runs = " and ".join(f"{run:,}" for run in f["ceiling_runs"])
    print(
        f"trivial Starlette endpoint (ceiling): {ceiling:>9,} requests/s "
        f"(the better of {runs}, measured first and last)"
    )
    print(
        f"authorise-and-record:                 {f['record_rps']:>9,} requests/s "
        f"({f['record_ratio']:.2f} of the ceiling; target {TARGET_RECORD_RATIO}), "
        f"p50 {f['record_p50_ms']} ms, p99 {f['record_p99_ms']} ms"
    )
    print(
        f"  at half that rate ({half['rate_achieved']:,}/s, open loop): "
        f"p50 {half['latency_p50_ms']} ms, p99 {half['latency_p99_ms']} ms "
        f"(target {TARGET_HALF_RATE_P99_MS} ms)"
    )
    if "trivial_latency_p99_ms" in half:
        print(
            f"  the trivial endpoint at the same rate (baseline): "
            f"p50 {half['trivial_latency_p50_ms']} ms, p99 {half['trivial_latency_p99_ms']} ms"
        )
    print(
        f"batch ingestion ({BATCH:,} per request): {f['events_per_s']:>9,} events/s "
        f"({f['events_ratio']:.2f} × the ceiling; target {TARGET_EVENTS_PER_S:,}/s)"
    )
    print(
        f"authorise-and-record with grants:     {f['grants_record_rps']:>9,} requests/s "
        f"({f['grants_record_ratio']:.2f} of the ceiling; target {TARGET_GRANTS_RATIO}), "
        f"p50 {f['grants_record_p50_ms']} ms, p99 {f['grants_record_p99_ms']} ms"
    )
    print(
        f"charged, from the balances: {f['charged']['records']:,} records, "
        f"{f['charged']['events']:,} events, for {f['answered']['records']:,} and "
        f"{f['answered']['events']:,} answered: "
        f"{'as expected' if f['charges_match'] else 'MISMATCH'}"
    )
    print(
        f"non-2xx answers and socket errors: records {f['record_non_2xx']} and "
        f"{f['record_socket_errors']}, half rate {half['failures']} in all, events "
        f"{f['events_non_2xx']} and {f['events_socket_errors']}"
    )
    if f["events_refusals"]:
        refusals = ", ".join(f"{n} x {what}" for what, n in f["events_refusals"].items())
        print(f"events refused: {refusals}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--trivial"]:
        serve_trivial(int(sys.argv[2]))
    else:
        raise SystemExit(run())
