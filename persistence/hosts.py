"""What every store kept per host checks: the host's name, and a snapshot's sequence and size.

Host names become file names, Redis keys and column values, so they are kept plain.
"""

from __future__ import annotations

import re
from typing import Final

HOST_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
SNAPSHOT_SEQUENCE_MAX: Final = 2**63 - 1
"""A journal sequence as SQL's ``bigint`` holds it."""


def check_host(host: str) -> str:
    if not HOST_PATTERN.fullmatch(host):
        raise ValueError(
            f"host name {host!r} must be 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return host


def check_snapshot(host: str, sequence: int, data: bytes, bytes_max: int) -> None:
    """Raise ValueError, before anything is written, for a snapshot no store should keep."""
    check_host(host)
    if not 0 <= sequence <= SNAPSHOT_SEQUENCE_MAX:
        raise ValueError(f"snapshot sequence {sequence} out of range")
    if len(data) > bytes_max:
        raise ValueError(f"snapshot of {len(data)} bytes; the limit is {bytes_max}")
