"""Benchmarks of the POS → AIQ sync at 10k, 100k and 1M transactions: ``.venv/bin/python -m bench.run``.

For each size it generates the demo POS once (cached under ``.data/bench``), then, per repetition: starts the AIQ
sandbox with AIQ's default limits scaled by ``--rate-scale``, runs one end-to-end sync of the whole range as one run in
its own process (``bench.sync_once``: its CPU and peak RSS are measured alone), runs it again on the unchanged POS
(it must send nothing), and runs the minimal reference (``bench.reference``) against a sandbox of its own. It prints
one table of medians and writes it, with the machine, to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import secrets
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data" / "bench"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
END_DATE = dt.date(2026, 6, 30)
GENERATED_AT = dt.datetime(2026, 7, 1, 12, tzinfo=dt.UTC)
# (stores, days) that give about 10k, 100k and 1M transactions with the demo's 300-1500 sales a store a day.
SIZES = {"10k": (1, 12), "100k": (4, 28), "1m": (8, 140)}
AIQ_LIMITS = (5, 120, 2000)  # AIQ's per-second, per-minute, per-hour limits
BATCH = 100
UID = "bench"
GENEROUS = (100_000, 1_000_000, 10_000_000)
ANALYSIS_HEADING = "## Analysis"


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# -- processes ----------------------------------------------------------------------------------------------


@dataclass
class ChildRun:
    output: dict
    wall: float
    cpu: float
    peak_rss_mb: float


def run_child(args: Sequence[str], env: dict[str, str], log_path: Path) -> ChildRun:
    """Run ``python -m <args>`` and measure its wall time, CPU seconds and peak RSS (from wait4)."""
    started = time.monotonic()
    with log_path.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=stderr, env=env,
                                   cwd=ROOT)
        stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"{args[0]} exited with {process.returncode}; see {log_path}")
    return ChildRun(json.loads(stdout.decode().strip().splitlines()[-1]), wall, usage.ru_utime + usage.ru_stime,
                    usage.ru_maxrss / 1024)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Sandbox:
    base_url: str
    api_key: str = field(repr=False)
    db_path: Path

    def requests_by_path(self) -> dict[str, int]:
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as db:
            return dict(db.execute("SELECT path, COUNT(*) FROM requests GROUP BY path").fetchall())

    def arrivals(self) -> list[float]:
        """When each API request arrived (time.time()), in order."""
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as db:
            return [row[0] for row in db.execute("SELECT received_at FROM requests ORDER BY received_at")]

    def stored(self) -> dict[str, int]:
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as db:
            return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in ("sales", "members")}


def wait_until_answering(process: subprocess.Popen, url: str, what: str, log_path: Path, seconds: float = 30) -> None:
    """Poll ``url`` until it answers 200; fail naming ``what`` and its log if ``process`` exits or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start; see {log_path}")
        time.sleep(0.05)


@contextlib.contextmanager
def sandbox(db_path: Path, limits: tuple[int, int, int], *switches: str, reset: bool = True,
            port: int | None = None) -> Iterator[Sandbox]:
    """The AIQ sandbox enforcing ``limits`` (per second, minute, hour), on a fresh state file unless ``reset`` is
    False, with any other ``switches``; on ``port`` when given (the account's ledger name holds it)."""
    port, key = port or _free_port(), "bench-" + secrets.token_hex(8)
    command = [sys.executable, "-m", "aiq_sandbox", "--host", "127.0.0.1", "--port", str(port),
               "--db", str(db_path), "--uid", UID, *(["--reset"] if reset else []), "--per-second", str(limits[0]),
               "--per-minute", str(limits[1]), "--per-hour", str(limits[2]), *switches]
    with db_path.with_suffix(".log").open("a" if not reset else "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "AIQ_API_KEY": key})
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_answering(process, base_url + "/sandbox/state", "the sandbox", db_path.with_suffix(".log"))
        yield Sandbox(base_url, key, db_path)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# -- figures ------------------------------------------------------------------------------------------------


def rate_floor(requests: int, limits: tuple[int, int, int]) -> float:
    """The issue's floor: ``requests`` ÷ the allowed rate, that of the slowest window the requests overflow (the
    per-second rate when they overflow none: a floor of 0 would divide the push wall by zero)."""
    return max((requests * seconds / limit for seconds, limit in zip((1.0, 60.0, 3600.0), limits, strict=True)
                if requests > limit), default=requests / limits[0])


def earliest_schedule(requests: int, limits: tuple[int, int, int]) -> float:
    """The earliest moment the last of ``requests`` can be sent under sliding 1 s / 1 min / 1 h windows.

    Stricter than ``rate_floor``: it credits the first window's burst (50 requests may go at once at x10).
    """
    times: list[float] = []
    for i in range(requests):
        t = times[-1] if times else 0.0
        for seconds, limit in zip((1.0, 60.0, 3600.0), limits, strict=True):
            if i >= limit:
                t = max(t, times[i - limit] + seconds)
        times.append(t)
    return times[-1] if times else 0.0


def generate(size: str) -> tuple[Path, dict]:
    """The size's demo POS, generated once and kept (the same options give the same database)."""
    stores, days = SIZES[size]
    path, marker = DATA / f"pos-{size}.db", DATA / f"pos-{size}.json"
    if path.exists() and marker.exists():
        return path, json.loads(marker.read_text())
    from aiq_pipelines.pos import demo

    log(f"generating the {size} demo POS ({stores} stores x {days} days)")
    path.unlink(missing_ok=True)
    started = time.monotonic()
    summary = demo.generate(f"sqlite:///{path}", demo.DemoOptions(days=days, stores=stores, end_date=END_DATE),
                            replace=True, now=GENERATED_AT)
    info = {"transactions": summary.transactions, "lines": summary.transaction_items, "customers": summary.customers,
            "first_day": summary.first_day.isoformat(), "last_day": summary.last_day.isoformat(),
            "generate_seconds": round(time.monotonic() - started, 1)}
    marker.write_text(json.dumps(info))
    log(f"generated {info}")
    return path, info


@dataclass
class Rep:
    sync: ChildRun
    resync: ChildRun
    reference: ChildRun
    requests: int
    optimal: int
    resync_requests: int
    records: int
    floor: float
    schedule: float
    # Per request: from the moment the limiter counts it from (its stamp, or when it left if that was later) to the
    # sandbox's arrival time. The client's margin must exceed the spread of these.
    delays_ms: list[float]

    @property
    def throttled(self) -> int:
        meta = self.sync.output["metadata"]
        return sum(meta.get(asset, {}).get("aiq_429s", 0) for asset in ("aiq_personas", "aiq_sales"))

    @property
    def push_wall(self) -> float:
        steps = self.sync.output["steps"]
        return steps.get("aiq_push", 0.0)

    @property
    def bytes_sent(self) -> int:
        meta = self.sync.output["metadata"]
        return sum(meta.get(asset, {}).get("aiq_bytes_sent", 0) for asset in ("aiq_personas", "aiq_sales"))

    @property
    def cpu_ratio(self) -> float:
        ours = self.sync.output["work_cpu"] / max(self.records, 1)
        ref = self.reference.output["work_cpu"] / max(self.reference.output["records"], 1)
        return ours / ref


def _profiled(env: dict[str, str], path: Path, profile: bool) -> dict[str, str]:
    """``env`` asking bench.sync_once for a cProfile at ``path`` when profiling."""
    return {**env, "BENCH_PROFILE": str(path)} if profile else env


def stamp_delays(sync_db: Path, arrivals: list[float]) -> list[float]:
    """Milliseconds from each send's moment in the rate limiter's log to the sandbox's arrival time, in order."""
    with contextlib.closing(sqlite3.connect(f"file:{sync_db}?mode=ro", uri=True)) as db:
        stamps = [row[0] for row in db.execute("SELECT sent_at FROM aiq_rate_limit_sends ORDER BY sent_at")]
    if len(stamps) != len(arrivals):
        raise RuntimeError(f"{len(stamps)} sends stamped but {len(arrivals)} requests arrived")
    return [(arrived - stamped) * 1000 for stamped, arrived in zip(stamps, arrivals, strict=True)]


def one_rep(size: str, pos_path: Path, info: dict, scale: float, margin: float, rep: int,
            profile: bool = False) -> Rep:
    limits = tuple(int(limit * scale) for limit in AIQ_LIMITS)
    work = DATA / f"{size}-rep{rep}"
    work.mkdir(parents=True, exist_ok=True)
    sync_db = work / "sync.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{sync_db}{suffix}").unlink(missing_ok=True)
    sync_args = ["bench.sync_once", f"sqlite:///{pos_path}", f"sqlite:///{sync_db}", info["first_day"],
                 info["last_day"]]
    with sandbox(work / "sandbox.db", limits) as aiq:
        env = {**os.environ, "AIQ_BASE_URL": aiq.base_url, "AIQ_API_KEY": aiq.api_key, "AIQ_UID": UID,
               "AIQ_REQUESTS_PER_SECOND": str(limits[0]), "AIQ_REQUESTS_PER_MINUTE": str(limits[1]),
               "AIQ_REQUESTS_PER_HOUR": str(limits[2]), "AIQ_RATE_LIMIT_MARGIN_SECONDS": str(margin),
               "POS_START_DATE": info["first_day"]}
        log(f"{size} rep {rep}: sync")
        sync = run_child(sync_args, _profiled(env, work / "sync.prof", profile), work / "sync.log")
        if not sync.output["success"]:
            raise RuntimeError(f"the sync failed; see {work / 'sync.log'}")
        by_path = aiq.requests_by_path()
        stored = aiq.stored()
        delays = stamp_delays(sync_db, aiq.arrivals())
        log(f"{size} rep {rep}: unchanged re-sync")
        resync = run_child(sync_args, _profiled(env, work / "resync.prof", profile), work / "resync.log")
        resync_requests = sum(aiq.requests_by_path().values()) - sum(by_path.values())
    with sandbox(work / "reference-sandbox.db", GENEROUS) as aiq:
        log(f"{size} rep {rep}: reference")
        reference = run_child(
            ["bench.reference", str(pos_path), info["first_day"], info["last_day"], aiq.base_url, UID],
            {**os.environ, "AIQ_API_KEY": aiq.api_key}, work / "reference.log",
        )
    requests = sum(by_path.values())
    optimal = math.ceil(stored["members"] / BATCH) + math.ceil(stored["sales"] / BATCH)
    return Rep(sync, resync, reference, requests, optimal, resync_requests, stored["members"] + stored["sales"],
               rate_floor(requests, limits), earliest_schedule(requests, limits), delays)


def sensor_ticks(pos_path: Path, info: dict, ticks: int) -> list[float]:
    env = {**os.environ, "POS_START_DATE": info["first_day"]}
    run = run_child(["bench.sensor_tick", f"sqlite:///{pos_path}", str(ticks)], env, DATA / "sensor.log")
    return run.output["tick_seconds"]


# -- report -------------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(
    results: dict[str, tuple[dict, list[Rep]]], scale: float, margin: float, sensor: tuple[str, list[float]] | None
) -> str:
    head = ["size", "transactions", "records sent", "runs", "wall s", "push wall s", "CPU s", "peak RSS MB",
            "AIQ requests", "MB sent", "records/s", "requests / optimal", "push wall / rate floor",
            "push wall / earliest schedule", "429s", "stamp→arrival ms (median / max)", "CPU/record / reference",
            "re-sync requests", "re-sync wall s"]
    rows = []
    for size, (info, reps) in results.items():
        rows.append([
            size, f"{info['transactions']:,}", f"{int(median([r.records for r in reps])):,}", str(len(reps)),
            f"{median([r.sync.wall for r in reps]):.1f}", f"{median([r.push_wall for r in reps]):.1f}",
            f"{median([r.sync.cpu for r in reps]):.1f}", f"{median([r.sync.peak_rss_mb for r in reps]):.0f}",
            f"{int(median([r.requests for r in reps])):,}", f"{median([r.bytes_sent for r in reps]) / 1e6:.1f}",
            f"{median([r.records / r.sync.wall for r in reps]):,.0f}",
            f"{median([r.requests / r.optimal for r in reps]):.4f} ({int(median([r.optimal for r in reps])):,})",
            f"{median([r.push_wall / r.floor for r in reps]):.2f} ({median([r.floor for r in reps]):.1f} s)",
            f"{median([r.push_wall / r.schedule for r in reps]):.2f} ({median([r.schedule for r in reps]):.1f} s)",
            str(max(r.throttled for r in reps)),
            f"{median([median(r.delays_ms) for r in reps]):.1f} / {max(max(r.delays_ms) for r in reps):.1f}",
            f"{median([r.cpu_ratio for r in reps]):.2f}",
            str(int(max(r.resync_requests for r in reps))), f"{median([r.resync.wall for r in reps]):.1f}",
        ])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    extra = []
    rss = {size: median([r.sync.peak_rss_mb for r in reps]) for size, (_, reps) in results.items()}
    if "1m" in rss and "100k" in rss:
        extra.append(f"- peak RSS 1M / 100k: {rss['1m'] / rss['100k']:.2f} ({rss['1m']:.0f} MB / {rss['100k']:.0f} MB)")
    if sensor:
        size, ticks = sensor
        extra.append(f"- change-sensor tick on the {size} POS after touching 3 sales: median {median(ticks):.3f} s, "
                     f"max {max(ticks):.3f} s over {len(ticks)} ticks")
    limits = ", ".join(f"{int(n * scale):,}/{w}" for n, w in zip(AIQ_LIMITS, ("s", "min", "h"), strict=True))
    extra.append(f"- rate limits: AIQ's defaults x{scale:g} ({limits}) in the sandbox and the client; the client's "
                 f"margin on the 1 s window: {margin:g} s (AIQ_RATE_LIMIT_MARGIN_SECONDS)")
    return "\n".join([*lines, "", *extra])


def machine() -> str:
    import dagster

    mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    return (f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), {int(mem) / 1024**2:.1f} GiB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, dagster {dagster.__version__}")


def write_results(body: str, command: str) -> None:
    analysis = ""
    if RESULTS.exists() and ANALYSIS_HEADING in RESULTS.read_text():
        analysis = RESULTS.read_text().split(ANALYSIS_HEADING, 1)[1]
    RESULTS.write_text(
        "# Benchmark results\n\n"
        f"Produced by `{command}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.\n"
        f"Machine: {machine()}.\n\n"
        f"{body}\n\n{ANALYSIS_HEADING}{analysis or chr(10)}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10k,100k,1m", help="comma-separated sizes of %(choices)s (%(default)s)".replace(
        "%(choices)s", "/".join(SIZES)))
    parser.add_argument("--repeat", default="10k=3,100k=3,1m=3",
                        help="runs per size; figures are medians (%(default)s; a 1M run takes about 25 minutes)")
    parser.add_argument("--rate-scale", type=float, default=10.0,
                        help="factor applied to AIQ's 5/s, 120/min, 2,000/h in sandbox and client (%(default)s)")
    parser.add_argument("--margin", type=float, default=0.05,
                        help="the client's AIQ_RATE_LIMIT_MARGIN_SECONDS: at least the spread of stamp-to-arrival "
                             "delays on this link (%(default)s s; loopback measures tens of ms at most)")
    parser.add_argument("--sensor-ticks", type=int, default=5, help="change-sensor ticks (%(default)s)")
    parser.add_argument("--sensor-size", default="1m", choices=list(SIZES),
                        help="the POS the change sensor ticks on (%(default)s)")
    parser.add_argument("--profile", action="store_true",
                        help="write a cProfile of each sync to .data/bench/<size>-rep<n>/sync.prof and resync.prof "
                             "(slows it down)")
    parser.add_argument("--no-write", action="store_true", help="print the table without writing bench/RESULTS.md")
    args = parser.parse_args(argv)
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; expected some of {list(SIZES)}")
    repeat = {k: int(v) for k, v in (item.split("=") for item in args.repeat.split(","))}
    DATA.mkdir(parents=True, exist_ok=True)
    results: dict[str, tuple[dict, list[Rep]]] = {}
    for size in sizes:
        pos_path, info = generate(size)
        reps = [one_rep(size, pos_path, info, args.rate_scale, args.margin, rep, args.profile)
                for rep in range(repeat.get(size, 1))]
        results[size] = (info, reps)
        log(f"{size}: " + json.dumps([{"wall": r.sync.wall, "cpu": r.sync.cpu, "rss": r.sync.peak_rss_mb,
                                       "requests": r.requests, "optimal": r.optimal, "floor": r.floor,
                                       "schedule": r.schedule, "429s": r.throttled, "delay_ms_max": max(r.delays_ms),
                                       "push_wall": r.push_wall, "steps": r.sync.output["steps"],
                                       "ref_cpu": r.reference.output["work_cpu"], "work_cpu": r.sync.output["work_cpu"],
                                       "resync_requests": r.resync_requests} for r in reps]))
    sensor = None
    if args.sensor_ticks:
        pos_path, info = generate(args.sensor_size)
        log(f"change-sensor ticks on the {args.sensor_size} POS")
        sensor = (args.sensor_size, sensor_ticks(pos_path, info, args.sensor_ticks))
    body = table(results, args.rate_scale, args.margin, sensor)
    print(body)
    if not args.no_write:
        write_results(body, "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
