"""Validation errors name the whole path of the field at fault."""

from __future__ import annotations

import msgspec
import pytest

from engine.tariffs import Tariff
from gateway.errors import from_validation

VERSION = (
    b'{"version": 1, "effective_from": "2024-01-01T00:00:00Z", "currency": "EUR",'
    b' "period": {"unit": "month"}, "charges": [{"key": "c", "meter": "m", "price": '
)


@pytest.mark.parametrize(
    ("price", "field"),
    [
        (
            b'{"model": "graduated", "tiers": [{"up_to": "10", "unit_price": "1"},'
            b' {"up_to": "5", "unit_price": "1"}]}',
            "versions[0].charges[0].price.tiers[1].up_to",
        ),
        (b'{"model": "per_unit", "unit_price": "-1"}', "versions[0].charges[0].price.unit_price"),
        (
            b'{"model": "per_unit", "unit_price": "1", "colour": 1}',
            "versions[0].charges[0].price.colour",
        ),
    ],
)
def test_the_field_is_the_full_path(price: bytes, field: str) -> None:
    document = b'{"key": "k", "versions": [' + VERSION + price + b"}]}]}"
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.json.decode(document, type=Tariff)
    error = from_validation(raised.value)
    assert (error.status, error.body.code, error.body.field) == (422, "invalid_field", field)
