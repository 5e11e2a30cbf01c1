"""Read-only queries: the quote (the price of N more units now) and the period-to-date usage.

Tokens are priced in graduated tiers after 5 free tokens a month: the next 10 at 1.00 EUR,
every token above at 2.00 EUR. Calls cost 0.10 EUR each; a base fee of 3.00 EUR is charged
in advance each month.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.accounts import (
    Advance,
    Authorize,
    AuthorizeAndRecord,
    Funding,
    Outcome,
    PeriodUsage,
    Quota,
    Quote,
    QuoteQuery,
    Reason,
    TopUp,
    encode,
    period_usage,
    quote,
)
from engine.instants import parse
from tests.engine.accounts import books
from tests.engine.accounts.books import MARCH
from tests.engine.helpers import CALLS_METER, calls_charge, catalog_tariffs, tariff_document

APRIL = parse("2024-04-01T00:00:00Z")
T = parse("2024-03-05T12:00:00Z")

TOKENS = {
    "key": "tokens",
    "meter": "tokens",
    "free_units": "5",
    "price": {
        "model": "graduated",
        "tiers": [
            {"up_to": "10", "unit_price": "1.00"},
            {"up_to": None, "unit_price": "2.00"},
        ],
    },
}
API = tariff_document(
    "api", [calls_charge("0.10"), TOKENS], recurring_fees=[{"key": "base", "amount": "3.00"}]
)
TARIFFS = catalog_tariffs(
    {
        "meters": [CALLS_METER, {"key": "tokens", "unit": "token", "aggregation": "sum"}],
        "tariffs": [API],
    }
)


class Book(books.Book):
    """A tenant tree rooted at ``acme`` (prepaid), driven by commands with generated ids."""

    def __init__(self, credit: str = "100", **settings: Any) -> None:
        super().__init__(TARIFFS)
        assert self.configure(tariff="api", **settings).accepted
        assert self(TopUp, MARCH, amount=Decimal(credit)).accepted

    def record(
        self, quantity: int | str, at: int = T, meter: str = "tokens", **fields: Any
    ) -> Outcome:
        return self(AuthorizeAndRecord, at, meter=meter, quantity=Decimal(quantity), **fields)

    def quote(
        self, quantity: int | str, at: int = T, tenant: str = "acme", meter: str = "tokens"
    ) -> Quote:
        query = QuoteQuery(tenant=tenant, meter=meter, quantity=Decimal(quantity))
        found = quote(self.tree, query, at)
        assert isinstance(found, Quote), found
        return found

    def usage(self, at: int = T, tenant: str = "acme") -> PeriodUsage:
        found = period_usage(self.tree, tenant, at)
        assert isinstance(found, PeriodUsage), found
        return found


# Quotes -------------------------------------------------------------------------------------


def test_free_units_then_the_first_tier_then_across_into_the_second() -> None:
    book = Book()
    assert book.quote(5).amount == 0  # all free
    assert book.quote(8).amount == Decimal("3.00")  # 5 free, 3 at 1.00
    assert book.record(12).amount == Decimal("7.00")
    # 12 used: 7 priced in the first tier; 5 more take 3 at 1.00 and 2 at 2.00.
    crossing = book.quote(5)
    assert crossing.amount == Decimal("7.00")
    assert (crossing.allowed, crossing.currency) == (True, "EUR")
    assert book.record(5).amount == crossing.amount


def test_a_quote_changes_nothing_even_when_a_period_end_is_due() -> None:
    book = Book()
    book.record(12)
    book(Authorize, T, id="r1", meter="tokens", quantity=Decimal(2))
    before = encode(book.tree.state)
    book.quote(5)
    book.usage()
    # A month later the period has ended for a command arriving now; the tree has not been
    # told yet, so the answer comes from a copy brought up to that time.
    later = APRIL + 60
    assert book.quote(5, at=later).amount == 0  # April's free units
    assert book.usage(at=later).period_start == APRIL
    assert encode(book.tree.state) == before
    assert book.tree.state.clock == T


def test_a_quote_is_priced_behind_what_reservations_hold() -> None:
    book = Book()
    assert book(Authorize, T, id="r1", meter="tokens", quantity=Decimal(15)).amount == Decimal(
        "10.00"
    )
    # 15 held (5 free, 10 in the first tier): one more token is in the second tier.
    assert book.quote(1).amount == Decimal("2.00")


def test_the_quote_says_whether_the_usage_would_be_allowed_now() -> None:
    book = Book(credit="5", quotas=(Quota(meter="calls", hard=Decimal(30)),))
    # 5.00 of credit, 3.00 of it paid for the base fee at the period's opening.
    assert book.quote(5).available == Decimal("2.00")
    refused = book.quote(8)  # 3.00
    assert (refused.allowed, refused.reason) == (False, Reason.insufficient_credit)
    assert refused.amount == Decimal("3.00")
    assert book.record(12, meter="calls").accepted
    quota = book.quote(20, meter="calls")
    assert quota.quota_remaining == Decimal(18)
    assert (quota.allowed, quota.reason) == (False, Reason.quota_exceeded)


def test_an_unknown_tenant_or_meter_is_a_refusal() -> None:
    book = Book()
    missing = quote(book.tree, QuoteQuery(tenant="nobody", meter="tokens"), T)
    assert isinstance(missing, Outcome) and missing.reason is Reason.unknown_tenant
    meter = quote(book.tree, QuoteQuery(tenant="acme", meter="nope"), T)
    assert isinstance(meter, Outcome) and meter.reason is Reason.rating_rejected
    assert meter.field == "meter"
    usage = period_usage(book.tree, "nobody", T)
    assert isinstance(usage, Outcome) and usage.reason is Reason.unknown_tenant


@given(st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=12))
def test_a_quote_equals_the_charge_of_the_record_that_follows(quantities: list[int]) -> None:
    book = Book(credit="1000")
    for step, quantity in enumerate(quantities):
        at = T + step
        quoted = book.quote(quantity, at=at)
        assert book.record(quantity, at=at).amount == quoted.amount


# Period-to-date usage -----------------------------------------------------------------------


def test_usage_so_far_with_lines_per_tier() -> None:
    book = Book()
    book.record(12)
    book.record(3, meter="calls")
    usage = book.usage()
    assert (usage.period_start, usage.period_end, usage.currency) == (MARCH, APRIL, "EUR")
    assert [(m.meter, m.quantity, m.unit) for m in usage.meters] == [
        ("calls", Decimal(3), "call"),
        ("tokens", Decimal(12), "token"),
    ]
    amounts = {line.line_id: line.amount for line in usage.lines}
    assert amounts["tokens/free"] == 0
    assert amounts["tokens/tier-1"] == Decimal("7.00")
    assert amounts["calls/units"] == Decimal("0.30")
    assert usage.total == Decimal("10.30")  # 3.00 base fee, 0.30 calls, 7.00 tokens
    assert usage.charged == Decimal("10.30")


def test_usage_amounts_equal_the_statement_at_close() -> None:
    book = Book(credit="1000")
    for step, quantity in enumerate([3, 4, "2.5", 9]):
        book.record(quantity, at=T + step)
    book.record(7, at=T + 10, meter="calls")
    usage = book.usage(at=T + 20)
    book(Advance, APRIL)
    [(tenant, statement)] = book.tree.take_statements()
    assert tenant == "acme"
    assert usage.lines == statement.lines
    assert usage.total == statement.total
    assert usage.charged == statement.charged_live


def test_a_parent_sees_its_sub_tenants_and_a_sub_tenant_without_a_tariff_its_share() -> None:
    book = Book()
    assert book.configure("alpha", parent="acme", funding=Funding.pool, tariff=None).accepted
    assert book.configure("beta", parent="acme", funding=Funding.pool, tariff=None).accepted
    book.record(2, tenant="alpha", meter="calls")
    book.record(4, tenant="beta", meter="calls")
    parent = book.usage()
    assert [(line.tenant, line.charge, line.quantity) for line in parent.breakdown] == [
        ("alpha", "calls", Decimal(2)),
        ("beta", "calls", Decimal(4)),
    ]
    alpha = book.usage(tenant="alpha")
    assert (alpha.period_start, alpha.lines) == (MARCH, ())
    assert [(line.tenant, line.amount) for line in alpha.breakdown] == [("alpha", Decimal("0.20"))]
    assert book.quote(3, tenant="alpha", meter="calls").amount == Decimal("0.30")


def test_a_capped_sub_tenants_quote_says_what_is_left_under_its_cap() -> None:
    book = Book(credit="100")
    settings = {"parent": "acme", "funding": Funding.pool, "tariff": "api", "cap": Decimal(1)}
    assert book.configure("alpha", **settings).accepted
    book.record(4, tenant="alpha", meter="calls")  # 0.40 of the 1.00 cap drawn
    found = book.quote(10, tenant="alpha", meter="calls")
    assert (found.allowed, found.reason) == (False, Reason.cap_exceeded)
    assert found.available == Decimal("0.60") == book.tree.available("alpha")
    assert book.quote(1, meter="calls").available == book.tree.available("acme")
