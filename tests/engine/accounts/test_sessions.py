"""Time-metered sessions: a virtual machine at 0.036 EUR per vCPU-hour, billed to the second
(``exact``) or per started hour, against a prepaid balance.

A 4-vCPU machine costs 4 x 0.036 = 0.144 EUR an hour, 0.00004 EUR a second: a balance of
1.80 EUR lasts 45,000 seconds (12 h 30 min) to the second, or 12 started hours (1.728 EUR),
since a 13th would cost 1.872 EUR.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.accounts import (
    Advance,
    AuthorizeAndRecord,
    Heartbeat,
    Outcome,
    Quota,
    Reason,
    StartSession,
    StopSession,
    TopUp,
)
from engine.accounts.commands import AlertKind
from engine.instants import HOUR, parse
from engine.statements import Statement
from tests.engine.accounts.books import MARCH, Book
from tests.engine.helpers import catalog_tariffs, per_unit, tariff_document

START = parse("2024-03-10T08:00:00Z")


def compute(key: str, rounding: str) -> dict[str, Any]:
    charge = {
        "key": "vm",
        "meter": "vm",
        "time_basis": {"unit": "hour", "rounding": rounding},
        "price": per_unit("0.036"),
    }
    return tariff_document(key, [charge])


TARIFFS = catalog_tariffs(
    {
        "meters": [{"key": "vm", "unit": "vCPU", "aggregation": "sum"}],
        "tariffs": [compute("exact", "exact"), compute("started_unit", "started_unit")],
    }
)


class Cloud(Book):
    """One prepaid tenant, ``acme``, driven by commands with generated ids."""

    def __init__(self, rounding: str, balance: str, **settings: Any) -> None:
        super().__init__(TARIFFS)
        assert self.configure(tariff=rounding, **settings).accepted
        assert self(TopUp, MARCH, amount=Decimal(balance)).accepted

    def start(self, at: int, vcpus: int, session: str = "vm-1") -> Outcome:
        return self(StartSession, at, session=session, meter="vm", quantity=Decimal(vcpus))

    @property
    def revenue(self) -> Decimal:
        """What the sessions have been charged so far."""
        return self.wallet.ledger.balance("revenue:usage")

    def statements(self) -> list[Statement]:
        return [statement for _, statement in self.tree.take_statements()]


@pytest.mark.parametrize(
    ("rounding", "window_seconds", "runs_seconds", "charged", "balance_left"),
    [
        # 45,000 s x 4 vCPU = 50 vCPU-hours x 0.036 = 1.80: all of it, until 20:30:00.
        ("exact", 86_400, 45_000, "1.80", "0"),
        # The same with a one-hour grant, renewed by the timer at every granted_until.
        ("exact", 3_600, 45_000, "1.80", "0"),
        # 12 started hours x 0.144 = 1.728, until 20:00:00; a 13th would need 1.872.
        ("started_unit", 86_400, 43_200, "1.728", "0.072"),
        ("started_unit", 3_600, 43_200, "1.728", "0.072"),
    ],
)
def test_a_prepaid_session_runs_until_the_second_the_money_runs_out(
    rounding: str, window_seconds: int, runs_seconds: int, charged: str, balance_left: str
) -> None:
    cloud = Cloud(rounding, "1.80", session_grant_seconds=window_seconds)
    started = cloud.start(START, vcpus=4)
    assert started.accepted
    assert started.granted_until == START + min(runs_seconds, window_seconds)

    # Time passes well beyond the end of the money: the timers renew the grant while money
    # lasts, then end the session exactly where it runs out and cut the account off.
    advanced = cloud(Advance, START + 50_000)
    assert [(alert.kind, alert.tenant) for alert in advanced.alerts] == [
        (AlertKind.cut_off, "acme")
    ]
    assert cloud.tree.state.sessions == {}
    assert cloud.held == 0
    assert cloud.revenue == Decimal(charged)
    assert cloud.tree.balance("acme") == Decimal(balance_left)

    refused = cloud(
        AuthorizeAndRecord, START + 50_001, meter="vm", quantity=Decimal(1), duration_seconds=90
    )
    assert refused.reason is Reason.account_cut_off
    assert cloud.start(START + 50_002, vcpus=1, session="vm-2").reason in {
        Reason.account_cut_off,
        Reason.insufficient_credit,
    }
    # A top-up reopens the account: 1.44 EUR more lasts 10 hours (exact: 36,000 s at 0.00004;
    # per started hour: 10 x 0.144 of the 1.512 now there, an 11th would need 1.584).
    assert cloud(TopUp, START + 50_003, amount=Decimal("1.44")).accepted
    again = cloud.start(START + 50_004, vcpus=4, session="vm-3")
    assert again.granted_until == START + 50_004 + min(window_seconds, 36_000)


def test_a_balance_that_covers_a_whole_number_of_seconds_is_granted_all_of_them() -> None:
    """2 vCPU x 0.036 = 0.072 EUR an hour, 0.00002 EUR a second: 1.00 EUR lasts exactly
    50,000 seconds."""
    cloud = Cloud("exact", "1.00", session_grant_seconds=86_400)
    assert cloud.start(START, vcpus=2).granted_until == START + 50_000


def test_heartbeats_extend_the_grant_and_stop_charges_the_elapsed_time() -> None:
    """A one-hour grant window; every heartbeat holds money for one more hour from then on."""
    cloud = Cloud("exact", "100")
    steps = [
        # (command, seconds after the start, granted until, held, balance)
        ("start", 0, HOUR, "0.144", "100"),  # 4 vCPU-hours held
        ("heartbeat", 900, 900 + HOUR, "0.18", "100"),  # 4,500 s: 5 vCPU-hours
        ("heartbeat", 1_800, 1_800 + HOUR, "0.216", "100"),  # 5,400 s: 6 vCPU-hours
        ("stop", 2_700, None, "0", "99.892"),  # 45 minutes: 3 vCPU-hours, 0.108
    ]
    for command, offset, granted_until, held, balance in steps:
        if command == "start":
            outcome = cloud.start(START, vcpus=4)
        elif command == "heartbeat":
            outcome = cloud(Heartbeat, START + offset, session="vm-1")
        else:
            outcome = cloud(StopSession, START + offset, session="vm-1")
            assert outcome.amount == Decimal("0.108")
        assert outcome.accepted, (command, outcome)
        expected_until = None if granted_until is None else START + granted_until
        assert outcome.granted_until == expected_until, command
        assert cloud.held == Decimal(held), command
        assert cloud.tree.balance("acme") == Decimal(balance), command
    assert cloud(Heartbeat, START + 2_800, session="vm-1").reason is Reason.unknown_session
    assert cloud(StopSession, START + 2_800, session="vm-1").reason is Reason.unknown_session


def test_a_running_session_cannot_be_started_twice() -> None:
    cloud = Cloud("exact", "100")
    assert cloud.start(START, vcpus=4).accepted
    assert cloud.start(START + 1, vcpus=2).reason is Reason.duplicate_session


@pytest.mark.parametrize(
    ("rounding", "vcpus", "seconds", "charged"),
    [
        ("exact", 4, 5_400, "0.216"),  # 6 vCPU-hours
        ("started_unit", 4, 5_400, "0.288"),  # 2 started hours x 4 vCPU
        ("exact", 4, 90, "0.0036"),  # 0.1 vCPU-hours
        ("started_unit", 4, 90, "0.144"),  # a started hour
        ("started_unit", 1, 3_600, "0.036"),  # exactly one hour
        ("started_unit", 1, 3_601, "0.072"),  # one second into the second hour
    ],
)
def test_stop_charges_the_elapsed_duration(
    rounding: str, vcpus: int, seconds: int, charged: str
) -> None:
    cloud = Cloud(rounding, "100")
    assert cloud.start(START, vcpus=vcpus).accepted
    stopped = cloud(StopSession, START + seconds, session="vm-1")
    assert stopped.amount == Decimal(charged)
    assert cloud.tree.balance("acme") == Decimal(100) - Decimal(charged)
    assert cloud.held == 0


@pytest.mark.parametrize(
    ("rounding", "start", "march_hours", "march_charged", "april_hours", "april_charged"),
    [
        # 22:00 to 02:30: 2 h in March (8 vCPU-h, 0.288), 2.5 h in April (10 vCPU-h, 0.36).
        ("exact", "2024-03-31T22:00:00Z", "8", "0.288", "10", "0.360"),
        # Per started hour, each period's part is rounded on its own: 2 h, then 3 started h.
        ("started_unit", "2024-03-31T22:00:00Z", "8", "0.288", "12", "0.432"),
        # 22:30 to 02:30: 1.5 h rounds up to 2 in March, 2.5 h to 3 in April.
        ("started_unit", "2024-03-31T22:30:00Z", "8", "0.288", "12", "0.432"),
    ],
)
def test_a_session_across_the_month_end_is_charged_per_period(
    rounding: str,
    start: str,
    march_hours: str,
    march_charged: str,
    april_hours: str,
    april_charged: str,
) -> None:
    cloud = Cloud(rounding, "10")
    assert cloud.start(parse(start), vcpus=4).accepted
    stopped = cloud(StopSession, parse("2024-04-01T02:30:00Z"), session="vm-1")
    assert stopped.amount == Decimal(april_charged)
    [march] = cloud.statements()
    line = march.line("vm/units")
    assert (line.quantity, line.amount_raw) == (Decimal(march_hours), Decimal(march_charged))
    assert march.total == Decimal("0.29")  # 0.288, half up; the 0.002 is posted at close
    assert cloud.tree.balance("acme") == Decimal(10) - Decimal("0.29") - Decimal(april_charged)
    cloud(Advance, parse("2024-05-01T00:00:00Z"))
    [april] = cloud.statements()
    line = april.line("vm/units")
    assert (line.quantity, line.amount_raw) == (Decimal(april_hours), Decimal(april_charged))


def test_renewing_a_session_does_not_use_up_a_quota_of_its_meter() -> None:
    """At most 8 vCPU at a time: one 4-vCPU machine fits, however often it is renewed."""
    cloud = Cloud("exact", "100", quotas=(Quota(meter="vm", hard=Decimal(8)),))
    assert cloud.start(START, vcpus=4).accepted
    for minutes in (10, 20, 30):
        beat = cloud(Heartbeat, START + 60 * minutes, session="vm-1")
        assert (beat.accepted, beat.granted_until) == (True, START + 60 * minutes + HOUR)
    assert cloud(StopSession, START + 2_700, session="vm-1").amount == Decimal("0.108")
    # 4 vCPU were used this month; another 4 fit under the quota of 8.
    again = cloud(
        AuthorizeAndRecord, START + 2_800, meter="vm", quantity=Decimal(4), duration_seconds=90
    )
    assert again.accepted, again
