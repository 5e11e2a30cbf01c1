"""``AccountHost``: the Ray actor around :class:`actors.host.HostCore`.

Hosts are named, detached-from-the-caller actors (``meterwerk-host-0`` …) in a namespace, so
that any gateway process finds them by name. Ray restarts a host that dies
(``max_restarts=-1``); the new process recovers from its snapshot and journal before it
answers. Every ``ray.*`` call of the project lives in this package.

The hot path's batches travel over the host's command channel (``actors/channel.py``: a TCP
connection per gateway, found through the Ray call ``channel``), because a Ray call costs more
than a whole batch's work; everything else (queries, stats, snapshots, tariffs) is a Ray call.
Both carry MessagePack bytes, not Python objects, so that a batch crosses the process boundary
as one buffer. ``max_pending_calls`` bounds each caller's queue of Ray calls: a full host
answers with ``PendingCallsLimitExceeded`` at the caller, which the gateway maps to 429.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import msgspec
import ray

from actors.channel import ChannelServer
from actors.host import BATCH_MAX, HostCore, HostStats, JournalHealth
from actors.placement import Placement, host_names
from actors.storage import StorageConfig, open_storage
from engine.accounts import Command, Outcome, PeriodUsage, Quote, QuoteQuery
from engine.numbers import use_engine_context

log = logging.getLogger(__name__)

NAMESPACE: Final = "meterwerk"
PENDING_CALLS_MAX: Final = 64
TICK_SECONDS: Final = 0.2
CATCH_UP_TREES: Final = 200

_encode = msgspec.msgpack.Encoder().encode
_decode_items = msgspec.msgpack.Decoder(list[tuple[str, Command]]).decode
_decode_outcomes = msgspec.msgpack.Decoder(list[Outcome]).decode


class AccountHostActor:
    """The actor's body; ``AccountHost`` below is its Ray remote class."""

    def __init__(self, name: str, config: StorageConfig) -> None:
        use_engine_context()
        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("actors").setLevel(logging.INFO)
        self.name = name
        self.config = config
        journal, snapshots, statements, tariffs = open_storage(config, name)
        self.core = HostCore(
            name,
            journal=journal,
            snapshots=snapshots,
            statements=statements,
            tariffs=tariffs,
            snapshot_every_commands=config.snapshot_every_commands,
            snapshot_every_seconds=config.snapshot_every_seconds,
            snapshot_saver=ThreadPoolExecutor(1, thread_name_prefix="snapshots"),
        )
        self.lock = threading.Lock()
        began = time.perf_counter()
        waiting = self.core.recover()
        # Ray, SQLAlchemy, the engine and the trees just loaded leave about 100,000 long-lived
        # objects, and every full collection walked them all: pauses of about 60 ms, which
        # every request in flight waited for (the p99 at half rate in ``meterwerk bench``).
        # Frozen, the collector skips them; as in the gateway (``meterwerk.serve``).
        gc.collect()
        gc.freeze()
        log.info(
            "host %s ready in %.3f s (%d records to replay lazily)",
            name,
            time.perf_counter() - began,
            waiting,
        )
        self._stop = threading.Event()
        self._clock = threading.Thread(target=self._run_timers, name="timers", daemon=True)
        self._clock.start()
        # The address Ray itself uses on this node: reachable from every gateway of the cluster.
        address = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        self.server = ChannelServer(self.apply_requests, address)

    def channel(self) -> tuple[str, int, str]:
        """Where gateways send batches: ``(address, port, token)``."""
        return self.server.endpoint

    def apply(self, items: bytes) -> bytes:
        """One batch as a Ray call: applied as the channel applies its batches."""
        [answer] = self.apply_requests([items])
        if isinstance(answer, Exception):
            raise answer
        return answer

    def apply_requests(self, requests: Sequence[bytes]) -> list[bytes | Exception]:
        """The channel's batch: several gateway calls applied together, at most
        ``BATCH_MAX`` commands per journal flush; a request that does not decode is refused
        alone."""
        decoded: list[list[tuple[str, Command]] | Exception] = []
        for request in requests:
            try:
                decoded.append(_decode_items(request))
            except msgspec.DecodeError as error:
                decoded.append(error)
        answers: list[bytes | Exception] = []
        chunk: list[list[tuple[str, Command]]] = []
        size = 0
        for items in decoded:
            if isinstance(items, Exception):
                answers.extend(self._apply_chunk(chunk))
                chunk, size = [], 0
                answers.append(items)
                continue
            if chunk and size + len(items) > BATCH_MAX:
                answers.extend(self._apply_chunk(chunk))
                chunk, size = [], 0
            chunk.append(items)
            size += len(items)
        answers.extend(self._apply_chunk(chunk))
        return answers

    def _apply_chunk(self, chunk: list[list[tuple[str, Command]]]) -> list[bytes | Exception]:
        if not chunk:
            return []
        try:
            with self.lock:
                outcomes = self.core.apply([item for items in chunk for item in items])
        except Exception as error:  # a failed journal: nothing of the chunk was applied
            log.exception("host %s: a batch failed", self.name)
            return [error] * len(chunk)
        answers: list[bytes | Exception] = []
        start = 0
        for items in chunk:
            answers.append(_encode(outcomes[start : start + len(items)]))
            start += len(items)
        return answers

    def stats(self) -> HostStats:
        with self.lock:
            return self.core.stats()

    def snapshot(self) -> int:
        with self.lock:
            return self.core.snapshot()

    def balance(self, root: str, tenant: str) -> tuple[str, str | None] | None:
        with self.lock:
            found = self.core.balance(root, tenant)
        if found is None:
            return None
        balance, available = found
        return str(balance), None if available is None or not available.is_finite() else str(
            available
        )

    def usage(self, root: str, tenant: str, now: int) -> PeriodUsage | Outcome | None:
        with self.lock:
            return self.core.usage(root, tenant, now)

    def quote(self, root: str, query: QuoteQuery, now: int) -> Quote | Outcome | None:
        with self.lock:
            return self.core.quote(root, query, now)

    def reload_tariffs(self) -> None:
        with self.lock:
            self.core.use_tariffs(open_storage(self.config, self.name, tariffs_only=True)[3])

    def ping(self) -> str:
        return self.name

    def health(self) -> JournalHealth:
        """What ``/readyz`` asks: whether the journal can take the next batch."""
        with self.lock:
            return self.core.journal_health()

    def audit(self) -> dict[str, int]:
        """Replay everything, then assert every ledger balances; what the host holds."""
        with self.lock:
            self.core.catch_up(len(self.core.waiting))
            wallets = reservations = 0
            for tree in self.core.trees.values():
                reservations += len(tree.state.reservations)
                for node in tree.state.nodes.values():
                    if node.wallet is not None:
                        node.wallet.ledger.check()
                        wallets += 1
            return {"trees": len(self.core.trees), "wallets": wallets, "reservations": reservations}

    def pid(self) -> int:
        import os

        return os.getpid()

    def _run_timers(self) -> None:
        """Fire timers on the host's clock and replay waiting trees in the background."""
        use_engine_context()  # decimal contexts are per thread
        while not self._stop.wait(TICK_SECONDS):
            try:
                with self.lock:
                    if self.core.waiting:
                        self.core.catch_up(CATCH_UP_TREES)
                    self.core.tick(int(time.time()))
                    self.core.continue_snapshot()
            except Exception:  # a failed timer is a bug; let Ray restart the process
                log.exception("host %s: timer failed; exiting for a clean recovery", self.name)
                import os

                os._exit(1)


AccountHost = ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)(AccountHostActor)


class Hosts:
    """Start or find the named hosts, and send batches to the host of each tree."""

    def __init__(
        self,
        count: int,
        config: StorageConfig,
        pins: dict[str, str] | None = None,
        prefix: str = "meterwerk-host",
    ) -> None:
        self.names = host_names(count, prefix)
        self.placement = Placement(self.names, pins)
        self.config = config
        self.handles: dict[str, Any] = {}

    def start(self) -> None:
        for name in self.names:
            self.handles[name] = AccountHost.options(
                name=name,
                namespace=NAMESPACE,
                get_if_exists=True,
                lifetime="detached",
                max_pending_calls=PENDING_CALLS_MAX,
                max_concurrency=1,
            ).remote(name, self.config)
        ray.get([handle.ping.remote() for handle in self.handles.values()])

    def attach(self) -> None:
        for name in self.names:
            self.handles[name] = ray.get_actor(name, namespace=NAMESPACE)

    def host_of(self, root: str) -> str:
        return self.placement.host_of(root)

    def send(self, host: str, items: Sequence[tuple[str, Command]]) -> Any:
        """An ObjectRef of the host's encoded outcomes for ``items``."""
        return self.handles[host].apply.remote(encode_items(items))

    def apply(self, items: Sequence[tuple[str, Command]]) -> list[Outcome]:
        """Send each item to its tree's host, one call per host, and answer in order."""
        by_host: dict[str, list[int]] = {}
        for position, (root, _) in enumerate(items):
            by_host.setdefault(self.host_of(root), []).append(position)
        refs = {
            host: self.send(host, [items[p] for p in positions])
            for host, positions in by_host.items()
        }
        outcomes: list[Outcome | None] = [None] * len(items)
        for host, ref in refs.items():
            for position, outcome in zip(by_host[host], decode_outcomes(ray.get(ref)), strict=True):
                outcomes[position] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def reload_tariffs(self) -> None:
        """Have every host read the catalogue's tariffs again."""
        ray.get([handle.reload_tariffs.remote() for handle in self.handles.values()])

    def stop(self, timeout_s: float = 30.0) -> None:
        """Kill every host, and wait until their names are free to be started again."""
        for handle in self.handles.values():
            ray.kill(handle, no_restart=True)
        self.handles.clear()
        deadline = time.monotonic() + timeout_s
        for name in self.names:
            while time.monotonic() < deadline:
                try:
                    ray.get_actor(name, namespace=NAMESPACE)
                except ValueError:
                    break
                time.sleep(0.1)


def encode_items(items: Sequence[tuple[str, Command]]) -> bytes:
    return _encode(items if isinstance(items, list) else list(items))


def decode_outcomes(data: bytes) -> list[Outcome]:
    return _decode_outcomes(data)
