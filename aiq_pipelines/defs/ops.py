"""The operator's console (group ``ops``): the quarantine as an asset, refreshed whenever it changes, and the alerts that
post failed runs and checks to a webhook.

Everything here shows keys, days, stages, rules and counts, never a phone, an email or a key.
"""

import datetime as dt
import json
from collections.abc import Callable, Sequence

import dagster as dg

from aiq_pipelines.aiq.redaction import redact_personal_data
from aiq_pipelines.defs.aiq_assets import aiq_inventory, aiq_push
from aiq_pipelines.defs.audit import aiq_delivery_audit
from aiq_pipelines.defs.keys import (
    CHECK_QUARANTINE_AGE,
    OPS_TAGS,
    OWNERS,
    POS_DROP_FILES,
    POS_INVENTORY,
    POS_PERSONAS,
    POS_TRANSACTIONS,
    SYNC_QUARANTINE,
)
from aiq_pipelines.defs.partitions import SENSOR_STATUS, daily_partitions, settings
from aiq_pipelines.defs.resources import AlertWebhook, SyncDatabase
from aiq_pipelines.pos.times import utc_now
from aiq_pipelines.sync.audit_outcome import release_holds
from aiq_pipelines.sync.held import counts, fingerprint, held_records, shown_reason

TABLE_ROWS = 200  # the oldest records shown in the table; the counts cover all of them
_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("entity", "string"), dg.TableColumn("key", "string"), dg.TableColumn("business_day", "string"),
    dg.TableColumn("stage", "string"), dg.TableColumn("reason", "string"),
    dg.TableColumn("first_seen", "string", description="UTC"), dg.TableColumn("last_seen", "string", description="UTC"),
])


# What fills the quarantine: the extracts, the pushes, the delivery audit and, with a drop folder, its intake. As deps
# they link the table to them in the lineage, and a backfill that includes what is downstream refreshes it after the
# days it synced.
_FILLED_BY = [*([POS_DROP_FILES] if settings.pos_drop_dir is not None else []), POS_TRANSACTIONS, POS_PERSONAS,
              POS_INVENTORY, *aiq_push.keys, *aiq_inventory.keys, *aiq_delivery_audit.keys]


@dg.asset(
    key=SYNC_QUARANTINE,
    group_name="ops",
    kinds={"python"},
    owners=OWNERS,
    tags=OPS_TAGS,
    deps=_FILLED_BY,
    check_specs=[dg.AssetCheckSpec(
        CHECK_QUARANTINE_AGE, asset=SYNC_QUARANTINE,
        description="No record has waited in quarantine longer than QUARANTINE_MAX_AGE_DAYS.",
    )],
)
def sync_quarantine(context: dg.AssetExecutionContext, sync: SyncDatabase) -> dg.MaterializeResult:
    """The records held back now: entity, key, business day, stage, reason, and when each was first and last seen.

    Refreshed whenever the quarantine changes (sensor quarantine_change_sensor) and on demand. Counts by stage and by
    reason are numbers the UI plots over time. Fix a record at the source: the next sync of its day takes it out.
    """
    now = utc_now()
    records = held_records(sync.store().engine, now)
    by_stage, by_reason = counts(records)
    table = [dg.TableRecord({
        "entity": r.entity, "key": r.key, "business_day": r.business_date.isoformat() if r.business_date else "",
        "stage": r.stage, "reason": shown_reason(r.reason)[:300],
        "first_seen": f"{r.first_seen:%Y-%m-%d %H:%M}", "last_seen": f"{r.last_seen:%Y-%m-%d %H:%M}",
    }) for r in records[:TABLE_ROWS]]
    limit = dt.timedelta(days=sync.quarantine_max_age_days)
    waiting = [r for r in records if now - r.first_seen > limit]
    context.log.info(f"{len(records):,} records in quarantine, {len(waiting):,} waiting longer than {limit.days} days")
    return dg.MaterializeResult(
        metadata={
            "records": dg.MetadataValue.table(table, schema=_SCHEMA),
            "dagster/row_count": len(records),
            "quarantined": len(records),
            "shown": len(table),
            **{f"stage {stage}": n for stage, n in sorted(by_stage.items())},
            **{f"reason: {reason}": n for reason, n in by_reason.most_common(10)},
            "days_to_retry": ", ".join(sorted({r.business_date.isoformat() for r in records if r.business_date})),
        },
        check_results=[dg.AssetCheckResult(
            check_name=CHECK_QUARANTINE_AGE, passed=not waiting, severity=dg.AssetCheckSeverity.WARN,
            metadata={"waiting_too_long": len(waiting), "max_age_days": sync.quarantine_max_age_days},
            description=None if not waiting else (
                f"{len(waiting)} records have waited longer than {sync.quarantine_max_age_days:g} days, the oldest "
                f"{waiting[0].entity} {waiting[0].key} since {waiting[0].first_seen:%Y-%m-%d} ({waiting[0].stage}: "
                f"{shown_reason(waiting[0].reason)[:200]})"
            ),
        )],
    )


refresh_quarantine = dg.define_asset_job(
    "refresh_quarantine", selection=[sync_quarantine], executor_def=dg.in_process_executor,
    description="Refresh the quarantine table (sync_quarantine) from the sync database.",
)


@dg.sensor(
    name="quarantine_change_sensor",
    target=refresh_quarantine,
    minimum_interval_seconds=settings.sensor_interval_seconds,
    default_status=SENSOR_STATUS,
    description="Runs refresh_quarantine whenever the quarantine in the sync database changed, whichever run changed "
    "it (syncs, backfills, retry_quarantined, drop intake).",
)
def quarantine_change_sensor(context: dg.SensorEvaluationContext, sync: SyncDatabase) -> dg.SensorResult:
    """Refreshes sync_quarantine whenever the sync database's quarantine changed, whichever run changed it.

    It watches the table itself (a digest of its rows), not a list of jobs: syncs, backfills, retry_quarantined,
    drop intake and any job added later are covered alike, and a run that changed nothing starts no refresh.
    """
    now = fingerprint(sync.store().engine)
    if now == context.cursor:
        return dg.SensorResult(skip_reason="the quarantine has not changed since sync_quarantine was last refreshed")
    return dg.SensorResult(run_requests=[dg.RunRequest()], cursor=now)


def _day(run: dg.DagsterRun) -> str:
    tags = run.tags
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    return f"{start}..{end}" if start else "none"


@dg.run_failure_sensor(
    name="alert_on_run_failure", default_status=SENSOR_STATUS,
    description="Posts each failed run once to ALERT_WEBHOOK_URL: its job, day, failed steps, error and link.",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext, alerts: AlertWebhook) -> None:
    """Posts each failed run to ALERT_WEBHOOK_URL once: the job, the day, the error and the run's link."""
    run = context.dagster_run
    error = redact_personal_data((context.failure_event.message or "").splitlines()[0] if context.failure_event else "")
    steps = ", ".join(sorted(e.step_key for e in context.get_step_failure_events() if e.step_key)) or "none"
    alerts.post("\n".join([
        f"aiq-pipelines: run of {run.job_name} failed",
        f"day: {_day(run)}",
        f"failed steps: {steps}",
        f"error: {error[:500]}",
        f"run: {alerts.run_url(run.run_id)}",
    ]))


def build_check_alerts(check_keys: Sequence[dg.AssetCheckKey], fresh_assets: Sequence[dg.AssetKey]) -> dg.SensorDefinition:
    """A sensor that posts each failing check, and each asset whose freshness failed, once per incident: when it starts
    failing, not again until it has passed in between."""

    @dg.sensor(name="alert_on_check_failure", minimum_interval_seconds=60, default_status=SENSOR_STATUS,
               description="Posts each check that starts failing, and each push asset whose freshness policy "
               "fails, once per incident to ALERT_WEBHOOK_URL.")
    def alert_on_check_failure(context: dg.SensorEvaluationContext, alerts: AlertWebhook) -> dg.SensorResult:
        """Posts each check that starts failing (blocking checks, quarantine growth and age, readable drop files) and
        each push asset whose freshness policy fails, once per incident, to ALERT_WEBHOOK_URL."""
        failing: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        now_failing: dict[str, int] = {}
        posted = 0
        for key in check_keys:
            record = context.instance.get_latest_asset_check_evaluation_record(key)
            if record is None or record.status.value != "FAILED":
                continue
            name = key.to_user_string()
            now_failing[name] = failing.get(name, record.id)
            if name in failing:
                continue
            evaluation = record.event.dagster_event.asset_check_evaluation_data if record.event else None
            description = redact_personal_data((evaluation.description or "") if evaluation else "")
            alerts.post("\n".join([
                f"aiq-pipelines: check {key.name} on {key.asset_key.to_user_string()} failed",
                f"day: {_day(run) if (run := context.instance.get_run_by_id(record.run_id)) else 'none'}",
                f"description: {description[:500] or 'none'}",
                f"run: {alerts.run_url(record.run_id)}",
            ]))
            posted += 1
        for asset_key, state in context.instance.get_freshness_state_records(list(fresh_assets)).items():
            name = f"freshness:{asset_key.to_user_string()}"
            if state.freshness_state.value != "FAIL":
                continue
            now_failing[name] = failing.get(name, 0)
            if name not in failing:
                alerts.post(f"aiq-pipelines: {asset_key.to_user_string()} is not fresh: its freshness policy failed "
                            f"(last updated before {state.updated_at:%Y-%m-%d %H:%M} UTC)\nrun: {alerts.ui_url}")
                posted += 1
        skip = None if posted else f"{len(now_failing)} incidents open, none new"
        return dg.SensorResult(cursor=json.dumps(now_failing, sort_keys=True), skip_reason=skip)

    return alert_on_check_failure


def consecutive_ranges(days: Sequence[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive days as [first, last] ranges."""
    ranges: list[list[dt.date]] = []
    for day in sorted(set(days)):
        if ranges and day - ranges[-1][1] == dt.timedelta(days=1):
            ranges[-1][1] = day
        else:
            ranges.append([day, day])
    return [(first, last) for first, last in ranges]


def build_retry_job(daily_sync: Callable[[], dg.JobDefinition]) -> dg.JobDefinition:
    """``retry_quarantined``: one run of ``daily_sync`` (given resolved, with its resources, once the code location
    has loaded) for each range of consecutive days that hold quarantined records, started from this job's own run, so
    exactly those days are extracted and pushed again, and each run shows under the job that says what it does."""

    @dg.op(required_resource_keys={"sync"})
    def retry_quarantined_days(context: dg.OpExecutionContext) -> dg.Output[int]:
        """Re-extracts and re-pushes each business day that holds quarantined records, a run per range of days."""
        sync: SyncDatabase = context.resources.sync
        first, last = daily_partitions.get_first_partition_key(), daily_partitions.get_last_partition_key()
        days = [r.business_date for r in held_records(sync.store().engine)
                if r.business_date and first <= r.business_date.isoformat() <= (last or "")]
        # What delivery audits hold is re-sent as it is (unlike a refusal, which waits for new content).
        released = release_holds(sync.store().engine)
        if released:
            context.log.info(f"{released} personas held by delivery audits are released to be re-sent")
        failed = []
        job = daily_sync()
        for start, end in consecutive_ranges(days):
            tags = {"dagster/asset_partition_range_start": start.isoformat(),
                    "dagster/asset_partition_range_end": end.isoformat(), "retry_of": context.run.run_id}
            result = job.execute_in_process(instance=context.instance, tags=tags, raise_on_error=False)
            context.log.info(f"days {start}..{end}: run {result.run_id} of {job.name} "
                             f"{'succeeded' if result.success else 'failed'}")
            if not result.success:
                failed.append(f"{start}..{end} (run {result.run_id})")
        if failed:
            raise dg.Failure(f"retrying failed for days {', '.join(failed)}: see those runs")
        return dg.Output(len(set(days)), metadata={"days_retried": len(set(days)),
                                                   "ranges": len(consecutive_ranges(days))})

    @dg.job(name="retry_quarantined", description="Extract and push again exactly the business days that hold "
            "quarantined records: a run of daily_sync per range of consecutive days, tagged retry_of. Fix the "
            "records at the source first.", executor_def=dg.in_process_executor)
    def retry_quarantined() -> None:
        retry_quarantined_days()

    return retry_quarantined
