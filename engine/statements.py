"""Statements: the rated lines of a period, rounded once per line.

``amount_raw`` is the exact amount a line stands for; ``amount`` is that rounded to the
currency's minor unit with the tariff's rounding mode. A cap or minimum is a line of its own,
computed from the rounded lines so that a capped charge totals exactly its cap.

``charged_live`` is what the account has already posted for the period while it ran (the sum
of marginal amounts). ``total - charged_live`` is what closing adds; of that,
``rounding_difference`` (``sum(amount - amount_raw)``) is posted on its own.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

import msgspec

from engine.instants import Instant
from engine.numbers import ZERO


class LineKind(StrEnum):
    usage = "usage"
    maximum = "maximum"
    minimum = "minimum"
    recurring_fee = "recurring_fee"
    one_time_fee = "one_time_fee"
    discount = "discount"


class StatementLine(msgspec.Struct, frozen=True, kw_only=True):
    line_id: str
    kind: LineKind
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal | None
    amount_raw: Decimal
    amount: Decimal
    charge: str | None = None
    dimensions: dict[str, str] = {}


class BreakdownLine(msgspec.Struct, frozen=True, kw_only=True):
    """What one sub-tenant's usage contributed to one charge, for a reseller to bill on.

    The amounts are the marginal amounts the usage caused at this tenant's prices, so they
    add up to the charge's rated amount; each is rounded on its own, so their rounded sum can
    differ from the charge's lines by the rounding of each.
    """

    tenant: str
    charge: str
    quantity: Decimal
    amount_raw: Decimal
    amount: Decimal


class Statement(msgspec.Struct, frozen=True, kw_only=True):
    tariff: str
    version: int
    currency: str
    period_start: Instant
    period_end: Instant
    period_index: int
    lines: tuple[StatementLine, ...]
    total: Decimal
    charged_live: Decimal
    rounding_difference: Decimal
    revision: int = 0
    """0 for the closing statement; 1, 2, … for each delta a late event caused."""
    breakdown: tuple[BreakdownLine, ...] = ()
    """Usage by sub-tenant, where the tenant has sub-tenants."""

    @property
    def closing_amount(self) -> Decimal:
        return self.total - self.charged_live

    def line(self, line_id: str) -> StatementLine:
        for line in self.lines:
            if line.line_id == line_id:
                return line
        raise KeyError(line_id)


def make_statement(
    *,
    tariff: str,
    version: int,
    currency: str,
    period_start: Instant,
    period_end: Instant,
    period_index: int,
    lines: list[StatementLine],
    charged_live: Decimal,
    revision: int = 0,
    breakdown: tuple[BreakdownLine, ...] = (),
) -> Statement:
    total = sum((line.amount for line in lines), ZERO)
    difference = sum((line.amount - line.amount_raw for line in lines), ZERO)
    return Statement(
        tariff=tariff,
        version=version,
        currency=currency,
        period_start=period_start,
        period_end=period_end,
        period_index=period_index,
        lines=tuple(lines),
        total=total,
        charged_live=charged_live,
        rounding_difference=difference,
        revision=revision,
        breakdown=breakdown,
    )


def delta(issued: Statement, revised: Statement) -> Statement:
    """What changed between an issued statement and its revision, as a statement of its own.

    An issued statement is never changed; a late event yields a delta whose lines are the
    differences per line id (lines that did not change are left out).
    """
    assert (issued.period_start, issued.tariff) == (revised.period_start, revised.tariff)
    before = {line.line_id: line for line in issued.lines}
    lines: list[StatementLine] = []
    for line in revised.lines:
        old = before.pop(line.line_id, None)
        lines.append(line if old is None else _difference(line, old))
    lines.extend(_negated(old) for old in before.values())
    changed = [line for line in lines if line.amount or line.amount_raw or line.quantity]
    return make_statement(
        tariff=revised.tariff,
        version=revised.version,
        currency=revised.currency,
        period_start=revised.period_start,
        period_end=revised.period_end,
        period_index=revised.period_index,
        lines=changed,
        charged_live=revised.charged_live - issued.charged_live,
        revision=issued.revision + 1,
    )


def _difference(new: StatementLine, old: StatementLine) -> StatementLine:
    return msgspec.structs.replace(
        new,
        quantity=new.quantity - old.quantity,
        amount_raw=new.amount_raw - old.amount_raw,
        amount=new.amount - old.amount,
    )


def _negated(old: StatementLine) -> StatementLine:
    return msgspec.structs.replace(
        old, quantity=-old.quantity, amount_raw=-old.amount_raw, amount=-old.amount
    )
