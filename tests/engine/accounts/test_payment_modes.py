"""The tariff's payment mode sets how far a balance may go below zero, unless the tenant has
an agreed credit limit of its own."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from engine.accounts import (
    AuthorizeAndRecord,
    CatalogTariffs,
    ConfigureTenant,
    Reason,
    TenantSettings,
    TenantTree,
)
from engine.instants import parse
from engine.tariffs import decode_catalog

MARCH = parse("2024-03-01T00:00:00Z")


def tree(payment_mode: str, credit_limit: Decimal | None) -> TenantTree:
    catalog = {
        "meters": [{"key": "calls", "unit": "call", "aggregation": "count"}],
        "tariffs": [
            {
                "key": "api",
                "versions": [
                    {
                        "version": 1,
                        "effective_from": "2024-01-01T00:00:00Z",
                        "currency": "EUR",
                        "period": {"unit": "month"},
                        "payment_mode": payment_mode,
                        "charges": [
                            {
                                "key": "calls",
                                "meter": "calls",
                                "price": {"model": "per_unit", "unit_price": "2.50"},
                            }
                        ],
                    }
                ],
            }
        ],
    }
    built = TenantTree.new("acme", CatalogTariffs(decode_catalog(json.dumps(catalog))))
    settings = TenantSettings(tariff="api", credit_limit=credit_limit)
    assert built.handle(ConfigureTenant(id="c", tenant="acme", time=MARCH, settings=settings))
    return built


def calls(built: TenantTree, count: int) -> list[bool]:
    return [
        built.handle(
            AuthorizeAndRecord(id=f"a{n}", tenant="acme", time=MARCH + 60 + n, meter="calls")
        ).accepted
        for n in range(count)
    ]


def test_prepaid_without_credit_is_denied() -> None:
    built = tree("prepaid", None)
    outcome = built.handle(
        AuthorizeAndRecord(id="a", tenant="acme", time=MARCH + 60, meter="calls")
    )
    assert (outcome.accepted, outcome.reason) == (False, Reason.insufficient_credit)


def test_postpaid_without_an_agreed_limit_is_never_cut_off() -> None:
    built = tree("postpaid", None)
    assert all(calls(built, 40))
    assert built.balance("acme") == Decimal("-100.00")
    outcome = built.handle(
        AuthorizeAndRecord(id="last", tenant="acme", time=MARCH + 600, meter="calls")
    )
    assert outcome.accepted and outcome.available is None  # no limit to show
    built.state.nodes["acme"].wallet.ledger.check()  # type: ignore[union-attr]


@pytest.mark.parametrize(("mode", "accepted"), [("postpaid", 4), ("prepaid", 4)])
def test_an_agreed_credit_limit_holds_in_either_mode(mode: str, accepted: int) -> None:
    built = tree(mode, Decimal(10))  # 10.00 of credit is four calls at 2.50
    assert calls(built, 6) == [True] * accepted + [False] * (6 - accepted)
    assert built.balance("acme") == Decimal("-10.00")
