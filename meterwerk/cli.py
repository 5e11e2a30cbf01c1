"""The ``meterwerk`` command."""

from __future__ import annotations

import argparse

from meterwerk import serve as server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meterwerk", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the server (embedded default)")
    server.add_arguments(serve)
    serve.set_defaults(handler=server.main)
    demo = commands.add_parser(
        "demo", help="start the server with a demo tenant tree, tariffs and some usage"
    )
    server.add_arguments(demo, demo=True)
    demo.set_defaults(handler=server.main, demo=True, create_admin_key=False)
    bench = commands.add_parser("bench", help="run a benchmark and print its figures")
    bench.add_argument(
        "what",
        nargs="?",
        default="http",
        choices=["http", "engine", "accounts", "host", "recovery", "journal"],
        help="http (the default): the whole server over HTTP against a trivial endpoint, with "
        "wrk; engine: rating per model; accounts: records and reservations; host: durable "
        "records per journal backend; recovery: restart of 10,000 accounts; journal: appends",
    )
    bench.add_argument("--seconds", type=float, help="time per measurement (default 1; http: 10)")
    bench.add_argument("--connections", type=int, default=64, help="http: connections")
    bench.add_argument("--threads", type=int, default=2, help="http: wrk threads")
    bench.add_argument("--tenants", type=int, default=4, help="http: tenants (each a key)")
    bench.add_argument("--hosts", type=int, help="http: account hosts (default: the server's)")
    bench.set_defaults(handler=_bench)
    admin_key = commands.add_parser(
        "create-admin-key", help="create an admin API key and print it once"
    )
    admin_key.set_defaults(handler=_create_admin_key)
    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(handler=_migrate)
    for database in (admin_key, migrate):
        database.add_argument("--data-dir", default="./data", help="the server's data directory")
        database.add_argument("--database-url", help="the catalogue database (default: SQLite)")
    rate = commands.add_parser("rate", help="rate a file of events against a catalogue")
    rate.add_argument("catalog", help="catalogue JSON (meters and tariffs)")
    rate.add_argument("tariff", help="tariff key")
    rate.add_argument("events", help="JSON array of events")
    rate.add_argument("--time-zone", default="UTC")
    rate.set_defaults(handler=_rate)
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


def _database_url(args: argparse.Namespace) -> str:
    options = server.ServeOptions(data_dir=args.data_dir, database_url=args.database_url)
    return str(server.storage_config(options).sql_url)


def _create_admin_key(args: argparse.Namespace) -> int:
    print(server.create_admin_key(_database_url(args)))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from persistence.migrate import migrate

    migrate(_database_url(args))
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.what == "http":
        from load_tests.bench_http import run as run_http

        return run_http(
            seconds=args.seconds or 10.0,
            connections=args.connections,
            threads=args.threads,
            tenants=args.tenants,
            hosts=args.hosts,
        )
    if args.what == "recovery":
        from load_tests.bench_host import run_recovery

        return run_recovery()
    seconds = args.seconds or 1.0
    if args.what == "host":
        from load_tests.bench_host import run_host

        return run_host(seconds=seconds)
    if args.what == "journal":
        from load_tests.bench_journal import run as run_journal

        return run_journal(seconds=seconds)
    if args.what == "accounts":
        from load_tests.bench_accounts import run as run_accounts

        return run_accounts(seconds=seconds)
    from load_tests.bench_engine import run

    return run(seconds=seconds)


def _rate(args: argparse.Namespace) -> int:
    from meterwerk.rate_file import rate_file

    return rate_file(args.catalog, args.tariff, args.events, args.time_zone)


if __name__ == "__main__":
    raise SystemExit(main())
