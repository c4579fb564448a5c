"""The delivery audit in Dagster: a materialization per day, its check, the alert, the schedule that asks for due days,
the sensor that re-syncs what went missing, and retry_quarantined re-sending what audits hold."""

import datetime as dt
import json

import dagster as dg
import pytest
import sqlalchemy as sa

from aiq_pipelines.defs.audit import (
    AIQ_DELIVERY_AUDIT,
    CHECK_NONE_MISSING,
    DeliveryAudit,
    aiq_delivery_audit,
    build_audit_assets,
)
from aiq_pipelines.defs.audit_automation import audit_requests, resend_after_audit
from aiq_pipelines.defs.automation import daily_sync
from aiq_pipelines.defs.ops import build_check_alerts, build_retry_job, sync_quarantine
from aiq_pipelines.defs.resources import AiqResource, PosDatabase, SyncDatabase
from aiq_pipelines.settings import load_settings
from aiq_pipelines.sync.ledger import RESEND
from aiq_pipelines.sync.schema import aiq_ledger
from aiq_pipelines_tests.support import accounts
from aiq_pipelines_tests.support.audit import DAY, crowd, held, keys_sent
from aiq_pipelines_tests.support.days import local
from aiq_pipelines_tests.support.runs import DAILY, aiq_resource, sync

GENEROUS = {"per_second": 1000, "per_minute": 100_000, "per_hour": 1_000_000}


def resources(pos, sync_url, sandbox, **audit) -> dict:
    return {"pos": PosDatabase.from_settings(load_settings(), url=pos.url),
            "sync": SyncDatabase.from_settings(load_settings(), url=sync_url),
            "aiq": aiq_resource(sandbox, sync_url),
            "audit": DeliveryAudit.from_settings(load_settings(), **{"after_hours": 0, **audit})}


def audit_run(instance, pos, sync_url, sandbox, first=DAY, last=DAY, **audit) -> dg.ExecuteInProcessResult:
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    result = dg.materialize([aiq_delivery_audit], instance=instance, tags=tags,
                            resources=resources(pos, sync_url, sandbox, **audit))
    assert result.success
    return result


def test_each_day_is_materialized_with_its_counts_the_check_fails_and_the_alert_and_resend_follow(
    pos, sync_url, sandbox_factory, webhook
):
    sandbox = sandbox_factory(drop_personas=0.02, drop_seed=8, **GENEROUS)
    crowd(pos, 200)
    pos.add_customer("C900", phone="7204829000", email="late@example.com", modified=local(2026, 6, 11, 9))
    pos.add_sale("S-C900", local(2026, 6, 11, 10), customer_id="C900")
    alert, posts = webhook
    with dg.instance_for_test() as instance:
        assert sync(pos.url, sync_url, sandbox, DAY, "2026-06-11", instance=instance).success

        result = audit_run(instance, pos, sync_url, sandbox, DAY, "2026-06-11")

        days = {e.partition: {k: v.value for k, v in e.materialization.metadata.items()}
                for e in result.get_asset_materialization_events()}
        assert sorted(days) == [DAY, "2026-06-11"], "a materialization of its own per day"
        june_10 = days[DAY]
        assert (june_10["personas"], june_10["confirmed"], june_10["missing"], june_10["pending"]) == (200, 196, 4, 0)
        assert (june_10["sales_audited"], june_10["sales_unattributed"], june_10["read_method"]) == (200, 4, "page")
        assert june_10["sampled"] is False and june_10["missing_rate"] == pytest.approx(0.02)
        assert "| `C055` | missing |" in june_10["records"] and "not read back" in june_10["sale_lines"]
        assert (days["2026-06-11"]["personas"], days["2026-06-11"]["confirmed"]) == (1, 1)
        events = [entry.user_message for entry in instance.all_logs(result.run_id)]
        text = json.dumps([days, events], default=str)
        assert any("audit 2026-06-10: 196 confirmed" in m for m in events), "the run's log lines are searched too"
        assert not any(pii in text for pii in ("@example.com", "720482", "Name1", "Shopper")), "keys, never PII"
        [check] = result.get_asset_check_evaluations()
        assert (check.check_name, check.passed, check.severity) == (
            CHECK_NONE_MISSING, False, dg.AssetCheckSeverity.ERROR), "2% is above AUDIT_MAX_MISSING_RATE's 1%"
        assert check.description.startswith("4 of 201 personas read back are missing at AIQ (2.0%")

        alerts = build_check_alerts([dg.AssetCheckKey(AIQ_DELIVERY_AUDIT, CHECK_NONE_MISSING)], [])
        alerts(dg.build_sensor_context(instance=instance, resources={"alerts": alert}))
        tick = resend_after_audit(dg.build_sensor_context(instance=instance, resources={
            "sync": SyncDatabase.from_settings(load_settings(), url=sync_url)}))

    [post] = posts
    assert post["text"].startswith("aiq-pipelines: check none_missing on aiq_delivery_audit failed\n")
    assert "4 of 201 personas" in post["text"] and "@example.com" not in post["text"]
    [request] = tick.run_requests
    assert request.partition_key == DAY and request.run_key.startswith(f"resend:{DAY}@")


def test_the_check_only_warns_below_the_threshold(pos, sync_url, sandbox_factory):
    sandbox = sandbox_factory(drop_keys="C003", **GENEROUS)
    crowd(pos, 200)
    with dg.instance_for_test() as instance:
        sync(pos.url, sync_url, sandbox, DAY, DAY, instance=instance)
        [check] = audit_run(instance, pos, sync_url, sandbox).get_asset_check_evaluations()

    assert (check.passed, check.severity) == (False, dg.AssetCheckSeverity.WARN), "0.5% missing warns"


def test_the_schedule_asks_for_days_pushed_long_enough_ago_and_not_audited_since(pos, sync_url, sandbox):
    crowd(pos, 5)
    pos.add_sale("S-11", local(2026, 6, 11, 10), customer_id="C001")
    pos.add_sale("S-13", local(2026, 6, 13, 10), customer_id="C002")
    now = dt.datetime.now(dt.UTC)
    later = now + dt.timedelta(hours=2)
    with dg.instance_for_test() as instance:
        sync(pos.url, sync_url, sandbox, DAY, "2026-06-13", instance=instance)

        assert audit_requests(instance, later, after_hours=24) == [], "pushed less than 24 hours before"
        requests = audit_requests(instance, later, after_hours=1)
        assert [(r.tags, r.partition_key, r.asset_selection) for r in requests] == [(
            {"dagster/asset_partition_range_start": DAY, "dagster/asset_partition_range_end": "2026-06-13"}, None,
            [AIQ_DELIVERY_AUDIT])], "one run for the consecutive days"
        assert requests[0].run_key.startswith(f"aiq_delivery_audit:{DAY}..2026-06-13@")
        running = dg.DagsterRun(job_name="delivery_audit", run_id="running-audit", status=dg.DagsterRunStatus.STARTED,
                               tags=requests[0].tags)
        instance.add_run(running)
        assert audit_requests(instance, later, after_hours=1) == [], "an audit run in flight covers those days"
        instance.delete_run("running-audit")

        audit_run(instance, pos, sync_url, sandbox, DAY, "2026-06-12")
        [request] = audit_requests(instance, later, after_hours=1)
        assert (request.partition_key, request.tags) == ("2026-06-13", {}), "June 10 to 12 are audited"

        sync(pos.url, sync_url, sandbox, "2026-06-11", "2026-06-11", instance=instance)
        assert [r.partition_key for r in audit_requests(instance, later, after_hours=1)] == [
            "2026-06-11", "2026-06-13"], "June 11 pushed again: due again, apart from June 13"


def test_retry_quarantined_re_sends_what_audits_hold(pos, sync_url, sandbox_factory):
    sandbox = sandbox_factory(drop_keys="C003:2", **GENEROUS)
    crowd(pos, 10)
    with dg.instance_for_test() as instance:
        for _ in range(2):  # sent and dropped, audited; re-sent and dropped again, audited: held
            sync(pos.url, sync_url, sandbox, DAY, DAY, instance=instance)
            audit_run(instance, pos, sync_url, sandbox)
        assert list(held(sync_url)) == ["C003"]
        retry_resources = resources(pos, sync_url, sandbox)
        shown = dg.materialize([sync_quarantine], instance=instance, resources={"sync": retry_resources["sync"]})
        report = shown.get_asset_materialization_events()[0].materialization.metadata
        assert (report["stage audit"].value, report["quarantined"].value) == (1, 1), "visible in sync_quarantine"
        [row] = report["records"].value.records
        assert (row.data["key"], row.data["stage"]) == ("C003", "audit")
        assert row.data["reason"].startswith("accepted by AIQ, absent after ")
        since = sandbox.requests()[-1]["id"]
        location = dg.Definitions(assets=DAILY, jobs=[daily_sync], resources=retry_resources)
        retry = build_retry_job(lambda: location.resolve_job_def(daily_sync.name)).execute_in_process(
            instance=instance, resources=retry_resources)

    assert retry.success
    assert keys_sent(sandbox, "createUpdateMembers", since) == ["C003"]
    assert keys_sent(sandbox, "createUpdateSales", since) == ["S-C003"]
    assert held(sync_url) == {} and "C003" in {m["pos_user"] for m in sandbox.state()["members"]}


def test_each_account_audits_its_own_shoppers_at_its_own_aiq(chain, sync_url, sandbox_factory):
    # B1 shops in both accounts' stores; Arizona's AIQ drops it, Colorado's keeps it.
    colorado_box = sandbox_factory(uid="colorado-uid", **accounts.SANDBOX_LIMITS)
    arizona_box = sandbox_factory(uid="arizona-uid", drop_keys="B1", **accounts.SANDBOX_LIMITS)
    colorado = accounts.account("colorado", colorado_box, ["STORE-01"])
    arizona = accounts.account("arizona", arizona_box, ["STORE-PHX"])
    assert accounts.run(chain.url, sync_url, {colorado: colorado_box, arizona: arizona_box}).success
    settings = load_settings()
    resources = {"sync": SyncDatabase.from_settings(settings, url=sync_url),
                 "audit": DeliveryAudit.from_settings(settings, after_hours=0)}
    for config, box in ((colorado, colorado_box), (arizona, arizona_box)):
        resources[f"aiq_{config.name}"] = AiqResource.from_account(settings, config, api_key=box.api_key,
                                                                   rate_limit_database_url=sync_url)
    reads_before = [len(box.requests()) for box in (colorado_box, arizona_box)]

    with dg.instance_for_test() as instance:
        result = dg.materialize([build_audit_assets([colorado, arizona], prefixed=True)], instance=instance,
                                partition_key=accounts.DAY, resources=resources)

    days = {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}
    assert (days["colorado/aiq_delivery_audit"]["confirmed"], days["colorado/aiq_delivery_audit"]["missing"]) == (5, 0)
    assert (days["arizona/aiq_delivery_audit"]["confirmed"], days["arizona/aiq_delivery_audit"]["missing"]) == (4, 1)
    assert "`B1`" in days["arizona/aiq_delivery_audit"]["records"]
    assert [days[f"{name}/aiq_delivery_audit"]["personas"] for name in ("colorado", "arizona")] == [5, 5], (
        "each account's own stores' shoppers")
    assert [len(box.requests()) - before for box, before in zip((colorado_box, arizona_box), reads_before,
                                                                 strict=True)] == [1, 1], "one page at each AIQ"
    assert {c.asset_key.to_user_string(): c.passed for c in result.get_asset_check_evaluations()} == {
        "colorado/aiq_delivery_audit": True, "arizona/aiq_delivery_audit": False}
    with sa.create_engine(sync_url).connect() as conn:
        cleared = conn.execute(sa.select(aiq_ledger.c.account).where(aiq_ledger.c.record_key == "B1",
                                                                     aiq_ledger.c.payload_hash == RESEND)).all()
    assert cleared == [(arizona.ledger_account,)], "re-sent to Arizona only"
