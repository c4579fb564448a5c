"""What the delivery audit costs: ``.venv/bin/python -m bench.audit [--personas 10000] [--page-sizes 100,1000]``.

It writes a POS of ``--personas`` shoppers with one sale each on one day (cached under ``.data/bench``), syncs the day
into a sandbox that silently drops ``--drop`` of the personas (generous limits: the setup is not measured), then, per
page size, audits the day on a copy of that sync database against the same sandbox restarted with AIQ's default limits
(5/s, 120/min, 2,000/h, scaled by ``--rate-scale``), with the client's limiter holding the audit to
AUDIT_BUDGET_SHARE (5%) of them and a day's budget of that share of an hour (100 requests). It measures the audit's
wall time, its requests (the client's count and the sandbox's log), the most audit requests the sandbox saw in any
1 s, 4 s and 60 s, and what the audit concluded against what the sandbox really dropped. It prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from aiq_pipelines.aiq.ratelimit import STANDARD_WINDOWS, BudgetShare
from bench.run import AIQ_LIMITS, DATA, GENEROUS, UID, _free_port, log, machine, sandbox

DAY = dt.date(2026, 6, 10)


def write_pos(path: Path, personas: int) -> None:
    """``personas`` shoppers with a valid phone and email, one sale each on DAY (modified long before it)."""
    from aiq_pipelines.db.engines import engine_for
    from aiq_pipelines.pos.reference import create_reference_schema

    if path.exists():
        return
    engine = engine_for(f"sqlite:///{path}")
    create_reference_schema(engine)
    noon = dt.datetime.combine(DAY, dt.time(18))  # noon in Denver, as UTC
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO locations (location_id, name, timezone) VALUES ('S1', 'Muffins Denver', "
                   "'America/Denver')")
        db.execute("INSERT INTO products (product_id, sku, name, unit_price, unit_cost, created_at, last_modified_at) "
                   "VALUES ('P1', 'SKU-1', 'Blue Dream 3.5g', '45.00', '20.00', '2025-01-01 00:00:00', "
                   "'2025-01-01 00:00:00')")
        db.executemany(
            "INSERT INTO customers (customer_id, first_name, last_name, phone, email, is_loyalty_member, created_at, "
            "last_modified_at) VALUES (?, ?, 'Shopper', ?, ?, 0, '2025-01-01 00:00:00', '2025-01-01 00:00:00')",
            [(f"C{n:06d}", f"Name{n}", f"720{200 + n // 10000:03d}{n % 10000:04d}", f"c{n}@example.com")
             for n in range(personas)])
        db.executemany(
            "INSERT INTO transactions (transaction_id, location_id, customer_id, transaction_at, subtotal, "
            "discount_total, tax_total, total, last_modified_at) VALUES (?, 'S1', ?, ?, '45.00', '0', '6.75', '51.75', ?)",
            [(f"T{n:06d}", f"C{n:06d}", at, at) for n in range(personas)
             for at in [f"{noon + dt.timedelta(seconds=n % 20000):%Y-%m-%d %H:%M:%S}"]])
        db.executemany("INSERT INTO transaction_items (transaction_id, line_number, product_id, quantity, unit_price) "
                       "VALUES (?, 1, 'P1', '1', '45.00')", [(f"T{n:06d}",) for n in range(personas)])


def sync_day(pos_path: Path, sync_path: Path, box) -> None:
    import dagster as dg

    from aiq_pipelines.defs.aiq_assets import aiq_push
    from aiq_pipelines.defs.pos_assets import pos_personas, pos_transactions
    from aiq_pipelines.defs.resources import AiqResource, PosDatabase, SyncDatabase
    from aiq_pipelines.settings import load_settings

    settings, sync_url = load_settings(), f"sqlite:///{sync_path}"
    resources = {"pos": PosDatabase.from_settings(settings, url=f"sqlite:///{pos_path}"),
                 "sync": SyncDatabase.from_settings(settings, url=sync_url),
                 "aiq": AiqResource.from_settings(settings, api_key=box.api_key, base_url=box.base_url, uid=UID,
                                                  rate_limit_database_url=sync_url, requests_per_second=GENEROUS[0],
                                                  requests_per_minute=GENEROUS[1], requests_per_hour=GENEROUS[2])}
    result = dg.materialize([pos_transactions, pos_personas, aiq_push], resources=resources,
                            instance=dg.DagsterInstance.ephemeral(), partition_key=DAY.isoformat(),
                            raise_on_error=False, run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    if not result.success:
        raise RuntimeError(f"the setup sync failed: {[e.message for e in result.all_events if e.is_failure]}")


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of the sync database, without the setup's sends in the rate limiter's log."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
        dst.execute("DELETE FROM aiq_rate_limit_sends")
        dst.commit()


def most_in_window(times: list[float], seconds: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


def audit_case(sync_path: Path, box, limits: tuple[int, int, int], page_size: int) -> dict:
    import sqlalchemy as sa

    from aiq_pipelines.defs.audit import DeliveryAudit
    from aiq_pipelines.defs.resources import AiqResource
    from aiq_pipelines.settings import load_settings
    from aiq_pipelines.sync.audit import Auditor

    settings, sync_url = load_settings(), f"sqlite:///{sync_path}"
    aiq = AiqResource.from_settings(settings, api_key=box.api_key, base_url=box.base_url, uid=UID,
                                    rate_limit_database_url=sync_url, requests_per_second=limits[0],
                                    requests_per_minute=limits[1], requests_per_hour=limits[2])
    audit = DeliveryAudit.from_settings(settings, after_hours=0, page_size=page_size)
    with contextlib.closing(sqlite3.connect(box.db_path)) as db:
        since = db.execute("SELECT COALESCE(MAX(id), 0) FROM requests").fetchone()[0]
    started = time.monotonic()
    with aiq.open_client(audit.share) as client:
        result = Auditor(sa.create_engine(sync_url), client, aiq.account, "bench", after=dt.timedelta(0),
                         page_size=page_size, max_requests_per_day=audit.requests_per_day(aiq), seed=1
                         ).audit(DAY, DAY + dt.timedelta(days=1))
    wall = time.monotonic() - started
    with contextlib.closing(sqlite3.connect(box.db_path)) as db:
        arrivals = [at for (at,) in db.execute("SELECT received_at FROM requests WHERE id > ? AND path LIKE '%piis%'",
                                               (since,))]
        throttled = db.execute("SELECT COUNT(*) FROM requests WHERE id > ? AND status = 429", (since,)).fetchone()[0]
    return {"wall": wall, "result": result, "arrivals": arrivals, "throttled": throttled,
            "per_day": audit.requests_per_day(aiq)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--personas", type=int, default=10_000, help="personas of the audited day (%(default)s)")
    parser.add_argument("--page-sizes", default="100,1000", help="AUDIT_PAGE_SIZE values, one case each (%(default)s)")
    parser.add_argument("--drop", type=float, default=0.02, help="fraction the sandbox drops (%(default)s)")
    parser.add_argument("--rate-scale", type=float, default=1.0, help="factor on AIQ's limits (%(default)s)")
    args = parser.parse_args(argv)
    work = DATA / f"audit-{args.personas}"
    work.mkdir(parents=True, exist_ok=True)
    os.environ["POS_START_DATE"] = "2026-01-01"
    pos_path, setup_db = work / "pos.db", work / "sync.db"
    limits = tuple(int(limit * args.rate_scale) for limit in AIQ_LIMITS)
    write_pos(pos_path, args.personas)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{setup_db}{suffix}").unlink(missing_ok=True)
    port = _free_port()
    drop = ("--drop-personas", str(args.drop), "--drop-seed", "1")
    log(f"setup: syncing {args.personas:,} personas and sales into a sandbox that drops {args.drop:.0%}")
    with sandbox(work / "sandbox.db", GENEROUS, *drop, port=port) as box:
        sync_day(pos_path, setup_db, box)
        dropped = {d["pos_user"] for d in httpx.get(box.base_url + "/sandbox/state", timeout=120).json()["dropped"]}
    rows = []
    for page_size in (int(size) for size in args.page_sizes.split(",")):
        case_db = work / f"sync-page-{page_size}.db"
        copy_database(setup_db, case_db)
        log(f"audit with AUDIT_PAGE_SIZE={page_size} at {limits}")
        with sandbox(work / "sandbox.db", limits, *drop, reset=False, port=port) as box:
            case = audit_case(case_db, box, limits, page_size)
        (day,) = case["result"].days
        found = set(day.missing_keys)
        low, high = day.missing_interval
        rows.append([
            f"{page_size:,}", day.method + (" (sample)" if day.sampled else ""), f"{case['result'].requests:,}",
            f"{len(case['arrivals']):,}", str(case["throttled"]), f"{case['wall']:.1f}",
            f"{most_in_window(case['arrivals'], 1)} / {most_in_window(case['arrivals'], 4)} / "
            f"{most_in_window(case['arrivals'], 60)}",
            f"{day.read:,}", f"{day.missing:,} ({'all' if found == dropped else f'{len(found & dropped)} of'} "
            f"{len(dropped):,} dropped)" if not day.sampled else f"{day.missing:,} in the sample",
            f"{day.missing_rate:.2%} [{low:.2%}, {high:.2%}]", f"{day.missing_estimate:,}",
        ])
        log(f"page size {page_size}: {rows[-1]}")
    head = ["page size", "read", "requests (client)", "piis requests (sandbox)", "429s", "wall s",
            "most audit requests in any 1 s / 4 s / 60 s", "personas read", "missing found",
            "missing rate [95%]", "missing estimate"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    rates = ", ".join(f"{n:,}/{w}" for n, w in zip(limits, ("s", "min", "h"), strict=True))
    shared = ", ".join(f"{n:,} per {s:g} s" for s, n in BudgetShare("audit", 0.05).windows(
        list(zip(STANDARD_WINDOWS, limits, strict=True))))
    print(f"\n- {args.personas:,} personas on one day, {len(dropped):,} dropped by the sandbox ({args.drop:.0%}); the "
          f"sandbox and the client at {rates}; the audit's 5% share of them: {shared}; a day's budget "
          f"{case['per_day']:,} requests")
    print(f"- measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine()}")


if __name__ == "__main__":
    main()
