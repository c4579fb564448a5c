"""The ``aiq-pipelines`` console command."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import yaml

from aiq_pipelines.pos import demo
from aiq_pipelines.settings import DATA_DIR, DEFAULT_AIQ_BASE_URL, SettingsError, get_settings, read_accounts_file

DEMO_ACCOUNTS_FILE = DATA_DIR / "aiq_accounts.yaml"


def demo_account_port(number: int) -> int:
    """The local sandbox port of demo account ``number`` (1, 2, ...): 8765, 8775, 8785, ..."""
    return int(DEFAULT_AIQ_BASE_URL.rsplit(":", 1)[1]) + 10 * (number - 1)


def write_demo_accounts(path: Path, stores: int, accounts: int) -> None:
    """An AIQ_ACCOUNTS_FILE that deals the demo's stores out to ``accounts`` local sandboxes in turn (store 1 to
    account 1, store 2 to account 2, ...); account 1 uses AIQ_API_KEY and uid "sandbox", account k AIQ_API_KEY_k and
    "sandbox-k"; account k's pull API keys are in PULL_API_KEYS_k. Checked by reading it back as the code location
    will."""
    if not 1 <= accounts <= stores:
        raise ValueError(f"--accounts must be between 1 and the number of stores ({stores}), got {accounts}")
    entries = [
        {"name": f"account_{k}", "uid": "sandbox" if k == 1 else f"sandbox-{k}",
         "base_url": f"http://127.0.0.1:{demo_account_port(k)}", "api_key_env": "AIQ_API_KEY" if k == 1 else f"AIQ_API_KEY_{k}",
         "pull_api_keys_env": f"PULL_API_KEYS_{k}",
         "locations": [f"STORE-{i + 1:02d}" for i in range(stores) if i % accounts == k - 1]}
        for k in range(1, accounts + 1)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by `aiq-pipelines demo-data --accounts`: the demo's stores dealt out to local sandboxes.\n"
                    + yaml.safe_dump({"accounts": entries}, sort_keys=False))
    read_accounts_file(path)


def _demo_data(args: argparse.Namespace) -> int:
    settings = get_settings()
    url = args.database_url or settings.pos_database_url
    options = demo.DemoOptions(
        days=args.days, stores=args.stores, seed=args.seed, end_date=args.end_date, min_sales=args.min_sales,
        max_sales=args.max_sales, timezone=settings.pos_timezone, timezones=tuple(args.timezones),
    )
    if args.accounts:
        write_demo_accounts(args.accounts_file, args.stores, args.accounts)
        print(f"wrote {args.accounts_file}: {args.accounts} AIQ accounts; set AIQ_ACCOUNTS_FILE={args.accounts_file}")
    if args.csv is not None:
        return _demo_csv(args, options)
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


def _demo_csv(args: argparse.Namespace, options: demo.DemoOptions) -> int:
    """The demo as a drop folder: generated into --database-url (or a scratch database), then exported as CSV."""
    import tempfile

    from aiq_pipelines.db.engines import engine_for
    from aiq_pipelines.pos.dropfiles import export_tables, kind_of

    folder: Path = args.csv
    if args.if_absent and folder.is_dir() and any(kind_of(path.name) for path in folder.iterdir()):
        print(f"drop folder {folder} already holds drop files; leaving it as it is")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite:///{Path(scratch) / 'demo.db'}"
        try:
            demo.generate(url, options, replace=args.replace)
        except demo.DemoDataExists as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        engine = engine_for(url)
        written = export_tables(engine, folder, gzip_files=args.gzip)
        engine.dispose()
    print(f"wrote the demo as drop files into {folder}: " + ", ".join(f"{n:,} {t}" for t, n in written.items()))
    return 0


def _preview(args: argparse.Namespace) -> int:
    """A dry run of daily_sync over [--from, --to], in this process: the extract as usual, nothing sent to AIQ; the run
    carries the dry run's tag, as daily_sync_dry_run's runs do."""
    import dagster as dg

    from aiq_pipelines.defs.aiq_assets import aiq_push
    from aiq_pipelines.defs.dry_run import DRY_RUN_CONFIG, DRY_RUN_SELECTION, DRY_RUN_TAGS
    from aiq_pipelines.defs.pos_assets import pos_personas, pos_transactions
    from aiq_pipelines.defs.resources import build_resources

    if args.last < args.first:
        raise ValueError(f"--to ({args.last}) is before --from ({args.first})")
    tags = {"dagster/asset_partition_range_start": args.first.isoformat(),
            "dagster/asset_partition_range_end": args.last.isoformat(), **DRY_RUN_TAGS}
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([pos_transactions, pos_personas, aiq_push], selection=DRY_RUN_SELECTION,
                                resources=build_resources(get_settings()), instance=instance, tags=tags,
                                raise_on_error=False, run_config=DRY_RUN_CONFIG)
        if not result.success:
            failure = next((e for e in result.all_events if e.is_step_failure), None)
            print(f"error: the dry run failed: {failure.message if failure else 'see the log above'}", file=sys.stderr)
            return 1
        shown = set()
        for event in result.all_events:
            if event.event_type_value != "ASSET_OBSERVATION":
                continue
            observation = event.event_specific_data.asset_observation
            if observation.asset_key in shown:
                continue  # one observation per day of the window, each with the window's figures
            shown.add(observation.asset_key)
            meta = {k: v.value for k, v in observation.metadata.items()}
            print(f"{observation.asset_key.to_user_string()}: {meta['would_send']:,} would be sent ({meta['new']:,} "
                  f"new, {meta['changed']:,} changed, {meta['overrides']:,} through the override), "
                  f"{meta['unchanged']:,} unchanged, {meta['quarantined']:,} quarantined; {meta['aiq_requests']:,} "
                  f"requests, {meta['seconds_at_limits']} s at the account's limits")
            print("  " + meta["samples"].replace("\n", "\n  "))
    return 0


ERASED_BUT_STILL_HELD = 3  # forget-shopper's exit status when the POS (or a drop file) still holds the shopper


def _forget_shopper(args: argparse.Namespace) -> int:
    """Erase one shopper from everything aiq-pipelines keeps, as the job forget_shopper does."""
    import getpass
    import socket

    from aiq_pipelines.defs.erasure import erase
    from aiq_pipelines.defs.resources import DropFolder, PosDatabase, SyncDatabase

    settings = get_settings()  # outside a run, the URLs as read (a run's resources read them through dg.EnvVar)
    erasure = erase(args.customer_id, args.by or f"{getpass.getuser()}@{socket.gethostname()} (forget-shopper)",
                    SyncDatabase.from_settings(settings, url=settings.sync_database_url),
                    PosDatabase.from_settings(settings, url=settings.pos_database_url),
                    DropFolder.from_settings(settings) if settings.pos_drop_dir is not None else None)
    for line in erasure.summary():
        print(line, file=sys.stderr if line.startswith("WARNING") else sys.stdout)
    return ERASED_BUT_STILL_HELD if erasure.still_in else 0


def _dev(args: argparse.Namespace) -> int:
    """``make dev``: the local sandbox(es) when AIQ_BASE_URL points at one, the pull API and ``dg dev``, until Ctrl-C."""
    import os

    from aiq_pipelines import devstack

    settings = get_settings()
    env = {**os.environ, "VIRTUAL_ENV": sys.prefix}
    if "POS_START_DATE" not in os.environ:  # the demo's first day, read from the POS at each start: it cannot drift
        first = devstack.first_sale_day(settings.pos_database_url, settings.pos_timezone)
        if first is not None:
            env["POS_START_DATE"] = first.isoformat()
    bin_dir = Path(sys.executable).parent
    services: list[tuple[str, list[str], Path | None]] = []
    pull_keys = "PULL_API_KEYS"
    if args.accounts > 1:  # each demo account reads the pull API with its own key; a key for all would be refused
        env["AIQ_ACCOUNTS_FILE"] = str(DEMO_ACCOUNTS_FILE.resolve())
        env.pop("PULL_API_KEYS", None)
        for k in range(1, args.accounts + 1):
            env.setdefault(f"PULL_API_KEYS_{k}", f"pull-dev-key-{k}")
        pull_keys = f"PULL_API_KEYS_1..{args.accounts}"
    base = settings.aiq_base_url
    if base.startswith("http://127.0.0.1:"):
        for k in range(1, args.accounts + 1):
            port = int(base.rsplit(":", 1)[1]) if k == 1 else demo_account_port(k)
            suffix = "" if k == 1 else f"-{k}"
            key = env["AIQ_API_KEY"] if k == 1 else env.setdefault(f"AIQ_API_KEY_{k}", f"sandbox-dev-key-{k}")
            uid = settings.aiq_uid if k == 1 else f"sandbox{suffix}"
            services.append((f"AIQ sandbox{suffix}", [
                str(bin_dir / "aiq-sandbox"), "--port", str(port), "--uid", uid, "--api-key", key,
                "--db", str(DATA_DIR / f"sandbox{suffix}.db"), "--apply-delay", str(args.sandbox_apply_delay),
                "--drop-personas", str(args.sandbox_drop)], DATA_DIR / f"sandbox{suffix}.log"))
            print(f"AIQ sandbox{suffix} on http://127.0.0.1:{port} (log: {DATA_DIR / f'sandbox{suffix}.log'})")
    services.append(("pull API", [str(bin_dir / "aiq-pipelines"), "pull-api", "--port", str(args.pull_port)],
                     DATA_DIR / "pull-api.log"))
    print(f"pull API on http://127.0.0.1:{args.pull_port} (docs: /docs, key: {pull_keys}, log: "
          f"{DATA_DIR / 'pull-api.log'})")
    services.append(("dg dev", [str(bin_dir / "dg"), "dev", "--host", "127.0.0.1", "--port", str(args.port)], None))
    print(f"Dagster UI on http://127.0.0.1:{args.port} (POS_START_DATE {env.get('POS_START_DATE', 'default')}); "
          "Ctrl-C stops everything", flush=True)
    return devstack.run(devstack.Stack(), services, env)


def _pull_api(args: argparse.Namespace) -> int:
    from aiq_pipelines.pull.server import serve

    serve(get_settings(), args.host, args.port)
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
    demo_cmd.add_argument("--accounts", type=int, default=0,
                          help="also write an AIQ_ACCOUNTS_FILE dealing the stores out to this many AIQ accounts, "
                               "local sandboxes on ports 8765, 8775, ... (default: none, one account)")
    demo_cmd.add_argument("--accounts-file", type=Path, default=DEMO_ACCOUNTS_FILE,
                          help=f"where --accounts writes the file ({DEMO_ACCOUNTS_FILE})")
    demo_cmd.add_argument("--csv", type=Path, default=None, metavar="DIR",
                          help="write the demo as a drop folder of CSV files (one per reference table) into DIR, "
                               "for POS_DROP_DIR; the database is a scratch one unless --database-url is given")
    demo_cmd.add_argument("--gzip", action="store_true", help="with --csv, write .csv.gz files")
    demo_cmd.add_argument("--database-url", default=None, help="SQLAlchemy URL (default POS_DATABASE_URL)")
    demo_cmd.add_argument("--replace", action="store_true", help="drop and recreate the POS tables first")
    demo_cmd.add_argument("--if-absent", action="store_true", help="do nothing if the POS already has its tables")
    pull_cmd = commands.add_parser(
        "pull-api",
        help="serve the pull API (AIQ's option 1) from the sync database",
        description="Serve transactions, customers and inventory to AIQ over HTTP, read-only, from SYNC_DATABASE_URL. "
                    "Needs PULL_API_KEYS, or with AIQ_ACCOUNTS_FILE each account's pull_api_keys_env.",
    )
    pull_cmd.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
    pull_cmd.add_argument("--port", type=int, default=8766, help="port (8766)")
    preview_cmd = commands.add_parser(
        "preview",
        help="a dry run of daily_sync: what a sync of these days would send to AIQ, sending nothing",
        description="Extract the business days [--from, --to] as daily_sync does and report, per push asset, what a "
                    "real run would send (new, changed, unchanged, quarantined), in how many requests and how long at "
                    "the account's limits, with sample payloads (shoppers masked). Nothing is sent to AIQ and "
                    "no ledger row is written; the staging is refreshed, as any extract does.",
    )
    preview_cmd.add_argument("--from", dest="first", type=dt.date.fromisoformat, required=True, help="YYYY-MM-DD")
    preview_cmd.add_argument("--to", dest="last", type=dt.date.fromisoformat, required=True, help="YYYY-MM-DD")
    forget_cmd = commands.add_parser(
        "forget-shopper",
        help="erase a shopper's personal data from everything aiq-pipelines keeps",
        description="Remove the shopper's personal data from the sync database (staging, the ledger's copies, the "
                    "quarantine) and the drop folder's mirror, so the pull API no longer serves them, and record that "
                    "the erasure happened (key, when, by whom). Erase in the POS first: if the POS (or a drop file) "
                    f"still holds the shopper, the next sync brings them back; the command says so and exits with "
                    f"{ERASED_BUT_STILL_HELD}. AIQ has no delete call: delete the persona in AIQ's UI.",
    )
    forget_cmd.add_argument("customer_id", metavar="CUSTOMER_ID", help="the shopper's POS key (AIQ's pos_user)")
    forget_cmd.add_argument("--by", default=None, help="who asked, for the record (default: the OS user and host)")
    dev_cmd = commands.add_parser(
        "dev",
        help="what make dev runs: the AIQ sandbox, the pull API and dg dev, all stopped by one Ctrl-C",
        description="Start the local AIQ sandbox(es) (when AIQ_BASE_URL is one on 127.0.0.1), the pull API and "
                    "Dagster (dg dev), and stop them all on Ctrl-C or SIGTERM. POS_START_DATE, unless set, is the POS's "
                    "first sale day.",
    )
    dev_cmd.add_argument("--port", type=int, default=3000, help="the Dagster UI's port (3000)")
    dev_cmd.add_argument("--pull-port", type=int, default=8766, help="the pull API's port (8766)")
    dev_cmd.add_argument("--accounts", type=int, default=1, help="demo AIQ accounts, one sandbox each (1)")
    dev_cmd.add_argument("--sandbox-apply-delay", type=float, default=0.0,
                         help="seconds the sandbox waits before applying what it accepted, as AIQ does (0)")
    dev_cmd.add_argument("--sandbox-drop", type=float, default=0.0,
                         help="share of accepted personas the sandbox silently drops, for the delivery audit (0)")
    args = parser.parse_args(argv)
    commands_run = {"pull-api": _pull_api, "demo-data": _demo_data, "preview": _preview,
                    "forget-shopper": _forget_shopper, "dev": _dev}
    try:
        return commands_run[args.command](args)
    except (SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
