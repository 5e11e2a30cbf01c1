"""How numbers are made in meterwerk. Floats never enter.

Amounts and quantities are :class:`decimal.Decimal`. Addition and multiplication are exact
because the engine context carries 60 significant digits, far more than any validated price
times any validated quantity needs (see ``PRICE_DECIMALS_MAX`` and ``QUANTITY_DECIMALS_MAX``).
The only inexact operation is division (prorating, converting seconds into hours); it goes
through :func:`divide`, which rounds half-even at ``DIVISION_EXPONENT``, one unit of the 18th
decimal place. Rounding to a currency's minor unit happens once per statement line, with a
named :class:`RoundingMode`.

A process that runs the engine calls :func:`use_engine_context` once per thread. The test suite
additionally traps ``Inexact`` so that any silent rounding outside :func:`divide` and
:func:`round_amount` fails loudly.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from enum import StrEnum
from typing import Final

ZERO: Final = Decimal(0)
ONE: Final = Decimal(1)

PRECISION_DIGITS: Final = 60
DIVISION_EXPONENT: Final = Decimal("1e-18")
PRICE_DECIMALS_MAX: Final = 12
QUANTITY_DECIMALS_MAX: Final = 9
MAGNITUDE_MAX: Final = Decimal("1e15")

# Division traps a zero divisor like any other fault; it rounds, deliberately, without a trap.
_DIVISION_CONTEXT: Final = decimal.Context(
    prec=PRECISION_DIGITS, traps=[decimal.InvalidOperation, decimal.DivisionByZero]
)

# Deliberate rounding uses its own context so that a trap on Inexact in the ambient context
# (as the tests set) does not fire for the roundings the engine means to make.
_ROUNDING_CONTEXT: Final = decimal.Context(prec=PRECISION_DIGITS, traps=[])

ENGINE_CONTEXT: Final = decimal.Context(
    prec=PRECISION_DIGITS,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)


def use_engine_context(*, strict: bool = False) -> None:
    """Install the engine's decimal context in the calling thread.

    ``strict`` also traps ``Inexact``: every operation outside :func:`divide` and
    :func:`round_amount` must then be exact, or it raises.
    """
    context = ENGINE_CONTEXT.copy()
    if strict:
        context.traps[decimal.Inexact] = True
    decimal.setcontext(context)


def engine_context_installed() -> bool:
    return decimal.getcontext().prec >= PRECISION_DIGITS


class RoundingMode(StrEnum):
    """How an amount is rounded to the currency's minor unit. ``half_up`` is the commercial rule."""

    half_up = "half_up"
    half_even = "half_even"
    half_down = "half_down"
    up = "up"
    down = "down"
    ceiling = "ceiling"
    floor = "floor"


_DECIMAL_ROUNDING: Final = {
    RoundingMode.half_up: decimal.ROUND_HALF_UP,
    RoundingMode.half_even: decimal.ROUND_HALF_EVEN,
    RoundingMode.half_down: decimal.ROUND_HALF_DOWN,
    RoundingMode.up: decimal.ROUND_UP,
    RoundingMode.down: decimal.ROUND_DOWN,
    RoundingMode.ceiling: decimal.ROUND_CEILING,
    RoundingMode.floor: decimal.ROUND_FLOOR,
}

_EXPONENTS: Final = {digits: Decimal(1).scaleb(-digits) for digits in range(0, 5)}


def round_amount(amount: Decimal, minor_units: int, mode: RoundingMode) -> Decimal:
    """Round ``amount`` to ``minor_units`` decimal places with ``mode``; the result is exact."""
    return amount.quantize(
        _EXPONENTS[minor_units], rounding=_DECIMAL_ROUNDING[mode], context=_ROUNDING_CONTEXT
    )


def divide(numerator: Decimal | int, denominator: Decimal | int) -> Decimal:
    """Divide, rounding half-even at the 18th decimal place when the quotient is not exact."""
    quotient = _DIVISION_CONTEXT.divide(Decimal(numerator), Decimal(denominator))
    if quotient.as_tuple().exponent >= -18:  # type: ignore[operator]
        return quotient
    return quotient.quantize(
        DIVISION_EXPONENT, rounding=decimal.ROUND_HALF_EVEN, context=_ROUNDING_CONTEXT
    )


def ceil_div(numerator: Decimal, denominator: Decimal) -> int:
    """The smallest whole number n with n * denominator >= numerator (non-negative values)."""
    assert numerator >= 0 and denominator > 0, "ceil_div is for non-negative quantities"
    whole = int(_DIVISION_CONTEXT.divide_int(numerator, denominator))
    if whole * denominator < numerator:
        whole += 1
    return whole


def floor_div(numerator: Decimal, denominator: Decimal) -> int:
    """The largest whole number n with n * denominator <= numerator (non-negative values)."""
    assert numerator >= 0 and denominator > 0, "floor_div is for non-negative quantities"
    return int(_DIVISION_CONTEXT.divide_int(numerator, denominator))


def decimals_of(value: Decimal) -> int:
    """How many digits ``value`` carries after the decimal point, trailing zeros aside.

    Read from the digits themselves, not through a context, so that no digit is rounded away
    before it is counted.
    """
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int), "finite decimals only"
    if exponent >= 0 or not any(digits):
        return 0  # a whole number, the commonest quantity
    position = len(digits)
    while exponent < 0 and position > 0 and digits[position - 1] == 0:
        position -= 1
        exponent += 1
    return max(0, -exponent)


def check_finite(value: Decimal) -> None:
    assert value.is_finite(), f"non-finite decimal {value!r}"
