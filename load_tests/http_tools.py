"""What the HTTP benchmark needs around it: child processes, wrk and its output, ports."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import IO, Any, Final

import msgspec

STOP_SECONDS: Final = 60.0
"""A server snapshots its hosts and stops its Ray when asked; past this it is killed."""
_UNITS_MS: Final = {"us": 0.001, "ms": 1.0, "s": 1_000.0, "m": 60_000.0}


class Child:
    """A subprocess in a session of its own, so that whatever it starts (a local Ray's
    daemons) can be ended with it and nothing outlives the benchmark."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self._log: IO[bytes] = log.open("ab")
        self.process = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env} if env else None,
        )

    def wait(self, seconds: float) -> int:
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.stop()
            raise

    def stop(self) -> None:
        """Ctrl-C first (a server snapshots and stops its Ray), then kill what is left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_SECONDS)
        # ProcessLookupError: the session has ended, nothing of it is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_ready(url: str, child: Child, seconds: float) -> None:
    """Until ``url`` answers 2xx or 405; a child that exits first is an error."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.process.args!r} exited:\n{child.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2.0):
                return
        except urllib.error.HTTPError as error:
            if error.code == 405:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {seconds} s:\n{child.tail()}")


def get_json(url: str, key: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10.0) as answer:
        return json.loads(answer.read())


class WrkResult(msgspec.Struct, frozen=True, kw_only=True):
    requests: int
    requests_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    non_2xx: int
    socket_errors: int
    """Connect, read, write errors and timeouts (answers after 10 s)."""
    refusals: dict[str, int] = {}
    """Non-2xx answers by status and error code (``"503 host_unavailable"``), where the
    script prints them (``meterwerk-refused <status> <code>``, as events.lua does)."""

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def wrk(
    url: str, script: Path, *, seconds: float, connections: int, threads: int, env: dict[str, str]
) -> WrkResult:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        # A slow answer is still an answer (its latency shows it); wrk's default of 2 s would
        # count a batch held up by a snapshot as an error.
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(
        argv, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def parse_wrk(text: str) -> WrkResult:
    """The figures of ``wrk --latency`` output."""

    def latency(percent: str) -> float:
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
        if found is None:
            raise ValueError(f"no {percent}% latency in wrk's output:\n{text}")
        return round(float(found[1]) * _UNITS_MS[found[2]], 2)

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    count = re.search(r"^\s+(\d+) requests in", text, re.MULTILINE)
    if rate is None or count is None:
        raise ValueError(f"no rate in wrk's output:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return WrkResult(
        requests=int(count[1]),
        requests_per_second=float(rate[1]),
        latency_p50_ms=latency("50"),
        latency_p99_ms=latency("99"),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        refusals=dict(
            Counter(
                f"{status} {code}"
                for status, code in re.findall(
                    r"^meterwerk-refused (\d+) (\S+)$", text, re.MULTILINE
                )
            )
        ),
    )
