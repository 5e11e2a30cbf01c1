"""Linear grants: slices a gateway spends at a flat unit price, reporting each use it answered
(``ReportGrant.records``) so that the tree remembers it as an answered ``AuthorizeAndRecord``.
Calls cost 0.25 EUR on the flat tariff; the account starts with 10 EUR."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.accounts import (
    AuthorizeAndRecord,
    ConfigureTenant,
    Funding,
    GrantedUse,
    OpenGrant,
    Outcome,
    Quota,
    Reason,
    ReportGrant,
    TenantSettings,
    TenantTree,
    TopUp,
    decode,
    encode,
)
from engine.instants import DAY, parse
from tests.engine.accounts.books import MARCH, Book
from tests.engine.helpers import CALLS_METER, catalog_tariffs, tariff_document

APRIL = parse("2024-04-01T00:00:00Z")
T = parse("2024-03-05T12:00:00Z")
PRICE = Decimal("0.25")

PER_UNIT = {"model": "per_unit", "unit_price": "0.25"}
GRADUATED = {
    "model": "graduated",
    "tiers": [{"up_to": "10", "unit_price": "0.25"}, {"up_to": None, "unit_price": "0.1"}],
}
BY_REGION = {
    "model": "by_attribute",
    "property": "region",
    "prices": [{"value": "eu", "price": PER_UNIT}],
    "default": PER_UNIT,
}

# One tariff per way a charge can price the calls meter (or another meter) other than flat.
CHARGES: dict[str, dict[str, Any]] = {
    "flat": {"meter": "calls", "price": PER_UNIT},
    "graduated": {"meter": "calls", "price": GRADUATED},
    "free_units": {"meter": "calls", "price": PER_UNIT, "free_units": "5"},
    "minimum": {"meter": "calls", "price": PER_UNIT, "minimum_amount": "1"},
    "maximum": {"meter": "calls", "price": PER_UNIT, "maximum_amount": "100"},
    "by_attribute": {"meter": "calls", "price": BY_REGION},
    "time_basis": {"meter": "cpu", "price": PER_UNIT, "time_basis": {"unit": "second"}},
    "filtered": {"meter": "eu_calls", "price": PER_UNIT},
    "grouped": {"meter": "grouped_calls", "price": PER_UNIT},
    "valued": {"meter": "bytes", "price": PER_UNIT},
    "highest": {"meter": "peak", "price": PER_UNIT},
}
METERS = [
    CALLS_METER,
    {"key": "cpu", "unit": "vcpu", "aggregation": "sum"},
    {"key": "eu_calls", "unit": "call", "aggregation": "count", "filters": {"r": ["eu"]}},
    {"key": "grouped_calls", "unit": "call", "aggregation": "count", "group_by": ["r"]},
    {"key": "bytes", "unit": "byte", "aggregation": "sum", "value_property": "size"},
    {"key": "peak", "unit": "call", "aggregation": "max"},
]
TARIFFS = catalog_tariffs(
    {
        "meters": METERS,
        "tariffs": [
            tariff_document(key, [{"key": "c", **charge}]) for key, charge in CHARGES.items()
        ],
    }
)


class Account(Book):
    """One prepaid tenant, ``acme``, with 10 EUR, driven by commands with generated ids."""

    def __init__(self, tariff: str = "flat", **settings: Any) -> None:
        super().__init__(TARIFFS)
        assert self.configure(tariff=tariff, **settings).accepted
        assert self(TopUp, MARCH, amount=Decimal(10)).accepted

    def open(self, grant: str, quantity: int, at: int = T, **fields: Any) -> Outcome:
        fields.setdefault("meter", "calls")
        return self(OpenGrant, at, id=grant, quantity=Decimal(quantity), linear=True, **fields)

    def report(
        self, grant: str, uses: list[tuple[str, int]], at: int = T, **fields: Any
    ) -> Outcome:
        records = tuple(
            GrantedUse(id=use, quantity=Decimal(quantity), amount=quantity * PRICE)
            for use, quantity in uses
        )
        fields.setdefault("used", sum((r.quantity for r in records), Decimal(0)))
        return self(ReportGrant, at, grant=grant, records=records, **fields)

    def use(self, use: str, quantity: int, at: int = T) -> Outcome:
        """The same use as a client's request reaching the tree directly."""
        return self(AuthorizeAndRecord, at, id=use, meter="calls", quantity=Decimal(quantity))


def test_a_linear_slice_names_its_unit_price_and_ends_with_the_period() -> None:
    account = Account()
    opened = account.open("g1", 8)
    assert opened.accepted and opened.unit_price == PRICE
    assert opened.amount == 8 * PRICE and opened.expires_at == T + 60
    assert account.available == Decimal(8)
    late = account.open("g2", 4, at=APRIL - 10)
    assert late.accepted and late.expires_at == APRIL


def test_a_plain_slice_carries_no_unit_price() -> None:
    account = Account()
    outcome = account(OpenGrant, T, id="g", meter="calls", quantity=Decimal(2))
    assert outcome.accepted and outcome.unit_price is None
    assert b"unit_price" not in encode(account.tree.state)


@pytest.mark.parametrize(
    ("tariff", "meter"),
    [
        ("graduated", "calls"),
        ("free_units", "calls"),
        ("minimum", "calls"),
        ("maximum", "calls"),
        ("by_attribute", "calls"),
        ("time_basis", "cpu"),
        ("filtered", "eu_calls"),
        ("grouped", "grouped_calls"),
        ("valued", "bytes"),
        ("highest", "peak"),
    ],
)
def test_a_linear_slice_is_refused_where_units_do_not_cost_the_same(
    tariff: str, meter: str
) -> None:
    account = Account(tariff)
    before = (account.balance, account.available)
    # A meter that reads its value from a property gets it, so that only linearity fails.
    outcome = account.open("g", 4, meter=meter, properties={"size": "1"})
    assert (outcome.accepted, outcome.reason, outcome.field) == (
        False,
        Reason.grant_not_linear,
        "meter",
    )
    assert (account.balance, account.available) == before
    assert not account.tree.state.slices


def test_a_linear_slice_is_refused_in_a_tree_or_under_a_quota() -> None:
    with_quota = Account(quotas=(Quota(meter="calls", hard=Decimal(100)),))
    assert with_quota.open("g", 4).reason is Reason.grant_not_linear
    parent = Account()
    child = TenantSettings(parent="acme", funding=Funding.pool, tariff="flat")
    assert parent(ConfigureTenant, T, tenant="kid", settings=child).accepted
    assert parent.open("g", 4).reason is Reason.grant_not_linear
    pooled = parent(OpenGrant, T, tenant="kid", meter="calls", quantity=Decimal(1), linear=True)
    assert (pooled.reason, pooled.field) == (Reason.grant_not_linear, "tenant")
    assert not parent.tree.state.slices


def test_a_linear_slice_with_properties_is_refused() -> None:
    # Its uses are remembered as one-step records, which name no properties.
    account = Account()
    refused = account.open("g", 4, properties={"region": "eu"})
    assert (refused.reason, refused.field) == (Reason.grant_not_linear, "properties")
    assert not account.tree.state.slices


def test_reported_uses_are_charged_once_and_remembered_as_answers() -> None:
    account = Account()
    account.open("g", 10)
    reported = account.report("g", [("u1", 1), ("u2", 3)], at=T + 5)
    assert reported.accepted and reported.amount == 4 * PRICE
    assert account.balance == 10 - 4 * PRICE
    assert account.available == 10 - 10 * PRICE  # the rest of the slice is still held
    # A client's retry reaching the tree later gets the answer the gateway gave.
    retry = account.use("u2", 3, at=T + 30)
    assert retry == Outcome(accepted=True, amount=3 * PRICE, grant="g")
    assert account.balance == 10 - 4 * PRICE
    other = account.use("u2", 2, at=T + 30)
    assert other.reason is Reason.idempotency_conflict
    final = account.report("g", [("u3", 2)], at=T + 40, final=True)
    assert final.accepted and final.amount == 2 * PRICE
    assert account.balance == account.available == 10 - 6 * PRICE
    wallet = account.tree.state.nodes["acme"].wallet
    assert wallet is not None
    wallet.ledger.check()


def test_one_unit_uses_reported_by_their_ids_alone_are_charged_as_records() -> None:
    """``units`` names one-unit uses by their ids: each is charged the unit price and
    remembered with it, beside ``records`` in the same report; one the tree charged
    already is not charged again, and a plain slice takes none."""
    account = Account()
    account.open("g", 10)
    assert account.use("u3", 1, at=T + 1).accepted  # reached the tree directly first
    reported = account(
        ReportGrant,
        T + 5,
        grant="g",
        used=Decimal(5),
        records=(GrantedUse(id="u1", quantity=Decimal(2), amount=2 * PRICE),),
        units=("u2", "u3", "u4"),
    )
    assert reported.accepted and reported.amount == 4 * PRICE  # u3 was charged before
    assert account.balance == 10 - 5 * PRICE
    assert account.use("u2", 1, at=T + 30) == Outcome(accepted=True, amount=PRICE, grant="g")
    assert account.use("u4", 2, at=T + 30).reason is Reason.idempotency_conflict
    short = account(ReportGrant, T + 6, grant="g", used=Decimal(3), units=("u5", "u6"))
    assert (short.reason, short.field) == (Reason.invalid_quantity, "records")
    plain = Account("graduated")
    assert plain(OpenGrant, T, id="p", meter="calls", quantity=Decimal(4)).accepted
    outcome = plain(ReportGrant, T + 1, grant="p", used=Decimal(1), units=("u1",))
    assert (outcome.reason, outcome.field) == (Reason.grant_not_linear, "records")


def test_a_use_already_charged_by_the_tree_is_not_charged_again() -> None:
    account = Account()
    account.open("g", 10)
    # The retry of u1 reached the tree (through another gateway) before the report.
    direct = account.use("u1", 2, at=T + 1)
    assert direct.accepted and direct.amount == 2 * PRICE
    reported = account.report("g", [("u1", 2), ("u2", 1)], at=T + 5)
    assert reported.accepted and reported.amount == PRICE
    assert account.balance == 10 - 3 * PRICE
    # u1's units went back to the slice: 9 are left.
    assert account.tree.state.slices["g"].used == 1
    assert account.report("g", [("u3", 9)], at=T + 6).accepted
    assert account.use("u1", 2, at=T + 7) == direct


def test_a_use_remembered_as_something_else_is_still_charged() -> None:
    account = Account()
    account.open("g", 10)
    refused = account.use("u1", 50, at=T + 1)
    assert refused.reason is Reason.insufficient_credit
    reported = account.report("g", [("u1", 2)], at=T + 5)
    assert reported.accepted and reported.amount == 2 * PRICE
    assert account.use("u1", 50, at=T + 6) == refused


@pytest.mark.parametrize(
    ("uses", "fields", "reason", "field"),
    [
        ([("u1", 1), ("u2", 2)], {"used": Decimal(4)}, Reason.invalid_quantity, "records"),
        ([("u1", 1)], {"used": Decimal(11)}, Reason.grant_exceeded, "used"),
        ([("u1", 11)], {}, Reason.grant_exceeded, "used"),
    ],
)
def test_a_report_whose_uses_do_not_add_up_changes_nothing(
    uses: list[tuple[str, int]], fields: dict[str, Any], reason: Reason, field: str
) -> None:
    account = Account()
    account.open("g", 10)
    before = (account.balance, account.available, account.tree.state.slices["g"].used)
    outcome = account.report("g", uses, at=T + 5, **fields)
    assert (outcome.accepted, outcome.reason, outcome.field) == (False, reason, field)
    assert (account.balance, account.available, account.tree.state.slices["g"].used) == before
    assert account.use("u1", 1, at=T + 6).amount == PRICE  # not remembered: a fresh use


def test_each_use_is_priced_at_the_unit_price_in_whole_calls() -> None:
    account = Account()
    account.open("g", 10)
    wrong = GrantedUse(id="u1", quantity=Decimal(2), amount=Decimal("0.49"))
    outcome = account(ReportGrant, T + 1, grant="g", used=Decimal(2), records=(wrong,))
    assert (outcome.reason, outcome.field) == (Reason.invalid_amount, "records[0].amount")
    half = GrantedUse(id="u1", quantity=Decimal("0.5"), amount=Decimal("0.125"))
    outcome = account(ReportGrant, T + 1, grant="g", used=Decimal("0.5"), records=(half,))
    assert (outcome.reason, outcome.field) == (Reason.invalid_quantity, "records[0].quantity")
    assert account.tree.state.slices["g"].used == 0


def test_uses_are_reported_on_linear_slices_only() -> None:
    account = Account("graduated")
    assert account(OpenGrant, T, id="g", meter="calls", quantity=Decimal(4)).accepted
    outcome = account.report("g", [("u1", 1)], at=T + 1)
    assert (outcome.reason, outcome.field) == (Reason.grant_not_linear, "records")


def test_remembered_uses_survive_a_snapshot() -> None:
    account = Account()
    account.open("g", 10)
    assert account.report("g", [("u1", 3)], at=T + 5).accepted
    restored = TenantTree(decode(encode(account.tree.state)), TARIFFS)
    retry = AuthorizeAndRecord(
        id="u1", tenant="acme", time=T + DAY, meter="calls", quantity=Decimal(3)
    )
    assert restored.handle(retry) == Outcome(accepted=True, amount=3 * PRICE, grant="g")
    assert restored.balance("acme") == 10 - 3 * PRICE


def test_an_unreported_linear_slice_is_charged_in_full_at_its_expiry() -> None:
    """The loss bound of a caller that crashed: the rest of its slice, at the unit price."""
    account = Account()
    account.open("g", 10)
    assert account.report("g", [("u1", 3)], at=T + 5).accepted
    assert account.use("later", 1, at=T + 61).accepted
    assert account.balance == 10 - 11 * PRICE
    assert not account.tree.state.slices
