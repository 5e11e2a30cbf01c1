"""Building blocks for engine tests: a catalogue in a few lines, a rater, events."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from engine.charges import Charge
from engine.meters import Event, Meter
from engine.pricing import Price
from engine.rating import PeriodRater
from engine.tariffs import RecurringFee, TariffVersion

EFFECTIVE = "2024-01-01T00:00:00Z"


def meter(key: str = "m", aggregation: str = "sum", **fields: Any) -> Meter:
    return msgspec.convert(
        {"key": key, "unit": "unit", "aggregation": aggregation, **fields}, Meter
    )


def price(document: dict[str, Any]) -> Price:
    return msgspec.convert(document, Price)  # type: ignore[arg-type]


def charge(
    price_doc: dict[str, Any], key: str = "c", meter_key: str = "m", **fields: Any
) -> Charge:
    return msgspec.convert({"key": key, "meter": meter_key, "price": price_doc, **fields}, Charge)


def version(
    charges: list[Charge],
    *,
    period: dict[str, Any] | None = None,
    currency: str = "EUR",
    fees: list[RecurringFee] = (),  # type: ignore[assignment]
    **fields: Any,
) -> TariffVersion:
    document = {
        "version": 1,
        "effective_from": EFFECTIVE,
        "currency": currency,
        "period": period or {"unit": "month"},
        "charges": [msgspec.to_builtins(c) for c in charges],
        "recurring_fees": [msgspec.to_builtins(f) for f in fees],
        **fields,
    }
    return msgspec.convert(document, TariffVersion, dec_hook=_dec)


def _dec(type_: type, value: Any) -> Any:
    return type_(value)


def rater(
    charges: list[Charge], meters: list[Meter], time_zone: str = "UTC", **fields: Any
) -> PeriodRater:
    return PeriodRater("t", version(charges, **fields), {m.key: m for m in meters}, time_zone)


def event(
    number: int,
    time: int,
    quantity: Decimal | int | str = 1,
    meter_key: str = "m",
    **fields: Any,
) -> Event:
    return Event(id=f"e{number}", meter=meter_key, time=time, quantity=Decimal(quantity), **fields)
