"""The SQL stores, each test on SQLite (a file) and on Postgres (a schema of its own)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from msgspec.structs import replace
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url

from engine.accounts.settings import Funding, Quota, TenantSettings
from engine.meters import Aggregation, Meter
from engine.tariffs import PaymentMode, decode_tariff
from persistence.catalogue import BillingAddress, Catalogue, FailurePolicy, Tenant
from persistence.columns import check_money
from persistence.credentials import ApiKeys, Users
from persistence.database import engine_for
from persistence.migrate import current, head, migrate
from persistence.models import ApiKeyRow, Base, SnapshotRow, UserRow
from persistence.sql import SqlSnapshotStore, SqlStatementQueue


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh Postgres schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'meterwerk.db'}"
        return
    server = make_url(request.getfixturevalue("postgres_url"))
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = engine_for(server)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = server.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def url(database_url: str) -> str:
    migrate(database_url)
    return database_url


# Migrations -------------------------------------------------------------------------------


def test_migrating_twice_changes_nothing(database_url: str) -> None:
    migrate(database_url)
    engine = engine_for(database_url)
    try:
        with engine.connect() as connection:
            tables = sorted(inspect(connection).get_table_names())
            assert current(connection) == head()
        migrate(database_url)
        with engine.connect() as connection:
            assert sorted(inspect(connection).get_table_names()) == tables
            assert current(connection) == head()
            assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()
    assert {"tenants", "statement_queue", "snapshots", "meterwerk_journal"} <= set(tables)


def test_hosts_starting_together_migrate_once(database_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(database_url)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_the_migration_creates_what_the_models_describe(url: str) -> None:
    engine = engine_for(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


# Snapshots --------------------------------------------------------------------------------


def test_a_snapshot_replaces_the_older_ones_of_its_host(url: str) -> None:
    store = SqlSnapshotStore(url)
    try:
        assert store.load("host-a") is None
        store.save("host-a", 10, b"first")
        store.save("host-b", 3, b"other host")
        store.save("host-a", 25, b"\x00second\xff")
        assert store.load("host-a") == (25, b"\x00second\xff")
        assert store.load("host-b") == (3, b"other host")
        with store.engine.connect() as connection:
            rows = connection.execute(select(SnapshotRow.host, SnapshotRow.sequence)).all()
        assert sorted(rows) == [("host-a", 25), ("host-b", 3)]
    finally:
        store.close()


def test_a_snapshot_at_the_same_sequence_replaces_the_data(url: str) -> None:
    store = SqlSnapshotStore(url)
    try:
        store.save("host-a", 7, b"one")
        store.save("host-a", 7, b"two")
        assert store.load("host-a") == (7, b"two")
    finally:
        store.close()


def test_an_older_snapshot_is_refused_and_changes_nothing(url: str) -> None:
    store = SqlSnapshotStore(url)
    try:
        store.save("host-a", 40, b"newest")
        with pytest.raises(ValueError, match="newer"):
            store.save("host-a", 39, b"stale")
        assert store.load("host-a") == (40, b"newest")
        with pytest.raises(ValueError, match="host name"):
            store.save("../etc", 1, b"")
    finally:
        store.close()


# Statement queue --------------------------------------------------------------------------


def test_putting_a_statement_again_queues_it_once(url: str) -> None:
    queue = SqlStatementQueue(url)
    try:
        queue.put([("t-1", 1_700_000_000, 0, b"s1"), ("t-2", 1_700_000_000, 0, b"s2")])
        queue.put([("t-1", 1_700_000_000, 0, b"s1")])  # a host replaying its journal
        queue.put([("t-1", 1_700_000_000, 1, b"s1 revised")])
        taken = queue.take(limit=2)
        assert [(item.tenant, item.revision, item.statement) for item in taken] == [
            ("t-1", 0, b"s1"),
            ("t-2", 0, b"s2"),
        ]
        assert [(item.tenant, item.revision) for item in queue.take()] == [("t-1", 1)]
        assert queue.take() == []
        queue.put([("t-2", 1_700_000_000, 0, b"s2")])  # a replay after it was taken
        assert queue.take() == []
    finally:
        queue.close()


def test_concurrent_takers_never_get_the_same_statement(url: str) -> None:
    queue = SqlStatementQueue(url)
    try:
        queue.put([(f"t-{n}", 0, 0, b"s") for n in range(200)])
        taken: list[str] = []
        lock = threading.Lock()

        def take() -> None:
            while batch := queue.take(limit=7):
                with lock:
                    taken.extend(item.tenant for item in batch)

        threads = [threading.Thread(target=take) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(taken) == sorted(f"t-{n}" for n in range(200))
    finally:
        queue.close()


# Catalogue --------------------------------------------------------------------------------

TARIFF = b"""{
  "key": "api-plan",
  "name": "API plan",
  "versions": [
    {"version": 1, "effective_from": "2024-01-01T00:00:00Z", "currency": "EUR",
     "period": {"unit": "month"},
     "charges": [{"key": "calls", "meter": "api_calls",
                  "price": {"model": "overage", "included": "10000", "unit_price": "0.002"}}],
     "recurring_fees": [{"key": "base", "name": "Base fee", "amount": "29.00"}]},
    {"version": 2, "effective_from": "2024-06-15T00:00:00Z", "currency": "EUR",
     "period": {"unit": "month"}, "time_zone": "Europe/Berlin",
     "charges": [{"key": "calls", "meter": "api_calls",
                  "price": {"model": "graduated", "tiers": [
                      {"up_to": "1000", "unit_price": "0"},
                      {"up_to": null, "unit_price": "0.000123456789"}]}}]},
    {"version": 3, "effective_from": "2025-01-01T00:00:00Z", "currency": "EUR",
     "period": {"unit": "month"}, "payment_mode": "postpaid",
     "charges": [{"key": "calls", "meter": "api_calls",
                  "price": {"model": "per_unit", "unit_price": "0.0015"}}]}
  ]
}"""

API_CALLS = Meter(key="api_calls", unit="call", aggregation=Aggregation.count)


def test_a_tariff_with_its_versions_round_trips(url: str) -> None:
    catalogue = Catalogue(url)
    try:
        tariff = decode_tariff(TARIFF)
        catalogue.save_meter(API_CALLS)
        catalogue.save_tariff(tariff)
        assert catalogue.tariff("api-plan") == tariff
        assert catalogue.meter("api_calls") == API_CALLS
        assert catalogue.tariff("nothing") is None
        assert catalogue.catalog().tariffs == (tariff,)
    finally:
        catalogue.close()


def test_a_tariff_needs_its_meters_and_keeps_its_stored_versions(url: str) -> None:
    catalogue = Catalogue(url)
    try:
        tariff = decode_tariff(TARIFF)
        with pytest.raises(ValueError, match="unknown meter 'api_calls'"):
            catalogue.save_tariff(tariff)
        catalogue.save_meter(API_CALLS)
        catalogue.save_tariff(tariff)
        shorter = replace(decode_tariff(TARIFF), versions=tariff.versions[:2])
        with pytest.raises(ValueError, match=r"stored versions \[3\] cannot be removed"):
            catalogue.save_tariff(shorter)
        assert catalogue.tariff("api-plan") == tariff
        gauge = Meter(key="api_calls", unit="GB", aggregation=Aggregation.max)
        catalogue.save_meter(gauge)  # every charge of the tariff still applies to a max meter
        assert catalogue.meter("api_calls") == gauge
    finally:
        catalogue.close()


def test_a_tenant_tree_with_settings_round_trips(url: str) -> None:
    catalogue = Catalogue(url)
    try:
        catalogue.save_meter(API_CALLS)
        catalogue.save_tariff(decode_tariff(TARIFF))
        root = Tenant(
            id="acme",
            name="ACME GmbH",
            currency="EUR",
            locale="de_DE",
            vat_id="DE123456789",
            address=BillingAddress(
                line1="Hauptstr. 1", postal_code="10115", city="Berlin", country="DE"
            ),
            failure_policy=FailurePolicy.allow_overdraft,
            # More significant digits than a float holds: stored exactly, or this fails.
            overdraft_cap=Decimal("1234567890.123456789012"),
            settings=TenantSettings(
                tariff="api-plan",
                time_zone="Europe/Berlin",
                credit_limit=Decimal("500.5"),
                balance_alerts=(Decimal("10"), Decimal("0.000000000001")),
                quotas=(Quota(meter="api_calls", hard=Decimal("1e6")),),
            ),
        )
        child = Tenant(
            id="acme:dev",
            name="ACME dev team",
            currency="EUR",
            payment_mode=PaymentMode.postpaid,
            settings=TenantSettings(
                parent="acme", funding=Funding.pool, tariff="api-plan", cap=Decimal("99.99")
            ),
        )
        catalogue.save_tenant(root)
        catalogue.save_tenant(child)
        assert catalogue.tenant("acme") == root
        assert catalogue.tenant("acme:dev") == child
        assert catalogue.root_of("acme:dev") == "acme"
        assert catalogue.list_tenants(root="acme") == [root, child]
        renamed = replace(root, name="ACME AG")
        catalogue.save_tenant(renamed)
        assert catalogue.tenant("acme") == renamed
    finally:
        catalogue.close()


def test_a_tenant_stays_in_its_tree_and_needs_known_references(url: str) -> None:
    catalogue = Catalogue(url)
    try:
        catalogue.save_meter(API_CALLS)
        catalogue.save_tariff(decode_tariff(TARIFF))
        settings = TenantSettings(tariff="api-plan")
        catalogue.save_tenant(Tenant(id="a", name="A", currency="EUR", settings=settings))
        catalogue.save_tenant(Tenant(id="b", name="B", currency="EUR", settings=settings))
        child = Tenant(id="a1", name="A1", currency="EUR", settings=replace(settings, parent="a"))
        catalogue.save_tenant(child)
        moved = replace(child, settings=replace(settings, parent="b"))
        with pytest.raises(ValueError, match="cannot change parent"):
            catalogue.save_tenant(moved)
        orphan = replace(child, id="x1", settings=replace(settings, parent="nobody"))
        with pytest.raises(ValueError, match="unknown tenant 'nobody'"):
            catalogue.save_tenant(orphan)
        unpriced = Tenant(
            id="c", name="C", currency="EUR", settings=TenantSettings(tariff="no-such-plan")
        )
        with pytest.raises(ValueError, match="unknown tariff"):
            catalogue.save_tenant(unpriced)
    finally:
        catalogue.close()


def test_tariff_assignments_are_kept_in_time_order(url: str) -> None:
    catalogue = Catalogue(url)
    try:
        catalogue.save_meter(API_CALLS)
        catalogue.save_tariff(decode_tariff(TARIFF))
        settings = TenantSettings(tariff="api-plan")
        catalogue.save_tenant(Tenant(id="a", name="A", currency="EUR", settings=settings))
        later = datetime(2025, 3, 1, tzinfo=UTC)
        earlier = datetime(2024, 1, 1, tzinfo=UTC)
        catalogue.assign_tariff("a", "api-plan", later)
        catalogue.assign_tariff("a", "api-plan", earlier)
        assert [a.effective_from for a in catalogue.assignments("a")] == [earlier, later]
    finally:
        catalogue.close()


def test_lists_come_in_pages(url: str) -> None:
    catalogue = Catalogue(url)
    try:
        meters = [Meter(key=f"m{n}", unit="u", aggregation=Aggregation.sum) for n in range(5)]
        for meter in reversed(meters):
            catalogue.save_meter(meter)
        first = catalogue.list_meters(limit=2)
        second = catalogue.list_meters(limit=2, after=first[-1].key)
        third = catalogue.list_meters(limit=2, after=second[-1].key)
        assert [first, second, third] == [meters[0:2], meters[2:4], meters[4:]]
        assert catalogue.list_meters(limit=2, after=third[-1].key) == []
        with pytest.raises(ValueError, match="limit"):
            catalogue.list_meters(limit=0)
    finally:
        catalogue.close()


def test_money_is_a_decimal_or_nothing() -> None:
    with pytest.raises(TypeError):
        check_money(0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decimals"):
        check_money(Decimal("1e-19"))
    assert check_money(Decimal("-12.5")) == Decimal("-12.5")


# Credentials ------------------------------------------------------------------------------


def test_an_api_key_verifies_until_revoked_and_is_stored_only_as_a_hash(url: str) -> None:
    keys = ApiKeys(url)
    try:
        key_id, plaintext = keys.create(["usage:write", "usage:read"], tenant_root=None)
        secret = plaintext[len("mwk_0123456789abcdef_") :]
        with keys.engine.connect() as connection:
            row = connection.execute(select(ApiKeyRow.__table__)).one()
        stored = " ".join(str(value) for value in row)
        assert plaintext not in stored and secret not in stored
        assert row.prefix == plaintext[:12]

        verified = keys.verify(plaintext)
        assert verified is not None
        assert (verified.id, verified.scopes, verified.tenant_root) == (
            key_id,
            ("usage:write", "usage:read"),
            None,
        )
        assert keys.verify(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
        assert keys.verify("mwk_0000000000000000_" + secret) is None
        assert keys.verify("not a key") is None

        assert keys.revoke(key_id) is True
        assert keys.revoke(key_id) is False
        assert keys.verify(plaintext) is None
        revoked = keys.get(key_id)
        assert revoked is not None and revoked.revoked_at is not None
    finally:
        keys.close()


def test_an_api_key_can_be_limited_to_a_tenant_tree(url: str) -> None:
    catalogue = Catalogue(url)
    keys = ApiKeys(catalogue.engine)
    try:
        catalogue.save_meter(API_CALLS)
        catalogue.save_tariff(decode_tariff(TARIFF))
        tenant = Tenant(
            id="acme", name="ACME", currency="EUR", settings=TenantSettings(tariff="api-plan")
        )
        catalogue.save_tenant(tenant)
        key_id, plaintext = keys.create(["usage:write"], tenant_root="acme")
        verified = keys.verify(plaintext)
        assert verified is not None and verified.tenant_root == "acme"
        assert [key.id for key in keys.list_keys(tenant_root="acme")] == [key_id]
        with pytest.raises(ValueError, match="scope"):
            keys.create(["Not A Scope"], tenant_root=None)
    finally:
        keys.close()
        catalogue.close()


def test_a_user_signs_in_with_the_password_only(url: str) -> None:
    users = Users(url)
    try:
        password = "correct horse battery staple"
        user = users.create("Admin@Example.org", password, "admin")
        assert users.verify("admin@example.org", password) == user
        assert users.verify("admin@example.org", password + "!") is None
        assert users.verify("nobody@example.org", password) is None
        with users.engine.connect() as connection:
            stored = " ".join(str(value) for value in connection.execute(select(UserRow)).one())
        assert password not in stored
    finally:
        users.close()
