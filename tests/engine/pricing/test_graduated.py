"""Graduated tiers: each unit is priced by the tier it falls in, and a tier's flat fee is charged
once, when usage first enters the tier."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from engine.pricing import Graduated, Price, Tier

# First 1000 units at 0.10, the next 4000 at 0.08, everything above 5000 at 0.05.
API_CALLS = Graduated(
    tiers=[
        Tier(up_to=Decimal(1000), unit_price=Decimal("0.10")),
        Tier(up_to=Decimal(5000), unit_price=Decimal("0.08")),
        Tier(up_to=None, unit_price=Decimal("0.05")),
    ]
)

# The same bands with a fee for opening each tier: 5 EUR, then 10 EUR, then 20 EUR.
WITH_FLAT_FEES = Graduated(
    tiers=[
        Tier(up_to=Decimal(1000), unit_price=Decimal("0.10"), flat_fee=Decimal(5)),
        Tier(up_to=Decimal(5000), unit_price=Decimal("0.08"), flat_fee=Decimal(10)),
        Tier(up_to=None, unit_price=Decimal("0.05"), flat_fee=Decimal(20)),
    ]
)

QUANTITIES = ["0", "0.5", "1", "999", "1000", "1000.5", "1001", "4999", "5000", "5001", "10000"]


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        ("0", "0"),
        ("1", "0.10"),
        ("999", "99.90"),
        ("1000", "100.00"),  # exactly the top of the first tier
        ("1000.5", "100.04"),  # half a unit into the second tier
        ("1001", "100.08"),
        ("5000", "420.00"),  # 100.00 + 4000 x 0.08
        ("5001", "420.05"),
        ("10000", "670.00"),  # 420.00 + 5000 x 0.05
    ],
)
def test_each_unit_is_priced_by_its_tier(quantity: str, amount: str) -> None:
    assert API_CALLS.amount(Decimal(quantity), 1) == Decimal(amount)


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        ("0", "0"),  # no usage, no tier entered, no fee
        ("1", "5.10"),
        ("1000", "105.00"),  # the second tier is not entered at its lower bound
        ("1000.000000001", "115.00000000008"),  # any usage above it opens the tier
        ("5000", "435.00"),
        ("5001", "455.05"),
        ("6000", "505.00"),
    ],
)
def test_a_flat_fee_is_charged_once_when_usage_enters_its_tier(quantity: str, amount: str) -> None:
    assert WITH_FLAT_FEES.amount(Decimal(quantity), 1) == Decimal(amount)


@pytest.mark.parametrize("price", [API_CALLS, WITH_FLAT_FEES])
@pytest.mark.parametrize("quantity", QUANTITIES)
def test_lines_sum_to_the_amount(price: Graduated, quantity: str) -> None:
    lines = price.lines(Decimal(quantity), 1)
    assert sum(line.amount for line in lines) == price.amount(Decimal(quantity), 1)
    assert sum(line.quantity for line in lines) == Decimal(quantity)
    assert all(line.amount == line.quantity * line.unit_price + line.flat_amount for line in lines)


@pytest.mark.parametrize(
    ("quantity", "lines"),
    [
        ("0", [("tier-1", "0", "0")]),
        ("1000", [("tier-1", "1000", "105.00")]),
        ("1001", [("tier-1", "1000", "105.00"), ("tier-2", "1", "10.08")]),
        (
            "6000",
            [("tier-1", "1000", "105.00"), ("tier-2", "4000", "330.00"), ("tier-3", "1000", "70")],
        ),
    ],
)
def test_lines_show_each_tier_entered(quantity: str, lines: list[tuple[str, str, str]]) -> None:
    shown = WITH_FLAT_FEES.lines(Decimal(quantity), 1)
    assert [(line.key, line.quantity, line.amount) for line in shown] == [
        (key, Decimal(units), Decimal(amount)) for key, units, amount in lines
    ]


@pytest.mark.parametrize("price", [API_CALLS, WITH_FLAT_FEES])
@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("0", "0"),
        ("0", "1000"),  # up to a boundary
        ("1000", "1000"),  # standing on a boundary
        ("1000", "1001"),  # from a boundary into the next tier
        ("999.5", "1000.5"),  # across a boundary
        ("500", "7000"),  # across two boundaries
        ("5000", "5000.000000001"),
        ("1001", "1000"),  # backwards
        ("7000", "0"),
        ("6000", "4000"),
    ],
)
def test_marginal_is_the_change_in_amount(price: Graduated, before: str, after: str) -> None:
    b, a = Decimal(before), Decimal(after)
    assert price.marginal(b, a, 1, 2) == price.amount(a, 2) - price.amount(b, 1)


def test_decodes_from_json_by_its_model_tag() -> None:
    document = b"""{"model": "graduated", "tiers": [
        {"up_to": "1000", "unit_price": "0.10", "flat_fee": "5"},
        {"up_to": "5000", "unit_price": "0.08", "flat_fee": "10"},
        {"up_to": null, "unit_price": "0.05", "flat_fee": "20"}]}"""
    price = msgspec.json.decode(document, type=Price)
    assert price == WITH_FLAT_FEES
    assert msgspec.json.decode(msgspec.json.encode(price), type=Price) == price


def _tiers(*tiers: str) -> bytes:
    return b'{"model": "graduated", "tiers": [' + ", ".join(tiers).encode() + b"]}"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_tiers(), "tiers: at least one tier is required"),
        (
            _tiers('{"up_to": "5000", "unit_price": "1"}', '{"up_to": "1000", "unit_price": "1"}'),
            "tiers[1].up_to: tiers must be sorted and must not overlap",
        ),
        (
            _tiers('{"up_to": "1000", "unit_price": "1"}', '{"up_to": "1000", "unit_price": "1"}'),
            "tiers[1].up_to: tiers must be sorted and must not overlap",
        ),
        (
            _tiers('{"up_to": null, "unit_price": "1"}', '{"up_to": "1000", "unit_price": "1"}'),
            "tiers[0].up_to: only the last tier may be unbounded",
        ),
        (_tiers('{"up_to": "0", "unit_price": "1"}'), "up_to: must be greater than zero"),
        (_tiers('{"up_to": "10", "unit_price": "-0.01"}'), "unit_price: must not be negative"),
        (_tiers('{"up_to": "10", "unit_price": "NaN"}'), "unit_price: must be a finite number"),
        (_tiers('{"up_to": "10", "unit_price": "1", "flat_fee": "-5"}'), "flat_fee: must not be"),
        (_tiers('{"up_to": "NaN", "unit_price": "1"}'), "up_to: must be a finite number"),
        (
            _tiers('{"up_to": "1.' + "0" * 65 + '1", "unit_price": "1"}'),
            "up_to: at most 9 decimal places",
        ),
        (_tiers('{"up_to": "10", "unit_price": "1", "from": "0"}'), "unknown field `from`"),
        (_tiers('{"unit_price": "1"}'), "missing required field `up_to`"),
    ],
)
def test_invalid_documents_are_rejected_naming_the_field(document: bytes, message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.json.decode(document, type=Price)
    assert message in str(raised.value)
