"""The tariff's payment mode sets how far a balance may go below zero, unless the tenant has
an agreed credit limit of its own."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.accounts import AuthorizeAndRecord, Reason
from tests.engine.accounts.books import MARCH, Book
from tests.engine.helpers import calls_catalog, catalog_tariffs


def account(payment_mode: str, credit_limit: Decimal | None) -> Book:
    """``acme`` on the api tariff, whose calls cost 2.50 EUR each, paid ``payment_mode``."""
    book = Book(catalog_tariffs(calls_catalog("2.50", payment_mode=payment_mode)))
    assert book.configure(tariff="api", credit_limit=credit_limit).accepted
    return book


def calls(book: Book, count: int) -> list[bool]:
    return [
        book(AuthorizeAndRecord, MARCH + 60 + n, id=f"a{n}", meter="calls").accepted
        for n in range(count)
    ]


def test_prepaid_without_credit_is_denied() -> None:
    book = account("prepaid", None)
    outcome = book(AuthorizeAndRecord, MARCH + 60, id="a", meter="calls")
    assert (outcome.accepted, outcome.reason) == (False, Reason.insufficient_credit)


def test_postpaid_without_an_agreed_limit_is_never_cut_off() -> None:
    book = account("postpaid", None)
    assert all(calls(book, 40))
    assert book.balance == Decimal("-100.00")
    outcome = book(AuthorizeAndRecord, MARCH + 600, id="last", meter="calls")
    assert outcome.accepted and outcome.available is None  # no limit to show
    book.wallet.ledger.check()


@pytest.mark.parametrize(("mode", "accepted"), [("postpaid", 4), ("prepaid", 4)])
def test_an_agreed_credit_limit_holds_in_either_mode(mode: str, accepted: int) -> None:
    book = account(mode, Decimal(10))  # 10.00 of credit is four calls at 2.50
    assert calls(book, 6) == [True] * accepted + [False] * (6 - accepted)
    assert book.balance == Decimal("-10.00")
