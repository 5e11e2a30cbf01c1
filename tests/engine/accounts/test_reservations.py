"""Reservations: authorise the price of a quantity, then capture what was used or release it.

Calls cost 0.10 EUR each. Tokens are priced in graduated tiers: the first 10 of a month at
1.00 EUR, every token above at 2.00 EUR; so are prompt tokens (counted in the ``tokens``
property of a request) and vCPU-hours.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.accounts import (
    Authorize,
    Capture,
    Outcome,
    Reason,
    Record,
    Release,
    TopUp,
)
from engine.instants import parse
from tests.engine.accounts.books import MARCH, Book
from tests.engine.helpers import CALLS_METER, calls_charge, catalog_tariffs, tariff_document

T = parse("2024-03-05T12:00:00Z")

TIERS = {
    "model": "graduated",
    "tiers": [
        {"up_to": "10", "unit_price": "1.00"},
        {"up_to": None, "unit_price": "2.00"},
    ],
}
CHARGES = [
    calls_charge("0.10"),
    {"key": "tokens", "meter": "tokens", "price": TIERS},
    # The same tiers for tokens counted in a property of each request, and for vCPU-hours.
    {"key": "prompt", "meter": "prompt", "price": TIERS},
    {"key": "vm", "meter": "vm", "time_basis": {"unit": "hour"}, "price": TIERS},
]
METERS = [
    CALLS_METER,
    {"key": "tokens", "unit": "token", "aggregation": "sum"},
    {"key": "prompt", "unit": "token", "aggregation": "sum", "value_property": "tokens"},
    {"key": "vm", "unit": "vCPU", "aggregation": "sum"},
]
TARIFFS = catalog_tariffs({"meters": METERS, "tariffs": [tariff_document("api", CHARGES)]})


class Account(Book):
    """One prepaid tenant, ``acme``, driven by commands with generated ids."""

    def __init__(self, balance: str) -> None:
        super().__init__(TARIFFS)
        assert self.configure(tariff="api").accepted
        assert self(TopUp, MARCH, amount=Decimal(balance)).accepted

    def reserve(
        self, reservation: str, meter: str, quantity: int, at: int = T, **fields: Any
    ) -> Outcome:
        return self(
            Authorize, at, id=reservation, meter=meter, quantity=Decimal(quantity), **fields
        )

    def capture(self, reservation: str, quantity: int | None = None, at: int = T + 1) -> Outcome:
        captured = None if quantity is None else Decimal(quantity)
        return self(Capture, at, reservation=reservation, quantity=captured)


@pytest.mark.parametrize(
    ("captured", "reason", "charged", "balance", "available"),
    [
        (12, None, "1.20", "8.80", "8.80"),  # less: the other 0.80 go back
        (None, None, "2.00", "8.00", "8.00"),  # what was reserved
        (20, None, "2.00", "8.00", "8.00"),
        (25, None, "2.50", "7.50", "7.50"),  # more, which the credit allows
        (0, None, "0", "10", "10"),  # nothing used
        # More than the credit allows: refused, and the reservation stays as it was.
        (101, Reason.insufficient_credit, "0", "10", "8.00"),
    ],
)
def test_capture_less_equal_or_more_than_reserved(
    captured: int | None, reason: Reason | None, charged: str, balance: str, available: str
) -> None:
    """10 EUR of credit; 20 calls reserved hold 2.00."""
    account = Account("10")
    reserved = account.reserve("r1", "calls", 20)
    assert (reserved.amount, reserved.available) == (Decimal("2.00"), Decimal("8.00"))
    outcome = account.capture("r1", captured)
    assert outcome.reason == reason, outcome
    assert outcome.amount == Decimal(charged)
    assert account.balance == Decimal(balance)
    assert account.available == Decimal(available)
    if reason is None:
        assert account.held == 0
        assert account.capture("r1", at=T + 2).reason is Reason.unknown_reservation
    else:
        assert account.held == Decimal("2.00")
        assert account.capture("r1", at=T + 2).amount == Decimal("2.00")


def test_release_gives_the_hold_back() -> None:
    account = Account("10")
    account.reserve("r1", "calls", 30)
    assert account.available == Decimal(7)
    released = account(Release, T + 1, reservation="r1")
    assert (released.accepted, released.available) == (True, Decimal(10))
    assert account.balance == Decimal(10)
    assert account(Release, T + 2, reservation="r1").reason is Reason.unknown_reservation
    assert account.capture("r1", at=T + 3).reason is Reason.unknown_reservation


@pytest.mark.parametrize(
    ("ttl_seconds", "captured_after", "reason"),
    [
        (60, 59, None),  # one second before the expiry
        (60, 60, Reason.unknown_reservation),  # at the expiry the hold is already gone
        (300, 299, None),  # the default time to live
        (300, 300, Reason.unknown_reservation),
    ],
)
def test_a_reservation_expires_after_its_time_to_live(
    ttl_seconds: int, captured_after: int, reason: Reason | None
) -> None:
    account = Account("10")
    fields = {} if ttl_seconds == 300 else {"ttl_seconds": ttl_seconds}
    reserved = account.reserve("r1", "calls", 20, **fields)
    assert reserved.expires_at == T + ttl_seconds
    outcome = account.capture("r1", at=T + captured_after)
    assert outcome.reason == reason
    assert account.held == 0
    assert account.balance == Decimal(8 if reason is None else 10)


def test_reservations_are_quoted_behind_the_units_already_held() -> None:
    """14 EUR of credit. 8 tokens hold 8 x 1.00; the next 4 are quoted as tokens 9 to 12:
    2 x 1.00 + 2 x 2.00 = 6.00, not 4.00. The credit is then fully held: one more token is
    refused."""
    account = Account("14")
    first = account.reserve("r1", "tokens", 8)
    second = account.reserve("r2", "tokens", 4, at=T + 1)
    assert (first.amount, second.amount) == (Decimal("8.00"), Decimal("6.00"))
    assert account.available == 0
    assert account.reserve("r3", "tokens", 1, at=T + 2).reason is Reason.insufficient_credit


@pytest.mark.parametrize(
    ("order", "charged"),
    [
        # Whatever the order of the captures, 12 tokens cost 10 x 1.00 + 2 x 2.00 = 14.00,
        # which the two holds (8.00 + 6.00) cover exactly.
        (["r1", "r2"], ["8.00", "6.00"]),
        (["r2", "r1"], ["4.00", "10.00"]),
    ],
)
def test_two_reservations_across_a_tier_boundary_hold_enough(
    order: list[str], charged: list[str]
) -> None:
    account = Account("14")
    account.reserve("r1", "tokens", 8)
    account.reserve("r2", "tokens", 4, at=T + 1)
    for position, reservation in enumerate(order):
        outcome = account.capture(reservation, at=T + 10 + position)
        assert outcome.amount == Decimal(charged[position])
        assert outcome.alerts == ()
    assert account.balance == 0
    assert account.held == 0
    assert account.tree.state.nodes["acme"].cut_off is False


def test_an_expired_reservation_no_longer_raises_the_quote() -> None:
    account = Account("20")
    account.reserve("r1", "tokens", 8, ttl_seconds=60)
    assert account.reserve("r2", "tokens", 4, at=T + 1).amount == Decimal("6.00")
    assert account(Release, T + 2, reservation="r2").accepted
    # After r1 expires, 4 tokens are quoted from the first one on again.
    assert account.reserve("r3", "tokens", 4, at=T + 60).amount == Decimal("4.00")


def test_a_capture_within_its_quantity_costs_at_most_what_is_left_to_pay() -> None:
    """8 tokens hold 8.00 of 14 EUR. 10 tokens recorded meanwhile (usage that happened, always
    charged) cost 10.00 and eat into the held money: 4.00 are left. They also push the
    reserved tokens into the second tier, where they would cost 16.00. A reservation is a
    price guarantee: its capture never takes the balance past the limit, so it costs the
    4.00 left and the 12.00 above it are credited on the statement as a line of its own."""
    account = Account("14")
    account.reserve("r1", "tokens", 8)
    recorded = account(Record, T + 1, meter="tokens", quantity=Decimal(10))
    assert recorded.amount == Decimal(10)
    captured = account.capture("r1", at=T + 2)
    assert captured.amount == Decimal("4.00")
    assert captured.alerts == ()
    assert account.balance == 0
    assert account.reserve("r2", "calls", 1, at=T + 3).reason is Reason.insufficient_credit


def test_reservations_of_time_are_quoted_behind_the_hours_already_held() -> None:
    """1 vCPU for 10 hours holds 10 x 1.00; the next 10 hours are hours 11 to 20 of the
    month, 10 x 2.00, which 20 EUR of credit cannot hold next to the first 10."""
    account = Account("20")
    first = account.reserve("r1", "vm", 1, duration_seconds=36_000)
    assert first.amount == Decimal(10)
    second = account.reserve("r2", "vm", 1, at=T + 1, duration_seconds=36_000)
    assert second.reason is Reason.insufficient_credit, second


def test_reservations_of_a_value_property_meter_are_quoted_behind_the_values_held() -> None:
    """A request of 8 tokens holds 8.00; one of 4 more is tokens 9 to 12: 2 x 1.00 + 2 x 2.00
    = 6.00, which 12 EUR of credit cannot hold next to the first 8.00."""
    account = Account("12")
    first = account(Authorize, T, id="r1", meter="prompt", properties={"tokens": "8"})
    assert first.amount == Decimal(8)
    second = account(Authorize, T + 1, id="r2", meter="prompt", properties={"tokens": "4"})
    assert (second.reason, second.amount) == (Reason.insufficient_credit, Decimal(0)), second
