"""Tariffs: versioned price plans, and the catalogue document that holds meters and tariffs.

A tariff has versions, each effective from an instant. A billing period is rated with the
version in effect at the period's start; a version that takes effect in mid-period applies
from the next period on. Recurring fees follow the same rule.

Documents decode with :func:`decode_catalog` (JSON) into frozen Structs; every error names the
field at fault. Checks that need more than one object (a charge's meter must exist) run in
:meth:`Catalog.__post_init__` and in :func:`problems`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

import msgspec

from engine.charges import Charge
from engine.currencies import MINOR_UNITS
from engine.instants import Instant, from_datetime
from engine.meters import Aggregation, Key, Meter
from engine.numbers import RoundingMode, decimals_of
from engine.periods import PeriodSpec, UnknownTimeZone, zone
from engine.pricing import ByAttribute, Percentage, TimeOfUse
from engine.pricing.base import check_price, check_quantity

DAYS = 86_400


class PaymentMode(StrEnum):
    prepaid = "prepaid"
    postpaid = "postpaid"


class FeeTiming(StrEnum):
    advance = "advance"
    arrears = "arrears"


class RecurringFee(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A subscription fee or seats: ``amount`` per unit of ``quantity`` per period, prorated to
    the second when it starts, stops or changes in mid-period."""

    key: Key
    amount: Decimal
    name: str = ""
    timing: FeeTiming = FeeTiming.advance
    quantity: Decimal = Decimal(1)

    def __post_init__(self) -> None:
        check_price("amount", self.amount)
        check_quantity("quantity", self.quantity)

    @property
    def label(self) -> str:
        return self.name or self.key


class OneTimeFee(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Charged once, in the first period of a tariff assignment (a setup fee)."""

    key: Key
    amount: Decimal
    name: str = ""

    def __post_init__(self) -> None:
        check_price("amount", self.amount)

    @property
    def label(self) -> str:
        return self.name or self.key


class DiscountKind(StrEnum):
    percent = "percent"
    fixed = "fixed"


class Discount(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A reduction at period close: ``value`` percent, or a fixed amount (never more than what
    it applies to), for the first ``periods`` periods of the assignment (None: always), on the
    listed charge and fee keys (empty: the whole statement)."""

    key: Key
    kind: DiscountKind
    value: Decimal
    name: str = ""
    periods: Annotated[int, msgspec.Meta(ge=1)] | None = None
    applies_to: tuple[Key, ...] = ()

    def __post_init__(self) -> None:
        check_price("value", self.value)
        if self.kind is DiscountKind.percent and self.value > 100:
            raise ValueError("value: a percentage is at most 100")

    @property
    def label(self) -> str:
        return self.name or self.key


class TariffVersion(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: Annotated[int, msgspec.Meta(ge=1)]
    effective_from: datetime
    currency: str
    period: PeriodSpec
    payment_mode: PaymentMode = PaymentMode.prepaid
    time_zone: str | None = None
    """The IANA zone of periods and time-of-use windows; None means the tenant's own zone."""
    rounding: RoundingMode = RoundingMode.half_up
    late_event_grace_seconds: Annotated[int, msgspec.Meta(ge=0, le=366 * DAYS)] = 3 * DAYS
    charges: tuple[Charge, ...] = ()
    recurring_fees: tuple[RecurringFee, ...] = ()
    one_time_fees: tuple[OneTimeFee, ...] = ()
    discounts: tuple[Discount, ...] = ()

    def __post_init__(self) -> None:
        if self.effective_from.tzinfo is None:
            raise ValueError("effective_from: needs a UTC offset, e.g. 2025-01-01T00:00:00Z")
        if self.currency not in MINOR_UNITS:
            raise ValueError(f"currency: unknown ISO 4217 currency {self.currency!r}")
        if self.time_zone is not None:
            try:
                zone(self.time_zone)
            except UnknownTimeZone:
                raise ValueError(f"time_zone: unknown IANA time zone {self.time_zone!r}") from None
        keys: list[str] = [
            *(charge.key for charge in self.charges),
            *(fee.key for fee in self.recurring_fees),
            *(fee.key for fee in self.one_time_fees),
        ]
        discount_keys = [discount.key for discount in self.discounts]
        if len(set(discount_keys)) != len(discount_keys):
            raise ValueError("discounts: keys must be unique in a version")
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"charges: keys must be unique in a version: {duplicates}")
        minor = MINOR_UNITS[self.currency]
        for position, charge in enumerate(self.charges):
            for name in ("minimum_amount", "maximum_amount"):
                limit = getattr(charge, name)
                if limit is not None and decimals_of(limit) > minor:
                    raise ValueError(
                        f"charges[{position}].{name}: {self.currency} has {minor} decimals"
                    )
        for position, discount in enumerate(self.discounts):
            if discount.kind is DiscountKind.fixed and decimals_of(discount.value) > minor:
                raise ValueError(
                    f"discounts[{position}].value: {self.currency} has {minor} decimals"
                )
            unknown = [key for key in discount.applies_to if key not in keys]
            if unknown:
                raise ValueError(f"discounts[{position}].applies_to: unknown keys {unknown}")

    @property
    def effective_instant(self) -> Instant:
        return from_datetime(self.effective_from)

    @property
    def minor_units(self) -> int:
        return MINOR_UNITS[self.currency]


class Tariff(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: Key
    versions: tuple[TariffVersion, ...]
    name: str = ""

    def __post_init__(self) -> None:
        if not self.versions:
            raise ValueError("versions: a tariff needs at least one version")
        for position in range(1, len(self.versions)):
            before, after = self.versions[position - 1], self.versions[position]
            if after.version <= before.version:
                raise ValueError(f"versions[{position}].version: must increase")
            if after.effective_from <= before.effective_from:
                raise ValueError(f"versions[{position}].effective_from: must increase")

    def version_at(self, instant: Instant) -> TariffVersion | None:
        """The version in effect at ``instant`` (None before the first one)."""
        chosen = None
        for version in self.versions:
            if version.effective_instant <= instant:
                chosen = version
        return chosen


class Catalog(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    meters: tuple[Meter, ...] = ()
    tariffs: tuple[Tariff, ...] = ()

    def __post_init__(self) -> None:
        meter_keys = [meter.key for meter in self.meters]
        if len(set(meter_keys)) != len(meter_keys):
            raise ValueError("meters: keys must be unique")
        tariff_keys = [tariff.key for tariff in self.tariffs]
        if len(set(tariff_keys)) != len(tariff_keys):
            raise ValueError("tariffs: keys must be unique")
        meters = self.meters_by_key()
        for position, tariff in enumerate(self.tariffs):
            found = problems(tariff, meters)
            if found:
                field, message = found[0]
                raise ValueError(f"tariffs[{position}].{field}: {message}")

    def meters_by_key(self) -> dict[str, Meter]:
        return {meter.key: meter for meter in self.meters}

    def tariff(self, key: str) -> Tariff:
        for tariff in self.tariffs:
            if tariff.key == key:
                return tariff
        raise KeyError(key)


def problems(tariff: Tariff, meters: Mapping[str, Meter]) -> list[tuple[str, str]]:
    """Every reference from ``tariff`` to ``meters`` that does not hold, as (field, message)."""
    found: list[tuple[str, str]] = []
    for v_index, version in enumerate(tariff.versions):
        for c_index, charge in enumerate(version.charges):
            field = f"versions[{v_index}].charges[{c_index}]"
            meter = meters.get(charge.meter)
            if meter is None:
                found.append((f"{field}.meter", f"unknown meter {charge.meter!r}"))
                continue
            found.extend((f"{field}.{name}", text) for name, text in charge_problems(charge, meter))
    return found


def charge_problems(charge: Charge, meter: Meter) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    routed = isinstance(charge.price, TimeOfUse | ByAttribute)
    if charge.free_units and (routed or meter.group_by):
        found.append(
            (
                "free_units",
                "free units need a single bucket: no routing, no group_by; "
                "give each window or value an overage price instead",
            )
        )
    if charge.time_basis is not None and meter.aggregation is not Aggregation.sum:
        found.append(("time_basis", "a time basis needs a sum meter"))
    if isinstance(charge.price, Percentage) and meter.aggregation is not Aggregation.sum:
        found.append(("price", "a percentage needs a sum meter of transaction amounts"))
    if isinstance(charge.price, TimeOfUse) and meter.aggregation is Aggregation.time_weighted:
        found.append(("price", "time of use does not apply to a time_weighted gauge"))
    return found


def decode_catalog(document: bytes | str) -> Catalog:
    """Decode and check a catalogue document; raises msgspec.ValidationError naming the field."""
    return msgspec.json.decode(document, type=Catalog)


def decode_tariff(document: bytes | str) -> Tariff:
    return msgspec.json.decode(document, type=Tariff)
