"""How numbers are made: rounding to a currency's minor unit, division at 18 decimals, whole
blocks, and the exactness of every other operation."""

from __future__ import annotations

import decimal
from decimal import Decimal
from fractions import Fraction

import pytest

from engine.numbers import (
    DIVISION_EXPONENT,
    MAGNITUDE_MAX,
    PRICE_DECIMALS_MAX,
    RoundingMode,
    ceil_div,
    decimals_of,
    divide,
    engine_context_installed,
    floor_div,
    round_amount,
)

MODES = list(RoundingMode)


def test_the_tests_run_in_the_strict_engine_context() -> None:
    assert engine_context_installed()
    with pytest.raises(decimal.Inexact):
        Decimal(1) / Decimal(3)


# amount, minor units, and the result under each mode in the order of RoundingMode:
# half_up, half_even, half_down, up, down, ceiling, floor.
ROUNDINGS = [
    ("2.345", 2, ["2.35", "2.34", "2.34", "2.35", "2.34", "2.35", "2.34"]),
    ("-2.345", 2, ["-2.35", "-2.34", "-2.34", "-2.35", "-2.34", "-2.34", "-2.35"]),
    ("2.355", 2, ["2.36", "2.36", "2.35", "2.36", "2.35", "2.36", "2.35"]),
    ("2.3451", 2, ["2.35", "2.35", "2.35", "2.35", "2.34", "2.35", "2.34"]),
    ("2.34", 2, ["2.34", "2.34", "2.34", "2.34", "2.34", "2.34", "2.34"]),  # already exact
    ("0", 2, ["0.00", "0.00", "0.00", "0.00", "0.00", "0.00", "0.00"]),
    # Zero minor units (JPY).
    ("2.5", 0, ["3", "2", "2", "3", "2", "3", "2"]),
    ("3.5", 0, ["4", "4", "3", "4", "3", "4", "3"]),
    ("-2.5", 0, ["-3", "-2", "-2", "-3", "-2", "-2", "-3"]),
    ("1234.01", 0, ["1234", "1234", "1234", "1235", "1234", "1235", "1234"]),
    # Three minor units (BHD, KWD).
    ("2.0005", 3, ["2.001", "2.000", "2.000", "2.001", "2.000", "2.001", "2.000"]),
    ("-0.0005", 3, ["-0.001", "-0.000", "-0.000", "-0.001", "-0.000", "-0.000", "-0.001"]),
    # Four minor units (CLF).
    ("1.23455", 4, ["1.2346", "1.2346", "1.2345", "1.2346", "1.2345", "1.2346", "1.2345"]),
    # The largest amounts round as exactly as the smallest.
    (
        "999999999999999.995",
        2,
        [
            "1000000000000000.00",
            "1000000000000000.00",
            "999999999999999.99",
            "1000000000000000.00",
            "999999999999999.99",
            "1000000000000000.00",
            "999999999999999.99",
        ],
    ),
]


@pytest.mark.parametrize(
    ("amount", "minor_units", "mode", "rounded"),
    [
        (amount, minor_units, mode, rounded)
        for amount, minor_units, results in ROUNDINGS
        for mode, rounded in zip(MODES, results, strict=True)
    ],
)
def test_round_amount_to_the_minor_unit(
    amount: str, minor_units: int, mode: RoundingMode, rounded: str
) -> None:
    result = round_amount(Decimal(amount), minor_units, mode)
    assert result == Decimal(rounded)
    assert result.as_tuple().exponent == -minor_units  # always shown with the minor unit


def test_rounding_modes_are_named_for_tariff_documents() -> None:
    assert [mode.value for mode in MODES] == [
        "half_up",
        "half_even",
        "half_down",
        "up",
        "down",
        "ceiling",
        "floor",
    ]


@pytest.mark.parametrize(
    ("numerator", "denominator", "quotient"),
    [
        ("1", "8", "0.125"),
        ("10", "4", "2.5"),
        ("6", "2", "3"),
        ("5400", "3600", "1.5"),  # 5400 seconds are 1.5 hours
        ("1", "1024", "0.0009765625"),
        ("0.0000138", "1000", "0.0000000138"),
        ("0", "7", "0"),
        ("1", "1e18", "1e-18"),  # terminating on the 18th decimal: still exact
    ],
)
def test_divide_is_exact_when_the_quotient_terminates(
    numerator: str, denominator: str, quotient: str
) -> None:
    result = divide(Decimal(numerator), Decimal(denominator))
    assert result == Decimal(quotient)
    assert Fraction(result) == Fraction(Decimal(numerator)) / Fraction(Decimal(denominator))


@pytest.mark.parametrize(
    ("numerator", "denominator", "quotient"),
    [
        (1, 3, "0.333333333333333333"),
        (2, 3, "0.666666666666666667"),
        (-2, 3, "-0.666666666666666667"),
        (1, 7, "0.142857142857142857"),
        (100, 3, "33.333333333333333333"),
        (1, 3600, "0.000277777777777778"),  # one second in hours
        (1, 2**70, "0.000000000000000000"),  # terminates, but beyond the 18th decimal
        # Half-even on the 18th decimal: a tie goes to the even digit.
        (15, 10**19, "0.000000000000000002"),
        (25, 10**19, "0.000000000000000002"),
        (35, 10**19, "0.000000000000000004"),
    ],
)
def test_divide_rounds_half_even_at_the_18th_decimal_otherwise(
    numerator: int, denominator: int, quotient: str
) -> None:
    result = divide(numerator, denominator)
    assert result == Decimal(quotient)
    assert result.as_tuple().exponent == DIVISION_EXPONENT.as_tuple().exponent


@pytest.mark.parametrize(("numerator", "denominator"), [(1, 0), (0, 0)])
def test_divide_by_zero_raises_a_decimal_error(numerator: int, denominator: int) -> None:
    with pytest.raises((decimal.DivisionByZero, decimal.InvalidOperation)):
        divide(numerator, denominator)


@pytest.mark.parametrize(
    ("numerator", "denominator", "ceiling", "floor"),
    [
        ("0", "100", 0, 0),
        ("0.001", "100", 1, 0),
        ("99.999999999", "100", 1, 0),
        ("100", "100", 1, 1),  # exactly one block
        ("100.000000001", "100", 2, 1),
        ("250", "100", 3, 2),
        ("1.2", "0.5", 3, 2),
        ("1", "0.5", 2, 2),
        (
            "999999999999999.999999999",
            "0.000000001",
            999999999999999999999999,
            999999999999999999999999,
        ),
    ],
)
def test_ceil_div_and_floor_div_count_whole_blocks(
    numerator: str, denominator: str, ceiling: int, floor: int
) -> None:
    assert ceil_div(Decimal(numerator), Decimal(denominator)) == ceiling
    assert floor_div(Decimal(numerator), Decimal(denominator)) == floor


def test_whole_block_division_is_for_non_negative_quantities() -> None:
    with pytest.raises(AssertionError):
        floor_div(Decimal(-5), Decimal(2))
    with pytest.raises(AssertionError):
        ceil_div(Decimal(5), Decimal(0))


@pytest.mark.parametrize(
    ("value", "decimals"),
    [
        ("0", 0),
        ("100", 0),
        ("1E+2", 0),
        ("1.2300", 2),  # trailing zeros do not count
        ("-0.5", 1),
        ("0.0000138", 7),
        ("123456789.123456789", 9),
        ("1E-12", 12),
        ("0.1" + "0" * 65 + "1", 67),  # more digits than the engine context carries
        ("0.00", 0),
        ("0.000", 0),
        ("0E-20", 0),
    ],
)
def test_decimals_of_counts_the_digits_after_the_point(value: str, decimals: int) -> None:
    assert decimals_of(Decimal(value)) == decimals


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        ("1", "0.0000138"),
        ("31536000", "435.1968"),  # a year of seconds
        ("999999999999999", "13799999999.9999862"),
        ("999999999999999.999999999", "13799999999.9999999999999862"),
        ("0.000277777777777778", "0.0000000038333333333333364"),  # one second in hours
    ],
)
def test_a_fraction_of_a_cent_per_second_times_large_quantities_is_exact(
    quantity: str, amount: str
) -> None:
    # The ambient context traps Inexact: the product raises if a digit is lost.
    assert Decimal("0.0000138") * Decimal(quantity) == Decimal(amount)


def test_the_largest_price_times_the_largest_quantity_is_exact() -> None:
    # A price has at most 12 decimals, a quantity at most 18 (after divide), both below 1e15.
    price = MAGNITUDE_MAX - Decimal(1).scaleb(-PRICE_DECIMALS_MAX)
    quantity = MAGNITUDE_MAX - DIVISION_EXPONENT
    product = price * quantity
    assert Fraction(product) == Fraction(price) * Fraction(quantity)
