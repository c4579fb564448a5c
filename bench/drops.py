"""Taking in a drop folder: ``.venv/bin/python -m bench.drops --sizes 10k,100k --repeat 2``.

For each size it exports bench.run's demo POS as a drop folder (one CSV file per reference table, cached under
``.data/bench``), then, per repetition, loads the folder into a fresh mirror in a process of its own (``--child``) and
measures its wall time, CPU and peak RSS, and loads it again (every file unchanged: hashed, not read). The peak RSS
of the sizes side by side shows whether memory grows with a file's size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.run import DATA, generate, log, run_child


def export(size: str) -> tuple[Path, dict]:
    pos_path, info = generate(size)
    folder = DATA / f"drop-{size}"
    if not (folder / "transaction_items.csv").exists():
        from aiq_pipelines.db.engines import engine_for
        from aiq_pipelines.pos.dropfiles import export_tables

        shutil.rmtree(folder, ignore_errors=True)
        export_tables(engine_for(f"sqlite:///{pos_path}"), folder)
    return folder, info


def child(folder: str, scratch: str) -> None:
    """One intake of ``folder`` into a fresh mirror, then a second one of the unchanged files; prints JSON."""
    import zoneinfo

    from aiq_pipelines.db.engines import engine_for
    from aiq_pipelines.pos.dropfiles import scan
    from aiq_pipelines.pos.mirror import DropMirror
    from aiq_pipelines.pos.times import StoreDays
    from aiq_pipelines.sync.intake import take_in
    from aiq_pipelines.sync.schema import ensure_schema

    sync = engine_for(f"sqlite:///{scratch}/sync.db")
    ensure_schema(sync)
    mirror = DropMirror(f"sqlite:///{scratch}/mirror.db", StoreDays(zoneinfo.ZoneInfo("America/Denver")))
    started = time.monotonic()
    results = take_in(mirror, sync, scan(Path(folder)), "bench")
    first = time.monotonic() - started
    started = time.monotonic()
    again = take_in(mirror, sync, scan(Path(folder)), "bench-again")
    second = time.monotonic() - started
    print(json.dumps({"load_s": first, "again_s": second, "rows": sum(r.rows for r in results),
                      "rejected": sum(r.rejected for r in results), "days": len({d for r in results for d in r.days}),
                      "unchanged_again": sum(r.unchanged for r in again)}))


def one_file(lines: int) -> Path:
    """A drop folder holding one synthetic transactions file of ``lines`` sales (cached)."""
    import csv

    folder = DATA / f"drop-one-file-{lines}"
    path = folder / "transactions.csv"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["transaction_id", "location_id", "customer_id", "transaction_at", "subtotal", "total",
                             "last_modified_at"])
            for i in range(lines):
                at = f"2026-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:00:00"
                writer.writerow([f"T{i:08d}", f"STORE-{i % 4:02d}", f"C{i % 5000:05d}", at, "10.00", "11.50", at])
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,100k")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--one-file", default="200000,1000000",
                        help="also load one synthetic transactions file of each of these line counts ('' for none)")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "SCRATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    cases = [(size, *export(size)) for size in args.sizes.split(",") if size]
    for lines in filter(None, args.one_file.split(",")):
        cases.append((f"one file of {int(lines):,} lines", one_file(int(lines)), {"transactions": int(lines)}))
    for size, folder, info in cases:
        info["drop_mb"] = round(sum(p.stat().st_size for p in folder.iterdir()) / 2**20, 1)
        runs = []
        for rep in range(args.repeat):
            with tempfile.TemporaryDirectory() as scratch:
                run = run_child(["bench.drops", "--child", str(folder), scratch], dict(os.environ),
                                Path(scratch) / "child.log")
            runs.append(run)
            log(f"{size} rep {rep}: {run.output} wall {run.wall:.1f}s cpu {run.cpu:.1f}s rss {run.peak_rss_mb:.0f}MB")
        load = statistics.median(r.output["load_s"] for r in runs)
        rows.append(f"| {size} | {info['transactions']:,} | {info['drop_mb']} | {runs[0].output['rows']:,} | "
                    f"{runs[0].output['rejected']} | {runs[0].output['days']} | {load:.1f} | "
                    f"{runs[0].output['rows'] / load:,.0f} | {statistics.median(r.output['again_s'] for r in runs):.2f} | "
                    f"{statistics.median(r.peak_rss_mb for r in runs):.0f} |")
    print("| size | transactions | CSV MB | rows loaded | rejected | days | load s | rows/s | unchanged again s | "
          "peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    sys.exit(main())
