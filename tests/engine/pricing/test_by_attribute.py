"""Attribute-based prices: the price depends on an event property. Here the property is
``region``: eu at 0.10 per unit, us in graduated tiers, and any other region at the default
0.20 per unit. Each value is rated on its own, so the tiers count per region."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from engine.pricing import (
    OTHER_VALUES,
    AttributePrice,
    ByAttribute,
    Graduated,
    PerUnit,
    Price,
    SimplePrice,
    Tier,
)

EU = PerUnit(unit_price=Decimal("0.10"))
US = Graduated(
    tiers=[
        Tier(up_to=Decimal(100), unit_price=Decimal("0.05")),
        Tier(up_to=None, unit_price=Decimal("0.02")),
    ]
)
ELSEWHERE = PerUnit(unit_price=Decimal("0.20"))

BY_REGION = ByAttribute(
    property="region",
    prices=(AttributePrice(value="eu", price=EU), AttributePrice(value="us", price=US)),
    default=ELSEWHERE,
)
EU_AND_US_ONLY = ByAttribute(
    property="region",
    prices=(AttributePrice(value="eu", price=EU), AttributePrice(value="us", price=US)),
)


def price_for(price: ByAttribute, value: str) -> SimplePrice | None:
    """The price that rates ``value``: its own, else the default, else none (a rejection)."""
    table = price.price_table()
    return table.get(value, table.get(OTHER_VALUES))


@pytest.mark.parametrize(
    ("region", "quantity", "amount"),
    [
        ("eu", "0", "0"),
        ("eu", "150", "15.00"),
        ("us", "100", "5.00"),  # the top of the first us tier
        ("us", "150", "6.00"),  # 5.00 + 50 x 0.02
        ("apac", "150", "30.00"),  # no price of its own: the default
        ("", "1", "0.20"),  # an empty value is just another value
        ("EU", "1", "0.20"),  # values are matched exactly
    ],
)
def test_each_value_is_rated_by_its_own_price(region: str, quantity: str, amount: str) -> None:
    price = price_for(BY_REGION, region)
    assert price is not None
    assert price.amount(Decimal(quantity), 1) == Decimal(amount)


@pytest.mark.parametrize(("region", "price"), [("eu", EU), ("us", US), ("apac", None)])
def test_without_a_default_other_values_have_no_price(
    region: str, price: SimplePrice | None
) -> None:
    assert price_for(EU_AND_US_ONLY, region) == price
    assert OTHER_VALUES not in EU_AND_US_ONLY.price_table()


@pytest.mark.parametrize("region", ["eu", "us", "apac"])
@pytest.mark.parametrize("quantity", ["0", "1", "100", "150"])
def test_lines_sum_to_the_amount(region: str, quantity: str) -> None:
    price = price_for(BY_REGION, region)
    assert price is not None
    lines = price.lines(Decimal(quantity), 1)
    assert sum(line.amount for line in lines) == price.amount(Decimal(quantity), 1)


@pytest.mark.parametrize("region", ["eu", "us", "apac"])
@pytest.mark.parametrize(
    ("before", "after"), [("0", "0"), ("0", "100"), ("100", "101"), ("99", "150"), ("150", "99")]
)
def test_marginal_is_the_change_in_amount(region: str, before: str, after: str) -> None:
    price = price_for(BY_REGION, region)
    assert price is not None
    b, a = Decimal(before), Decimal(after)
    assert price.marginal(b, a, 1, 2) == price.amount(a, 2) - price.amount(b, 1)


def _document(**fields: Any) -> bytes:
    return json.dumps({"model": "by_attribute", **fields}).encode()


EU_PRICE = {"model": "per_unit", "unit_price": "0.10"}
US_PRICE = {
    "model": "graduated",
    "tiers": [{"up_to": "100", "unit_price": "0.05"}, {"up_to": None, "unit_price": "0.02"}],
}


def test_decodes_from_json_by_its_model_tag() -> None:
    document = _document(
        property="region",
        prices=[{"value": "eu", "price": EU_PRICE}, {"value": "us", "price": US_PRICE}],
        default={"model": "per_unit", "unit_price": "0.20"},
    )
    price = msgspec.json.decode(document, type=Price)
    assert price == BY_REGION
    assert msgspec.json.decode(msgspec.json.encode(price), type=Price) == price


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"property": "", "prices": [{"value": "eu", "price": EU_PRICE}]},
            "property: must name an event property",
        ),
        ({"property": "region", "prices": []}, "prices: at least one value needs a price"),
        (
            {
                "property": "region",
                "prices": [{"value": "eu", "price": EU_PRICE}, {"value": "eu", "price": US_PRICE}],
            },
            "prices: each value may appear once",
        ),
        (
            {"property": "region", "prices": [{"value": "*", "price": EU_PRICE}]},
            "prices: '*' is reserved; use default",
        ),
        (
            {
                "property": "region",
                "prices": [{"value": "eu", "price": {"model": "per_unit", "unit_price": "-1"}}],
            },
            "unit_price: must not be negative - at `$.prices[0].price`",
        ),
        (
            {
                "property": "region",
                "prices": [{"value": "eu", "price": EU_PRICE}],
                "default": {"model": "package", "package_size": "0", "package_price": "1"},
            },
            "package_size: must be greater than zero - at `$.default`",
        ),
        (
            {"property": "region", "prices": [{"value": "eu", "price": EU_PRICE, "vat": "0.19"}]},
            "unknown field `vat`",
        ),
        (
            {
                "property": "region",
                "prices": [
                    {
                        "value": "eu",
                        "price": {"model": "by_attribute", "property": "x", "prices": []},
                    }
                ],
            },
            "$.prices[0].price.model",
        ),
    ],
)
def test_invalid_documents_are_rejected_naming_the_field(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.json.decode(_document(**fields), type=Price)
    assert message in str(raised.value)
