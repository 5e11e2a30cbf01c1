"""Building blocks for engine tests: a catalogue in a few lines, a rater, events."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec

from engine.accounts.tariffs import CatalogTariffs
from engine.charges import Charge
from engine.meters import Event, Meter
from engine.pricing import Price
from engine.rating import PeriodRater
from engine.tariffs import RecurringFee, TariffVersion, decode_catalog

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


# Catalogue documents, as the server reads them ----------------------------------------------

CALLS_METER: dict[str, Any] = {"key": "calls", "unit": "call", "aggregation": "count"}


def per_unit(unit_price: str) -> dict[str, Any]:
    return {"model": "per_unit", "unit_price": unit_price}


def calls_charge(unit_price: str) -> dict[str, Any]:
    """The charge ``calls``: ``unit_price`` EUR for each call counted by the calls meter."""
    return {"key": "calls", "meter": "calls", "price": per_unit(unit_price)}


def tariff_document(key: str, charges: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A tariff with one version, in effect since 1 January 2024, in EUR, billed by the calendar
    month; ``fields`` add to the version (recurring fees, a payment mode, a grace period)."""
    document = {
        "version": 1,
        "effective_from": EFFECTIVE,
        "currency": "EUR",
        "period": {"unit": "month"},
        "charges": charges,
        **fields,
    }
    return {"key": key, "versions": [document]}


def calls_and_cpu_tariff(
    key: str, calls: dict[str, Any], cpu: dict[str, Any], cpu_rounding: str, **fields: Any
) -> dict[str, Any]:
    """A tariff charging the ``calls`` meter at ``calls`` and the ``cpu`` meter at ``cpu``, by
    the minute rounded as ``cpu_rounding``; ``fields`` as in :func:`tariff_document`."""
    charges = [
        {"key": "calls", "meter": "calls", "price": calls},
        {
            "key": "cpu",
            "meter": "cpu",
            "price": cpu,
            "time_basis": {"unit": "minute", "rounding": cpu_rounding},
        },
    ]
    return tariff_document(key, charges, **fields)


def calls_catalog(unit_price: str, **fields: Any) -> dict[str, Any]:
    """The calls meter and one tariff, ``api``, that charges ``unit_price`` EUR a call."""
    return {
        "meters": [CALLS_METER],
        "tariffs": [tariff_document("api", [calls_charge(unit_price)], **fields)],
    }


def catalog_tariffs(document: dict[str, Any]) -> CatalogTariffs:
    """The tariffs of a catalogue document, decoded and checked as the server decodes them."""
    return CatalogTariffs(decode_catalog(json.dumps(document)))
