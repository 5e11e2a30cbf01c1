"""Periods and alerts: closing a month into a statement, fees in advance, the rounding posted
on its own, late events, tariff changes; and alerts that fire once per period.

Tariffs: ``plan`` is 29 EUR a month in advance plus 0.0125 EUR a call; ``premium`` 49 EUR a
month plus 0.02 EUR a call; ``api`` is 0.10 EUR a call. Months close at midnight UTC.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.accounts import (
    Advance,
    AlertKind,
    Authorize,
    AuthorizeAndRecord,
    Funding,
    Outcome,
    Quota,
    Reason,
    Record,
    Release,
    TopUp,
)
from engine.instants import parse
from engine.statements import Statement
from tests.engine.accounts.books import MARCH, Book
from tests.engine.helpers import CALLS_METER, calls_charge, catalog_tariffs, tariff_document

APRIL = parse("2024-04-01T00:00:00Z")
MAY = parse("2024-05-01T00:00:00Z")
DAY = 86_400


def tariff(key: str, call_price: str, fee: str | None = None) -> dict[str, Any]:
    """Calls at ``call_price``; with a ``fee``, a base fee charged in advance each month."""
    if fee is None:
        return tariff_document(key, [calls_charge(call_price)])
    base = {"key": "base", "name": "Base fee", "amount": fee}
    return tariff_document(key, [calls_charge(call_price)], recurring_fees=[base])


TARIFFS = catalog_tariffs(
    {
        "meters": [CALLS_METER],
        "tariffs": [
            tariff("plan", "0.0125", fee="29"),
            tariff("premium", "0.02", fee="49"),
            tariff("api", "0.10"),
        ],
    }
)


class Account(Book):
    """A tree of one or more tenants (root ``acme``) driven by commands with generated ids."""

    def __init__(self) -> None:
        super().__init__(TARIFFS)

    @classmethod
    def prepaid(cls, balance: str, **settings: Any) -> Account:
        account = cls()
        account.configure("acme", MARCH, **settings)
        assert account(TopUp, MARCH, amount=Decimal(balance)).accepted
        return account

    def calls(self, quantity: int, at: int, tenant: str = "acme", **fields: Any) -> Outcome:
        command = fields.pop("command", AuthorizeAndRecord)
        return self(command, at, tenant, meter="calls", quantity=Decimal(quantity), **fields)

    def statements(self) -> list[Statement]:
        return [statement for _, statement in self.tree.take_statements()]


# Closing a period ---------------------------------------------------------------------------


def test_closing_a_month_queues_its_statement_and_opens_the_next() -> None:
    """On 1 March the plan's fee of 29 is due in advance, before any credit: the tenant owes
    it (and is cut off) until a top-up of 100 settles it, leaving 71. Three calls cost
    3 x 0.0125 = 0.0375 as they happen. At the month end the statement rounds them to 0.04
    and posts the 0.0025 difference on its own; April's fee is due at once: 71 - 0.0375 -
    0.0025 - 29 = 41.96."""
    account = Account()
    opened = account.configure("acme", MARCH, tariff="plan")
    assert [a.kind for a in opened.alerts] == [AlertKind.cut_off]
    assert account.balance == Decimal(-29)
    assert account(TopUp, MARCH + 1, amount=Decimal(100)).balance == Decimal(71)
    assert account.calls(3, MARCH + DAY).balance == Decimal("70.9625")
    assert account.statements() == []

    account(Advance, APRIL + DAY)
    [march] = account.statements()
    assert (march.period_start, march.period_end, march.revision) == (MARCH, APRIL, 0)
    assert [(line.line_id, line.amount_raw, line.amount) for line in march.lines] == [
        ("calls/units", Decimal("0.0375"), Decimal("0.04")),
        ("base/0", Decimal(29), Decimal("29.00")),
    ]
    assert (march.total, march.charged_live, march.rounding_difference) == (
        Decimal("29.04"),
        Decimal("29.0375"),
        Decimal("0.0025"),
    )
    assert account.statements() == []  # taken once
    ledger = account.wallet.ledger
    assert ledger.balance("revenue:rounding") == Decimal("0.0025")
    assert ledger.balance("revenue:fees") == Decimal(58)  # March's and April's fee
    assert ledger.balance("revenue:usage") == Decimal("0.0375")
    assert account.balance == Decimal("41.96")
    ledger.check()


@pytest.mark.parametrize(
    ("calls", "live", "line", "rounding"),
    [
        (1, "0.0125", "0.01", "-0.0025"),  # rounded down: the difference goes back
        (2, "0.025", "0.03", "0.005"),  # half up
        (3, "0.0375", "0.04", "0.0025"),
        (4, "0.05", "0.05", "0"),
    ],
)
def test_the_rounding_difference_is_posted_to_revenue_rounding(
    calls: int, live: str, line: str, rounding: str
) -> None:
    account = Account.prepaid("100", tariff="plan")
    assert account.calls(calls, MARCH + DAY).amount == Decimal(live)
    account(Advance, APRIL)
    [march] = account.statements()
    assert march.line("calls/units").amount == Decimal(line)
    assert march.rounding_difference == Decimal(rounding)
    assert account.wallet.ledger.balance("revenue:rounding") == Decimal(rounding)
    # Over the month the account paid exactly the statement: 100 - 29 fee - the line, and
    # April's fee.
    assert account.balance == Decimal(100) - Decimal(29) - Decimal(line) - Decimal(29)
    account.wallet.ledger.check()


def test_a_new_tariff_applies_from_the_next_period() -> None:
    """Moved to premium on 15 March: March stays on the plan (0.0125 a call), April starts
    with premium's fee of 49 and its price of 0.02."""
    account = Account.prepaid("200", tariff="plan")
    assert account.configure("acme", MARCH + 14 * DAY, tariff="premium").accepted
    assert account.calls(4, MARCH + 20 * DAY).amount == Decimal("0.05")
    assert account.calls(4, APRIL + DAY).amount == Decimal("0.08")
    [march] = account.statements()
    assert (march.tariff, march.total) == ("plan", Decimal("29.05"))
    assert account.balance == Decimal(200) - Decimal("29.05") - Decimal(49) - Decimal("0.08")
    account(Advance, MAY)
    [april] = account.statements()
    assert (april.tariff, april.total) == ("premium", Decimal("49.08"))


def test_a_tariff_given_to_a_customer_later_applies_from_its_next_period() -> None:
    account = Account.prepaid("10", tariff="api")
    assert account.configure("cust", MARCH, parent="acme", funding=Funding.pool).accepted
    settings = {"parent": "acme", "funding": Funding.pool, "tariff": "plan"}
    assert account.configure("cust", MARCH + DAY, **settings).accepted
    assert account.calls(3, APRIL + DAY, tenant="cust").accepted
    account(Advance, MAY)
    statements = dict(account.tree.take_statements())
    assert statements["cust"].line("calls/units").quantity == 3


def test_changing_to_an_unknown_tariff_is_refused() -> None:
    account = Account.prepaid("10", tariff="api")
    changed = account.configure("acme", MARCH + DAY, tariff="no-such-tariff")
    assert (changed.accepted, changed.reason) == (False, Reason.no_tariff)


def test_a_customer_may_drop_its_tariff() -> None:
    account = Account.prepaid("10", tariff="api")
    settings: dict[str, Any] = {"parent": "acme", "funding": Funding.pool}
    assert account.configure("cust", MARCH, tariff="plan", **settings).accepted
    assert account.configure("cust", MARCH + DAY, **settings).accepted
    account(Advance, APRIL)
    assert account.calls(1, APRIL + 1, tenant="cust").amount == Decimal("0.10")


# Late events --------------------------------------------------------------------------------


LATE_EVENTS = [
    # (received, usage time, reason, the revision of the delta statement, balance after)
    # Each late call adds 0.0125 to the closed March: 0.0375 -> 0.05 -> 0.0625, whose rounded
    # totals 0.04 -> 0.05 -> 0.06 give deltas of 0.01, each with a rounding of -0.0025.
    ("2024-04-02T00:00:00Z", "2024-03-31T12:00:00Z", None, 1, "41.95"),
    ("2024-04-03T23:59:59Z", "2024-03-31T23:59:59Z", None, 2, "41.94"),
    # The grace window of 3 days after 1 April has ended.
    ("2024-04-04T00:00:00Z", "2024-03-31T12:00:00Z", Reason.event_too_late, None, "41.94"),
    # Usage in the current period is not late.
    ("2024-04-04T00:00:00Z", "2024-04-01T00:00:00Z", None, None, "41.9275"),
]


def test_late_usage_within_the_grace_window_yields_a_delta_statement() -> None:
    account = Account.prepaid("100", tariff="plan")
    account.calls(3, MARCH + DAY)
    account(Advance, APRIL)
    [march] = account.statements()
    assert (march.total, account.balance) == (Decimal("29.04"), Decimal("41.96"))
    for received, usage, reason, revision, balance in LATE_EVENTS:
        outcome = account.calls(1, parse(received), command=Record, usage_time=parse(usage))
        assert outcome.reason == reason, (received, outcome)
        deltas = account.statements()
        if revision is None:
            assert deltas == []
        else:
            [delta] = deltas
            line = delta.line("calls/units")
            assert (delta.period_start, delta.revision) == (MARCH, revision)
            assert (line.quantity, line.amount_raw, line.amount) == (
                Decimal(1),
                Decimal("0.0125"),
                Decimal("0.01"),
            )
            assert (delta.total, delta.rounding_difference) == (Decimal("0.01"), Decimal("-0.0025"))
        assert account.balance == Decimal(balance), received
    account.wallet.ledger.check()


def test_late_usage_counts_against_the_period_it_belongs_to() -> None:
    """60 calls from 31 March recorded on 1 April belong to March: April's quota of 100 calls
    and its budget of 10 EUR are untouched."""
    quotas = (Quota(meter="calls", hard=Decimal(100)),)
    account = Account.prepaid("100", tariff="api", quotas=quotas, budget=Decimal(10))
    late = account.calls(
        60, APRIL + 3_600, command=Record, usage_time=parse("2024-03-31T12:00:00Z")
    )
    assert (late.amount, late.alerts) == (Decimal(6), ())
    assert account.calls(100, APRIL + 7_200).accepted


# Alerts, once per period --------------------------------------------------------------------

# Each scenario starts with 20 EUR of credit on the api tariff (0.10 a call). A step is a
# number of calls, "top-up" (10 EUR more) or "april" (the month closes, then one more number
# of calls); the alerts are the kinds each step raises.
BALANCE_BELOW = [
    (50, []),  # 15.00: not below 15
    (1, [AlertKind.balance_below]),  # 14.90
    (10, []),  # once per period
    (90, [AlertKind.balance_below]),  # 4.90: below 5
    (1, []),
    ("april", 1, [AlertKind.balance_below, AlertKind.balance_below]),  # 4.70: both again
]
BUDGET = [
    (49, []),  # 4.90 of 10 spent
    (1, [AlertKind.budget_reached]),  # 50 %
    (29, []),
    (1, [AlertKind.budget_reached]),  # 80 %
    (19, []),
    (1, [AlertKind.budget_reached]),  # 100 %
    (10, []),  # 110 %: nothing more
    ("april", 50, [AlertKind.budget_reached]),  # 50 % of the new month
]
AUTO_TOP_UP = [
    (120, []),  # 8.00: not below 8
    (1, [AlertKind.auto_top_up]),  # 7.90
    (1, []),
    ("top-up", []),  # 17.80; a top-up makes it ready to ask again
    (98, []),  # 8.00
    (1, [AlertKind.auto_top_up]),  # 7.90
    ("april", 1, [AlertKind.auto_top_up]),  # 7.80, in a new month
]
SOFT_LIMIT = [
    (49, []),
    (1, [AlertKind.soft_limit_reached]),  # 50 calls
    (10, []),
    ("april", 50, [AlertKind.soft_limit_reached]),
]
HARD_QUOTA = [
    (99, []),
    (1, [AlertKind.quota_reached]),  # 100 calls: reached, not exceeded
    (1, Reason.quota_exceeded),
    ("april", 100, [AlertKind.quota_reached]),
]


@pytest.mark.parametrize(
    ("settings", "steps"),
    [
        pytest.param({"balance_alerts": (Decimal(15), Decimal(5))}, BALANCE_BELOW, id="balance"),
        pytest.param({"budget": Decimal(10)}, BUDGET, id="budget"),
        pytest.param({"auto_top_up_below": Decimal(8)}, AUTO_TOP_UP, id="auto-top-up"),
        pytest.param(
            {"quotas": (Quota(meter="calls", soft=Decimal(50)),)}, SOFT_LIMIT, id="soft-limit"
        ),
        pytest.param(
            {"quotas": (Quota(meter="calls", hard=Decimal(100)),)}, HARD_QUOTA, id="hard-quota"
        ),
    ],
)
def test_alerts_fire_once_per_period(settings: dict[str, Any], steps: list[Any]) -> None:
    account = Account.prepaid("20", tariff="api", **settings)
    raised: list[AlertKind] = []
    for position, step in enumerate(steps):
        at = MARCH + DAY + position
        if step[0] == "april":
            step, at = step[1:], APRIL + position
        if step[0] == "top-up":
            outcome = account(TopUp, at, amount=Decimal(10))
        else:
            outcome = account.calls(step[0], at)
        expected = step[1]
        if isinstance(expected, Reason):
            assert (outcome.reason, outcome.alerts) == (expected, ()), position
            continue
        assert outcome.accepted, (position, outcome)
        assert [alert.kind for alert in outcome.alerts] == expected, position
        raised.extend(expected)
    assert [alert.kind for alert in account.tree.take_alerts()] == raised


def test_the_budget_alerts_name_the_amount_spent() -> None:
    account = Account.prepaid("20", tariff="api", budget=Decimal(10))
    for calls in (50, 30, 20):
        account.calls(calls, MARCH + DAY)
    assert [(a.kind, a.amount) for a in account.tree.take_alerts()] == [
        (AlertKind.budget_reached, Decimal("5.00")),
        (AlertKind.budget_reached, Decimal("8.00")),
        (AlertKind.budget_reached, Decimal("10.00")),
    ]


def test_a_hard_quota_counts_held_units() -> None:
    """60 of 100 calls reserved: 41 more would pass the quota; after the release they fit."""
    account = Account.prepaid("20", tariff="api", quotas=(Quota(meter="calls", hard=Decimal(100)),))
    reserved = account.calls(60, MARCH + DAY, command=Authorize, id="r1")
    assert reserved.accepted
    assert account.calls(41, MARCH + DAY + 1).reason is Reason.quota_exceeded
    assert account.calls(40, MARCH + DAY + 2).accepted
    assert account(Release, MARCH + DAY + 3, reservation="r1").accepted
    assert account.calls(60, MARCH + DAY + 4).accepted
    assert account.calls(1, MARCH + DAY + 5).reason is Reason.quota_exceeded


def test_a_quota_sums_the_usage_of_the_whole_subtree() -> None:
    """The reseller's hard quota of 100 calls binds its customers' calls together."""
    account = Account.prepaid("20", tariff="api", quotas=(Quota(meter="calls", hard=Decimal(100)),))
    for customer in ("one", "two"):
        assert account.configure(customer, MARCH, parent="acme", funding=Funding.pool).accepted
    assert account.calls(70, MARCH + DAY, tenant="one").accepted
    assert account.calls(31, MARCH + DAY, tenant="two").reason is Reason.quota_exceeded
    reached = account.calls(30, MARCH + DAY, tenant="two")
    assert [(a.kind, a.tenant) for a in reached.alerts] == [(AlertKind.quota_reached, "acme")]
