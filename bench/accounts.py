"""What several AIQ accounts buy: ``.venv/bin/python -m bench.accounts [--days 6] [--repeat 2] [--rate-scale 10]``.

It generates a demo POS of 2 stores (cached under ``.data/bench``), then, per repetition, pushes it on a fresh sync
database (a) to ONE account that lists both stores and (b) to TWO accounts of one store each (neither case has a
default account), every account with a sandbox of its own enforcing AIQ's default limits scaled by ``--rate-scale``
(the client's resource keeps the same limits; ``--rate-scale 1`` is AIQ's real 5/s, 120/min, 2,000/h). Each push is
one run of the daily assets over the whole range, in this process, with ``build_push_assets(configs, prefixed=True)``.
It measures the ``aiq_push`` step's wall time, each sandbox's requests, 429s and stored records (sales and members),
the push wall over the rate floor of the busiest account, and checks that each sandbox received exactly the POS sales
of its own stores, voided ones aside (a void is never sent on a first sync). It prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sqlite3
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.run import AIQ_LIMITS, DATA, END_DATE, GENERATED_AT, UID, Sandbox, log, rate_floor, sandbox

STORES = 2


def generate(days: int) -> tuple[Path, dict]:
    """The 2-store demo POS of ``days`` days, generated once and kept (the same options give the same database)."""
    path, marker = DATA / f"pos-accounts-{days}d.db", DATA / f"pos-accounts-{days}d.json"
    if path.exists() and marker.exists():
        return path, json.loads(marker.read_text())
    from aiq_pipelines.pos import demo

    log(f"generating the demo POS ({STORES} stores x {days} days)")
    path.unlink(missing_ok=True)
    summary = demo.generate(f"sqlite:///{path}", demo.DemoOptions(days=days, stores=STORES, end_date=END_DATE),
                            replace=True, now=GENERATED_AT)
    info = {"transactions": summary.transactions, "customers": summary.customers,
            "first_day": summary.first_day.isoformat(), "last_day": summary.last_day.isoformat()}
    marker.write_text(json.dumps(info))
    return path, info


def pos_sales(pos_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The location_id of each POS sale that is not voided, and each location's name."""
    with contextlib.closing(sqlite3.connect(f"file:{pos_path}?mode=ro", uri=True)) as db:
        sales = dict(db.execute("SELECT transaction_id, location_id FROM transactions WHERE NOT is_void").fetchall())
        names = dict(db.execute("SELECT location_id, name FROM locations").fetchall())
    return sales, names


@dataclass
class AccountResult:
    name: str
    locations: tuple[str, ...]
    requests: int
    throttled: int
    records: int
    sales: dict[str, str]  # pos_id -> location name, as the sandbox stored them
    span: float  # first to last request arriving at the sandbox


@dataclass
class CaseRun:
    push_wall: float
    accounts: list[AccountResult]
    floor: float


def sandbox_figures(box: Sandbox) -> tuple[int, int, float]:
    with contextlib.closing(sqlite3.connect(f"file:{box.db_path}?mode=ro", uri=True)) as db:
        requests, throttled, first, last = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(status = 429), 0), MIN(received_at), MAX(received_at) FROM requests").fetchone()
    return requests, throttled, (last - first) if requests else 0.0


def step_seconds(instance, run_id: str, step: str) -> float:
    started = None
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or entry.step_key != step:
            continue
        if event.event_type_value == "STEP_START":
            started = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and started is not None:
            return entry.timestamp - started
    raise RuntimeError(f"no {step} step in run {run_id}")


def push_case(pos_path: Path, info: dict, accounts: dict[str, tuple[str, ...]], limits: tuple[int, int, int],
              margin: float, work: Path) -> CaseRun:
    import dagster as dg

    from aiq_pipelines.defs.aiq_assets import build_push_assets
    from aiq_pipelines.defs.pos_assets import pos_personas, pos_transactions
    from aiq_pipelines.defs.resources import AiqResource, PosDatabase, SyncDatabase
    from aiq_pipelines.settings import AccountSettings, load_settings

    work.mkdir(parents=True, exist_ok=True)
    sync_db = work / "sync.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{sync_db}{suffix}").unlink(missing_ok=True)
    sync_url, settings = f"sqlite:///{sync_db}", load_settings()
    with contextlib.ExitStack() as stack:
        boxes = {name: stack.enter_context(sandbox(work / f"sandbox-{name}.db", limits)) for name in accounts}
        configs = [AccountSettings(name=name, uid=UID, base_url=boxes[name].base_url,
                                   api_key_env=f"AIQ_API_KEY_{name.upper()}", locations=locations,
                                   requests_per_second=limits[0], requests_per_minute=limits[1],
                                   requests_per_hour=limits[2]) for name, locations in accounts.items()]
        resources = {"pos": PosDatabase.from_settings(settings, url=f"sqlite:///{pos_path}"),
                     "sync": SyncDatabase.from_settings(settings, url=sync_url, timezone="America/Denver",
                                                       look_up_shopper_stores=True)}  # no account is the default
        for config in configs:
            resources[f"aiq_{config.name}"] = AiqResource.from_account(
                settings, config, api_key=boxes[config.name].api_key, rate_limit_database_url=sync_url,
                rate_limit_margin_seconds=margin)
        push, _ = build_push_assets(configs, prefixed=True)
        tags = {"dagster/asset_partition_range_start": info["first_day"],
                "dagster/asset_partition_range_end": info["last_day"]}
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize([pos_transactions, pos_personas, push], resources=resources, instance=instance,
                                tags=tags, raise_on_error=False,
                                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        if not result.success:
            raise RuntimeError(f"the run failed: {[e.message for e in result.all_events if e.is_failure]}")
        push_wall = step_seconds(instance, result.run_id, "aiq_push")
        results = []
        for config in configs:
            box = boxes[config.name]
            requests, throttled, span = sandbox_figures(box)
            state = httpx.get(box.base_url + "/sandbox/state", timeout=60).json()
            results.append(AccountResult(config.name, config.locations, requests, throttled,
                                         len(state["sales"]) + len(state["members"]),
                                         {sale["pos_id"]: sale["location"] for sale in state["sales"]}, span))
    busiest = max(results, key=lambda a: a.requests)
    return CaseRun(push_wall, results, rate_floor(busiest.requests, limits))


def routing(runs: dict[str, CaseRun], pos: dict[str, str], names: dict[str, str]) -> list[str]:
    """Problems: a sandbox missing a sale of its stores, or holding one of another store or under another name."""
    problems = []
    for case, case_run in runs.items():
        for account in case_run.accounts:
            expected = {pos_id for pos_id, location in pos.items() if location in account.locations}
            misnamed = sum(1 for pos_id, name in account.sales.items() if pos_id in expected and name != names[pos[pos_id]])
            missing, extra = len(expected - set(account.sales)), len(set(account.sales) - expected)
            if missing or extra or misnamed:
                problems.append(f"{case}/{account.name}: {missing} missing, {extra} not its stores', {misnamed} misnamed")
    return problems


def table(reps: list[dict[str, CaseRun]], limits: tuple[int, int, int]) -> str:
    head = ["case", "runs", "push wall s", "requests per account", "429s per account", "requests' span per account s",
            "records sent", "busiest account's rate floor s", "push wall / rate floor", "push wall vs one account"]
    one = statistics.median([rep["one account"].push_wall for rep in reps])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in reps[0]:
        runs = [rep[case] for rep in reps]
        per_account = [[a.requests for a in r.accounts] for r in runs]
        wall = statistics.median([r.push_wall for r in runs])
        lines.append("| " + " | ".join([
            case, str(len(runs)), f"{wall:.2f} ({', '.join(f'{r.push_wall:.2f}' for r in runs)})",
            " + ".join(f"{statistics.median(col):,.0f}" for col in zip(*per_account, strict=True)),
            " + ".join(str(max(col)) for col in zip(*[[a.throttled for a in r.accounts] for r in runs], strict=True)),
            " + ".join(f"{statistics.median(col):.2f}" for col in zip(*[[a.span for a in r.accounts] for r in runs],
                                                                          strict=True)),
            f"{statistics.median([sum(a.records for a in r.accounts) for r in runs]):,.0f}",
            f"{statistics.median([r.floor for r in runs]):.2f}",
            f"{statistics.median([r.push_wall / r.floor for r in runs]):.2f}", f"{wall / one:.2f}",
        ]) + " |")
    rates = ", ".join(f"{n:,}/{w}" for n, w in zip(limits, ("s", "min", "h"), strict=True))
    return "\n".join([*lines, "", f"- each account: a sandbox of its own at {rates}, the same limits in its client"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.accounts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=6, help="days of the 2-store demo POS (%(default)s: about 10k sales)")
    parser.add_argument("--repeat", type=int, default=2, help="repetitions of both cases (%(default)s)")
    parser.add_argument("--rate-scale", type=float, default=10.0,
                        help="factor applied to AIQ's 5/s, 120/min, 2,000/h in sandboxes and clients (%(default)s)")
    parser.add_argument("--margin", type=float, default=0.05, help="AIQ_RATE_LIMIT_MARGIN_SECONDS (%(default)s s)")
    args = parser.parse_args(argv)
    DATA.mkdir(parents=True, exist_ok=True)
    pos_path, info = generate(args.days)
    os.environ["POS_START_DATE"] = info["first_day"]
    pos, names = pos_sales(pos_path)
    stores = tuple(sorted(names))
    cases = {"one account": {"every_store": stores},
             "two accounts": {f"store_{location[-2:]}": (location,) for location in stores}}
    limits = tuple(int(limit * args.rate_scale) for limit in AIQ_LIMITS)
    log(f"POS: {info}; stores {names}")
    reps, problems = [], []
    for rep in range(args.repeat):
        order = list(cases) if rep % 2 == 0 else list(reversed(cases))
        runs = {}
        for case in order:
            log(f"rep {rep}: {case}")
            # A directory per repetition and case: this process keeps its engines per URL, so a URL whose file
            # was deleted must not come back.
            runs[case] = push_case(pos_path, info, cases[case], limits, args.margin,
                                   DATA / f"accounts-rep{rep}-{case.replace(' ', '-')}")
            log(f"rep {rep}: {case}: " + json.dumps({
                "push_wall": runs[case].push_wall, "floor": runs[case].floor,
                "accounts": [{"name": a.name, "requests": a.requests, "429s": a.throttled, "records": a.records,
                              "sales": len(a.sales), "span": a.span} for a in runs[case].accounts]}))
        reps.append({case: runs[case] for case in cases})
        problems += [f"rep {rep}: {p}" for p in routing(runs, pos, names)]
    print(table(reps, limits))
    received = {a.name: len(a.sales) for a in reps[-1]["two accounts"].accounts}
    in_pos = {location: sum(1 for loc in pos.values() if loc == location) for location in stores}
    print(f"- POS: {info['transactions']:,} sales, {len(pos):,} not voided "
          f"({', '.join(f'{s} {names[s]} {in_pos[s]:,}' for s in stores)}), {info['first_day']}..{info['last_day']}; "
          "sales received, two accounts: " + ", ".join(f"{name} {count:,}" for name, count in received.items()))
    print("- routing: " + ("; ".join(problems) if problems else "in every run each sandbox received exactly the "
                           "not-voided sales of its own store(s), under their names"))
    print(f"- measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
