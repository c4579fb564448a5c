"""Benchmark of the pull API's backfill, ``GET /v1/transactions``: ``.venv/bin/python -m bench.pull [--size 100k]``.

Setup, not measured: the size's demo POS (``bench.run.generate``) is staged whole into a sync database of its own,
``.data/bench/pull-<size>/sync.db``, kept for the next run over the same POS. Then, per repetition, a fresh server
(``aiq-pipelines pull-api`` under uvicorn, in its own process group) serves a backfill of the whole range
(``occurred_from``/``occurred_to`` at local midnights), pulled page by page with one ``httpx.Client`` following
``next_cursor``; every staged transaction must arrive exactly once. Measured per pull: wall time (first request to
last page parsed), records and pages a second, mean and max page latency (request sent to body read), bytes received,
the server's CPU seconds and memory: VmRSS after the first page and at the end, and its peak (VmHWM). One more fresh
server serves a 3-day subrange once, so that its peak can be set beside the whole range's: memory should not grow
with the range. The table replaces the ``## Pull API`` section at the end of ``bench/RESULTS.md`` (appended when
absent; the rest of the file is kept byte for byte).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import zoneinfo
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.run import DATA, RESULTS, ROOT, SIZES, _free_port, generate, log, machine, wait_until_answering

TIMEZONE = "America/Denver"
KEY = "bench-pull-" + secrets.token_hex(8)
SHORT_DAYS = 3
HEADING = "## Pull API"
START_TIMEOUT_SECONDS = 30.0


def local_midnight(day: dt.date) -> dt.datetime:
    """The start of ``day`` in the stores' time zone, as an aware UTC datetime."""
    return dt.datetime.combine(day, dt.time(), tzinfo=zoneinfo.ZoneInfo(TIMEZONE)).astimezone(dt.UTC)


def utc_z(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"


def stage(size: str, pos_path: Path, info: dict) -> Path:
    """The sync database with the POS's whole range of days staged (reused when its marker names the same POS and the
    same staging layout: one staged by an older version would be measured without this version's indexes)."""
    from aiq_pipelines.sync.schema import staged_transactions

    work = DATA / f"pull-{size}"
    sync_db, marker = work / "sync.db", work / "staged.json"
    layout = sorted([*staged_transactions.columns.keys(), *(index.name for index in staged_transactions.indexes)])
    expected = {"pos": str(pos_path), **info, "layout": layout}
    if sync_db.exists() and marker.exists() and json.loads(marker.read_text()) == expected:
        return sync_db
    from aiq_pipelines.pos.source import PosSource
    from aiq_pipelines.sync.store import SyncStore

    work.mkdir(parents=True, exist_ok=True)
    for stale in (marker, sync_db, Path(f"{sync_db}-wal"), Path(f"{sync_db}-shm")):
        stale.unlink(missing_ok=True)
    log(f"staging the {size} POS ({info['first_day']}..{info['last_day']}) into {sync_db}")
    started = time.monotonic()
    store = SyncStore(f"sqlite:///{sync_db}", TIMEZONE)
    first, end = dt.date.fromisoformat(info["first_day"]), dt.date.fromisoformat(info["last_day"]) + dt.timedelta(1)
    report = store.stage_transactions(PosSource(f"sqlite:///{pos_path}"), local_midnight(first), local_midnight(end),
                                      run_id="bench")
    store.engine.dispose()
    log(f"staged {report.staged:,} transactions in {time.monotonic() - started:.1f} s")
    marker.write_text(json.dumps(expected))
    return sync_db


def staged_count(sync_db: Path, start: dt.datetime, end: dt.datetime) -> int:
    """Staged transactions rung in [start, end) (SQLite holds them as naive UTC text)."""
    bounds = [f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}" for moment in (start, end)]
    with contextlib.closing(sqlite3.connect(f"file:{sync_db}?mode=ro", uri=True)) as db:
        return db.execute("SELECT COUNT(*) FROM staged_transactions WHERE transaction_at >= ? AND transaction_at < ?",
                          bounds).fetchone()[0]


@contextlib.contextmanager
def server(sync_db: Path, log_path: Path) -> Iterator[tuple[str, int]]:
    """A fresh pull API over ``sync_db`` on a free loopback port: its base URL and the uvicorn process's pid."""
    port = _free_port()
    env = {**os.environ, "SYNC_DATABASE_URL": f"sqlite:///{sync_db}", "PULL_API_KEYS": KEY,
           "PULL_API_SETTLE_SECONDS": "0", "PULL_API_REQUESTS_PER_MINUTE": "1000000", "POS_TIMEZONE": TIMEZONE}
    with log_path.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "aiq_pipelines.cli", "pull-api", "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_answering(process, base_url + "/openapi.json", "the pull API", log_path, START_TIMEOUT_SECONDS)
        yield base_url, process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def status_mb(pid: int, field: str) -> float:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM) in MB."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Pull:
    label: str
    days: int
    records: int
    latencies: list[float]
    wall: float
    received: int
    server_cpu: float
    rss_first_mb: float
    rss_end_mb: float
    peak_mb: float
    held_back: int

    @property
    def pages(self) -> int:
        return len(self.latencies)


def pull(label: str, sync_db: Path, first: dt.date, days: int, limit: int, log_path: Path) -> Pull:
    """Backfill ``days`` days from ``first`` from a fresh server; every staged transaction of them exactly once."""
    start, end = local_midnight(first), local_midnight(first + dt.timedelta(days))
    expected = staged_count(sync_db, start, end)
    seen: set[str] = set()
    latencies: list[float] = []
    records = received = 0
    rss_first = 0.0
    with server(sync_db, log_path) as (base_url, pid), \
            httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {KEY}"}, timeout=120) as client:
        cpu_before = cpu_seconds(pid)
        params = {"occurred_from": utc_z(start), "occurred_to": utc_z(end), "limit": str(limit)}
        started = time.monotonic()
        while True:
            sent = time.monotonic()
            response = client.get("/v1/transactions", params=params)
            latencies.append(time.monotonic() - sent)
            if response.status_code != 200:
                raise RuntimeError(f"{label}: page {len(latencies)} answered {response.status_code}: "
                                   f"{response.text[:500]}")
            body = response.json()
            received += len(response.content)
            records += len(body["data"])
            seen.update(tx["transaction_id"] for tx in body["data"])
            if len(latencies) == 1:
                rss_first = status_mb(pid, "VmRSS")
            if body["next_cursor"] is None:
                break
            params = {"cursor": body["next_cursor"], "limit": str(limit)}
        wall = time.monotonic() - started
        result = Pull(label, days, records, latencies, wall, received, cpu_seconds(pid) - cpu_before, rss_first,
                      status_mb(pid, "VmRSS"), status_mb(pid, "VmHWM"), body["held_back"])
    if records != expected or len(seen) != records:
        raise RuntimeError(f"{label}: {records:,} records ({len(seen):,} distinct) pulled, {expected:,} staged")
    log(f"{label}: {records:,} records, {result.pages} pages in {wall:.1f} s; peak RSS {result.peak_mb:.0f} MB")
    return result


def table(size: str, info: dict, limit: int, pulls: list[Pull]) -> str:
    head = ["pull", "days", "records", "pages", "wall s", "records/s", "pages/s", "page ms (mean / max)", "MB received",
            "server CPU s", "server RSS MB (first page / end / peak)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in pulls:
        lines.append("| " + " | ".join([
            p.label, str(p.days), f"{p.records:,}", f"{p.pages:,}", f"{p.wall:.1f}", f"{p.records / p.wall:,.0f}",
            f"{p.pages / p.wall:.1f}", f"{statistics.mean(p.latencies) * 1000:.0f} / {max(p.latencies) * 1000:.0f}",
            f"{p.received / 1e6:.1f}", f"{p.server_cpu:.1f}",
            f"{p.rss_first_mb:.0f} / {p.rss_end_mb:.0f} / {p.peak_mb:.0f}",
        ]) + " |")
    full = [p for p in pulls if p.label.startswith("full")]
    short = next(p for p in pulls if p.label == "subrange")
    peak = statistics.median(p.peak_mb for p in full)
    extra = [
        f"- the {size} demo POS ({info['transactions']:,} transactions, {info['first_day']}..{info['last_day']}) "
        f"staged into a sync database of its own; `limit={limit}`, `PULL_API_SETTLE_SECONDS=0`, a fresh server for "
        "each pull, one `httpx.Client` over loopback; every staged transaction arrived exactly once in every pull",
        f"- whole range, median of {len(full)}: {statistics.median(p.wall for p in full):.1f} s, "
        f"{statistics.median(p.records / p.wall for p in full):,.0f} records/s, "
        f"{statistics.median(p.pages / p.wall for p in full):.1f} pages/s",
        f"- server peak RSS, whole range / {short.days}-day subrange: {peak / short.peak_mb:.2f} "
        f"({peak:.0f} MB / {short.peak_mb:.0f} MB)",
        f"- held_back (quarantined receipts of the window): {max(p.held_back for p in pulls)}",
    ]
    return "\n".join([*lines, "", *extra])


def write_section(body: str, command: str) -> None:
    """Replace the ``## Pull API`` section (to the end of the file) of bench/RESULTS.md, or append it."""
    text = RESULTS.read_bytes().decode() if RESULTS.exists() else ""
    found = re.search(rf"^{re.escape(HEADING)}", text, re.MULTILINE)
    head = text[:found.start()] if found else text + ("" if text.endswith("\n\n") or not text else
                                                       "\n" if text.endswith("\n") else "\n\n")
    section = (f"{HEADING}\n\nProduced by `{command}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.\n"
               f"Machine: {machine()}.\n\n{body}\n")
    RESULTS.write_bytes((head + section).encode())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pull", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="100k", choices=list(SIZES), help="the demo POS (%(default)s)")
    parser.add_argument("--limit", type=int, default=1000, help="records a page, 1-1000 (%(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="pulls of the whole range (%(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print the table without writing bench/RESULTS.md")
    args = parser.parse_args(argv)
    if not 1 <= args.limit <= 1000 or args.repeat < 1:
        parser.error("--limit takes 1-1000 and --repeat at least 1")
    pos_path, info = generate(args.size)
    sync_db = stage(args.size, pos_path, info)
    first, last = dt.date.fromisoformat(info["first_day"]), dt.date.fromisoformat(info["last_day"])
    days = (last - first).days + 1
    if days > 31:
        parser.error(f"the {args.size} POS spans {days} days; a backfill call covers at most 31")
    middle = first + dt.timedelta((days - SHORT_DAYS) // 2)
    logs = sync_db.parent
    pulls = [pull("subrange", sync_db, middle, min(SHORT_DAYS, days), args.limit, logs / "server-subrange.log")]
    pulls += [pull(f"full {rep + 1}", sync_db, first, days, args.limit, logs / f"server-full-{rep + 1}.log")
              for rep in range(args.repeat)]
    body = table(args.size, info, args.limit, pulls)
    print(body)
    if not args.no_write:
        write_section(body, "python -m bench.pull " + " ".join(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
