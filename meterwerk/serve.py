"""``meterwerk serve``: the whole server from one command.

The embedded default needs nothing installed: a local Ray (dashboard off), SQLite and the file
journal under one data directory, and the gateway on one port. Postgres, Redis and an
existing Ray cluster are chosen by flags or by environment variables (``METERWERK_*``).

Stopping it (Ctrl-C, SIGTERM) drains the gateway, snapshots each host and stops the hosts with
the local Ray; starting it again on the same data recovers every account from its snapshot
and journal. Killed without warning, it recovers the same way, replaying more of the journal.
On an existing Ray cluster (``--ray-address``) the hosts are detached named actors shared
with other gateways: they are started if missing and left running on exit.

The catalogue (meters, tariffs, tenants) lives in the SQL database and starts empty; the hosts
read their tariffs from it when they start.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec

HOST_PREFIX: Final = "meterwerk-host"
LAYOUT_FILE: Final = "layout.json"
SNAPSHOT_TIMEOUT_SECONDS: Final = 60.0
CONNECTIONS_MAX: Final = 10_000
"""Connections and requests in progress at a time; uvicorn answers 503 past it."""
UVICORN: Final[dict[str, Any]] = {
    "loop": "auto",  # uvloop where installed (a dependency but on Windows), else asyncio
    "lifespan": "on",
    "access_log": False,
    "limit_concurrency": CONNECTIONS_MAX,
}
"""How the gateway is served; ``bench http`` serves its trivial endpoint the same way."""


class ServeError(Exception):
    """A server that must not start as asked."""


class ServeOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    data_dir: str = "./data"
    bind: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65_535)] = 8080
    hosts: Annotated[int, msgspec.Meta(ge=1, le=1_024)] | None = None
    """None: as many as the data directory was started with, or one per core but one at
    first."""
    journal_url: str | None = None
    database_url: str | None = None
    redis_snapshots_url: str | None = None
    ray_address: str | None = None
    create_admin_key: bool = False
    demo: bool = False


def add_arguments(parser: argparse.ArgumentParser, *, demo: bool = False) -> None:
    """The options of ``meterwerk serve`` (of ``meterwerk demo`` with ``demo``); each also
    read from an environment variable."""
    env = os.environ.get
    parser.add_argument(
        "--data-dir",
        default=env("METERWERK_DATA_DIR", "./data"),
        help="journal, SQLite database and snapshots (default ./data; METERWERK_DATA_DIR)",
    )
    parser.add_argument(
        "--bind",
        default=env("METERWERK_BIND", "127.0.0.1"),
        help="address to listen on (default 127.0.0.1; METERWERK_BIND)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(env("METERWERK_PORT", "8080")),
        help="HTTP port (default 8080; METERWERK_PORT)",
    )
    parser.add_argument(
        "--hosts",
        type=int,
        default=int(env("METERWERK_HOSTS", "0")) or None,
        help="account hosts (Ray actors): one per core but one (at least one) when the data "
        "directory is new, then as many as it was started with (METERWERK_HOSTS)",
    )
    parser.add_argument(
        "--journal-url",
        default=env("METERWERK_JOURNAL_URL"),
        help="postgresql://… or redis://… (default: a file journal in the data directory; "
        "METERWERK_JOURNAL_URL)",
    )
    parser.add_argument(
        "--database-url",
        default=env("METERWERK_DATABASE_URL"),
        help="postgresql+psycopg://… for the catalogue, keys and snapshots (default: SQLite "
        "in the data directory; METERWERK_DATABASE_URL)",
    )
    parser.add_argument(
        "--redis-snapshots-url",
        default=env("METERWERK_REDIS_SNAPSHOTS_URL"),
        help="also keep snapshots in Redis, for fast warm restarts (METERWERK_REDIS_SNAPSHOTS_URL)",
    )
    parser.add_argument(
        "--ray-address",
        default=env("METERWERK_RAY_ADDRESS"),
        help="an existing Ray cluster (default: start a local one; METERWERK_RAY_ADDRESS)",
    )
    if demo:
        return
    parser.add_argument(
        "--demo",
        action="store_true",
        help="load the example catalogue and a demo tenant tree with credit (as meterwerk demo)",
    )
    parser.add_argument(
        "--create-admin-key",
        action="store_true",
        help="create an admin API key, print it once, and exit",
    )


def options_from(args: argparse.Namespace) -> ServeOptions:
    fields = {name: getattr(args, name) for name in ServeOptions.__struct_fields__}
    return msgspec.convert(fields, type=ServeOptions)


def storage_config(options: ServeOptions) -> Any:
    from actors.storage import StorageConfig

    return StorageConfig(
        data_dir=str(Path(options.data_dir).resolve()),
        journal_url=options.journal_url,
        database_url=options.database_url,
        redis_snapshots_url=options.redis_snapshots_url,
    )


def create_admin_key(database_url: str) -> str:
    """A new admin key's plaintext: shown once, stored only as a hash."""
    from persistence.credentials import ApiKeys
    from persistence.migrate import migrate

    migrate(database_url)
    keys = ApiKeys(database_url)
    try:
        return keys.create(["admin"], None)[1]
    finally:
        keys.close()


class Server:
    """The account hosts and the gateway app over one storage configuration."""

    def __init__(
        self, options: ServeOptions, *, prefix: str = HOST_PREFIX, keep_hosts: bool | None = None
    ) -> None:
        self.options = options
        self.config = storage_config(options)
        self.prefix = prefix
        # Whether stopping leaves the hosts running: by default, only on a Ray this process
        # did not start, where other gateways may be using them.
        self.keep_hosts = keep_hosts
        self.hosts: Any = None
        self._owns_ray = False

    def start(self) -> None:
        from actors import cluster
        from actors.ray_host import Hosts
        from persistence.migrate import migrate

        migrate(self.config.sql_url)
        count = host_count(self.config.data_dir, self.options.hosts)
        self._owns_ray = cluster.connect(self.options.ray_address)
        if self.keep_hosts is None:
            self.keep_hosts = not self._owns_ray
        self.hosts = Hosts(count, self.config, prefix=self.prefix)
        print(f"meterwerk: starting {count} account host(s)…", file=sys.stderr)
        self.hosts.start()

    def app(self) -> Any:
        from gateway.app import create_app

        return create_app(self.hosts, self.config.sql_url)

    def stop(self) -> None:
        from actors import cluster

        try:
            if self.hosts is not None and not self.keep_hosts:
                if self._owns_ray:
                    # Ctrl+C reaches Ray's own processes too; the snapshot is a courtesy with
                    # a deadline (the journal has everything), and shutting Ray down ends the
                    # hosts.
                    cluster.snapshot_within(self.hosts, SNAPSHOT_TIMEOUT_SECONDS)
                else:
                    cluster.stop_hosts(self.hosts, SNAPSHOT_TIMEOUT_SECONDS)
        finally:
            if self._owns_ray:
                cluster.disconnect()


class Layout(msgspec.Struct, frozen=True, kw_only=True):
    """What a data directory was started with: ``layout.json``."""

    hosts: int


def default_hosts(cores: int) -> int:
    """One account host per core but one, which the gateway's event loop takes.

    On two cores, one host answered as many authorise-and-record requests as two, with half
    the hosts' CPU (a call costs a host as much for one command as for fifty) and a lower
    tail latency (``meterwerk bench --hosts 1`` and ``--hosts 2``)."""
    return max(1, cores - 1)


def host_count(data_dir: str, wanted: int | None) -> int:
    """The number of hosts, kept in the data directory: a tenant's host is a hash of its root
    over the hosts, so a different number would look for trees where they are not."""
    path = Path(data_dir) / LAYOUT_FILE
    stored = msgspec.json.decode(path.read_bytes(), type=Layout).hosts if path.exists() else None
    if stored is not None and wanted is not None and stored != wanted:
        raise ServeError(
            f"{data_dir} holds accounts placed over {stored} hosts; start it with "
            f"--hosts {stored} (changing the number of hosts needs a migration of the trees)"
        )
    count = stored or wanted or default_hosts(os.cpu_count() or 1)
    if stored is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(msgspec.json.encode(Layout(hosts=count)))
    return count


def serve(options: ServeOptions) -> int:
    config = storage_config(options)
    if options.create_admin_key:
        print(create_admin_key(config.sql_url))
        print("meterwerk: keep this key; it is not shown again.", file=sys.stderr)
        return 0
    server = Server(options)
    try:
        server.start()
        if options.demo:
            _print_demo(server, options)
        _run_gateway(server.app(), options)
    except ServeError as error:
        print(f"meterwerk: {error}", file=sys.stderr)
        return 2
    finally:
        server.stop()
    return 0


def _print_demo(server: Server, options: ServeOptions) -> None:
    from meterwerk.demo import DEMO_TENANT, SHOP_A, SHOP_B, seed

    key = seed(server.hosts, server.config.sql_url)
    admin_key = create_admin_key(server.config.sql_url)
    base = f"http://{options.bind}:{options.port}"
    body = f'{{"id": "sms-1", "tenant": "{SHOP_A}", "meter": "sms"}}'
    auth = 'curl -s -H "Authorization: Bearer $KEY"'
    print(
        f"meterwerk: demo tree {DEMO_TENANT!r} (20.00 EUR prepaid) with customers {SHOP_A!r} "
        f"(draws from its pool, capped at 5.00 EUR) and {SHOP_B!r} (3.00 EUR of its own); "
        "some SMS recorded on each.\n"
        f"  export KEY={key}          # usage key for the demo tree\n"
        f"  export ADMIN_KEY={admin_key}   # admin key\n"
        f"  {auth} {base}/v1/tenants/{DEMO_TENANT}/balance\n"
        f"  {auth} -d '{body}' {base}/v1/record\n"
        f"  {auth} {base}/v1/tenants/{SHOP_B}/balance\n"
        f"  The API: {base}/openapi.json, docs/api.md\n",
        file=sys.stderr,
    )


def _run_gateway(app: Any, options: ServeOptions) -> None:
    print(
        f"meterwerk: serving on http://{options.bind}:{options.port} "
        f"(data in {Path(options.data_dir).resolve()})",
        file=sys.stderr,
    )
    run_uvicorn(app, options.bind, options.port, timeout_graceful_shutdown=10, log_level="info")


def run_uvicorn(app: Any, host: str, port: int, **settings: Any) -> None:
    """Serve ``app`` with :data:`UVICORN` (and ``settings``) until stopped."""
    import gc

    import uvicorn

    # Ray, SQLAlchemy and the rest leave some hundred thousand long-lived objects, and every
    # full collection walked them all: pauses of up to 70 ms, which were the p99 latency of
    # the hot path (load_tests/bench_http.py). Frozen, the collector skips them.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, **UVICORN, **settings)


def main(args: argparse.Namespace) -> int:
    return serve(options_from(args))
