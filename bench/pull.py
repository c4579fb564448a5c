"""Benchmark of the pull API: a year of sales pulled at 1,000 a page. ``.venv/bin/python -m bench.pull``.

Setup, not measured: a demo POS of a year (2 stores, 2025-07-01..2026-06-30, about 500,000 sales and their shoppers;
``.data/bench/pos-year.db``), staged whole into a sync database of its own (``.data/bench/pull-year/sync.db``: the
sales, every customer, the inventory), both kept for the next run while they match.

Measured, per repetition, on a fresh server (``aiq-pipelines pull-api`` under uvicorn, its own process group):
- the pull: one ``httpx.Client`` pages ``/v1/transactions?include=customers&limit=1000`` from the start (an incremental
  pull with no ``updated_since``: every staged sale, the year) following ``next_cursor``; every sale must arrive
  exactly once and every customer the sales name must come with them (a void's only when staged: the extract stages
  no customer for a void). Rows a second (sales with their lines), the latency of every page (request sent to body
  parsed), and the server's peak RSS (VmHWM);
- the latency at the first, middle and last page: each of those three pages asked again ``--probes`` times (p50, p99);
- the floor: the same puller against ``bench.pull_floor`` (one keyset query on the same database and index, the stored
  records joined as they are) on the same machine.
The table replaces the ``## Pull API`` section at the end of ``bench/RESULTS.md`` (appended when absent).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import time
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from bench.run import DATA, END_DATE, GENERATED_AT, RESULTS, ROOT, _free_port, log, machine, wait_until_answering

TIMEZONE = "America/Denver"
KEY = "bench-pull-" + secrets.token_hex(8)
HEADING = "## Pull API"
YEAR = {"days": 365, "stores": 2, "min_sales": 430, "max_sales": 985}  # about 500,000 sales
PAGE = 1000
GOAL_ROWS_PER_SECOND, GOAL_P99_MS = 20_000, 150


def local_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=zoneinfo.ZoneInfo(TIMEZONE)).astimezone(dt.UTC)


def year_pos() -> tuple[Path, dict]:
    """The year's demo POS, generated once and kept."""
    path, marker = DATA / "pos-year.db", DATA / "pos-year.json"
    if path.exists() and marker.exists() and json.loads(marker.read_text()).get("options") == YEAR:
        return path, json.loads(marker.read_text())
    from aiq_pipelines.pos import demo

    DATA.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    log(f"generating the year's demo POS {YEAR}")
    summary = demo.generate(f"sqlite:///{path}", demo.DemoOptions(end_date=END_DATE, **YEAR), replace=True,
                            now=GENERATED_AT)
    info = {"options": YEAR, "transactions": summary.transactions, "lines": summary.transaction_items,
            "customers": summary.customers, "first_day": summary.first_day.isoformat(),
            "last_day": summary.last_day.isoformat()}
    marker.write_text(json.dumps(info))
    return path, info


def stage(pos_path: Path, info: dict) -> Path:
    """The sync database with the whole year, every customer and the inventory staged (kept while its marker names
    the same POS and staging layout)."""
    from aiq_pipelines.sync.schema import metadata

    work = DATA / "pull-year"
    sync_db, marker = work / "sync.db", work / "staged.json"
    layout = sorted(f"{table.name}.{name}" for table in metadata.sorted_tables
                    for name in [*table.columns.keys(), *(index.name for index in table.indexes)])
    expected = {"pos": str(pos_path), **info, "layout": layout}
    if sync_db.exists() and marker.exists() and json.loads(marker.read_text()) == expected:
        return sync_db
    from aiq_pipelines.pos.source import PosSource
    from aiq_pipelines.sync.store import SyncStore

    work.mkdir(parents=True, exist_ok=True)
    for stale in (marker, sync_db, Path(f"{sync_db}-wal"), Path(f"{sync_db}-shm")):
        stale.unlink(missing_ok=True)
    log(f"staging the year into {sync_db}")
    store, source = SyncStore(f"sqlite:///{sync_db}", TIMEZONE), PosSource(f"sqlite:///{pos_path}")
    first, end = dt.date.fromisoformat(info["first_day"]), dt.date.fromisoformat(info["last_day"]) + dt.timedelta(1)
    store.stage_transactions(source, local_midnight(first), local_midnight(end), run_id="bench")
    store.stage_personas(source, local_midnight(dt.date(2000, 1, 1)), local_midnight(end), run_id="bench")
    store.stage_inventory(source, run_id="bench")
    store.engine.dispose()
    marker.write_text(json.dumps(expected))
    return sync_db


@contextlib.contextmanager
def process(command: list[str], env: dict[str, str], log_path: Path, ready: str) -> Iterator[tuple[str, int]]:
    """A server on a free loopback port, in its own process group: its base URL and pid."""
    port = _free_port()
    with log_path.open("w") as out:
        child = subprocess.Popen([*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                 cwd=ROOT, start_new_session=True)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_answering(child, base_url + ready, command[2], log_path, 30)
        yield base_url, child.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def pull_api(sync_db: Path, log_path: Path) -> contextlib.AbstractContextManager[tuple[str, int]]:
    env = {**os.environ, "SYNC_DATABASE_URL": f"sqlite:///{sync_db}", "PULL_API_KEYS": KEY,
           "PULL_API_SETTLE_SECONDS": "0", "PULL_API_REQUESTS_PER_MINUTE": "1000000", "POS_TIMEZONE": TIMEZONE}
    return process([sys.executable, "-m", "aiq_pipelines.cli", "pull-api"], env, log_path, "/openapi.json")


def floor(sync_db: Path, log_path: Path) -> contextlib.AbstractContextManager[tuple[str, int]]:
    return process([sys.executable, "-m", "bench.pull_floor", "--db", str(sync_db)], dict(os.environ), log_path,
                   "/?limit=1")


def peak_mb(pid: int) -> float:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@dataclass
class Pull:
    label: str
    rows: int
    wall: float
    latencies: list[float]
    peak_mb: float
    probes: dict[str, list[float]]

    @property
    def rate(self) -> float:
        return self.rows / self.wall


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def run(label: str, base_url: str, pid: int, first: dict[str, str], step: Callable[[dict], dict | None],
        check: Checker, probes: int) -> Pull:
    """Page from ``first`` following ``step`` (the next page's parameters, None at the end), each page checked and
    dropped as a puller would; then ask the first, middle and last pages again ``probes`` times each.

    The puller's own cyclic garbage collector is off meanwhile (parsed JSON holds no cycles, so reference counting
    frees each page): its full collections, over all the puller has allocated, would otherwise be timed as page
    latency (up to a second a page with the pages kept, 20-40 ms without)."""
    asked, latencies = [first], []
    rows = 0
    with collector_off(), httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {KEY}"},
                                       timeout=120) as client:
        started = time.monotonic()
        query: dict | None = first
        while query is not None:
            sent = time.monotonic()
            body = orjson.loads(client.get("/" if label == "floor" else "/v1/transactions", params=query)
                                .raise_for_status().content)
            latencies.append(time.monotonic() - sent)
            rows += len(body["data"])
            check.page(body)
            query = step(body)
            if query is not None:
                asked.append(query)
        wall = time.monotonic() - started
        check.done()
        positions = {"first": 0, "middle": len(asked) // 2, "last": len(asked) - 1}
        timed: dict[str, list[float]] = {name: [] for name in positions}
        for _ in range(probes):
            for name, index in positions.items():
                sent = time.monotonic()
                client.get("/" if label == "floor" else "/v1/transactions", params=asked[index]).raise_for_status()
                timed[name].append(time.monotonic() - sent)
        result = Pull(label, rows, wall, latencies, peak_mb(pid), timed)
    log(f"{label}: {rows:,} sales, {len(latencies)} pages in {wall:.1f} s ({result.rate:,.0f}/s), peak RSS "
        f"{result.peak_mb:.0f} MB")
    return result


class Checker:
    """What a pull must have served: every staged sale exactly once and, with include=customers, each page's
    customers; fed page by page, only the sale ids kept."""

    def __init__(self, expected: int):
        self.expected = expected
        self.seen: list[str] = []

    def page(self, body: dict) -> None:
        self.seen += [tx["transaction_id"] for tx in body["data"]]
        if "customers" not in body:
            return
        carried = {c["customer_id"] for c in body["customers"]}
        # A void is never sent to AIQ, so the extract stages no customer for it: only the customers of the other
        # sales must come with the page (a void's comes when staged anyway).
        needed = {tx["customer_id"] for tx in body["data"] if tx.get("customer_id") and tx["status"] != "voided"}
        if not needed <= carried <= {tx["customer_id"] for tx in body["data"]}:
            raise RuntimeError("a page's sales name a customer the page does not carry, or it carries another")

    def done(self) -> None:
        seen, self.seen = self.seen, []
        if len(seen) != self.expected or len(set(seen)) != self.expected:
            raise RuntimeError(f"{len(seen):,} sales ({len(set(seen)):,} distinct) pulled, {self.expected:,} staged")


def table(info: dict, api: list[Pull], floors: list[Pull]) -> str:
    head = ["puller", "sales", "pages", "wall s", "sales/s", "page ms p50 / p99 (all pages)",
            "first page p50 / p99", "middle page p50 / p99", "last page p50 / p99", "server peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def ms(values: Sequence[float]) -> str:
        return f"{percentile(values, 0.5) * 1000:.0f} / {percentile(values, 0.99) * 1000:.0f}"

    for p in [*api, *floors]:
        lines.append("| " + " | ".join([
            p.label, f"{p.rows:,}", f"{len(p.latencies):,}", f"{p.wall:.1f}", f"{p.rate:,.0f}", ms(p.latencies),
            ms(p.probes["first"]), ms(p.probes["middle"]), ms(p.probes["last"]), f"{p.peak_mb:.0f}"]) + " |")
    plain = [p for p in api if "include" not in p.label]
    rate, floor_rate = statistics.median(p.rate for p in plain), statistics.median(p.rate for p in floors)
    with_customers = statistics.median(p.rate for p in api if "include" in p.label)
    p99 = max(percentile(p.latencies, 0.99) for p in plain) * 1000
    extra = [
        f"- the year's demo POS ({info['transactions']:,} sales with {info['lines']:,} lines, {info['customers']:,} "
        f"customers, {info['first_day']}..{info['last_day']}) staged into a sync database of its own; "
        f"`limit={PAGE}`, each pull once without and once with `include=customers` "
        "(each page then carries the customers its sales name), "
        "`PULL_API_SETTLE_SECONDS=0`, a fresh server for each repetition (the plain pull, then the one with "
        "customers), one `httpx.Client` over loopback; every staged "
        "sale arrived exactly once in every pull (with include, with every customer its sales name; a void's only "
        "when staged, as the extract stages none for a void)",
        f"- pull API, median of {len(plain)}: {rate:,.0f} sales/s with their lines (goal {GOAL_ROWS_PER_SECOND:,}); "
        f"worst p99 of a pull's pages {p99:.0f} ms (goal {GOAL_P99_MS}); with include=customers {with_customers:,.0f} "
        "sales/s",
        f"- floor (`bench.pull_floor`: one keyset query, the stored records joined as they are), median of "
        f"{len(floors)}: {floor_rate:,.0f} sales/s; pull API / floor: {rate / floor_rate:.2f} of the floor's rate",
    ]
    return "\n".join([*lines, "", *extra])


def write_section(body: str, command: str) -> None:
    """Replace the ``## Pull API`` section (to the end of the file) of bench/RESULTS.md, or append it."""
    text = RESULTS.read_bytes().decode() if RESULTS.exists() else ""
    found = re.search(rf"^{re.escape(HEADING)}", text, re.MULTILINE)
    head = text[:found.start()] if found else text.rstrip("\n") + "\n\n"
    section = (f"{HEADING}\n\nProduced by `{command}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.\n"
               f"Machine: {machine()}.\n\n{body}\n")
    RESULTS.write_bytes((head + section).encode())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pull", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="pulls of the year by each puller (%(default)s)")
    parser.add_argument("--probes", type=int, default=50, help="requests of each probed page (%(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print the table without writing bench/RESULTS.md")
    args = parser.parse_args(argv)
    pos_path, info = year_pos()
    sync_db = stage(pos_path, info)
    logs = sync_db.parent
    check = Checker(info["transactions"])
    api, floors = [], []
    for rep in range(args.repeat):
        with pull_api(sync_db, logs / f"server-{rep + 1}.log") as (base_url, pid):
            for include in ({}, {"include": "customers"}):
                api.append(run("pull API" + (", include=customers" if include else ""), base_url, pid,
                               {"limit": str(PAGE), **include},
                               lambda body, include=include: None if body["next_cursor"] is None else
                               {"cursor": body["next_cursor"], "limit": str(PAGE), **include},
                               check, args.probes))
        with floor(sync_db, logs / f"floor-{rep + 1}.log") as (base_url, pid):
            floors.append(run("floor", base_url, pid, {"limit": str(PAGE)},
                              lambda body: None if body["next"] is None else {"after": body["next"], "limit": str(PAGE)},
                              check, args.probes))
    body = table(info, api, floors)
    print(body)
    if not args.no_write:
        write_section(body, "python -m bench.pull " + " ".join(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
