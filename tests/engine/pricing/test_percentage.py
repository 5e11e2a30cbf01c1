"""Percentage: a share of each transaction plus a fixed fee per transaction (2.9 % + 0.25 EUR).

The quantity is the sum of the transaction amounts; ``events`` counts the transactions.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from engine.pricing import Percentage, Price

CARD_FEES = Percentage(rate=Decimal("0.029"), fixed_fee=Decimal("0.25"))
SHARE_ONLY = Percentage(rate=Decimal("0.15"))

# (sum of transaction amounts, number of transactions)
PERIODS = [("0", 0), ("100.00", 1), ("100.00", 3), ("12345.67", 89), ("0.01", 1)]


@pytest.mark.parametrize(
    ("price", "transactions_total", "transactions", "amount"),
    [
        (CARD_FEES, "0", 0, "0"),
        (CARD_FEES, "100.00", 1, "3.15"),  # 2.90 + 0.25
        (CARD_FEES, "100.00", 3, "3.65"),  # three transactions totalling 100.00
        (CARD_FEES, "0", 2, "0.50"),  # zero-value transactions still pay the fixed fee
        (CARD_FEES, "12345.67", 89, "380.27443"),  # 358.02443 + 22.25
        (SHARE_ONLY, "200", 7, "30"),
        (Percentage(rate=Decimal(1)), "42.42", 1, "42.42"),  # the whole amount
    ],
)
def test_a_share_of_the_amount_plus_a_fee_per_transaction(
    price: Percentage, transactions_total: str, transactions: int, amount: str
) -> None:
    assert price.amount(Decimal(transactions_total), transactions) == Decimal(amount)


@pytest.mark.parametrize(("transactions_total", "transactions"), PERIODS)
def test_lines_sum_to_the_amount(transactions_total: str, transactions: int) -> None:
    share, fees = CARD_FEES.lines(Decimal(transactions_total), transactions)
    expected = CARD_FEES.amount(Decimal(transactions_total), transactions)
    assert share.amount + fees.amount == expected
    assert (share.quantity, fees.quantity) == (Decimal(transactions_total), Decimal(transactions))


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (("0", 0), ("0", 0)),
        (("0", 0), ("100.00", 1)),
        (("100.00", 1), ("100.00", 2)),  # a zero-value transaction
        (("100.00", 1), ("250.50", 4)),
        (("250.50", 4), ("100.00", 1)),  # backwards
        (("12345.67", 89), ("0", 0)),
    ],
)
def test_marginal_is_the_change_in_amount(before: tuple[str, int], after: tuple[str, int]) -> None:
    (total_before, count_before), (total_after, count_after) = before, after
    b, a = Decimal(total_before), Decimal(total_after)
    assert CARD_FEES.marginal(b, a, count_before, count_after) == (
        CARD_FEES.amount(a, count_after) - CARD_FEES.amount(b, count_before)
    )


@pytest.mark.parametrize(
    ("document", "price"),
    [
        (b'{"model": "percentage", "rate": "0.029", "fixed_fee": "0.25"}', CARD_FEES),
        (b'{"model": "percentage", "rate": "0.15"}', SHARE_ONLY),
    ],
)
def test_decodes_from_json_by_its_model_tag(document: bytes, price: Percentage) -> None:
    assert msgspec.json.decode(document, type=Price) == price
    assert msgspec.json.decode(msgspec.json.encode(price), type=Price) == price


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b'{"model": "percentage", "rate": "1.01"}', "rate: a share between 0 and 1"),
        (b'{"model": "percentage", "rate": "2.9"}', "rate: a share between 0 and 1"),
        (b'{"model": "percentage", "rate": "-0.01"}', "rate: must not be negative"),
        (b'{"model": "percentage", "rate": "NaN"}', "rate: must be a finite number"),
        (
            b'{"model": "percentage", "rate": "0.029", "fixed_fee": "-0.25"}',
            "fixed_fee: must not be negative",
        ),
        (b'{"model": "percentage", "rate": "0.029", "cap": "5"}', "unknown field `cap`"),
    ],
)
def test_invalid_documents_are_rejected_naming_the_field(document: bytes, message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.json.decode(document, type=Price)
    assert message in str(raised.value)
