"""The ``aiq-pipelines`` console command."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

from aiq_pipelines.pos import demo
from aiq_pipelines.settings import SettingsError, get_settings


def _demo_data(args: argparse.Namespace) -> int:
    settings = get_settings()
    url = args.database_url or settings.pos_database_url
    options = demo.DemoOptions(
        days=args.days, stores=args.stores, seed=args.seed, end_date=args.end_date, min_sales=args.min_sales,
        max_sales=args.max_sales, timezone=settings.pos_timezone, timezones=tuple(args.timezones),
    )
    if args.if_absent:
        import sqlalchemy as sa

        from aiq_pipelines.db.engines import engine_for

        if sa.inspect(engine_for(url)).has_table("transactions"):
            print("demo POS already present; leaving it as it is")
            return 0
    started = time.monotonic()
    try:
        summary = demo.generate(url, options, replace=args.replace, progress=lambda m: print(m, flush=True))
    except demo.DemoDataExists as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {summary.transactions} transactions ({summary.transaction_items} lines), {summary.customers} customers, "
        f"{summary.products} products, {summary.locations} stores for {summary.first_day}..{summary.last_day} "
        f"in {time.monotonic() - started:.1f}s"
    )
    return 0


def _pull_api(args: argparse.Namespace) -> int:
    import uvicorn

    from aiq_pipelines.pull.server import build_app

    app = build_app(get_settings())
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiq-pipelines", description="aiq-pipelines utilities.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_cmd = commands.add_parser(
        "demo-data",
        help="write a deterministic demo dispensary into the POS database",
        description="Write a deterministic demo dispensary (reference schema) into POS_DATABASE_URL or --database-url.",
    )
    demo_cmd.add_argument("--days", type=int, default=90, help="business days of sales, ending at --end-date (90)")
    demo_cmd.add_argument("--stores", type=int, default=2, help="number of stores, 1-8 (2)")
    demo_cmd.add_argument("--seed", type=int, default=7, help="random seed: same seed and end date, same data (7)")
    demo_cmd.add_argument("--end-date", type=dt.date.fromisoformat, default=None,
                          help="last business day, YYYY-MM-DD (today in POS_TIMEZONE; sales after now are not written)")
    demo_cmd.add_argument("--min-sales", type=int, default=300, help="fewest sales a day per store (300)")
    demo_cmd.add_argument("--max-sales", type=int, default=1500, help="most sales a day per store (1500)")
    demo_cmd.add_argument("--timezones", type=lambda text: [z.strip() for z in text.split(",") if z.strip()],
                          default=[], help="each store's IANA time zone in turn, e.g. America/Phoenix,America/Denver "
                                           "(default: every store in POS_TIMEZONE)")
    demo_cmd.add_argument("--database-url", default=None, help="SQLAlchemy URL (default POS_DATABASE_URL)")
    demo_cmd.add_argument("--replace", action="store_true", help="drop and recreate the POS tables first")
    demo_cmd.add_argument("--if-absent", action="store_true", help="do nothing if the POS already has its tables")
    pull_cmd = commands.add_parser(
        "pull-api",
        help="serve the pull API (AIQ's option 1) from the sync database",
        description="Serve transactions, customers and inventory to AIQ over HTTP, read-only, from SYNC_DATABASE_URL. "
                    "Needs PULL_API_KEYS.",
    )
    pull_cmd.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
    pull_cmd.add_argument("--port", type=int, default=8766, help="port (8766)")
    args = parser.parse_args(argv)
    try:
        return _pull_api(args) if args.command == "pull-api" else _demo_data(args)
    except (SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
