"""Volume tiers: every unit of the period is priced at the tier the total quantity reaches.

Crossing into a cheaper tier lowers the total, so a marginal amount may be negative: a credit.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from engine.pricing import Price, Tier, Volume

# Up to 1000 units at 0.10 each, up to 5000 at 0.08 each, beyond that 0.05 each.
SEATS = Volume(
    tiers=[
        Tier(up_to=Decimal(1000), unit_price=Decimal("0.10")),
        Tier(up_to=Decimal(5000), unit_price=Decimal("0.08")),
        Tier(up_to=None, unit_price=Decimal("0.05")),
    ]
)

# A platform fee per tier on top: 5 EUR, 10 EUR, 20 EUR.
WITH_FLAT_FEES = Volume(
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
        ("1000", "100.00"),  # exactly the top of the first tier: still 0.10 each
        ("1001", "80.08"),  # all 1001 units at 0.08, cheaper than 1000 units
        ("5000", "400.00"),
        ("5001", "250.05"),
        ("10000", "500.00"),
        ("0.5", "0.05"),
    ],
)
def test_all_units_are_priced_at_the_tier_reached(quantity: str, amount: str) -> None:
    assert SEATS.amount(Decimal(quantity), 1) == Decimal(amount)


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        ("0", "0"),  # no usage, no fee
        ("1", "5.10"),
        ("1000", "105.00"),
        ("1001", "90.08"),
        ("5001", "270.05"),
    ],
)
def test_the_reached_tier_adds_its_flat_fee(quantity: str, amount: str) -> None:
    assert WITH_FLAT_FEES.amount(Decimal(quantity), 1) == Decimal(amount)


@pytest.mark.parametrize("price", [SEATS, WITH_FLAT_FEES])
@pytest.mark.parametrize("quantity", QUANTITIES)
def test_lines_sum_to_the_amount(price: Volume, quantity: str) -> None:
    lines = price.lines(Decimal(quantity), 1)
    assert sum(line.amount for line in lines) == price.amount(Decimal(quantity), 1)
    assert all(line.amount == line.quantity * line.unit_price + line.flat_amount for line in lines)


@pytest.mark.parametrize(
    ("quantity", "key", "unit_price"),
    [
        ("1", "tier-1", "0.10"),
        ("1000", "tier-1", "0.10"),
        ("1001", "tier-2", "0.08"),
        ("5000", "tier-2", "0.08"),
        ("5001", "tier-3", "0.05"),
    ],
)
def test_the_line_names_the_tier_reached(quantity: str, key: str, unit_price: str) -> None:
    [line] = SEATS.lines(Decimal(quantity), 1)
    assert (line.key, line.quantity, line.unit_price) == (
        key,
        Decimal(quantity),
        Decimal(unit_price),
    )


@pytest.mark.parametrize("price", [SEATS, WITH_FLAT_FEES])
@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("0", "0"),
        ("0", "1000"),
        ("1000", "1000"),
        ("1000", "1001"),  # into a cheaper tier: negative
        ("999.5", "1000.5"),
        ("500", "7000"),
        ("5000", "5000.000000001"),
        ("1001", "1000"),  # backwards, into a dearer tier
        ("7000", "0"),
        ("6000", "4000"),
    ],
)
def test_marginal_is_the_change_in_amount(price: Volume, before: str, after: str) -> None:
    b, a = Decimal(before), Decimal(after)
    assert price.marginal(b, a, 1, 2) == price.amount(a, 2) - price.amount(b, 1)


@pytest.mark.parametrize(
    ("before", "after", "marginal"),
    [
        ("1000", "1001", "-19.92"),  # 80.08 - 100.00: the customer is credited
        ("5000", "5001", "-149.95"),  # 250.05 - 400.00
        ("999", "1000", "0.10"),
    ],
)
def test_crossing_into_a_cheaper_tier_gives_a_negative_marginal(
    before: str, after: str, marginal: str
) -> None:
    assert SEATS.marginal(Decimal(before), Decimal(after), 1, 2) == Decimal(marginal)


def test_decodes_from_json_by_its_model_tag() -> None:
    document = b"""{"model": "volume", "tiers": [
        {"up_to": "1000", "unit_price": "0.10"},
        {"up_to": "5000", "unit_price": "0.08"},
        {"up_to": null, "unit_price": "0.05"}]}"""
    price = msgspec.json.decode(document, type=Price)
    assert price == SEATS
    assert msgspec.json.decode(msgspec.json.encode(price), type=Price) == price


def _tiers(*tiers: str) -> bytes:
    return b'{"model": "volume", "tiers": [' + ", ".join(tiers).encode() + b"]}"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_tiers(), "tiers: at least one tier is required"),
        (
            _tiers('{"up_to": "5000", "unit_price": "1"}', '{"up_to": "1000", "unit_price": "1"}'),
            "tiers[1].up_to: tiers must be sorted and must not overlap",
        ),
        (
            _tiers('{"up_to": null, "unit_price": "1"}', '{"up_to": null, "unit_price": "1"}'),
            "tiers[0].up_to: only the last tier may be unbounded",
        ),
        (_tiers('{"up_to": "10", "unit_price": "-1"}'), "unit_price: must not be negative"),
        (_tiers('{"up_to": "10", "unit_price": "NaN"}'), "unit_price: must be a finite number"),
        (_tiers('{"up_to": "10", "unit_price": "1", "per": "seat"}'), "unknown field `per`"),
    ],
)
def test_invalid_documents_are_rejected_naming_the_field(document: bytes, message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.json.decode(document, type=Price)
    assert message in str(raised.value)
