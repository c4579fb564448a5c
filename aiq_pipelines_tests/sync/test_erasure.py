"""Erasing a shopper: none of their personal data is left in any table of the sync database or the drop folder's
mirror (every column of every table, found by reflection), nor in any answer of the pull API; the erasure is
recorded with their key only; the command says the POS (here a drop file) still holds them."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from aiq_pipelines.defs.erasure import build_forget_job
from aiq_pipelines.defs.resources import DropFolder, PosDatabase, SyncDatabase
from aiq_pipelines.pos.dropfiles import export_tables
from aiq_pipelines.settings import load_settings
from aiq_pipelines_tests.support.erasure import DAY, SHOPPERS, SYNCED_COPIES, add_shoppers, erasures
from aiq_pipelines_tests.support.personal import shopper_found, stored_values
from aiq_pipelines_tests.support.pull import everything_served
from aiq_pipelines_tests.support.runs import aiq_resource, materialize


@pytest.fixture
def synced(pos, tmp_path, sync_url, sandbox):
    """A drop folder exported from a POS with E1 and K1, each with a sale on June 10, a line giving E1 again that does
    not parse, taken in and synced (the shoppers' stores looked up, as with several accounts): the mirror's URL and
    the drop folder's resource."""
    add_shoppers(pos)
    folder = tmp_path / "drop"
    export_tables(pos.engine, folder)
    customers = (folder / "customers.csv").read_text().splitlines()
    e1 = next(line for line in customers if line.startswith("E1,"))
    (folder / "customers-fix.csv").write_text("\n".join([customers[0], e1.replace("1958-09-23", "23 Sept 1958")]) + "\n")
    settings = load_settings()
    drop = DropFolder.from_settings(settings, folder=str(folder), mirror_url=f"sqlite:///{tmp_path / 'mirror.db'}")
    sync = SyncDatabase.from_settings(settings, url=sync_url, look_up_shopper_stores=True)
    resources = {"drop": drop, "sync": sync, "aiq": aiq_resource(sandbox, sync_url),
                 "pos": PosDatabase.from_settings(settings, url=drop.mirror_url)}
    from aiq_pipelines.defs.drops import pos_drop_files

    with dg.instance_for_test() as instance:
        assert dg.materialize([pos_drop_files], resources=resources, instance=instance).success
        tags = {"dagster/asset_partition_range_start": DAY, "dagster/asset_partition_range_end": DAY}
        assert materialize(None, resources=resources, instance=instance, tags=tags).success
    return resources


def test_an_erased_shopper_leaves_no_personal_data_in_the_sync_database_the_mirror_or_the_pull_api(
    synced, sync_url, tmp_path
):
    mirror_url = synced["drop"].mirror_url
    before = stored_values(sync_url) + stored_values(mirror_url) + [("pull API", everything_served(sync_url))]
    assert {where for where, _ in shopper_found(before, SHOPPERS["E1"])} >= {
        *SYNCED_COPIES, "quarantine.source", "customers.first_name", "pull API"}, "the scan finds E1 where it is kept"
    env = {**os.environ, "SYNC_DATABASE_URL": sync_url, "POS_DROP_DIR": synced["drop"].folder,
           "POS_DATABASE_URL": mirror_url}

    done = subprocess.run([sys.executable, "-m", "aiq_pipelines.cli", "forget-shopper", "E1", "--by", "dpo@example"],
                          env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 3, done.stderr
    assert "the drop file customers.csv; the drop file customers-fix.csv still hold shopper E1" in done.stderr
    assert "AIQ publishes no delete call: delete the persona (pos_user E1) in AIQ's own UI" in done.stdout
    after = stored_values(sync_url) + stored_values(mirror_url)
    assert shopper_found(after, SHOPPERS["E1"]) == [], "E1's personal data is left in a table"
    assert shopper_found([("pull API", everything_served(sync_url))], SHOPPERS["E1"]) == [], "the pull API still serves E1"
    assert shopper_found(after, SHOPPERS["K1"]), "only E1 was erased"
    assert erasures(sync_url) == [("E1", "dpo@example", True)]
    assert ("staged_transactions.transaction_id", "SALE-E1") in after, "the sale stays, without personal data"


def test_the_forget_shopper_job_erases_and_its_events_name_only_the_key(synced, sync_url, pos):
    resources = {"sync": synced["sync"], "pos": PosDatabase.from_settings(load_settings(), url=pos.url)}
    with dg.instance_for_test() as instance:
        result = build_forget_job(with_drop_folder=False).execute_in_process(
            instance=instance, resources=resources,
            run_config={"ops": {"forget_shopper_data": {"config": {"customer_id": "K1"}}}})
        events = [dg.serialize_value(entry) for entry in instance.all_logs(result.run_id)]

    assert result.success
    assert shopper_found(stored_values(sync_url), SHOPPERS["K1"]) == []
    assert shopper_found([("event log", "\n".join(events))], SHOPPERS["K1"]) == [], "the job's events name the key only"
    messages = "\n".join(events)
    assert "shopper K1: " in messages and "WARNING: the POS still holds shopper K1" in messages
