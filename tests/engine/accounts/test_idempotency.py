"""Idempotency by command id: a retry returns the first outcome and changes nothing; the same
id with other content is a conflict; the time the host stamped on a command does not count;
ids are remembered for at least a day, up to a number of ids, and travel with the snapshot.
Calls cost 0.10 EUR."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.accounts import (
    Advance,
    Authorize,
    AuthorizeAndRecord,
    Command,
    ConfigureTenant,
    CreditKind,
    OneTimeCharge,
    Reason,
    Record,
    Refund,
    TenantSettings,
    TenantTree,
    TopUp,
    decode,
    encode,
)
from engine.accounts import tree as tree_module
from engine.instants import parse
from tests.engine.helpers import calls_catalog, catalog_tariffs

MARCH = parse("2024-03-01T00:00:00Z")
T = parse("2024-03-05T12:00:00Z")
DAY = 86_400

TARIFFS = catalog_tariffs(calls_catalog("0.10"))


def new_account(balance: str = "10") -> TenantTree:
    tree = TenantTree.new("acme", TARIFFS)
    settings = TenantSettings(tariff="api")
    configure = ConfigureTenant(id="setup", tenant="acme", time=MARCH, settings=settings)
    assert tree.handle(configure).accepted
    top_up = TopUp(id="credit", tenant="acme", time=MARCH, amount=Decimal(balance))
    assert tree.handle(top_up).accepted
    return tree


def calls(command_id: str, quantity: int, at: int = T, command: type = AuthorizeAndRecord) -> Any:
    return command(id=command_id, tenant="acme", time=at, meter="calls", quantity=Decimal(quantity))


FIRST_COMMANDS: list[tuple[str, Command]] = [
    ("one-step call", calls("x", 3)),
    ("recorded usage", calls("x", 3, command=Record)),
    ("reservation", calls("x", 3, command=Authorize)),
    ("top-up", TopUp(id="x", tenant="acme", time=T, amount=Decimal(5))),
    ("refund", Refund(id="x", tenant="acme", time=T, amount=Decimal(5))),
    (
        "one-time charge",
        OneTimeCharge(id="x", tenant="acme", time=T, description="setup", amount=Decimal(2)),
    ),
]


@pytest.mark.parametrize("retry_after", [0, 1, 3_600])
@pytest.mark.parametrize(
    "command", [c for _, c in FIRST_COMMANDS], ids=[n for n, _ in FIRST_COMMANDS]
)
def test_a_retry_returns_the_first_outcome_and_changes_nothing(
    command: Command, retry_after: int
) -> None:
    """Also when the host stamps the retry with a later time than the original."""
    tree = new_account()
    first = tree.handle(command)
    assert first.accepted
    before = encode(tree.state)
    again = tree.handle(_restamped(command, command.time + retry_after))
    assert again == first
    assert encode(tree.state) == before


def test_a_denied_command_is_remembered_as_denied() -> None:
    """The outcome is the one of the first time, even if the account could afford it now."""
    tree = new_account("1")
    denied = tree.handle(calls("big", 20))
    assert denied.reason is Reason.insufficient_credit
    assert tree.handle(TopUp(id="more", tenant="acme", time=T + 1, amount=Decimal(10))).accepted
    assert tree.handle(calls("big", 20, at=T + 2)) == denied
    assert tree.balance("acme") == Decimal(11)


CONFLICTS: list[tuple[str, Command]] = [
    ("other quantity", calls("x", 4)),
    ("other command", calls("x", 3, command=Record)),
    (
        "other meter property",
        calls("x", 3).__class__(
            id="x", tenant="acme", time=T, meter="calls", quantity=Decimal(3), properties={"a": "b"}
        ),
    ),
    ("other tenant", AuthorizeAndRecord(id="x", tenant="beta", time=T, meter="calls")),
    (
        "usage time stated",
        calls("x", 3).__class__(
            id="x", tenant="acme", time=T, meter="calls", quantity=Decimal(3), usage_time=T - 60
        ),
    ),
    ("a top-up", TopUp(id="x", tenant="acme", time=T, amount=Decimal(3))),
]


@pytest.mark.parametrize("other", [c for _, c in CONFLICTS], ids=[n for n, _ in CONFLICTS])
def test_the_same_id_with_other_content_is_a_conflict(other: Command) -> None:
    tree = new_account()
    assert tree.handle(calls("x", 3)).amount == Decimal("0.30")
    before = encode(tree.state)
    conflict = tree.handle(_restamped(other, T + 5))
    assert (conflict.accepted, conflict.reason, conflict.field) == (
        False,
        Reason.idempotency_conflict,
        "id",
    )
    assert encode(tree.state) == before


def remembered(tree: TenantTree, command_ids: list[str]) -> list[str]:
    """The ids the tree still knows: each is tried with other content on a copy of the tree
    (restored from a snapshot), where a remembered id is a conflict."""
    known = []
    for command_id in command_ids:
        copy = TenantTree(decode(encode(tree.state)), TARIFFS)
        probe = calls(command_id, 7, at=copy.state.clock)
        if copy.handle(probe).reason is Reason.idempotency_conflict:
            known.append(command_id)
    return known


def test_ids_are_remembered_for_at_least_a_day() -> None:
    """A command an hour for a day does not make the tree forget the first."""
    tree = new_account()
    first = tree.handle(calls("first", 1))
    for hour in range(1, 25):
        assert tree.handle(calls(f"call-{hour}", 1, at=T + hour * 3_600 - 1)).accepted
    assert remembered(tree, ["first"]) == ["first"]
    assert tree.handle(calls("first", 1, at=T + DAY)) == first
    assert tree.balance("acme") == Decimal("7.50")  # 25 calls


@pytest.mark.parametrize("most", [2, 4, 10])
def test_past_the_most_ids_remembered_the_oldest_are_forgotten_first(
    monkeypatch: pytest.MonkeyPatch, most: int
) -> None:
    """Within a second, ``3 x most`` ids: the tree holds at most ``most`` of them, always the
    newest, at least the newest half."""
    tree = new_account("100")
    monkeypatch.setattr(tree_module, "REMEMBERED_MAX", most)
    sent = [f"id-{number}" for number in range(3 * most)]
    for command_id in sent:
        assert tree.handle(calls(command_id, 1)).accepted
    known = remembered(tree, sent)
    assert known == sent[len(sent) - len(known) :]  # the newest, oldest forgotten first
    assert most // 2 <= len(known) <= most
    # A forgotten id is new again: the same content is applied, and charged, once more.
    oldest = sent[0]
    assert tree.handle(calls(oldest, 1, at=T + 1)).amount == Decimal("0.10")
    assert tree.balance("acme") == Decimal(100) - Decimal("0.10") * (3 * most + 1)


def test_a_forgotten_generation_is_released_a_chunk_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Released at once, a generation of 50,000 ids held the host for tens of milliseconds:
    it is released in chunks, every one gone before the next generation fills, and none of
    it is looked up in the meantime."""
    tree = new_account("1000")
    monkeypatch.setattr(tree_module, "REMEMBERED_MAX", 40)
    monkeypatch.setattr(tree_module, "FORGET_EVERY", 4)
    monkeypatch.setattr(tree_module, "FORGET_CHUNK", 6)
    for number in range(40):  # two generations of 20, the second one just full
        assert tree.handle(calls(f"id-{number}", 1, at=T + number)).accepted
    assert len(tree._forgetting) == 0
    tree.handle(calls("id-40", 1, at=T + 40))  # the first generation stops being looked up
    assert len(tree._forgetting) == 20
    assert remembered(tree, ["id-0", "id-19", "id-20"]) == ["id-20"]
    sizes = []
    for number in range(41, 60):
        tree.handle(calls(f"id-{number}", 1, at=T + number))
        sizes.append(len(tree._forgetting))
    assert sizes[:3] == [20, 20, 14]  # a chunk once every FORGET_EVERY ids remembered
    assert sizes[-1] == 0 and len(tree.state.remembered) == 20  # gone before the next
    assert tree.handle(calls("id-0", 1, at=T + 60)).amount == Decimal("0.10")  # new again


def test_the_remembered_ids_travel_with_the_snapshot() -> None:
    tree = new_account()
    first = tree.handle(calls("x", 3))
    restored = TenantTree(decode(encode(tree.state)), TARIFFS)
    assert restored.state == tree.state
    assert restored.handle(calls("x", 3, at=T + 60)) == first
    assert restored.handle(calls("x", 4, at=T + 60)).reason is Reason.idempotency_conflict
    assert restored.balance("acme") == Decimal("9.70")


def test_reusing_a_forgotten_id_never_leaves_money_held_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tree = new_account()
    monkeypatch.setattr(tree_module, "REMEMBERED_MAX", 2)
    ttl = 7 * DAY
    assert tree.handle(
        Authorize(
            id="r1", tenant="acme", time=T, meter="calls", quantity=Decimal(10), ttl_seconds=ttl
        )
    ).accepted
    for number in range(4):
        assert tree.handle(calls(f"other-{number}", 1, at=T + 1 + number)).accepted
    assert remembered(tree, ["r1"]) == []
    tree.handle(calls("r1", 20, at=T + 10, command=Authorize))
    tree.handle(Advance(id="later", tenant="acme", time=T + 8 * DAY))
    assert tree.state.reservations == {}
    wallet = tree.state.nodes["acme"].wallet
    assert wallet is not None
    assert wallet.ledger.held == 0
    assert tree.available("acme") == tree.balance("acme") == Decimal("9.60")


def test_a_paid_top_up_reusing_a_forgotten_id_never_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tree = new_account("0.50")
    monkeypatch.setattr(tree_module, "REMEMBERED_MAX", 2)
    promotion = TopUp(
        id="t1",
        tenant="acme",
        time=T,
        amount=Decimal(5),
        kind=CreditKind.promotional,
        expires_at=T + 3 * DAY,
    )
    assert tree.handle(promotion).accepted
    for number in range(4):
        assert tree.handle(calls(f"other-{number}", 1, at=T + 1 + number)).accepted
    assert remembered(tree, ["t1"]) == []
    assert tree.handle(TopUp(id="t1", tenant="acme", time=T + DAY, amount=Decimal(50))).accepted
    tree.handle(Advance(id="later", tenant="acme", time=T + 4 * DAY))
    # The promotion's unspent 4.60 expire; the paid 50 do not.
    assert tree.balance("acme") == Decimal("50.50")


def _restamped(command: Command, time: int) -> Command:
    return command.__class__(**{**_fields(command), "time": time})


def _fields(command: Command) -> dict[str, Any]:
    return {name: getattr(command, name) for name in command.__struct_fields__}


def test_commands_leave_fields_at_their_default_out_and_read_either_form() -> None:
    """Journals, channel frames and snapshots hold commands without their default fields;
    entries written in full (by earlier versions) read as the same command."""
    import msgspec

    from engine.accounts.commands import ONE_UNIT

    record = Record(id="e1", tenant="acme", time=100, meter="calls", quantity=ONE_UNIT)
    short = msgspec.msgpack.encode(record)
    assert msgspec.msgpack.decode(short, type=Record) == record
    assert b"quantity" not in short and b"properties" not in short
    full = {
        "type": "record",
        "id": "e1",
        "tenant": "acme",
        "time": 100,
        "meter": "calls",
        "quantity": "1",
        "properties": {},
        "duration_seconds": 0,
        "usage_time": None,
    }
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(full), type=Command)
    assert decoded == record
    # An equal quantity made elsewhere is written out: its digits are kept as given.
    tenth = Record(id="e2", tenant="acme", time=100, meter="calls", quantity=Decimal("1.0"))
    assert msgspec.msgpack.decode(
        msgspec.msgpack.encode(tenth), type=Record
    ).quantity.as_tuple() == (Decimal("1.0").as_tuple())
