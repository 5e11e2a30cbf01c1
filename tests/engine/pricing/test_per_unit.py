"""Per-unit prices: every unit costs the same, down to a fraction of a cent per second."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from engine.pricing import PerUnit, Price

TEN_CENTS = PerUnit(unit_price=Decimal("0.10"))
PER_SECOND = PerUnit(unit_price=Decimal("0.0000138"))


@pytest.mark.parametrize(
    ("price", "quantity", "amount"),
    [
        (TEN_CENTS, "0", "0"),
        (TEN_CENTS, "1", "0.10"),
        (TEN_CENTS, "1000", "100.00"),
        (TEN_CENTS, "0.5", "0.05"),
        (TEN_CENTS, "0.000000001", "0.0000000001"),
        # A second of compute at 0.0000138 EUR: an hour, a day, a 30-day month.
        (PER_SECOND, "3600", "0.0496800"),
        (PER_SECOND, "86400", "1.1923200"),
        (PER_SECOND, "2592000", "35.7696000"),
        (PerUnit(unit_price=Decimal("0")), "123456", "0"),
    ],
)
def test_every_unit_costs_the_unit_price(price: PerUnit, quantity: str, amount: str) -> None:
    assert price.amount(Decimal(quantity), 1) == Decimal(amount)


@pytest.mark.parametrize("quantity", ["0", "1", "0.5", "2592000", "999999999999999.999999999"])
def test_lines_sum_to_the_amount(quantity: str) -> None:
    lines = PER_SECOND.lines(Decimal(quantity), 1)
    assert sum(line.amount for line in lines) == PER_SECOND.amount(Decimal(quantity), 1)
    assert [line.quantity for line in lines] == [Decimal(quantity)]
    assert all(line.amount == line.quantity * line.unit_price + line.flat_amount for line in lines)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("0", "0"),
        ("0", "1"),
        ("1", "0"),
        ("3600", "3601"),
        ("3601", "3600"),
        ("10", "10"),
        ("0.5", "2592000"),
    ],
)
def test_marginal_is_the_change_in_amount(before: str, after: str) -> None:
    b, a = Decimal(before), Decimal(after)
    assert PER_SECOND.marginal(b, a, 1, 2) == PER_SECOND.amount(a, 2) - PER_SECOND.amount(b, 1)


def test_decodes_from_json_by_its_model_tag() -> None:
    price = msgspec.json.decode(b'{"model": "per_unit", "unit_price": "0.0000138"}', type=Price)
    assert price == PER_SECOND
    assert msgspec.json.decode(msgspec.json.encode(price), type=Price) == price


def test_a_json_number_is_read_exactly_never_through_a_float() -> None:
    price = msgspec.json.decode(b'{"model": "per_unit", "unit_price": 0.1}', type=Price)
    assert price == PerUnit(unit_price=Decimal("0.1"))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b'{"model": "per_unit", "unit_price": "-0.01"}', "unit_price: must not be negative"),
        (b'{"model": "per_unit", "unit_price": "NaN"}', "unit_price: must be a finite number"),
        (b'{"model": "per_unit", "unit_price": "Infinity"}', "unit_price: must be a finite"),
        (b'{"model": "per_unit", "unit_price": "1E+15"}', "unit_price: must be less than"),
        (b'{"model": "per_unit", "unit_price": "0.0000000000001"}', "unit_price: at most 12"),
        (
            b'{"model": "per_unit", "unit_price": "1", "currency": "EUR"}',
            "unknown field `currency`",
        ),
        (b'{"model": "per_unit"}', "missing required field `unit_price`"),
        (b'{"model": "per_seat", "unit_price": "1"}', "$.model"),
    ],
)
def test_invalid_documents_are_rejected_naming_the_field(document: bytes, message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.json.decode(document, type=Price)
    assert message in str(raised.value)


def test_a_price_with_more_digits_than_the_engine_carries_is_rejected() -> None:
    # 67 decimals, more than the 60 significant digits of the engine context: the check must
    # count them all rather than round them away first.
    document = b'{"model": "per_unit", "unit_price": "0.1' + b"0" * 65 + b'1"}'
    with pytest.raises(msgspec.ValidationError, match="unit_price: at most 12 decimal places"):
        msgspec.json.decode(document, type=Price)
