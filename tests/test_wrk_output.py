"""The benchmark's reading of wrk's output: rates, latencies, errors, and the refusals a
script prints with their status and code."""

from __future__ import annotations

from load_tests.http_tools import parse_wrk

OUTPUT = """Running 10s test @ http://127.0.0.1:8000/v1/events
  2 threads and 8 connections
meterwerk-refused 503 host_unavailable
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    60.10ms   40.00ms 371.94ms   80.00%
  Latency Distribution
     50%   52.31ms
     75%   70.00ms
     90%   99.00ms
     99%  371.94ms
meterwerk-refused 429 host_busy
meterwerk-refused 503 host_unavailable
  1134 requests in 10.01s, 300.00KB read
  Non-2xx or 3xx responses: 3
Requests/sec:    113.29
Transfer/sec:     29.97KB
"""


def test_wrk_output_is_read_with_the_refusals_a_script_printed() -> None:
    result = parse_wrk(OUTPUT)
    assert (result.requests, result.requests_per_second) == (1134, 113.29)
    assert (result.latency_p50_ms, result.latency_p99_ms) == (52.31, 371.94)
    assert (result.non_2xx, result.socket_errors, result.errors) == (3, 0, 3)
    assert result.refusals == {"503 host_unavailable": 2, "429 host_busy": 1}
    assert parse_wrk(OUTPUT.replace("meterwerk-refused", "other")).refusals == {}
