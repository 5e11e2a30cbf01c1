"""ISO 4217 currencies and their minor units (the number of decimal places of the smallest coin).

The table holds the active codes of ISO 4217 list one. The engine may not import Babel, so the
table lives here; a test checks it against Babel's data for the currencies where the two agree
by definition.
"""

from __future__ import annotations

from typing import Final

import msgspec

# code: minor units. Codes with 0 and 3 decimals are listed explicitly; everything else has 2.
_ZERO_DECIMALS: Final = frozenset(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()
)
_THREE_DECIMALS: Final = frozenset("BHD IQD JOD KWD LYD OMR TND".split())
_FOUR_DECIMALS: Final = frozenset("CLF UYW".split())
_TWO_DECIMALS: Final = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP
    BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR
    FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW
    KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN
    NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD
    SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS
    VED VES WST XCD XCG YER ZAR ZMW ZWG
    """.split()
)

MINOR_UNITS: Final[dict[str, int]] = {
    **{code: 2 for code in _TWO_DECIMALS},
    **{code: 0 for code in _ZERO_DECIMALS},
    **{code: 3 for code in _THREE_DECIMALS},
    **{code: 4 for code in _FOUR_DECIMALS},
}


class Currency(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    minor_units: int


class UnknownCurrency(ValueError):
    def __init__(self, code: str) -> None:
        super().__init__(f"unknown ISO 4217 currency {code!r}")
        self.code = code


def currency(code: str) -> Currency:
    """The currency with ISO 4217 ``code``; raises :class:`UnknownCurrency` otherwise."""
    try:
        return Currency(code=code, minor_units=MINOR_UNITS[code])
    except KeyError:
        raise UnknownCurrency(code) from None


def is_currency(code: str) -> bool:
    return code in MINOR_UNITS
