"""Focused reproductions of what the stateful test (test_stateful_tree.py) found in the engine.

Bugs still open are marked ``xfail(strict=True)``: each states what the engine should do, fails
while the bug is there, and turns the suite red once it is fixed, so that the mark (and the
matching ``# engine bug`` allowance or skip in the stateful test) can go. Bugs since fixed stay
as plain regression tests.

The tariffs are the smallest that show each bug: calls at 0.50 for the first five and 0.25
after (falling tiers, a volume discount), or 0.10 then 0.25 (rising tiers); cpu by the started
minute at 0.02 for the first 30 minutes and 0.01 after, or 0.01 then 0.02; and a flat tariff
of 0.125 a call and 0.03 a cpu-minute to the second, whose amounts leave fractions of a cent.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

import msgspec

from engine.accounts import (
    Advance,
    Authorize,
    AuthorizeAndRecord,
    Capture,
    Command,
    ConfigureTenant,
    Funding,
    OpenGrant,
    Outcome,
    Reason,
    Release,
    ReportGrant,
    StartSession,
    TenantSettings,
    TenantTree,
    TopUp,
)
from engine.accounts.wallet import Wallet
from engine.instants import HOUR, MINUTE, parse
from tests.engine.helpers import CALLS_METER, calls_and_cpu_tariff, catalog_tariffs, per_unit

ROOT: Final = "root"
KID: Final = "kid"
START: Final = parse("2024-01-31T18:00:00Z")
PERIOD_END: Final = parse("2024-02-01T00:00:00Z")


def _tariff(key: str, calls: dict[str, Any], cpu: dict[str, Any], rounding: str) -> Any:
    return calls_and_cpu_tariff(key, calls, cpu, rounding)


def _tiers(*tiers: tuple[str | None, str]) -> dict[str, Any]:
    return {
        "model": "graduated",
        "tiers": [{"up_to": upper, "unit_price": price} for upper, price in tiers],
    }


FLAT_CPU: Final = per_unit("0.03")
CATALOG: Final = {
    "meters": [CALLS_METER, {"key": "cpu", "unit": "vcpu", "aggregation": "sum"}],
    "tariffs": [
        _tariff("falling", _tiers(("5", "0.50"), (None, "0.25")), FLAT_CPU, "exact"),
        _tariff("rising", _tiers(("5", "0.10"), (None, "0.25")), FLAT_CPU, "exact"),
        _tariff(
            "falling-cpu",
            per_unit("0.125"),
            _tiers(("30", "0.02"), (None, "0.01")),
            "started_unit",
        ),
        _tariff(
            "rising-cpu",
            per_unit("0.125"),
            _tiers(("30", "0.01"), (None, "0.02")),
            "started_unit",
        ),
        _tariff("flat", per_unit("0.125"), FLAT_CPU, "exact"),
    ],
}
TARIFFS: Final = catalog_tariffs(CATALOG)


def tree_with(tariff: str, credit: str, *, expires_at: int | None = None) -> TenantTree:
    """A prepaid root alone in its tree, with ``credit`` on its balance."""
    tree = TenantTree.new(ROOT, TARIFFS)
    settings = TenantSettings(tariff=tariff, credit_limit=Decimal(0))
    run(tree, ConfigureTenant(id="configure", tenant=ROOT, time=START, settings=settings))
    top_up = TopUp(
        id="top-up", tenant=ROOT, time=START, amount=Decimal(credit), expires_at=expires_at
    )
    run(tree, top_up)
    return tree


def run(tree: TenantTree, command: Command) -> Outcome:
    outcome = tree.handle(command)
    assert outcome.accepted, (command, outcome)
    return outcome


def authorize(tree: TenantTree, key: str, quantity: int, time: int = START) -> Outcome:
    return run(
        tree,
        Authorize(
            id=key,
            tenant=ROOT,
            time=time,
            meter="calls",
            quantity=Decimal(quantity),
            ttl_seconds=HOUR,
        ),
    )


def capture(tree: TenantTree, reservation: str, time: int = START) -> Outcome:
    return run(
        tree, Capture(id=f"capture-{reservation}", tenant=ROOT, time=time, reservation=reservation)
    )


def wallet(tree: TenantTree) -> Wallet:
    found = tree.state.nodes[ROOT].wallet
    assert found is not None
    return found


# Open ----------------------------------------------------------------------------------------


def test_a_child_never_draws_past_its_cap() -> None:
    tree = TenantTree.new(ROOT, TARIFFS)
    pooled = TenantSettings(parent=ROOT, funding=Funding.pool, tariff="flat", cap=Decimal("2.50"))
    commands: list[Command] = [
        ConfigureTenant(
            id="root", tenant=ROOT, time=START, settings=TenantSettings(tariff="rising-cpu")
        ),
        ConfigureTenant(id="kid", tenant=KID, time=START, settings=pooled),
        TopUp(id="top-up", tenant=ROOT, time=START, amount=Decimal("2.56")),
        # 3 vCPU for 46 minutes: 30 vCPU-minutes at 0.01 and 108 at 0.02 is 2.46.
        StartSession(
            id="start-kid", tenant=KID, time=START, session="a", meter="cpu", quantity=Decimal(3)
        ),
        # Behind those 138 minutes the last 0.10 buys 5 minutes at 0.02.
        StartSession(id="start-root", tenant=ROOT, time=START, session="b", meter="cpu"),
        Advance(id="advance", tenant=ROOT, time=START + HOUR),
    ]
    for command in commands:
        run(tree, command)
    # The root's 5 minutes were charged first, at 0.01; the child's 138 then cost 2.51.
    assert tree.state.nodes[KID].drawn <= Decimal("2.50")


def test_a_report_never_overdraws_a_prepaid_balance() -> None:
    tree = tree_with("rising", "1.00")
    grant = OpenGrant(
        id="grant",
        tenant=ROOT,
        time=START,
        meter="calls",
        quantity=Decimal(5),
        validity_seconds=10 * MINUTE,
    )
    assert run(tree, grant).amount == Decimal("0.50")
    record = AuthorizeAndRecord(
        id="record", tenant=ROOT, time=START, meter="calls", quantity=Decimal(5)
    )
    assert run(tree, record).amount == Decimal("0.50")  # the first five, at 0.10
    # Nothing used yet; the five left are held again, now at 0.25: 1.25 for 0.50 given back.
    run(tree, ReportGrant(id="report", tenant=ROOT, time=START, grant="grant", used=Decimal(0)))
    final = ReportGrant(
        id="final", tenant=ROOT, time=START, grant="grant", used=Decimal(5), final=True
    )
    run(tree, final)
    assert wallet(tree).balance() >= 0


def test_a_late_capture_never_overdraws_a_prepaid_balance() -> None:
    tree = tree_with("falling", "3.75")
    before_end = PERIOD_END - 10 * MINUTE
    assert authorize(tree, "a", 5, before_end).amount == Decimal("2.50")
    assert authorize(tree, "b", 5, before_end).amount == Decimal("1.25")  # behind a
    run(tree, Release(id="release-a", tenant=ROOT, time=before_end, reservation="a"))
    assert authorize(tree, "c", 5, before_end).amount == Decimal("1.25")
    assert authorize(tree, "d", 5, before_end).amount == Decimal("1.25")  # all committed
    for reservation in ("c", "b", "d"):
        capture(tree, reservation, PERIOD_END + MINUTE)  # into January, now closed
    assert wallet(tree).balance() >= 0


def test_credit_behind_a_hold_is_not_spent_from_under_it() -> None:
    tree = TenantTree.new(ROOT, TARIFFS)
    expiring = TopUp(
        id="expiring",
        tenant=ROOT,
        time=START,
        amount=Decimal("0.13"),
        expires_at=START + 10 * MINUTE,
    )
    commands: list[Command] = [
        ConfigureTenant(id="root", tenant=ROOT, time=START, settings=TenantSettings(tariff="flat")),
        TopUp(id="lasting", tenant=ROOT, time=START, amount=Decimal("0.30"), priority=0),
        expiring,
    ]
    for command in commands:
        run(tree, command)
    session = StartSession(id="start", tenant=ROOT, time=START, session="s", meter="cpu")
    # Only the lasting 0.30 backs the session: 600 s, until the other credit expires.
    assert run(tree, session).granted_until == START + 10 * MINUTE
    record = AuthorizeAndRecord(id="record", tenant=ROOT, time=START, meter="calls")
    assert run(tree, record).amount == Decimal("0.125")  # taken from the lasting credit
    run(tree, Advance(id="advance", tenant=ROOT, time=START + HOUR))
    assert wallet(tree).balance() >= 0


def test_closing_rounds_a_prepaid_balance_at_most_half_a_cent_per_line_below_zero() -> None:
    """Declared, not a bug: each statement line is rounded once, and the rounding difference
    is posted on its own at close, without a check; a prepaid balance spent to the fraction
    of a cent can end below zero by at most half a minor unit per line (half up)."""
    tree = tree_with("flat", "0.14")
    record = AuthorizeAndRecord(id="record", tenant=ROOT, time=START, meter="calls")
    assert run(tree, record).amount == Decimal("0.125")
    session = StartSession(id="start", tenant=ROOT, time=START, session="s", meter="cpu")
    assert run(tree, session).granted_until == START + 30  # 0.015 buys 30 s
    run(tree, Advance(id="advance", tenant=ROOT, time=PERIOD_END + MINUTE))
    (_, statement), *_ = tree.take_statements()
    assert statement.total == Decimal("0.15")  # 0.13 + 0.02, from 0.125 + 0.015
    assert wallet(tree).balance() >= -Decimal("0.005") * len(statement.lines)


# Fixed since (ad3602e, f671426) ---------------------------------------------------------------


def test_concurrent_sessions_never_overdraw_a_prepaid_balance() -> None:
    """With falling tiers two sessions hold money quoted behind each other's time; the first
    one cut off is rated at the dear first tier, but charged within the hold it had."""
    tree = tree_with("falling-cpu", "1.50")
    for session in ("a", "b"):
        start = StartSession(
            id=f"start-{session}", tenant=ROOT, time=START, session=session, meter="cpu"
        )
        run(tree, start)
    for hours in (1, 2, 3):
        run(tree, Advance(id=f"advance-{hours}", tenant=ROOT, time=START + hours * HOUR))
    assert not tree.state.sessions
    assert wallet(tree).balance() >= 0


def test_holds_quoted_behind_a_released_hold_never_overdraw_a_prepaid_balance() -> None:
    """With falling tiers, a hold quoted behind another hold that is then released is rated
    at the dearer front of the tiers; the price guarantee keeps the charge within the hold."""
    tree = tree_with("falling", "3.75")
    assert authorize(tree, "a", 5).amount == Decimal("2.50")
    assert authorize(tree, "b", 5).amount == Decimal("1.25")  # behind a, at 0.25
    run(tree, Release(id="release-a", tenant=ROOT, time=START, reservation="a"))
    assert authorize(tree, "c", 5).amount == Decimal("1.25")  # behind b
    assert authorize(tree, "d", 5).amount == Decimal("1.25")  # behind b and c; all committed
    for reservation in ("c", "b", "d"):
        capture(tree, reservation)  # c, first in the period, is rated 2.50
    assert wallet(tree).balance() >= 0


def test_a_one_step_record_never_leaves_a_hold_short() -> None:
    """A one-step record is priced at the front of rising tiers, in front of the units held;
    the capture of the hold behind it is kept within what was held."""
    tree = tree_with("rising", "1.00")
    assert authorize(tree, "held", 5).amount == Decimal("0.50")
    record = AuthorizeAndRecord(
        id="record", tenant=ROOT, time=START, meter="calls", quantity=Decimal(5)
    )
    assert run(tree, record).amount == Decimal("0.50")
    capture(tree, "held")  # rated at 0.25 a call: 1.25
    assert wallet(tree).balance() >= 0


def test_credit_that_expires_before_a_hold_ends_does_not_back_it() -> None:
    tree = tree_with("flat", "1.00", expires_at=START + MINUTE)
    held = Authorize(
        id="held", tenant=ROOT, time=START, meter="calls", quantity=Decimal(8), ttl_seconds=HOUR
    )
    assert tree.handle(held).reason is Reason.insufficient_credit


def test_a_slice_expiring_at_a_period_end_is_charged_to_the_next_period() -> None:
    tree = tree_with("flat", "10")
    grant = OpenGrant(
        id="grant",
        tenant=ROOT,
        time=PERIOD_END - MINUTE,
        meter="calls",
        quantity=Decimal(4),
        validity_seconds=MINUTE,
    )
    run(tree, grant)
    run(tree, Advance(id="advance", tenant=ROOT, time=PERIOD_END + 1))
    (_, january), *_ = tree.take_statements()
    assert january.total == 0
    period = tree.state.nodes[ROOT].period
    assert period is not None and period.charged_live == Decimal("0.500")


def test_a_refused_capture_names_the_reason_it_was_refused_for() -> None:
    tree = TenantTree.new(ROOT, TARIFFS)
    pooled = TenantSettings(parent=ROOT, funding=Funding.pool, tariff="flat", cap=Decimal(2))
    commands: list[Command] = [
        ConfigureTenant(
            id="root", tenant=ROOT, time=START, settings=TenantSettings(tariff="falling")
        ),
        ConfigureTenant(id="kid", tenant=KID, time=START, settings=pooled),
        TopUp(id="top-up", tenant=ROOT, time=START, amount=Decimal("1.50")),
        Authorize(id="held", tenant=KID, time=START, meter="calls", quantity=Decimal(3)),
    ]
    for command in commands:
        run(tree, command)
    # 4 calls cost 2.00 with 1.50 available; they fit the cap of 2 once the 1.50 held is
    # given back: the money is short, not the cap.
    more = Capture(id="more", tenant=KID, time=START, reservation="held", quantity=Decimal(4))
    assert tree.handle(more).reason is Reason.insufficient_credit


def test_a_refused_one_step_record_changes_nothing() -> None:
    tree = tree_with("flat", "0.10")
    before = msgspec.msgpack.encode(tree.state.nodes)
    record = AuthorizeAndRecord(id="record", tenant=ROOT, time=START, meter="calls")
    assert tree.handle(record).reason is Reason.insufficient_credit
    assert msgspec.msgpack.encode(tree.state.nodes) == before
