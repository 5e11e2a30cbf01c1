"""Placement: the same answer everywhere, pins honoured, few trees move when a host is added."""

from __future__ import annotations

import pytest

from actors import placement
from actors.placement import Placement, host_names


def test_every_process_places_a_root_on_the_same_host() -> None:
    hosts = host_names(4)
    first, second = Placement(hosts), Placement(list(reversed(hosts)))
    roots = [f"tenant-{n}" for n in range(2_000)]
    assert [first.host_of(r) for r in roots] == [second.host_of(r) for r in roots]
    assert [first.host_of(r) for r in roots] == [first.host_of(r) for r in roots]  # memo
    spread = {first.host_of(r) for r in roots}
    assert spread == set(hosts)


def test_a_pinned_root_goes_to_its_host_and_no_other_root_goes_there() -> None:
    hosts = host_names(3)
    pinned = Placement(hosts, {"whale": hosts[2]})
    assert pinned.host_of("whale") == hosts[2]
    assert all(pinned.host_of(f"t{n}") != hosts[2] for n in range(1_000))


def test_adding_a_host_moves_only_the_roots_that_now_rank_it_first() -> None:
    roots = [f"tenant-{n}" for n in range(4_000)]
    before, after = Placement(host_names(4)), Placement(host_names(5))
    moved = [r for r in roots if before.host_of(r) != after.host_of(r)]
    assert all(after.host_of(r) == "meterwerk-host-4" for r in moved)
    assert 0.1 < len(moved) / len(roots) < 0.3  # about a fifth


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement, "CACHED_MAX", 10)
    hosts = Placement(host_names(2))
    answers = {f"t{n}": hosts.host_of(f"t{n}") for n in range(100)}
    assert len(hosts._found) <= 10
    assert answers == {root: Placement(host_names(2)).host_of(root) for root in answers}
