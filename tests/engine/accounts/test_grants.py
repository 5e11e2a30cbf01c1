"""Grants: a slice of units handed to a caller (a gateway) to spend without asking. Opening
one holds its price; reports charge what was used; the final report or the expiry settles the
rest. Calls cost 0.02 EUR; the account starts with 10 EUR."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.accounts import (
    Advance,
    GrantExpiry,
    OpenGrant,
    Outcome,
    Reason,
    ReportGrant,
    TopUp,
)
from engine.instants import parse
from tests.engine.accounts.books import MARCH, Book
from tests.engine.helpers import calls_catalog, catalog_tariffs

T = parse("2024-03-05T12:00:00Z")
TARIFFS = catalog_tariffs(calls_catalog("0.02"))


class Account(Book):
    """One prepaid tenant, ``acme``, with 10 EUR, driven by commands with generated ids."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(TARIFFS)
        assert self.configure(tariff="api", **settings).accepted
        assert self(TopUp, MARCH, amount=Decimal(10)).accepted

    def open(self, grant: str, quantity: int, at: int = T, **fields: Any) -> Outcome:
        return self(OpenGrant, at, id=grant, meter="calls", quantity=Decimal(quantity), **fields)

    def report(self, grant: str, used: int, at: int, final: bool = False) -> Outcome:
        return self(ReportGrant, at, grant=grant, used=Decimal(used), final=final)


def test_opening_a_grant_holds_the_price_of_the_slice() -> None:
    account = Account()
    opened = account.open("g1", 100)
    assert (opened.accepted, opened.amount, opened.expires_at) == (True, Decimal("2.00"), T + 60)
    assert (account.balance, account.held) == (Decimal(10), Decimal("2.00"))
    assert account.tree.available("acme") == Decimal("8.00")
    longer = account.open("g2", 50, at=T + 1, validity_seconds=3_600)
    assert (longer.amount, longer.expires_at) == (Decimal("1.00"), T + 1 + 3_600)


@pytest.mark.parametrize(
    ("quantity", "reason"),
    [
        (500, None),  # 10.00: exactly the balance
        (501, Reason.insufficient_credit),  # 10.02
    ],
)
def test_a_slice_is_granted_only_if_the_account_can_afford_it(
    quantity: int, reason: Reason | None
) -> None:
    account = Account()
    assert account.open("g1", quantity).reason == reason


# A slice of 100 calls (2.00 held), reported on in parts.
REPORTS = [
    # (used, final, reason, charged, balance after, held after)
    (30, False, None, "0.60", "9.40", "1.40"),
    (71, False, Reason.grant_exceeded, "0", "9.40", "1.40"),  # only 70 are left
    (-1, False, Reason.invalid_quantity, "0", "9.40", "1.40"),
    (20, False, None, "0.40", "9.00", "1.00"),
    (0, False, None, "0", "9.00", "1.00"),
    (10, True, None, "0.20", "8.80", "0"),  # the final report gives the other 40 back
    (1, False, Reason.unknown_grant, "0", "8.80", "0"),  # closed
]


def test_reports_charge_what_was_used_and_the_final_report_releases_the_rest() -> None:
    account = Account()
    account.open("g1", 100)
    for position, (used, final, reason, charged, balance, held) in enumerate(REPORTS):
        outcome = account.report("g1", used, T + 10 + position, final=final)
        assert outcome.reason == reason, (position, outcome)
        assert outcome.amount == Decimal(charged), position
        assert account.balance == Decimal(balance), position
        assert account.held == Decimal(held), position
    account.tree.state.nodes["acme"].wallet.ledger.check()  # type: ignore[union-attr]


def test_a_slice_used_up_by_reports_is_closed() -> None:
    account = Account()
    account.open("g1", 100)
    assert account.report("g1", 100, T + 1).amount == Decimal("2.00")
    assert account.held == 0
    assert account.report("g1", 0, T + 2).reason is Reason.unknown_grant


@pytest.mark.parametrize(
    ("policy", "charged_at_expiry", "balance"),
    [
        # The caller went quiet with 70 calls unreported: they may all have been spent.
        (None, "1.40", "8.00"),  # charge_in_full is the default
        (GrantExpiry.charge_in_full, "1.40", "8.00"),
        # Trust the silence: the 70 go back unused.
        (GrantExpiry.release, "0", "9.40"),
    ],
)
def test_at_expiry_the_unreported_rest_is_charged_or_released(
    policy: GrantExpiry | None, charged_at_expiry: str, balance: str
) -> None:
    settings = {} if policy is None else {"grant_expiry": policy}
    account = Account(**settings)
    account.open("g1", 100)
    assert account.report("g1", 30, T + 10).amount == Decimal("0.60")
    account(Advance, T + 59)
    assert (account.balance, account.held) == (Decimal("9.40"), Decimal("1.40"))
    account(Advance, T + 60)  # the slice expires
    assert account.balance == Decimal(balance)
    assert account.balance == Decimal("9.40") - Decimal(charged_at_expiry)
    assert account.held == 0
    assert account.tree.state.slices == {}
    late = account.report("g1", 5, T + 61)
    assert late.reason is Reason.unknown_grant
    assert account.balance == Decimal(balance)


def test_an_unreported_slice_is_charged_in_full_at_expiry() -> None:
    account = Account()
    account.open("g1", 100)
    account(Advance, T + 3_600)
    assert (account.balance, account.held) == (Decimal("8.00"), Decimal(0))
