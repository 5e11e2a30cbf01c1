"""A reseller and its customers, as table tests with hand-checked figures.

The platform sells API calls to the reseller in graduated tiers: the first 10 calls of a month
at 0.01 EUR, every call above at 0.0025 EUR. The reseller sells them on at 0.025 EUR a call.
Its customers draw from the reseller's prepaid balance (pooled), one of them up to a cap; one
customer has a balance of its own.
"""

from __future__ import annotations

from decimal import Decimal
from itertools import count
from typing import Any

import pytest

from engine.accounts import (
    Authorize,
    AuthorizeAndRecord,
    ConfigureTenant,
    Funding,
    OpenGrant,
    Outcome,
    Reason,
    Record,
    Release,
    Resume,
    StartSession,
    Suspend,
    TenantSettings,
    TenantTree,
    TopUp,
)
from engine.instants import parse
from engine.statements import Statement
from tests.engine.helpers import CALLS_METER, catalog_tariffs, per_unit, tariff_document

MARCH = parse("2024-03-01T00:00:00Z")
APRIL = parse("2024-04-01T00:00:00Z")


def tariff(key: str, price: dict[str, Any]) -> dict[str, Any]:
    """Calls at ``price``; virtual machines at 0.036 EUR per vCPU-hour."""
    vm = {
        "key": "vm",
        "meter": "vm",
        "time_basis": {"unit": "hour"},
        "price": per_unit("0.036"),
    }
    return tariff_document(key, [{"key": "calls", "meter": "calls", "price": price}, vm])


TARIFFS = catalog_tariffs(
    {
        "meters": [CALLS_METER, {"key": "vm", "unit": "vCPU", "aggregation": "sum"}],
        "tariffs": [
            tariff(
                "platform",
                {
                    "model": "graduated",
                    "tiers": [
                        {"up_to": "10", "unit_price": "0.01"},
                        {"up_to": None, "unit_price": "0.0025"},
                    ],
                },
            ),
            tariff("wholesale", per_unit("0.015")),
            tariff("retail", per_unit("0.025")),
        ],
    }
)


class Book:
    """A tenant tree driven by commands with generated ids. Unlike ``books.Book``, which
    speaks for its root, every command here names its tenant first, as the tables do."""

    def __init__(self, root: str) -> None:
        self.tree = TenantTree.new(root, TARIFFS)
        self.ids = count(1)

    def __call__(self, command: type, tenant: str, at: int = MARCH + 60, **fields: Any) -> Outcome:
        fields.setdefault("id", f"c{next(self.ids)}")
        return self.tree.handle(command(tenant=tenant, time=at, **fields))

    def configure(self, tenant: str, **settings: Any) -> None:
        outcome = self(ConfigureTenant, tenant, MARCH, settings=TenantSettings(**settings))
        assert outcome.accepted, outcome

    def calls(self, tenant: str, quantity: int, at: int = MARCH + 60) -> Outcome:
        return self(AuthorizeAndRecord, tenant, at, meter="calls", quantity=Decimal(quantity))

    def statements(self) -> dict[str, Statement]:
        return dict(self.tree.take_statements())


def reseller_with_customers(balance: str = "10") -> Book:
    """The reseller (root, prepaid, platform tariff) and its customers: alpha and beta pooled
    with the retail tariff, beta capped at 0.05 EUR of the reseller's money a month; gamma
    pooled without a tariff of its own; delta with its own balance of 5 EUR."""
    book = Book("reseller")
    book.configure("reseller", tariff="platform")
    assert book(TopUp, "reseller", MARCH, amount=Decimal(balance)).accepted
    book.configure("alpha", parent="reseller", funding=Funding.pool, tariff="retail")
    book.configure(
        "beta", parent="reseller", funding=Funding.pool, tariff="retail", cap=Decimal("0.05")
    )
    book.configure("gamma", parent="reseller", funding=Funding.pool)
    book.configure("delta", parent="reseller", tariff="retail")
    assert book(TopUp, "delta", MARCH, amount=Decimal(5)).accepted
    return book


# Each customer's calls cost the reseller the platform's price, in the platform's tiers.
POOLED_USAGE = [
    # (tenant, calls, charged to the reseller, the reseller's balance after)
    ("alpha", 6, "0.06", "9.94"),  # 6 x 0.01; 6 calls this month
    ("gamma", 3, "0.03", "9.91"),  # 3 x 0.01; 9
    ("beta", 3, "0.015", "9.895"),  # 1 x 0.01 + 2 x 0.0025; 12
    ("alpha", 4, "0.01", "9.885"),  # 4 x 0.0025; 16
    ("reseller", 2, "0.005", "9.880"),  # its own calls: 2 x 0.0025; 18
]


def run_pooled_usage(book: Book) -> None:
    for tenant, calls, charged, balance in POOLED_USAGE:
        outcome = book.calls(tenant, calls)
        assert outcome.accepted, (tenant, outcome)
        assert (outcome.amount, outcome.balance) == (Decimal(charged), Decimal(balance)), tenant
        assert book.tree.balance(tenant) == Decimal(balance)


def test_pooled_customers_are_charged_to_the_reseller_at_platform_prices() -> None:
    book = reseller_with_customers()
    run_pooled_usage(book)
    assert book.tree.balance("delta") == Decimal(5)  # a balance of its own is not touched
    ledger = book.tree.state.nodes["reseller"].wallet.ledger  # type: ignore[union-attr]
    assert ledger.balance("revenue:usage") == Decimal("0.120")
    ledger.check()


def test_customer_statements_are_at_the_resellers_prices() -> None:
    """At the month end alpha's 10 calls come to 10 x 0.025 = 0.25 EUR and beta's 3 calls to
    0.075, rounded half up to 0.08; gamma has no tariff and no statement. The reseller owes
    the platform 10 x 0.01 + 8 x 0.0025 = 0.12 EUR for all 18 calls."""
    book = reseller_with_customers()
    run_pooled_usage(book)
    book(TopUp, "reseller", APRIL, amount=Decimal(1))  # the month closes first
    statements = book.statements()
    assert sorted(statements) == ["alpha", "beta", "delta", "reseller"]
    alpha, beta, reseller = statements["alpha"], statements["beta"], statements["reseller"]
    assert (alpha.line("calls/units").quantity, alpha.total) == (Decimal(10), Decimal("0.25"))
    assert (beta.line("calls/units").amount_raw, beta.total) == (
        Decimal("0.075"),
        Decimal("0.08"),
    )
    assert statements["delta"].total == 0
    assert [(line.line_id, line.quantity, line.amount) for line in reseller.lines] == [
        ("calls/tier-1", Decimal(10), Decimal("0.10")),
        ("calls/tier-2", Decimal(8), Decimal("0.02")),
    ]
    assert reseller.total == Decimal("0.12")
    # Customers' statements are for the reseller to invoice; they move none of its money.
    assert book.tree.balance("reseller") == Decimal("10.88")


def test_the_resellers_statement_breaks_its_usage_down_by_customer() -> None:
    """Each customer's line is the marginal amount its calls caused at the platform's prices,
    so the lines add up to the charge's rated amount; rounded one by one (beta's 0.015 and the
    reseller's 0.005 both round up) they come to a cent more than the charge."""
    book = reseller_with_customers()
    run_pooled_usage(book)
    book(TopUp, "reseller", APRIL, amount=Decimal(1))
    reseller = book.statements()["reseller"]
    assert [
        (line.tenant, line.charge, line.quantity, line.amount_raw, line.amount)
        for line in reseller.breakdown
    ] == [
        ("alpha", "calls", Decimal(10), Decimal("0.07"), Decimal("0.07")),  # 6 x 0.01 + 4 x 0.0025
        ("beta", "calls", Decimal(3), Decimal("0.015"), Decimal("0.02")),
        ("gamma", "calls", Decimal(3), Decimal("0.03"), Decimal("0.03")),
        ("reseller", "calls", Decimal(2), Decimal("0.005"), Decimal("0.01")),
    ]
    rated = sum((line.amount_raw for line in reseller.lines if line.charge == "calls"), Decimal(0))
    assert rated == Decimal("0.12")
    assert sum((line.amount_raw for line in reseller.breakdown), Decimal(0)) == rated
    assert sum((line.amount for line in reseller.breakdown), Decimal(0)) == Decimal("0.13")


def test_the_breakdown_adds_up_when_the_first_customer_arrives_in_mid_month() -> None:
    """The reseller makes 5 calls, then takes on alpha, who makes 3: 8 x 0.01 = 0.08."""
    book = Book("reseller")
    book.configure("reseller", tariff="platform")
    assert book(TopUp, "reseller", MARCH, amount=Decimal(10)).accepted
    assert book.calls("reseller", 5, MARCH + 60).accepted
    book.configure("alpha", parent="reseller", funding=Funding.pool, tariff="retail")
    assert book.calls("alpha", 3, MARCH + 120).accepted
    book(TopUp, "reseller", APRIL, amount=Decimal(1))
    reseller = book.statements()["reseller"]
    assert reseller.total == Decimal("0.08")
    assert [(line.tenant, line.quantity) for line in reseller.breakdown] == [
        ("alpha", Decimal(3)),
        ("reseller", Decimal(5)),
    ]


# Beta may draw 0.05 EUR of the reseller's money a month, measured at the platform's prices.
# Alpha has used the first tier up, so each of beta's calls costs the reseller 0.0025 EUR in
# March: 20 calls reach the cap exactly. In April the tiers and the cap start again.
CAP_STEPS = [
    # (command, calls, reason, the reseller's balance after, what beta may still draw);
    # "call" is AuthorizeAndRecord
    ("call", 8, None, "9.880", "0.03"),  # drawn 0.02
    ("call", 10, None, "9.855", "0.005"),  # drawn 0.045
    ("call", 3, Reason.cap_exceeded, "9.855", "0.005"),  # 0.045 + 0.0075 would pass 0.05
    ("reserve", 2, None, "9.855", "0"),  # 0.045 drawn + 0.005 held: at the cap
    ("call", 1, Reason.cap_exceeded, "9.855", "0"),  # the hold counts
    ("release", 0, None, "9.855", "0.005"),
    ("call", 2, None, "9.850", "0"),  # drawn 0.05: exactly the cap is allowed
    ("call", 1, Reason.cap_exceeded, "9.850", "0"),
    ("april", 5, None, "9.800", "0"),  # 5 x 0.01 = 0.05 in the new month
    ("april", 1, Reason.cap_exceeded, "9.800", "0"),
]


def test_a_capped_customer_is_denied_exactly_when_its_draws_would_pass_the_cap() -> None:
    book = reseller_with_customers()
    assert book.calls("alpha", 10).amount == Decimal("0.10")
    reservation = ""
    for position, (command, calls, reason, balance, room) in enumerate(CAP_STEPS):
        at = MARCH + 100 + position
        if command == "reserve":
            reservation = f"hold-{position}"
            quantity = Decimal(calls)
            outcome = book(Authorize, "beta", at, id=reservation, meter="calls", quantity=quantity)
        elif command == "release":
            outcome = book(Release, "beta", at, reservation=reservation)
        else:
            outcome = book.calls("beta", calls, APRIL + position if command == "april" else at)
        assert outcome.reason == reason, (position, outcome)
        assert book.tree.balance("reseller") == Decimal(balance), position
        # What beta may still spend is the room under its cap, not the reseller's pool.
        assert book.tree.available("beta") == Decimal(room), position
    assert book.calls("alpha", 1, APRIL + 60).accepted  # the cap binds beta alone


# Delta has a balance of its own and the retail tariff: each call costs delta 0.025 EUR, and
# the reseller, whose balance is 0.03 EUR here, 0.01 EUR. Both must afford it.
OWN_BALANCE_STEPS = [
    # (calls, reason, delta's balance after, the reseller's balance after)
    (2, None, "4.95", "0.01"),
    (2, Reason.insufficient_credit, "4.95", "0.01"),  # delta could pay; the reseller cannot
    (1, None, "4.925", "0.00"),
    (1, Reason.insufficient_credit, "4.925", "0.00"),  # at zero, not past it: not cut off
]


def test_a_customer_with_its_own_balance_pays_its_tariff_and_the_reseller_the_platforms() -> None:
    book = reseller_with_customers(balance="0.03")
    for position, (calls, reason, delta, reseller) in enumerate(OWN_BALANCE_STEPS):
        outcome = book.calls("delta", calls, MARCH + 100 + position)
        assert outcome.reason == reason, (position, outcome)
        if reason is None:
            assert outcome.amount == Decimal("0.025") * calls  # what delta is charged
        assert book.tree.balance("delta") == Decimal(delta), position
        assert book.tree.balance("reseller") == Decimal(reseller), position
    book(TopUp, "reseller", APRIL, amount=Decimal(1))
    statements = book.statements()
    assert statements["delta"].total == Decimal("0.08")  # 3 x 0.025 = 0.075, half up
    assert statements["reseller"].total == Decimal("0.03")
    assert [(line.tenant, line.quantity) for line in statements["reseller"].breakdown] == [
        ("delta", Decimal(3))
    ]


def test_a_customer_drawing_the_reseller_into_overdraft_cuts_every_customer_off() -> None:
    """Recorded usage is always charged: 5 calls recorded by gamma take the reseller's 0.03
    to -0.02, which cuts it off; a top-up reopens it for everyone."""
    book = reseller_with_customers(balance="0.03")
    assert book(Record, "gamma", MARCH + 100, meter="calls", quantity=Decimal(5)).accepted
    assert book.tree.balance("reseller") == Decimal("-0.02")
    for tenant in ("alpha", "beta", "gamma", "delta", "reseller"):
        assert book.calls(tenant, 1, MARCH + 101).reason is Reason.account_cut_off, tenant
    assert book(TopUp, "reseller", MARCH + 102, amount=Decimal(1)).accepted
    assert book.tree.balance("reseller") == Decimal("0.98")
    assert book.calls("alpha", 1, MARCH + 103).amount == Decimal("0.01")


SUSPENDED_REQUESTS = [
    pytest.param(AuthorizeAndRecord, {"meter": "calls"}, id="one-step call"),
    pytest.param(Authorize, {"meter": "calls"}, id="reservation"),
    pytest.param(OpenGrant, {"meter": "calls", "quantity": Decimal(5)}, id="grant"),
    pytest.param(
        StartSession,
        {"session": "s1", "meter": "vm", "quantity": Decimal(2)},
        id="session",
    ),
]


@pytest.mark.parametrize("customer", ["alpha", "beta", "gamma", "delta"])
@pytest.mark.parametrize(("command", "fields"), SUSPENDED_REQUESTS)
def test_suspending_the_reseller_denies_its_customers(
    customer: str, command: type, fields: dict[str, Any]
) -> None:
    book = reseller_with_customers()
    assert book(Suspend, "reseller", MARCH + 100).accepted
    denied = book(command, customer, MARCH + 101, **fields)
    assert (denied.accepted, denied.reason) == (False, Reason.account_suspended)
    assert book.tree.balance(customer) == Decimal(5 if customer == "delta" else 10)
    assert book(Resume, "reseller", MARCH + 102).accepted
    assert book(command, customer, MARCH + 103, **fields).accepted


def test_suspending_one_customer_leaves_its_siblings_alone() -> None:
    book = reseller_with_customers()
    assert book(Suspend, "alpha", MARCH + 100).accepted
    assert book.calls("alpha", 1, MARCH + 101).reason is Reason.account_suspended
    assert book.calls("gamma", 1, MARCH + 101).accepted
    assert book.calls("reseller", 1, MARCH + 101).accepted


@pytest.mark.parametrize(
    ("reseller_funding", "reseller_charged", "reseller_balance"),
    [
        # The reseller pays the platform customer 4 x 0.015 from its own balance of 2.
        (Funding.own, "0.06", "1.94"),
        # The reseller draws from the platform customer's balance: only its statement shows
        # the wholesale price.
        (Funding.pool, None, "9.96"),
    ],
)
def test_a_three_level_tree(
    reseller_funding: Funding, reseller_charged: str | None, reseller_balance: str
) -> None:
    """A platform customer (acme, the root, platform prices) hosts a reseller (rex, wholesale
    prices towards acme), which hosts a customer (cora, pooled, retail prices towards rex).
    Cora's 4 calls are rated on every level: 4 x 0.025 = 0.10 on cora's statement, 4 x 0.015
    = 0.06 on rex's, 4 x 0.01 = 0.04 charged to acme."""
    book = Book("acme")
    book.configure("acme", tariff="platform")
    assert book(TopUp, "acme", MARCH, amount=Decimal(10)).accepted
    book.configure("rex", parent="acme", funding=reseller_funding, tariff="wholesale")
    if reseller_funding is Funding.own:
        assert book(TopUp, "rex", MARCH, amount=Decimal(2)).accepted
    book.configure("cora", parent="rex", funding=Funding.pool, tariff="retail")

    outcome = book.calls("cora", 4)
    assert outcome.accepted
    assert book.tree.balance("acme") == Decimal("9.96")
    assert book.tree.balance("rex") == Decimal(reseller_balance)
    assert outcome.amount == Decimal(reseller_charged or "0.04")  # cora's payer's charge

    book(TopUp, "acme", APRIL, amount=Decimal(1))
    statements = book.statements()
    assert {tenant: s.total for tenant, s in statements.items()} == {
        "acme": Decimal("0.04"),
        "rex": Decimal("0.06"),
        "cora": Decimal("0.10"),
    }
    assert [(b.tenant, b.quantity, b.amount) for b in statements["acme"].breakdown] == [
        ("rex", Decimal(4), Decimal("0.04"))
    ]
    assert [(b.tenant, b.quantity, b.amount) for b in statements["rex"].breakdown] == [
        ("cora", Decimal(4), Decimal("0.06"))
    ]

    assert book(Suspend, "acme", APRIL + 10).accepted
    assert book.calls("cora", 1, APRIL + 11).reason is Reason.account_suspended
