"""Joining, leaving and winding down the Ray cluster the hosts run on.

These are the Ray calls of ``meterwerk serve``; they live here so that every ``ray.*`` call
stays in ``actors/``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray

from actors.ray_host import NAMESPACE

log = logging.getLogger(__name__)


def connect(address: str | None) -> bool:
    """Start a local Ray (dashboard off), or join the cluster at ``address``; True if this
    process started it. A process that is already connected (a test) stays as it is."""
    if ray.is_initialized():
        return False
    ray.init(
        address=address or "local",
        include_dashboard=False,
        namespace=NAMESPACE,
        logging_level=logging.WARNING,
        configure_logging=False,
    )
    return address is None


def disconnect() -> None:
    ray.shutdown()


def snapshot_within(hosts: Any, seconds: float) -> None:
    """Ask every host for a snapshot, waiting at most ``seconds`` (a dead Ray never answers).
    The journal has everything; a snapshot only shortens the next start's replay."""
    worker = threading.Thread(target=_snapshot_all, args=(hosts, None), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        log.warning("hosts did not snapshot in %.0f s; the journal will be replayed", seconds)


def stop_hosts(hosts: Any, seconds: float) -> None:
    """Snapshot every host, so that the next start replays little, then stop them."""
    _snapshot_all(hosts, seconds)
    hosts.stop()


def _snapshot_all(hosts: Any, timeout_seconds: float | None) -> None:
    refs = [handle.snapshot.remote() for handle in hosts.handles.values()]
    try:
        ray.get(refs, timeout=timeout_seconds)
    except Exception:  # the journal still has everything; the next start replays more
        log.exception("snapshot before stopping failed; the journal will be replayed")
