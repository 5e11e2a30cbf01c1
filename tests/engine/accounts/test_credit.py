"""Credit: grants spent by priority then expiry, promotional credit that expires, paid money
that settles a debt first, and postpaid accounts with a credit limit. Calls cost 0.10 EUR."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.accounts import (
    Advance,
    AlertKind,
    AuthorizeAndRecord,
    CreditKind,
    Outcome,
    Reason,
    Record,
    Refund,
    TopUp,
)
from engine.instants import parse
from tests.engine.accounts.books import MARCH, Book
from tests.engine.helpers import calls_catalog, catalog_tariffs

DAY = 86_400
TARIFFS = catalog_tariffs(calls_catalog("0.10"))


class Account(Book):
    """One tenant, ``acme``, on the api tariff, driven by commands with generated ids."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(TARIFFS)
        settings = {"tariff": "api", **settings}
        assert self.configure(**settings).accepted

    def top_up(self, grant_id: str, amount: str, at: int = MARCH, **fields: Any) -> None:
        assert self(TopUp, at, id=grant_id, amount=Decimal(amount), **fields).accepted

    def calls(self, quantity: int, at: int, command: type = AuthorizeAndRecord) -> Outcome:
        return self(command, at, meter="calls", quantity=Decimal(quantity))

    def grants(self, *grant_ids: str) -> list[Decimal]:
        return [self.wallet.grant_balance(grant_id) for grant_id in grant_ids]


def test_grants_are_spent_by_priority_then_earliest_expiry() -> None:
    """vip (priority 10) goes first whatever its expiry; among priority 100, loyalty (expiring
    on the 10th) before welcome (the 20th) before salary (never)."""
    account = Account()
    account.top_up("salary", "10")
    account.top_up("welcome", "5", kind=CreditKind.promotional, expires_at=MARCH + 19 * DAY)
    account.top_up("loyalty", "3", kind=CreditKind.promotional, expires_at=MARCH + 9 * DAY)
    account.top_up(
        "vip", "2", kind=CreditKind.promotional, priority=10, expires_at=MARCH + 29 * DAY
    )
    grants = ("vip", "loyalty", "welcome", "salary")
    steps = [
        # (calls, left in vip, loyalty, welcome, salary)
        (15, ["0.50", "3", "5", "10"]),
        (30, ["0", "0.50", "5", "10"]),
        (50, ["0", "0", "0.50", "10"]),
        (10, ["0", "0", "0", "9.50"]),
    ]
    for position, (calls, left) in enumerate(steps):
        assert account.calls(calls, MARCH + DAY + position).accepted
        assert account.grants(*grants) == [Decimal(x) for x in left], position
    assert account.balance == Decimal("9.50")
    account.wallet.ledger.check()


def test_grants_of_equal_priority_and_expiry_are_spent_oldest_first() -> None:
    account = Account()
    account.top_up("zz-first", "5", at=MARCH)
    account.top_up("aa-second", "5", at=MARCH + 10)
    assert account.calls(20, MARCH + 20).accepted  # 2.00
    assert account.grants("zz-first", "aa-second") == [Decimal("3.00"), Decimal(5)]


def test_promotional_credit_expiring_in_mid_period_goes_to_breakage() -> None:
    """Paid 10 and a promotion of 5 expiring on 15 March 00:00. Calls are paid from the
    promotion first (it expires first): 2.00 on the 5th, 0.10 in its last second. Its unspent
    2.90 expire with a credit_expired alert and a posting to breakage; the balance drops from
    12.90 to 10, and later calls are paid from the paid credit."""
    expiry = parse("2024-03-15T00:00:00Z")
    account = Account()
    account.top_up("paid", "10")
    account.top_up("promo", "5", kind=CreditKind.promotional, expires_at=expiry)
    assert account.calls(20, MARCH + 4 * DAY).accepted
    assert account.calls(1, expiry - 1).accepted
    assert account.grants("promo", "paid") == [Decimal("2.90"), Decimal(10)]
    assert account.balance == Decimal("12.90")

    advanced = account(Advance, expiry + DAY)
    assert [(a.kind, a.at, a.amount) for a in advanced.alerts] == [
        (AlertKind.credit_expired, expiry, Decimal("2.90"))
    ]
    assert [a.kind for a in account.tree.take_alerts()] == [AlertKind.credit_expired]
    assert account.balance == Decimal(10)
    assert account.wallet.ledger.balance("breakage") == Decimal("2.90")
    assert account.wallet.ledger.balance("revenue:usage") == Decimal("2.10")
    assert account.calls(5, expiry + DAY + 1).accepted
    assert account.grants("promo", "paid") == [0, Decimal("9.50")]
    account.wallet.ledger.check()


def test_credit_expiring_in_the_same_second_as_a_call_is_not_spent() -> None:
    """The grant's expiry fires before the command at its instant: 0.50 left in the promotion
    expires, and the call is paid from the paid credit."""
    expiry = parse("2024-03-15T00:00:00Z")
    account = Account()
    account.top_up("paid", "10")
    account.top_up("promo", "0.50", kind=CreditKind.promotional, expires_at=expiry)
    outcome = account.calls(1, expiry)
    assert [a.kind for a in outcome.alerts] == [AlertKind.credit_expired]
    assert account.grants("promo", "paid") == [0, Decimal("9.90")]


@pytest.mark.parametrize(
    ("kind", "owed_after", "balance_after", "available_after"),
    [
        # Paid: 30 of the 50 settle the debt, 20 become credit; 20 + limit 50.
        (CreditKind.paid, "0", "20", "70"),
        # Promotional credit never settles a debt: 30 still owed, 50 in credit.
        (CreditKind.promotional, "30", "20", "70"),
    ],
)
def test_a_paid_top_up_settles_what_is_owed_first(
    kind: CreditKind, owed_after: str, balance_after: str, available_after: str
) -> None:
    account = Account(credit_limit=Decimal(50))
    assert account.calls(300, MARCH + 1).amount == Decimal(30)
    assert (account.wallet.owed(), account.balance) == (Decimal(30), Decimal(-30))
    account.top_up("t1", "50", at=MARCH + 2, kind=kind)
    assert account.wallet.owed() == Decimal(owed_after)
    assert account.balance == Decimal(balance_after)
    assert account.tree.available("acme") == Decimal(available_after)
    account.wallet.ledger.check()


# A postpaid account with a credit limit of 20 EUR and no credit.
POSTPAID_STEPS = [
    # (command, calls, reason, balance after, available after)
    ("one-step", 150, None, "-15", "5"),
    ("one-step", 60, Reason.insufficient_credit, "-15", "5"),  # 6.00 > 5.00
    ("one-step", 50, None, "-20", "0"),  # exactly the limit
    ("one-step", 1, Reason.insufficient_credit, "-20", "0"),
    ("record", 10, None, "-21", "-1"),  # usage that happened: past the limit, cut off
    ("one-step", 1, Reason.account_cut_off, "-21", "-1"),
    ("top-up 21", 0, None, "0", "20"),  # settles the 21 owed, which reopens the account
    ("one-step", 1, None, "-0.10", "19.90"),
]


def test_postpaid_with_a_credit_limit() -> None:
    account = Account(credit_limit=Decimal(20))
    for position, (command, calls, reason, balance, available) in enumerate(POSTPAID_STEPS):
        at = MARCH + 10 + position
        if command == "top-up 21":
            account.top_up("payment", "21", at=at)
            outcome = None
        else:
            outcome = account.calls(
                calls, at, Record if command == "record" else AuthorizeAndRecord
            )
            assert outcome.reason == reason, (position, outcome)
        assert account.balance == Decimal(balance), position
        assert account.tree.available("acme") == Decimal(available), position
        if command == "record":
            assert outcome is not None
            assert [a.kind for a in outcome.alerts] == [AlertKind.cut_off]
    assert account.wallet.owed() == Decimal("0.10")
    account.wallet.ledger.check()


def test_a_refund_settles_what_is_owed_then_becomes_credit() -> None:
    account = Account(credit_limit=Decimal(20))
    assert account.calls(40, MARCH + 1).accepted  # owes 4.00
    assert account(Refund, MARCH + 2, amount=Decimal(10), reason="outage").accepted
    assert account.wallet.owed() == 0
    assert account.balance == Decimal(6)
    assert account.calls(10, MARCH + 3).accepted  # paid from the refund credit
    assert account.balance == Decimal(5)


def test_a_refund_never_expires_with_a_promotion() -> None:
    account = Account()
    account.top_up("refunds", "5", kind=CreditKind.promotional, expires_at=MARCH + 3 * DAY)
    assert account(Refund, MARCH + 10, amount=Decimal(20)).accepted
    account(Advance, MARCH + 4 * DAY)
    assert account.balance == Decimal(20)  # the promotion's 5 expired; the refund did not
