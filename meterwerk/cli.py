"""The ``meterwerk`` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meterwerk", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the server (embedded default)")
    serve.set_defaults(handler=_serve)
    bench = commands.add_parser("bench", help="run a benchmark and print its figures")
    bench.add_argument(
        "what",
        choices=["engine", "accounts", "host", "recovery", "journal"],
        help="engine: rating per model; accounts: records and reservations; host: durable "
        "records per journal backend; recovery: restart of 10,000 accounts; journal: appends",
    )
    bench.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    bench.set_defaults(handler=_bench)
    rate = commands.add_parser("rate", help="rate a file of events against a catalogue")
    rate.add_argument("catalog", help="catalogue JSON (meters and tariffs)")
    rate.add_argument("tariff", help="tariff key")
    rate.add_argument("events", help="JSON array of events")
    rate.add_argument("--time-zone", default="UTC")
    rate.set_defaults(handler=_rate)
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


def _serve(args: argparse.Namespace) -> int:
    # The HTTP server arrives with the account hosts and the gateway (issues 4 and 5). Until
    # then `serve` starts what exists: it rates the example catalogue and prints statements.
    from pathlib import Path

    from meterwerk.rate_file import rate_file

    examples = Path(__file__).resolve().parent.parent / "docs" / "examples"
    print(
        "meterwerk: the HTTP server is not built yet; rating the example catalogue instead.\n",
        file=sys.stderr,
    )
    return rate_file(
        str(examples / "catalog.json"), "api-plan", str(examples / "events.json"), "UTC"
    )


def _bench(args: argparse.Namespace) -> int:
    if args.what == "host":
        from load_tests.bench_host import run_host

        return run_host(seconds=args.seconds)
    if args.what == "recovery":
        from load_tests.bench_host import run_recovery

        return run_recovery()
    if args.what == "journal":
        from load_tests.bench_journal import run as run_journal

        return int(run_journal(seconds=args.seconds) or 0)
    if args.what == "accounts":
        from load_tests.bench_accounts import run as run_accounts

        return run_accounts(seconds=args.seconds)
    from load_tests.bench_engine import run

    return run(seconds=args.seconds)


def _rate(args: argparse.Namespace) -> int:
    from meterwerk.rate_file import rate_file

    return rate_file(args.catalog, args.tariff, args.events, args.time_zone)


if __name__ == "__main__":
    raise SystemExit(main())
