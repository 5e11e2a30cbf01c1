"""ISO 4217 currencies and their minor units, checked against Babel's CLDR data where the two
agree by definition."""

from __future__ import annotations

import pytest
from babel.numbers import get_currency_precision

from engine.currencies import MINOR_UNITS, Currency, UnknownCurrency, currency, is_currency


@pytest.mark.parametrize(
    ("code", "minor_units"),
    [
        ("EUR", 2),
        ("USD", 2),
        ("JPY", 0),  # no subunit in use
        ("KRW", 0),
        ("BHD", 3),  # 1000 fils to the dinar
        ("KWD", 3),
        ("CLF", 4),  # the Chilean unit of account
    ],
)
def test_minor_units_of_a_currency(code: str, minor_units: int) -> None:
    assert currency(code) == Currency(code=code, minor_units=minor_units)
    assert is_currency(code)


@pytest.mark.parametrize("code", ["XYZ", "eur", "EURO", "EU", ""])
def test_an_unknown_code_raises_unknown_currency(code: str) -> None:
    with pytest.raises(UnknownCurrency) as raised:
        currency(code)
    assert raised.value.code == code
    assert repr(code) in str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert not is_currency(code)


# Major currencies whose ISO 4217 minor units and CLDR's currency precision agree. (They differ
# for some currencies where CLDR shows the digits in everyday use, such as HUF or ISK.)
AGREED_WITH_CLDR = (
    "EUR USD GBP CHF JPY BHD KWD JOD OMR TND SEK NOK DKK PLN CZK CAD AUD NZD CNY INR BRL MXN "
    "ZAR KRW VND"
).split()


@pytest.mark.parametrize("code", AGREED_WITH_CLDR)
def test_minor_units_agree_with_babel(code: str) -> None:
    assert currency(code).minor_units == get_currency_precision(code)


def test_codes_are_three_capital_letters_and_minor_units_are_0_to_4() -> None:
    for code, minor_units in MINOR_UNITS.items():
        assert len(code) == 3 and code.isascii() and code.isupper(), code
        assert minor_units in (0, 2, 3, 4), code
