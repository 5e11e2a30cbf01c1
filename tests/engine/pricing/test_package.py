"""Package prices: 0.50 EUR per block of 100 units. A started block counts as a whole one,
unless ``round_up`` is false, in which case only full blocks are charged."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from engine.pricing import Package, Price

STARTED_BLOCKS = Package(package_size=Decimal(100), package_price=Decimal("0.5"))
FULL_BLOCKS = Package(package_size=Decimal(100), package_price=Decimal("0.5"), round_up=False)

QUANTITIES = ["0", "0.001", "1", "99", "99.999999999", "100", "100.000000001", "101", "250", "1000"]


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        ("0", "0"),
        ("0.001", "0.5"),  # a started block is a block
        ("1", "0.5"),
        ("100", "0.5"),  # exactly one block
        ("100.000000001", "1.0"),
        ("101", "1.0"),
        ("250", "1.5"),
        ("1000", "5.0"),
    ],
)
def test_a_started_block_is_charged_in_full(quantity: str, amount: str) -> None:
    assert STARTED_BLOCKS.amount(Decimal(quantity), 1) == Decimal(amount)


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        ("0", "0"),
        ("99", "0"),  # no full block yet
        ("99.999999999", "0"),
        ("100", "0.5"),
        ("199.999999999", "0.5"),
        ("250", "1.0"),
        ("1000", "5.0"),
    ],
)
def test_without_round_up_only_full_blocks_are_charged(quantity: str, amount: str) -> None:
    assert FULL_BLOCKS.amount(Decimal(quantity), 1) == Decimal(amount)


def test_blocks_may_be_a_fraction_of_a_unit() -> None:
    half_gigabytes = Package(package_size=Decimal("0.5"), package_price=Decimal("0.02"))
    assert half_gigabytes.amount(Decimal("1.2"), 1) == Decimal("0.06")  # three started blocks


@pytest.mark.parametrize("price", [STARTED_BLOCKS, FULL_BLOCKS])
@pytest.mark.parametrize("quantity", QUANTITIES)
def test_lines_sum_to_the_amount(price: Package, quantity: str) -> None:
    lines = price.lines(Decimal(quantity), 1)
    assert sum(line.amount for line in lines) == price.amount(Decimal(quantity), 1)
    assert all(line.amount == line.quantity * line.unit_price + line.flat_amount for line in lines)


@pytest.mark.parametrize(
    ("quantity", "blocks"), [("0", 0), ("1", 1), ("100", 1), ("101", 2), ("250", 3)]
)
def test_the_line_counts_blocks(quantity: str, blocks: int) -> None:
    [line] = STARTED_BLOCKS.lines(Decimal(quantity), 1)
    assert (line.quantity, line.unit_price) == (Decimal(blocks), Decimal("0.5"))


@pytest.mark.parametrize("price", [STARTED_BLOCKS, FULL_BLOCKS])
@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("0", "0"),
        ("0", "1"),
        ("99", "100"),
        ("100", "100"),
        ("100", "101"),
        ("99.5", "100.5"),
        ("1", "1000"),
        ("101", "100"),  # backwards
        ("1000", "0"),
    ],
)
def test_marginal_is_the_change_in_amount(price: Package, before: str, after: str) -> None:
    b, a = Decimal(before), Decimal(after)
    assert price.marginal(b, a, 1, 2) == price.amount(a, 2) - price.amount(b, 1)


@pytest.mark.parametrize(
    ("document", "price"),
    [
        (b'{"model": "package", "package_size": "100", "package_price": "0.5"}', STARTED_BLOCKS),
        (
            b'{"model": "package", "package_size": "100", "package_price": "0.5", '
            b'"round_up": false}',
            FULL_BLOCKS,
        ),
    ],
)
def test_decodes_from_json_by_its_model_tag(document: bytes, price: Package) -> None:
    assert msgspec.json.decode(document, type=Price) == price
    assert msgspec.json.decode(msgspec.json.encode(price), type=Price) == price


def _package(fields: str) -> bytes:
    return b'{"model": "package", ' + fields.encode() + b"}"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            _package('"package_size": "0", "package_price": "0.5"'),
            "package_size: must be greater than zero",
        ),
        (
            _package('"package_size": "-100", "package_price": "0.5"'),
            "package_size: must be greater than zero",
        ),
        (
            _package('"package_size": "100", "package_price": "-0.5"'),
            "package_price: must not be negative",
        ),
        (
            _package('"package_size": "NaN", "package_price": "0.5"'),
            "package_size: must be a finite number",
        ),
        (
            _package('"package_size": "0.0000000001", "package_price": "0.5"'),
            "package_size: at most 9 decimal places",
        ),
        (
            _package('"package_size": "100", "package_price": "0.5", "round": "up"'),
            "unknown field `round`",
        ),
    ],
)
def test_invalid_documents_are_rejected_naming_the_field(document: bytes, message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.json.decode(document, type=Price)
    assert message in str(raised.value)
