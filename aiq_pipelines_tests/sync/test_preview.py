"""A dry run: the same reading and diffing as a push, nothing sent or written, the exact figures a real run then has."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import sqlalchemy as sa

from aiq_pipelines.defs.dry_run import DRY_RUN_CONFIG, DRY_RUN_SELECTION, DRY_RUN_TAGS, daily_sync_dry_run
from aiq_pipelines.defs.keys import DRY_RUN_TAG
from aiq_pipelines.defs.resources import PosDatabase, SyncDatabase
from aiq_pipelines.settings import load_settings
from aiq_pipelines.sync.preview import seconds_at_limits
from aiq_pipelines.sync.schema import aiq_ledger, quarantine
from aiq_pipelines_tests.support.runs import DAILY, aiq_resource, metadata, sync

DAYS = ("2026-06-09", "2026-06-11")


def resources(pos_url: str, sync_url: str, sandbox, **aiq_options) -> dict:
    settings = load_settings()
    return {"pos": PosDatabase.from_settings(settings, url=pos_url),
            "sync": SyncDatabase.from_settings(settings, url=sync_url),
            "aiq": aiq_resource(sandbox, sync_url, **aiq_options)}


def dry_run(pos_url: str, sync_url: str, sandbox, **aiq_options) -> dict[str, dict]:
    """A dry run over the three days, as daily_sync_dry_run runs it: each push asset's observation metadata."""
    tags = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[1], **DRY_RUN_TAGS}
    with dg.instance_for_test() as instance:
        result = dg.materialize(DAILY, selection=DRY_RUN_SELECTION, resources=resources(pos_url, sync_url, sandbox,
                                **aiq_options), instance=instance, tags=tags, run_config=DRY_RUN_CONFIG)
        assert result.success
        assert not [e for e in result.get_asset_materialization_events() if e.asset_key.path[0].startswith("aiq")]
        observed = {}
        for asset in ("aiq_personas", "aiq_sales"):
            [record] = instance.fetch_observations(dg.AssetKey(asset), limit=1).records
            observed[asset] = {k: v.value for k, v in record.asset_observation.metadata.items()}
    return observed


def rows(sync_url: str, table: sa.Table, *where) -> int:
    with sa.create_engine(sync_url).connect() as conn:
        return conn.scalar(sa.select(sa.func.count()).select_from(table).where(*where))


def test_a_dry_run_sends_nothing_and_reports_what_the_real_run_then_does(shop, sync_url, sandbox):
    preview = dry_run(shop.url, sync_url, sandbox, batch_size_sales=4, batch_size_members=2)

    assert sandbox.requests() == [], "nothing reached AIQ"
    assert rows(sync_url, aiq_ledger) == 0 and rows(sync_url, quarantine, quarantine.c.stage != "extract") == 0
    personas, sales = preview["aiq_personas"], preview["aiq_sales"]
    assert (personas["new"], personas["changed"], personas["unchanged"], personas["aiq_requests"]) == (3, 0, 0, 2)
    assert (sales["new"], sales["would_send"], sales["voided_unsent"], sales["aiq_requests"]) == (6, 6, 1, 2)
    assert '"phone_number": "…42"' in personas["samples"] and '"email": "[email]"' in personas["samples"]
    assert '"first_name": "A."' in personas["samples"] and '"birthday": "[birthday]"' in personas["samples"]
    for value in ("555", "ada@", "Lovelace", "1985", "05/16"):
        assert value not in personas["samples"].lower(), value
    assert "| 2026-06-09 | 1 |" in personas["would_send_by_day"]

    real = sync(shop.url, sync_url, sandbox, *DAYS, batch_size_sales=4, batch_size_members=2)

    assert real.success
    sent_personas, sent_sales = metadata(real, "aiq_personas"), metadata(real, "aiq_sales")
    assert sent_personas["sent"] == personas["would_send"]
    assert sent_personas["aiq_requests"] == personas["aiq_requests"]
    assert (sent_sales["sent"], sent_sales["aiq_requests"]) == (sales["would_send"], sales["aiq_requests"])
    assert len(sandbox.requests()) == personas["aiq_requests"] + sales["aiq_requests"]

    again = dry_run(shop.url, sync_url, sandbox)
    assert again["aiq_sales"]["would_send"] == 0 and again["aiq_sales"]["unchanged"] == 6
    assert again["aiq_personas"]["aiq_requests"] == 0 and again["aiq_personas"]["unchanged"] == 2, "C1, C2 (C3 is known)"


def test_the_time_at_the_limits_is_the_slowest_window():
    assert seconds_at_limits(0, 5, 120, 2000) == 0
    assert seconds_at_limits(10, 5, 120, 2000) == 2.0
    assert seconds_at_limits(250, 5, 120, 2000) == 120.0, "the third minute's window opens after two minutes"
    assert seconds_at_limits(4001, 5, 120, 2000) == 7200.0


def test_the_preview_command_reports_from_the_terminal_and_sends_nothing(demo_pos_url, sync_url, sandbox):
    env = {**os.environ, "POS_DATABASE_URL": demo_pos_url, "SYNC_DATABASE_URL": sync_url,
           "AIQ_BASE_URL": sandbox.base_url, "AIQ_UID": sandbox.uid, "AIQ_API_KEY": sandbox.api_key}
    done = subprocess.run([sys.executable, "-m", "aiq_pipelines.cli", "preview", "--from", "2026-03-09", "--to",
                           "2026-03-10"], env=env, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith(("aiq_personas:", "aiq_sales:"))]
    assert [line.split(":")[0] for line in lines] == ["aiq_personas", "aiq_sales"]
    assert " would be sent (" in lines[1] and " requests, " in lines[1] and "s at the account's limits" in lines[1]
    assert int(lines[1].split(":")[1].split()[0].replace(",", "")) > 40, "the two days' sales"
    assert sandbox.requests() == [] and sandbox.api_key not in done.stdout + done.stderr
    assert rows(sync_url, aiq_ledger) == 0

    backwards = subprocess.run([sys.executable, "-m", "aiq_pipelines.cli", "preview", "--from", "2026-03-10", "--to",
                                "2026-03-09"], env=env, capture_output=True, text=True, timeout=120)
    assert backwards.returncode == 2 and "--to (2026-03-09) is before --from (2026-03-10)" in backwards.stderr


def test_a_dry_run_is_observed_on_each_day_of_its_window_and_tagged(shop, sync_url, sandbox):
    job = dg.Definitions(assets=DAILY, jobs=[daily_sync_dry_run],
                         resources=resources(shop.url, sync_url, sandbox)).resolve_job_def("daily_sync_dry_run")
    tags = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[1]}
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, tags=tags)

        assert result.success and sandbox.requests() == []
        assert instance.get_run_by_id(result.run_id).tags[DRY_RUN_TAG] == "true"
        assert [run.run_id for run in instance.get_runs(dg.RunsFilter(tags={DRY_RUN_TAG: "true"}))] == [result.run_id]
        observed = instance.fetch_observations(dg.AssetKey("aiq_sales"), limit=10).records
        logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    by_day = {r.partition_key: {k: v.value for k, v in r.asset_observation.metadata.items()} for r in observed}
    assert sorted(by_day) == ["2026-06-09", "2026-06-10", "2026-06-11"], "one observation per day of the window"
    assert {m["window_days"] for m in by_day.values()} == {3} and {m["would_send"] for m in by_day.values()} == {6}
    assert [by_day[d]["would_send_this_day"] for d in sorted(by_day)] == [2, 2, 2], "first-second, walk-in; ..."
    assert not [line for line in logs if "did not yield" in line], "the dry run leaves out the push's checks"
    assert "dry run of 2026-06-09..2026-06-11, transaction: 6 would be sent" in " ".join(logs)


def test_a_dry_run_without_its_tag_is_refused_before_anything_is_read(shop, sync_url, sandbox):
    with dg.instance_for_test() as instance:
        result = dg.materialize(DAILY, selection=["aiq_personas", "aiq_sales"], partition_key="2026-06-10",
                                resources=resources(shop.url, sync_url, sandbox), instance=instance,
                                run_config=DRY_RUN_CONFIG, raise_on_error=False)

    assert not result.success and sandbox.requests() == []
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message
    assert "a dry run carries the run tag aiq/dry_run=true" in failure and "daily_sync_dry_run" in failure
