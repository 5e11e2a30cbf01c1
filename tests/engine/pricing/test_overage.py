"""Overage: 1000 units are included in the period; every unit above costs 0.02 EUR."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from engine.pricing import Overage, Price

PLAN = Overage(included=Decimal(1000), unit_price=Decimal("0.02"))
NOTHING_INCLUDED = Overage(included=Decimal(0), unit_price=Decimal("0.02"))

QUANTITIES = ["0", "1", "999.999999999", "1000", "1000.000000001", "1001", "1500.5", "10000"]


@pytest.mark.parametrize(
    ("price", "quantity", "amount"),
    [
        (PLAN, "0", "0"),
        (PLAN, "999", "0"),  # within the allowance
        (PLAN, "1000", "0"),  # exactly the allowance
        (PLAN, "1000.5", "0.01"),
        (PLAN, "1001", "0.02"),
        (PLAN, "1500.5", "10.01"),
        (PLAN, "10000", "180.00"),
        (NOTHING_INCLUDED, "1", "0.02"),
    ],
)
def test_only_units_above_the_allowance_are_charged(
    price: Overage, quantity: str, amount: str
) -> None:
    assert price.amount(Decimal(quantity), 1) == Decimal(amount)


@pytest.mark.parametrize("quantity", QUANTITIES)
def test_lines_sum_to_the_amount_and_the_quantity(quantity: str) -> None:
    included, over = PLAN.lines(Decimal(quantity), 1)
    assert included.amount + over.amount == PLAN.amount(Decimal(quantity), 1)
    assert included.quantity + over.quantity == Decimal(quantity)
    assert included.quantity <= PLAN.included
    assert over.amount == over.quantity * over.unit_price


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("0", "0"),
        ("0", "1000"),
        ("1000", "1000"),
        ("1000", "1001"),
        ("999.5", "1000.5"),
        ("500", "7000"),
        ("1001", "1000"),  # backwards
        ("7000", "0"),
    ],
)
def test_marginal_is_the_change_in_amount(before: str, after: str) -> None:
    b, a = Decimal(before), Decimal(after)
    assert PLAN.marginal(b, a, 1, 2) == PLAN.amount(a, 2) - PLAN.amount(b, 1)


def test_decodes_from_json_by_its_model_tag() -> None:
    document = b'{"model": "overage", "included": "1000", "unit_price": "0.02"}'
    price = msgspec.json.decode(document, type=Price)
    assert price == PLAN
    assert msgspec.json.decode(msgspec.json.encode(price), type=Price) == price


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            b'{"model": "overage", "included": "-1", "unit_price": "0.02"}',
            "included: must be non-negative",
        ),
        (
            b'{"model": "overage", "included": "1000", "unit_price": "-0.02"}',
            "unit_price: must not be negative",
        ),
        (
            b'{"model": "overage", "included": "NaN", "unit_price": "0.02"}',
            "included: must be a finite number",
        ),
        (
            b'{"model": "overage", "included": "1000", "unit_price": "NaN"}',
            "unit_price: must be a finite number",
        ),
        (
            b'{"model": "overage", "included": "1000", "unit_price": "0.02", "free": "1"}',
            "unknown field `free`",
        ),
    ],
)
def test_invalid_documents_are_rejected_naming_the_field(document: bytes, message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.json.decode(document, type=Price)
    assert message in str(raised.value)
