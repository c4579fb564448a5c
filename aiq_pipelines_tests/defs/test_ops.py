"""The operator's console: the quarantine as an asset with its age check, and alerts posted to a local webhook."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest
import sqlalchemy as sa

from aiq_pipelines.defs.keys import CHECK_QUARANTINE, POS_TRANSACTIONS
from aiq_pipelines.defs.ops import alert_on_run_failure, build_check_alerts, build_retry_job, sync_quarantine
from aiq_pipelines.defs.resources import PosDatabase, SyncDatabase
from aiq_pipelines.pos.times import utc_now
from aiq_pipelines.settings import load_settings
from aiq_pipelines.sync.held import held_records, reason_kind
from aiq_pipelines.sync.schema import ensure_schema, quarantine
from aiq_pipelines_tests.support.days import local
from aiq_pipelines_tests.support.runs import DAILY, aiq_resource, sync


def materialize_quarantine(sync_url: str, instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as own:
        return dg.materialize([sync_quarantine], instance=instance or own,
                              resources={"sync": SyncDatabase.from_settings(load_settings(), url=sync_url)})


def table(result: dg.ExecuteInProcessResult) -> list[dict]:
    [event] = result.get_asset_materialization_events()
    return [record.data for record in event.materialization.metadata["records"].value.records]


@pytest.fixture
def shop(pos):
    pos.add_customer("C1", phone="(303) 555-0142", email="ada@example.com", modified=local(2026, 6, 10, 8))
    pos.add_sale("S-1", local(2026, 6, 10, 12), customer_id="C1")
    pos.add_sale("S-2", local(2026, 6, 10, 13))
    return pos


def test_a_refused_sale_is_in_the_quarantine_table_until_fixed_and_retried_by_retry_quarantined(
    shop, sync_url, sandbox_factory
):
    refusing = sandbox_factory(refuse_keys="S-1,S-3", per_second=1000, per_minute=100_000, per_hour=1_000_000)
    shop.add_sale("S-3", local(2026, 6, 12, 9))  # two days apart: June 11 holds nothing to retry
    assert sync(shop.url, sync_url, refusing, "2026-06-10", "2026-06-12").success

    held = table(materialize_quarantine(sync_url))

    assert [(r["entity"], r["key"], r["business_day"], r["stage"]) for r in held] == [
        ("transaction", "S-1", "2026-06-10", "aiq"), ("transaction", "S-3", "2026-06-12", "aiq")]
    assert held[0]["reason"].startswith("refused by AIQ: ")
    assert "555" not in json.dumps(held) and "ada@" not in json.dumps(held), "no phone or email in the table"
    refusing.restart(refuse_keys="")
    for key, at in (("S-1", local(2026, 6, 10, 12, 0, 1)), ("S-3", local(2026, 6, 12, 9, 0, 1))):
        shop.execute("UPDATE transactions SET transaction_at = :at WHERE transaction_id = :key",
                     at=f"{at:%Y-%m-%d %H:%M:%S}", key=key)  # fixed at the source: a new payload
    resources = {"pos": PosDatabase.from_settings(load_settings(), url=shop.url),
                 "sync": SyncDatabase.from_settings(load_settings(), url=sync_url),
                 "aiq": aiq_resource(refusing, sync_url)}
    with dg.instance_for_test() as instance:
        retry = build_retry_job(DAILY, resources).execute_in_process(instance=instance, resources=resources)
        ranges = sorted((run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"])
                        for run in instance.get_runs() if run.tags.get("retry_of") == retry.run_id)

    assert retry.success and ranges == [("2026-06-10", "2026-06-10"), ("2026-06-12", "2026-06-12")]
    assert {"S-1", "S-3"} <= {sale["pos_id"] for sale in refusing.state()["sales"]}
    after = materialize_quarantine(sync_url)

    assert table(after) == []
    assert [c.passed for c in after.get_asset_check_evaluations()] == [True]


def test_a_record_waiting_longer_than_the_limit_fails_the_age_check(sync_url):
    engine = sa.create_engine(sync_url)
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(quarantine.insert(), [
            {"entity": "persona", "record_key": "C9", "stage": "extract", "business_date": dt.date(2026, 6, 1),
             "reason": "birthday: not a date", "run_id": "r0", "quarantined_at": utc_now() - dt.timedelta(days=5)},
            {"entity": "transaction", "record_key": "T9", "stage": "payload", "business_date": dt.date(2026, 6, 2),
             "reason": "waiting for its persona", "run_id": "r0", "quarantined_at": utc_now()},
        ])

    result = materialize_quarantine(sync_url)

    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith("1 records have waited longer than 3 days, the oldest persona C9 since ")
    [event] = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.materialization.metadata.items() if k != "records"}
    assert metadata["quarantined"] == 2 and metadata["stage extract"] == 1 and metadata["stage payload"] == 1
    assert metadata["days_to_retry"] == "2026-06-01, 2026-06-02"


def test_first_seen_survives_a_record_being_held_back_again(sync_url):
    engine = sa.create_engine(sync_url)
    ensure_schema(engine)
    first = dt.datetime(2026, 6, 1, 12)
    row = {"entity": "transaction", "record_key": "T1", "stage": "extract", "business_date": dt.date(2026, 6, 1),
           "reason": "store missing", "run_id": "r0"}
    with engine.begin() as conn:
        conn.execute(quarantine.insert(), {**row, "quarantined_at": first})
    held_records(engine, first)
    with engine.begin() as conn:  # the next extract of the day replaces the row
        conn.execute(quarantine.delete())
        conn.execute(quarantine.insert(), {**row, "quarantined_at": first + dt.timedelta(days=1), "run_id": "r1"})

    [held] = held_records(engine, first + dt.timedelta(days=1))

    assert (held.first_seen, held.last_seen) == (first, first + dt.timedelta(days=1))
    with engine.begin() as conn:
        conn.execute(quarantine.delete())
    assert held_records(engine) == []
    with engine.begin() as conn:
        conn.execute(quarantine.insert(), {**row, "quarantined_at": first + dt.timedelta(days=9)})
    assert held_records(engine)[0].first_seen == first + dt.timedelta(days=9), "a record held again starts afresh"


def test_reasons_are_counted_by_kind():
    assert reason_kind("transactions.csv line 17: subtotal: 'abc' is not a number") == "subtotal: '…' is not a number"
    assert reason_kind("refused by AIQ: visit 3 is bad") == "refused by AIQ: visit N is bad"


def test_a_failed_run_posts_exactly_one_alert_with_its_day_and_link(shop, sync_url, sandbox_factory, webhook):
    resource, posts = webhook
    down = sandbox_factory()
    down.stop()
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            DAILY, partition_key="2026-06-10", instance=instance, raise_on_error=False,
            resources={"pos": PosDatabase.from_settings(load_settings(), url=shop.url),
                       "sync": SyncDatabase.from_settings(load_settings(), url=sync_url),
                       "aiq": aiq_resource(down, sync_url, max_attempts=1)},
        )
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
        context = dg.build_run_status_sensor_context(
            sensor_name="alert_on_run_failure", dagster_event=failure, dagster_instance=instance, dagster_run=run,
            resources={"alerts": resource},
        ).for_run_failure()
        alert_on_run_failure(context)

    [post] = posts
    text = post["text"]
    assert text.startswith(f"aiq-pipelines: run of {run.job_name} failed\nday: 2026-06-10\nfailed steps: aiq_push\n")
    assert f"run: http://dagster.local/runs/{result.run_id}" in text
    assert "555" not in text and "ada@" not in text and down.api_key not in text


def test_a_failed_blocking_check_posts_once_per_incident(pos, sync_url, webhook):
    resource, posts = webhook
    for n in range(12):  # sales of a store the POS does not know: all quarantined at extract
        pos.add_sale(f"X-{n}", local(2026, 6, 10, 10 + n % 8), location_id="STORE-GONE")
    sensor = build_check_alerts(
        [dg.AssetCheckKey(POS_TRANSACTIONS, CHECK_QUARANTINE)], [])
    with dg.instance_for_test() as instance:
        resources = {"pos": PosDatabase.from_settings(load_settings(), url=pos.url),
                     "sync": SyncDatabase.from_settings(load_settings(), url=sync_url)}
        run = dg.materialize([DAILY[0]], partition_key="2026-06-10", instance=instance, resources=resources,
                             raise_on_error=False)
        assert not next(c for c in run.get_asset_check_evaluations() if c.check_name == CHECK_QUARANTINE).passed

        def tick(cursor: str | None) -> dg.SensorResult:
            return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources={"alerts": resource}))

        first = tick(None)
        again = tick(first.cursor)
        assert len(posts) == 1 and again.skip_reason, "one incident, one post"
        pos.execute("UPDATE transactions SET location_id = 'STORE-01'")
        dg.materialize([DAILY[0]], partition_key="2026-06-10", instance=instance, resources=resources)
        passed = tick(again.cursor)
        pos.execute("UPDATE transactions SET location_id = 'STORE-GONE'")
        dg.materialize([DAILY[0]], partition_key="2026-06-10", instance=instance, resources=resources,
                       raise_on_error=False)
        tick(passed.cursor)

    assert len(posts) == 2, "a second incident after the check passed in between"
    text = posts[0]["text"]
    assert text.startswith("aiq-pipelines: check quarantine_rate on pos_transactions failed\nday: 2026-06-10\n")
    assert "12 of 12 records quarantined" in text and f"run: http://dagster.local/runs/{run.run_id}" in text
