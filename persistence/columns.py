"""Column types that keep values exact on every dialect: money, instants, JSON documents.

SQLite has no decimal type: SQLAlchemy's ``Numeric`` there converts through float, so money is
stored as its decimal text on SQLite and as ``NUMERIC(34, 18)`` on Postgres. Either way a
value that does not fit is refused before it is written, never rounded by the database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import JSON, DateTime, Dialect, Numeric, String
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator, TypeEngine

MONEY_DIGITS: Final = 34
MONEY_DECIMALS: Final = 18
"""18 decimals hold the engine's division quantum (1e-18); 16 integer digits hold its bound on
any magnitude (1e15) with room to spare."""
MONEY_TEXT_LENGTH: Final = MONEY_DIGITS + 2  # a sign and a decimal point
_MONEY_BOUND: Final = Decimal(10) ** (MONEY_DIGITS - MONEY_DECIMALS)


def money_sql_type() -> TypeEngine[Any]:
    """The column type a migration declares for money (the same as :class:`Money` uses)."""
    return Numeric(MONEY_DIGITS, MONEY_DECIMALS).with_variant(String(MONEY_TEXT_LENGTH), "sqlite")


def document_sql_type() -> TypeEngine[Any]:
    """JSON documents: ``jsonb`` on Postgres, JSON text on SQLite."""
    return JSON().with_variant(postgresql.JSONB(), "postgresql")


def check_money(value: Decimal) -> Decimal:
    if not isinstance(value, Decimal):
        raise TypeError(f"money must be a Decimal, not {type(value).__name__}")
    if not value.is_finite() or abs(value) >= _MONEY_BOUND:
        raise ValueError(f"money {value} is not finite or too large to store")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -MONEY_DECIMALS:
        raise ValueError(f"money {value} has more than {MONEY_DECIMALS} decimals")
    return value


def trim_zeros(value: Decimal) -> Decimal:
    """Drop the trailing zeros Postgres pads a NUMERIC(34, 18) with, keeping the value exact:
    ``12.500000000000000000`` reads back as ``12.5`` and ``100.000…`` as ``100``."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


class Money(TypeDecorator[Decimal]):
    impl = Numeric(MONEY_DIGITS, MONEY_DECIMALS)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(MONEY_TEXT_LENGTH))
        return dialect.type_descriptor(Numeric(MONEY_DIGITS, MONEY_DECIMALS, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        check_money(value)
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return trim_zeros(Decimal(value) if isinstance(value, str) else value)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out. SQLite keeps no offset, so values are
    stored there as naive UTC; a naive datetime on the way in is a bug and is refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"datetime {value} has no UTC offset")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Document(TypeDecorator[Any]):
    """A JSON document (the builtins msgspec encodes a Struct into)."""

    impl = JSON()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(JSON())
