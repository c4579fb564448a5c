"""What deciding who gets a shopper from the POS costs the extract: ``.venv/bin/python -m bench.shoppers``.

With several AIQ accounts, ``pos_transactions`` and ``pos_personas`` look up the stores each customer they stage ever
bought in (the ``shopper_stores`` query, 500 customers a query). On the cached 1M-sale demo POS (``bench.run``'s, 8
stores x 140 days, generated once under ``.data/bench``), this stages one day and a 31-day range, each on a fresh sync
database, with the lookup and without it (one account), with the POS's index on ``transactions(customer_id)`` and
without it, and prints the extract's wall and CPU time (median of ``--repeat``) and what the lookup added. The index is
created or dropped on the cached POS in between (and left as the reference schema has it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sqlite3
import statistics
import tempfile
import time
import zoneinfo
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from bench.run import generate, log

DENVER = zoneinfo.ZoneInfo("America/Denver")
WINDOWS = {"1 day": ("2026-05-15", "2026-05-15"), "31 days": ("2026-05-01", "2026-05-31")}
INDEX = "CREATE INDEX IF NOT EXISTS transactions_customer ON transactions (customer_id)"


def set_index(pos_path: Path, present: bool) -> float:
    """Create or drop the index on transactions(customer_id); the seconds it took."""
    started = time.monotonic()
    with contextlib.closing(sqlite3.connect(pos_path)) as db:
        db.execute(INDEX if present else "DROP INDEX IF EXISTS transactions_customer")
        db.commit()
    return time.monotonic() - started


def extract(pos_path: Path, first: str, last: str, look_up: bool) -> tuple[float, float, int, int]:
    """Stage [first, last]'s sales and personas on a fresh sync database: wall and CPU seconds, the customers staged
    (sale customers and personas) and the shopper_stores rows written."""
    from aiq_pipelines.pos.source import PosSource
    from aiq_pipelines.sync.schema import shopper_stores
    from aiq_pipelines.sync.store import SyncStore

    start = dt.datetime.combine(dt.date.fromisoformat(first), dt.time(), DENVER)
    end = dt.datetime.combine(dt.date.fromisoformat(last) + dt.timedelta(days=1), dt.time(), DENVER)
    with tempfile.TemporaryDirectory() as scratch:
        store = SyncStore(f"sqlite:///{Path(scratch) / 'sync.db'}", "America/Denver", look_up_stores=look_up)
        source = PosSource(f"sqlite:///{pos_path}")
        wall, cpu = time.monotonic(), time.process_time()
        sales = store.stage_transactions(source, start, end, run_id="bench")
        personas = store.stage_personas(source, start, end, run_id="bench")
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        with store.engine.connect() as conn:
            rows = conn.scalar(sa.select(sa.func.count()).select_from(shopper_stores)) or 0
        store.engine.dispose()
        source.engine.dispose()
    return wall, cpu, sales.sale_customers + personas.staged, rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shoppers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case (%(default)s); the median is shown")
    args = parser.parse_args(argv)
    pos_path, info = generate("1m")
    log(f"POS: {info['transactions']:,} sales, {info['customers']:,} customers")
    lines = ["| POS index on transactions(customer_id) | window | customers staged | extract, one account | "
             "extract, several accounts | added by the lookup | added CPU |", "|---|---|---:|---:|---:|---:|---:|"]
    for indexed in (True, False):
        log(f"index {'created' if indexed else 'dropped'} in {set_index(pos_path, indexed):.1f} s")
        for window, (first, last) in WINDOWS.items():
            runs: dict[bool, list[tuple[float, float, int, int]]] = {False: [], True: []}
            for rep in range(args.repeat):
                for look_up in (False, True):  # alternated, so a slower moment of the machine hits both
                    runs[look_up].append(extract(pos_path, first, last, look_up))
                    log(f"{window}, index {indexed}, look-up {look_up}, rep {rep}: {runs[look_up][-1][0]:.1f} s")
            wall = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
            cpu = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
            customers, stored = runs[True][0][2], runs[True][0][3]
            lines.append(f"| {'yes' if indexed else 'no'} | {window} | {customers:,} ({stored:,} store rows) | "
                         f"{wall[False]:.1f} s | {wall[True]:.1f} s | {wall[True] - wall[False]:+.1f} s "
                         f"({(wall[True] / wall[False] - 1):+.0%}) | {cpu[True] - cpu[False]:+.1f} s |")
    set_index(pos_path, True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
