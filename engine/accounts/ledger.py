"""A double-entry ledger for one funded tenant.

Every change of money is a posting from one ledger account to another; a posting never
changes the sum of all balances, so the ledger sums to zero by construction, and
:meth:`Ledger.check` asserts it. Balances are derived from the posted and pending totals of
each account (debits and credits kept apart, as TigerBeetle does), never kept as one mutable
number.

The tenant's own money sits in the ``grant:<id>`` accounts (one per credit grant, credit
balances) and what it owes in ``receivable`` (a debit balance). The other side of every
posting is a platform account: ``funding`` (payments in), ``promotion`` (promotional credit
given away), ``revenue:usage``, ``revenue:fees``, ``revenue:rounding``, ``breakage``
(credit that expired), ``adjustment``.

Holds for reservations, grants and sessions are pending amounts on ``holds``; they do not
move money until captured.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Final

import msgspec

from engine.instants import Instant
from engine.numbers import ZERO

RECEIVABLE: Final = "receivable"
HOLDS: Final = "holds"
FUNDING: Final = "funding"
PROMOTION: Final = "promotion"
REVENUE_USAGE: Final = "revenue:usage"
REVENUE_FEES: Final = "revenue:fees"
REVENUE_ROUNDING: Final = "revenue:rounding"
BREAKAGE: Final = "breakage"
ADJUSTMENT: Final = "adjustment"
GRANT_PREFIX: Final = "grant:"


class PostingKind(StrEnum):
    top_up = "top_up"
    promotional_credit = "promotional_credit"
    charge = "charge"
    fee = "fee"
    refund = "refund"
    adjustment = "adjustment"
    expiry = "expiry"
    rounding = "rounding"


class Posting(msgspec.Struct, frozen=True, kw_only=True, array_like=True, gc=False):
    """``amount`` moves from ``debit`` to ``credit``. Amounts are positive."""

    debit: str
    credit: str
    amount: Decimal
    kind: PostingKind
    at: Instant
    reference: str


class LedgerAccount(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    debits_posted: Decimal = ZERO
    credits_posted: Decimal = ZERO
    debits_pending: Decimal = ZERO
    credits_pending: Decimal = ZERO

    @property
    def credit_balance(self) -> Decimal:
        return self.credits_posted - self.debits_posted


def is_customer_side(name: str) -> bool:
    return name == RECEIVABLE or name.startswith(GRANT_PREFIX)


class Ledger(msgspec.Struct, kw_only=True):
    accounts: dict[str, LedgerAccount] = msgspec.field(default_factory=dict)
    postings_count: int = 0
    customer_credits: Decimal = ZERO
    """Credits less debits posted to the customer side (grants and receivable), kept as each
    posting is made; :meth:`check` recomputes it from the accounts."""

    def account(self, name: str) -> LedgerAccount:
        account = self.accounts.get(name)
        if account is None:
            account = self.accounts[name] = LedgerAccount()
        return account

    def balance(self, name: str) -> Decimal:
        account = self.accounts.get(name)
        return account.credit_balance if account else ZERO

    def post(self, posting: Posting) -> Posting:
        self.move(posting.debit, posting.credit, posting.amount)
        return posting

    def move(self, debit: str, credit: str, amount: Decimal) -> None:
        """Post ``amount`` from ``debit`` to ``credit`` (the hot path: no Posting object)."""
        assert amount > 0, f"a posting moves a positive amount, not {amount}"
        assert debit != credit
        accounts = self.accounts
        account = accounts.get(debit)
        if account is None:
            account = accounts[debit] = LedgerAccount()
        account.debits_posted += amount
        account = accounts.get(credit)
        if account is None:
            account = accounts[credit] = LedgerAccount()
        account.credits_posted += amount
        if is_customer_side(debit):
            self.customer_credits -= amount
        if is_customer_side(credit):
            self.customer_credits += amount
        self.postings_count += 1

    def hold(self, amount: Decimal) -> None:
        """Reserve ``amount``: pending on ``holds`` against ``revenue:usage``."""
        assert amount >= 0
        self.account(HOLDS).debits_pending += amount
        self.account(REVENUE_USAGE).credits_pending += amount

    def release(self, amount: Decimal) -> None:
        assert amount >= 0
        holds = self.account(HOLDS)
        assert holds.debits_pending >= amount, "released more than was held"
        holds.debits_pending -= amount
        self.account(REVENUE_USAGE).credits_pending -= amount

    @property
    def held(self) -> Decimal:
        account = self.accounts.get(HOLDS)
        return account.debits_pending if account else ZERO

    def customer_balance(self) -> Decimal:
        """The tenant's money: its grants less what it owes."""
        return self.customer_credits

    def check(self) -> None:
        """Every posting and every hold balances: debits equal credits, posted and pending."""
        posted = sum((a.debits_posted - a.credits_posted for a in self.accounts.values()), ZERO)
        pending = sum((a.debits_pending - a.credits_pending for a in self.accounts.values()), ZERO)
        assert posted == 0, f"posted debits and credits differ by {posted}"
        assert pending == 0, f"pending debits and credits differ by {pending}"
        customer = sum(
            (a.credit_balance for name, a in self.accounts.items() if is_customer_side(name)),
            ZERO,
        )
        assert customer == self.customer_credits, "the customer total drifted from its accounts"
