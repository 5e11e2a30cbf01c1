"""A funded tenant's money: credit grants over a double-entry ledger, and a credit limit.

Grants are spent in order of priority (lower first), then earliest expiry (grants that never
expire last), then age. A grant past its expiry is never spent, even before the posting that
expires it has been made. What grants cannot cover is owed (``receivable``), which a paid
top-up settles first.

``available`` is what an authorisation may still commit:
``spendable grants - owed + credit_limit - held``.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from functools import cached_property

import msgspec

from engine.accounts.ledger import (
    BREAKAGE,
    FUNDING,
    GRANT_PREFIX,
    PROMOTION,
    RECEIVABLE,
    Ledger,
    Posting,
    PostingKind,
)
from engine.instants import Instant
from engine.numbers import ZERO


class CreditKind(StrEnum):
    paid = "paid"
    promotional = "promotional"
    refund = "refund"
    """Money given back (credit notes, refunds, price drops): paid money that never expires."""


class CreditGrant(msgspec.Struct, frozen=True, kw_only=True, dict=True):
    grant_id: str
    kind: CreditKind
    amount: Decimal
    priority: int
    granted_at: Instant
    expires_at: Instant | None = None
    sequence: int = 0
    """Given by the wallet: the order grants arrived in, and what makes each ledger account
    unique even when a client reuses a grant's id long after."""

    @cached_property
    def account(self) -> str:
        return f"{GRANT_PREFIX}{self.sequence}:{self.grant_id}"

    def sort_key(self) -> tuple[int, int, int, int]:
        never = 1 if self.expires_at is None else 0
        return (self.priority, never, self.expires_at or 0, self.sequence)

    def spendable_at(self, at: Instant) -> bool:
        return self.expires_at is None or at < self.expires_at


REFUND_GRANT_PRIORITY = 0
UNLIMITED = Decimal("Infinity")
"""The credit limit of a postpaid account without an agreed limit."""


class Wallet(msgspec.Struct, kw_only=True):
    ledger: Ledger = msgspec.field(default_factory=Ledger)
    grants: list[CreditGrant] = msgspec.field(default_factory=list)
    credit_limit: Decimal = ZERO
    grants_made: int = 0

    # Reading --------------------------------------------------------------------------------

    def spendable(self, at: Instant) -> Decimal:
        balance = self.ledger.balance
        return sum((balance(g.account) for g in self.grants if g.spendable_at(at)), ZERO)

    def grant_balance(self, grant_id: str) -> Decimal:
        """What is left of the credit granted under ``grant_id`` (every grant of that id)."""
        total = ZERO
        for name, account in self.ledger.accounts.items():
            parts = name.split(":", 2)
            if len(parts) == 3 and parts[0] + ":" == GRANT_PREFIX and parts[2] == grant_id:
                total += account.credit_balance
        return total

    def owed(self) -> Decimal:
        return -self.ledger.balance(RECEIVABLE)

    def balance(self) -> Decimal:
        """Posted money of the tenant: grants (expired ones until their expiry is posted) less
        what it owes."""
        return self.ledger.customer_balance()

    def available(self, at: Instant) -> Decimal:
        return self.spendable(at) - self.owed() + self.credit_limit - self.ledger.held

    def available_now(self) -> Decimal:
        """:meth:`available` in O(1), for when no grant in the list has expired: the tree
        expires grants before it handles a command at or after their expiry."""
        return self.ledger.customer_credits + self.credit_limit - self.ledger.held

    # Moving money -----------------------------------------------------------------------------

    def top_up(self, grant: CreditGrant, reference: str) -> list[Posting]:
        """Add credit. Paid money first settles what is owed; the rest becomes the grant."""
        postings: list[Posting] = []
        self.grants_made += 1
        grant = msgspec.structs.replace(grant, sequence=self.grants_made)
        remaining = grant.amount
        source = PROMOTION if grant.kind is CreditKind.promotional else FUNDING
        owed = self.owed()
        if grant.kind is not CreditKind.promotional and owed > 0:
            settled = min(owed, remaining)
            postings.append(
                self._post(
                    source, RECEIVABLE, settled, PostingKind.top_up, grant.granted_at, reference
                )
            )
            remaining -= settled
        if remaining > 0:
            kind = (
                PostingKind.promotional_credit
                if grant.kind is CreditKind.promotional
                else PostingKind.top_up
            )
            postings.append(
                self._post(source, grant.account, remaining, kind, grant.granted_at, reference)
            )
            self._add_grant(grant)
        return postings

    def charge(
        self, amount: Decimal, revenue: str, kind: PostingKind, at: Instant, reference: str
    ) -> None:
        """Take ``amount`` from the grants in order; what they cannot cover is owed. A negative
        amount gives money back: it settles what is owed, then becomes refund credit."""
        if amount > 0:
            ledger = self.ledger
            grants = self.grants
            if grants:
                # The common prepaid case: the first grant covers it and stays above zero.
                first = grants[0]
                source = ledger.accounts.get(first.account)
                covered = (
                    source is not None
                    and source.credits_posted - source.debits_posted > amount
                    and (first.expires_at is None or at < first.expires_at)
                )
            else:
                # No credit at all (postpaid, or prepaid spent): all of it is owed.
                source = ledger.accounts.get(RECEIVABLE)
                covered = source is not None
            income = ledger.accounts.get(revenue)
            if covered and source is not None and income is not None:
                # One posting from a customer account to a platform one: Ledger.move written
                # out (a fifth of a one-step record's work went to _take's general path).
                source.debits_posted += amount
                income.credits_posted += amount
                ledger.customer_credits -= amount
                ledger.postings_count += 1
                return
            self._take(amount, revenue, kind, at, reference)
        elif amount < 0:
            self._give_back(-amount, revenue, at, reference)

    def expire(self, now: Instant) -> list[tuple[CreditGrant, Posting]]:
        """Post the expiry of every grant whose time has come and that still holds money."""
        expired: list[tuple[CreditGrant, Posting]] = []
        for grant in self.grants:
            left = self.ledger.balance(grant.account)
            if not grant.spendable_at(now) and left > 0:
                posting = self._post(
                    grant.account,
                    BREAKAGE,
                    left,
                    PostingKind.expiry,
                    grant.expires_at or now,
                    grant.grant_id,
                )
                expired.append((grant, posting))
        self.grants = [g for g in self.grants if g.spendable_at(now)]
        return expired

    def _take(
        self, amount: Decimal, revenue: str, kind: PostingKind, at: Instant, reference: str
    ) -> list[Posting]:
        postings: list[Posting] = []
        left = amount
        for grant in self.grants:
            if not grant.spendable_at(at):
                continue
            in_grant = self.ledger.balance(grant.account)
            if in_grant <= 0:
                continue
            taken = in_grant if in_grant < left else left
            postings.append(self._post(grant.account, revenue, taken, kind, at, reference))
            left -= taken
            if not left:
                break
        if left:
            postings.append(self._post(RECEIVABLE, revenue, left, kind, at, reference))
        self._drop_empty_grants()
        return postings

    def _give_back(
        self, amount: Decimal, revenue: str, at: Instant, reference: str
    ) -> list[Posting]:
        postings: list[Posting] = []
        owed = self.owed()
        if owed > 0:
            settled = min(owed, amount)
            postings.append(
                self._post(revenue, RECEIVABLE, settled, PostingKind.refund, at, reference)
            )
            amount -= settled
        if amount > 0:
            # All money given back gathers in one refund grant while it lasts.
            grant = next((g for g in self.grants if g.kind is CreditKind.refund), None)
            if grant is None:
                self.grants_made += 1
                grant = CreditGrant(
                    grant_id="refunds",
                    kind=CreditKind.refund,
                    amount=amount,
                    priority=REFUND_GRANT_PRIORITY,
                    granted_at=at,
                    sequence=self.grants_made,
                )
                self._add_grant(grant)
            postings.append(
                self._post(revenue, grant.account, amount, PostingKind.refund, at, reference)
            )
        return postings

    def _add_grant(self, grant: CreditGrant) -> None:
        self.grants.append(grant)
        self.grants.sort(key=CreditGrant.sort_key)

    def _drop_empty_grants(self) -> None:
        """Spent grants leave the list (their ledger accounts stay, at zero)."""
        if any(self.ledger.balance(g.account) <= 0 for g in self.grants):
            self.grants = [g for g in self.grants if self.ledger.balance(g.account) > 0]

    def _post(
        self,
        debit: str,
        credit: str,
        amount: Decimal,
        kind: PostingKind,
        at: Instant,
        reference: str,
    ) -> Posting:
        return self.ledger.post(
            Posting(
                debit=debit, credit=credit, amount=amount, kind=kind, at=at, reference=reference
            )
        )
