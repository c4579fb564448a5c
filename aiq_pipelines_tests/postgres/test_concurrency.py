"""Concurrency on PostgreSQL: processes starting on a fresh sync database, two runs of the same days at once."""

import multiprocessing
import os
import pathlib
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.sync.schema import aiq_ledger, staged_transactions
from aiq_pipelines.sync.store import SyncStore
from aiq_pipelines_tests.support.days import local
from aiq_pipelines_tests.support.runs import members_by_user, sales_by_id

DAYS = ("2026-06-01", "2026-06-03")

RUN_SCRIPT = textwrap.dedent("""
    import pathlib, sys, time
    import dagster as dg
    from aiq_pipelines_tests.support.runs import DAILY, aiq_resource
    from aiq_pipelines.defs.resources import PosDatabase, SyncDatabase
    from aiq_pipelines.settings import load_settings
    from aiq_pipelines_tests.support.sandbox import Sandbox

    pos_url, sync_url, base_url, api_key, uid, gate, first, last, times = sys.argv[1:10]
    sandbox = Sandbox(base_url=base_url, api_key=api_key, uid=uid, db_path=None, log_path=None)
    resources = {"pos": PosDatabase.from_settings(load_settings(), url=pos_url),
                 "sync": SyncDatabase.from_settings(load_settings(), url=sync_url),
                 "aiq": aiq_resource(sandbox, sync_url, batch_size_sales=10, batch_size_members=10)}
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    pathlib.Path(times + ".ready").touch()
    while not pathlib.Path(gate).exists():  # both runs start together once both have imported Dagster
        time.sleep(0.01)
    started = time.time()
    with dg.instance_for_test() as instance:
        success = dg.materialize(DAILY, resources=resources, instance=instance, tags=tags).success
    pathlib.Path(times).write_text(f"{started} {time.time()}")
    sys.exit(0 if success else 1)
""")


def _open_store(url: str, start) -> None:  # type: ignore[no-untyped-def]
    start.wait(30)
    SyncStore(url, "America/Denver")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_starting_together_on_a_fresh_sync_database_all_create_it(backend, pg_database, tmp_path):
    spawn = multiprocessing.get_context("fork")  # cheap; each child opens its own engine for a new URL
    for attempt in range(3):  # each attempt is a fresh database: the race is at table creation
        if backend == "sqlite":
            path = tmp_path / f"sync-{attempt}.db"
            # An empty file already in WAL mode: several first connections switching a brand-new file to WAL at
            # once is a separate SQLite race, not the one this test is about.
            sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").connection.close()
            url = f"sqlite:///{path}"
        else:
            url = pg_database("fresh")
        start = spawn.Event()
        workers = [spawn.Process(target=_open_store, args=(url, start)) for _ in range(3)]
        for worker in workers:
            worker.start()
        start.set()
        for worker in workers:
            worker.join(timeout=60)
        assert [w.exitcode for w in workers] == [0, 0, 0], "a process failed creating tables another one created"
        assert "aiq_ledger" in sa.inspect(engine_for(url)).get_table_names()


def test_two_runs_of_the_same_days_at_once_leave_aiq_and_the_ledger_agreeing(pos, sync_url, sandbox, tmp_path):
    for day in range(1, 4):
        for n in range(20):
            customer = f"K{day}{n:02d}"
            pos.add_customer(customer, phone=f"303482{day}{n:03d}", modified=local(2026, 6, day, 7))
            pos.add_sale(f"S{day}-{n:02d}", local(2026, 6, day, 9 + n % 10, n), customer_id=customer)
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT)
    gate = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    times = [tmp_path / f"run-{n}.times" for n in range(2)]
    runs = [subprocess.Popen([sys.executable, str(script), pos.url, sync_url, sandbox.base_url, sandbox.api_key,
                              sandbox.uid, str(gate), *DAYS, str(path)], env=env, start_new_session=True)
            for path in times]
    # Open the gate once both runs have imported Dagster (which takes seconds, more on a loaded machine), so their
    # work overlaps however long either import took.
    deadline = time.monotonic() + 120
    while not all(pathlib.Path(f"{path}.ready").exists() for path in times):
        assert all(run.poll() is None for run in runs) and time.monotonic() < deadline, "a run never got ready"
        time.sleep(0.01)
    gate.touch()
    codes = [run.wait(timeout=180) for run in runs]

    assert codes == [0, 0], "both runs succeed: no deadlock, no duplicate-key error between them"
    (start_a, end_a), (start_b, end_b) = ([float(t) for t in path.read_text().split()] for path in times)
    assert max(start_a, start_b) < min(end_a, end_b), "the two runs were at work at the same time"
    held = sales_by_id(sandbox)
    expected = sorted(f"S{d}-{n:02d}" for d in range(1, 4) for n in range(20))
    assert sorted(held) == expected
    assert all(s["persona_known_at_arrival"] for s in held.values())
    with engine_for(sync_url).connect() as conn:
        ledger = conn.execute(sa.select(aiq_ledger.c.entity, aiq_ledger.c.record_key)).all()
        staged = conn.scalar(sa.select(sa.func.count()).select_from(staged_transactions))
    assert sorted(k for e, k in ledger if e == "transaction") == expected and staged == len(expected)
    assert sorted(k for e, k in ledger if e == "persona") == sorted(members_by_user(sandbox))
    sends = Counter(key for r in sandbox.requests() if "createUpdateSales" in r["path"] for key in r["keys"])
    twice = sorted(key for key, count in sends.items() if count > 1)
    assert twice == [], f"{len(twice)} unchanged sales were sent by both runs, e.g. {twice[:3]}"
