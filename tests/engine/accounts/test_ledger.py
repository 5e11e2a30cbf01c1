"""The ledger and the wallet on their own: postings that balance, holds kept pending, credit
grants spent in order, and :meth:`Ledger.check` catching a ledger that does not sum to zero."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.accounts.ledger import (
    BREAKAGE,
    FUNDING,
    HOLDS,
    PROMOTION,
    RECEIVABLE,
    REVENUE_FEES,
    REVENUE_USAGE,
    Ledger,
    Posting,
    PostingKind,
)
from engine.accounts.wallet import CreditGrant, CreditKind, Wallet
from engine.instants import parse

T0 = parse("2024-03-01T00:00:00Z")
DAY = 86_400


def posting(
    debit: str, credit: str, amount: str, kind: PostingKind = PostingKind.charge
) -> Posting:
    return Posting(
        debit=debit, credit=credit, amount=Decimal(amount), kind=kind, at=T0, reference="ref"
    )


def grant(
    grant_id: str,
    amount: str,
    *,
    kind: CreditKind = CreditKind.paid,
    priority: int = 100,
    expires_at: int | None = None,
) -> CreditGrant:
    return CreditGrant(
        grant_id=grant_id,
        kind=kind,
        amount=Decimal(amount),
        priority=priority,
        granted_at=T0,
        expires_at=expires_at,
    )


def grant_balances(wallet: Wallet, *grant_ids: str) -> list[Decimal]:
    return [wallet.grant_balance(grant_id) for grant_id in grant_ids]


# The ledger ---------------------------------------------------------------------------------


def test_postings_move_money_and_the_ledger_sums_to_zero() -> None:
    """A top-up of 50, a charge of 12.34 and a fee of 7.66: the customer's grant holds 30, the
    platform's accounts hold the other side, and every account's balance adds up to zero."""
    ledger = Ledger()
    ledger.post(posting(FUNDING, "grant:t1", "50", PostingKind.top_up))
    ledger.post(posting("grant:t1", REVENUE_USAGE, "12.34"))
    ledger.post(posting("grant:t1", REVENUE_FEES, "7.66", PostingKind.fee))
    assert [
        ledger.balance(name) for name in (FUNDING, "grant:t1", REVENUE_USAGE, REVENUE_FEES)
    ] == [Decimal("-50"), Decimal("30.00"), Decimal("12.34"), Decimal("7.66")]
    assert sum(ledger.balance(name) for name in ledger.accounts) == 0
    assert ledger.customer_balance() == Decimal("30.00")
    assert ledger.postings_count == 3
    ledger.check()


def test_what_is_owed_counts_against_the_customer_balance() -> None:
    ledger = Ledger()
    ledger.post(posting(FUNDING, "grant:t1", "10", PostingKind.top_up))
    ledger.post(posting(RECEIVABLE, REVENUE_USAGE, "25"))
    assert ledger.customer_balance() == Decimal("-15")  # 10 in credit, 25 owed
    ledger.check()


@pytest.mark.parametrize(
    ("debit", "credit", "amount"),
    [
        (FUNDING, "grant:t1", "0"),  # a posting moves a positive amount
        (FUNDING, "grant:t1", "-5"),
        ("grant:t1", "grant:t1", "5"),  # from one account to another
    ],
)
def test_a_posting_that_moves_nothing_is_a_bug(debit: str, credit: str, amount: str) -> None:
    with pytest.raises(AssertionError):
        Ledger().post(posting(debit, credit, amount))


def test_holds_are_pending_and_move_no_money() -> None:
    """Holding 3 and then 1.5 keeps 4.5 pending on ``holds`` against ``revenue:usage``; no
    posted balance changes; releasing 3 leaves 1.5 held."""
    ledger = Ledger()
    ledger.post(posting(FUNDING, "grant:t1", "10", PostingKind.top_up))
    ledger.hold(Decimal(3))
    ledger.hold(Decimal("1.5"))
    assert ledger.held == Decimal("4.5")
    assert ledger.accounts[HOLDS].debits_pending == Decimal("4.5")
    assert ledger.accounts[REVENUE_USAGE].credits_pending == Decimal("4.5")
    assert ledger.customer_balance() == Decimal(10)
    assert ledger.balance(REVENUE_USAGE) == 0
    ledger.check()
    ledger.release(Decimal(3))
    assert ledger.held == Decimal("1.5")
    ledger.check()


def test_releasing_more_than_is_held_is_a_bug() -> None:
    ledger = Ledger()
    ledger.hold(Decimal(2))
    with pytest.raises(AssertionError, match="released more than was held"):
        ledger.release(Decimal("2.01"))


@pytest.mark.parametrize(
    ("account", "field", "message"),
    [
        (REVENUE_USAGE, "credits_posted", "posted debits and credits differ by -0.01"),
        ("grant:t1", "debits_posted", "posted debits and credits differ by 0.01"),
        (HOLDS, "debits_pending", "pending debits and credits differ by 0.01"),
        (REVENUE_USAGE, "credits_pending", "pending debits and credits differ by -0.01"),
    ],
)
def test_check_catches_a_ledger_that_does_not_balance(
    account: str, field: str, message: str
) -> None:
    """One cent written to one side of one account, bypassing :meth:`Ledger.post`."""
    ledger = Ledger()
    ledger.post(posting(FUNDING, "grant:t1", "10", PostingKind.top_up))
    ledger.post(posting("grant:t1", REVENUE_USAGE, "4"))
    ledger.hold(Decimal(1))
    ledger.check()
    entry = ledger.account(account)
    setattr(entry, field, getattr(entry, field) + Decimal("0.01"))
    with pytest.raises(AssertionError, match=message):
        ledger.check()


# The wallet ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "owed_after", "grant_after", "balance_after"),
    [
        # Paid money first settles the 30 owed; the other 20 becomes the grant.
        (CreditKind.paid, Decimal(0), Decimal(20), Decimal(20)),
        # Promotional credit never pays a debt: 30 stay owed, the 50 are credit.
        (CreditKind.promotional, Decimal(30), Decimal(50), Decimal(20)),
    ],
)
def test_a_top_up_settles_what_is_owed_only_when_paid(
    kind: CreditKind, owed_after: Decimal, grant_after: Decimal, balance_after: Decimal
) -> None:
    wallet = Wallet(credit_limit=Decimal(100))
    wallet.charge(Decimal(30), REVENUE_USAGE, PostingKind.charge, T0, "usage")
    assert wallet.owed() == Decimal(30)
    wallet.top_up(grant("t1", "50", kind=kind), "t1")
    assert wallet.owed() == owed_after
    assert grant_balances(wallet, "t1") == [grant_after]
    assert wallet.balance() == balance_after
    wallet.ledger.check()


def test_a_top_up_that_only_settles_a_debt_leaves_no_grant() -> None:
    wallet = Wallet(credit_limit=Decimal(100))
    wallet.charge(Decimal(30), REVENUE_USAGE, PostingKind.charge, T0, "usage")
    wallet.top_up(grant("t1", "30"), "t1")
    assert wallet.ledger.balance(RECEIVABLE) == 0
    assert wallet.ledger.balance(FUNDING) == Decimal(-30)
    assert wallet.grants == []
    assert wallet.balance() == 0


def test_grants_are_spent_by_priority_then_expiry_and_the_rest_is_owed() -> None:
    """Four grants of 5: priority 10 first; among priority 100 the one expiring on the 5th,
    then the one expiring on the 20th, then the one that never expires. A charge of 23 takes
    5 + 5 + 5 + 5 and leaves 3 owed."""
    wallet = Wallet(credit_limit=Decimal(10))
    wallet.top_up(grant("never", "5"), "never")
    wallet.top_up(grant("late", "5", expires_at=T0 + 20 * DAY), "late")
    wallet.top_up(grant("early", "5", expires_at=T0 + 5 * DAY), "early")
    wallet.top_up(grant("first", "5", kind=CreditKind.promotional, priority=10), "first")
    assert [g.grant_id for g in wallet.grants] == ["first", "early", "late", "never"]
    wallet.charge(Decimal(8), REVENUE_USAGE, PostingKind.charge, T0, "a")
    assert grant_balances(wallet, "first", "early", "late", "never") == [0, 2, 5, 5]
    wallet.charge(Decimal(15), REVENUE_USAGE, PostingKind.charge, T0, "b")
    assert grant_balances(wallet, "first", "early", "late", "never") == [0, 0, 0, 0]
    assert wallet.owed() == Decimal(3)
    assert wallet.grants == []  # spent grants leave the list
    assert wallet.available(T0) == Decimal(7)  # 0 - 3 owed + 10 limit
    wallet.ledger.check()


def test_giving_back_settles_what_is_owed_then_becomes_credit() -> None:
    wallet = Wallet(credit_limit=Decimal(10))
    wallet.charge(Decimal(4), REVENUE_USAGE, PostingKind.charge, T0, "usage")
    assert wallet.owed() == Decimal(4)
    wallet.charge(Decimal(-6), REVENUE_USAGE, PostingKind.refund, T0, "credit-note")
    assert wallet.owed() == 0
    assert grant_balances(wallet, "refunds") == [Decimal(2)]
    assert wallet.ledger.balance(REVENUE_USAGE) == Decimal(-2)  # 4 charged, 6 given back
    assert wallet.balance() == Decimal(2)
    wallet.ledger.check()


def test_an_expired_grant_is_never_spent_and_its_rest_goes_to_breakage() -> None:
    """Promotional 5 expiring on the 10th, paid 20: 3 spent from the promotion first. From the
    10th on the promotion is not spendable even before its expiry is posted; the expiry then
    moves its unspent 2 to breakage."""
    expiry = T0 + 10 * DAY
    wallet = Wallet()
    wallet.top_up(grant("promo", "5", kind=CreditKind.promotional, expires_at=expiry), "promo")
    wallet.top_up(grant("paid", "20"), "paid")
    wallet.charge(Decimal(3), REVENUE_USAGE, PostingKind.charge, T0 + DAY, "usage")
    assert wallet.spendable(expiry - 1) == Decimal(22)
    assert wallet.spendable(expiry) == Decimal(20)
    assert wallet.available(expiry) == Decimal(20)
    assert wallet.balance() == Decimal(22)  # posted money until the expiry is posted
    expired = wallet.expire(expiry)
    assert [(g.grant_id, p.debit, p.credit, p.amount, p.at) for g, p in expired] == [
        ("promo", "grant:1:promo", BREAKAGE, Decimal(2), expiry)
    ]
    assert wallet.balance() == Decimal(20)
    assert wallet.ledger.balance(PROMOTION) == Decimal(-5)
    assert wallet.ledger.balance(BREAKAGE) == Decimal(2)
    assert wallet.expire(expiry + DAY) == []  # expired once
    wallet.ledger.check()


@pytest.mark.parametrize(
    ("granted", "owed", "limit", "held", "available"),
    [
        ("100", "0", "0", "0", "100"),
        ("100", "0", "0", "30", "70"),
        ("0", "40", "100", "0", "60"),  # postpaid: the limit less what is owed
        ("0", "40", "100", "25", "35"),
        ("0", "0", "0", "0", "0"),
    ],
)
def test_available_is_grants_less_owed_plus_limit_less_held(
    granted: str, owed: str, limit: str, held: str, available: str
) -> None:
    wallet = Wallet(credit_limit=Decimal(limit))
    if Decimal(owed):
        wallet.charge(Decimal(owed), REVENUE_USAGE, PostingKind.charge, T0, "usage")
    if Decimal(granted):
        wallet.top_up(grant("t1", granted), "t1")
    wallet.ledger.hold(Decimal(held))
    assert wallet.available(T0) == Decimal(available)
    wallet.ledger.check()


def test_charges_without_credit_are_owed_the_same_on_the_short_way_as_the_long_way() -> None:
    """After the first charge a wallet without grants takes the written-out path; its ledger
    is what ``_take`` would have posted, charge after charge."""
    short, long = Wallet(credit_limit=Decimal(10)), Wallet(credit_limit=Decimal(10))
    for number, amount in enumerate(["0.25", "1.10", "0.0001", "3"]):
        short.charge(Decimal(amount), REVENUE_USAGE, PostingKind.charge, 60, f"c{number}")
        long._take(Decimal(amount), REVENUE_USAGE, PostingKind.charge, 60, f"c{number}")
    assert short.ledger == long.ledger
    assert short.owed() == Decimal("4.3501") and short.available_now() == Decimal("5.6499")
    short.ledger.check()
