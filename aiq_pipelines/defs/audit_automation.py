"""What runs the delivery audit and acts on it without anyone pressing buttons.

``delivery_audit_schedule`` looks every hour for the days whose latest push (of an account's ``aiq_personas`` or
``aiq_sales``) is at least AUDIT_AFTER_HOURS old and newer than the day's latest audit, and asks ``delivery_audit`` for
them, a run per account and range of consecutive days. So a day is audited once after it is synced, and again after
each later push of it (the re-send of what an audit found missing among them): the second audit that decides whether
a persona dropped twice. Days an audit run already queued or running covers are left to it.

``resend_after_audit`` asks ``daily_sync`` for each day whose audit found personas that no sync has re-sent yet.
"""


import datetime as dt
from collections.abc import Sequence

import dagster as dg

from aiq_pipelines.defs.audit import audit_key, delivery_audit
from aiq_pipelines.defs.automation import daily_sync
from aiq_pipelines.defs.keys import account_assets
from aiq_pipelines.defs.ops import consecutive_ranges
from aiq_pipelines.defs.partitions import daily_partitions, settings
from aiq_pipelines.defs.resources import SyncDatabase
from aiq_pipelines.sync.audit_outcome import days_to_resend

AUDIT_CRON = "20 * * * *"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
_IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]
_MATERIALIZED = dg.DagsterEventType.ASSET_MATERIALIZATION


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, int]:
    return dict(instance.get_latest_storage_id_by_partition(key, _MATERIALIZED))


def due_days(instance: dg.DagsterInstance, pushes: Sequence[dg.AssetKey], audit: dg.AssetKey,
             before: dt.datetime) -> dict[str, int]:
    """The days whose latest push happened before ``before`` and after their latest audit: day -> that push's id."""
    audited = _latest(instance, audit)
    pushed: dict[str, tuple[int, dg.AssetKey]] = {}
    for key in pushes:
        for day, storage_id in _latest(instance, key).items():
            if storage_id > pushed.get(day, (0, key))[0]:
                pushed[day] = (storage_id, key)
    candidates = {day: pair for day, pair in pushed.items() if pair[0] > audited.get(day, 0)}
    due = {}
    for key in pushes:
        ids = [storage_id for storage_id, of in candidates.values() if of == key]
        if not ids:
            continue
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, storage_ids=ids), limit=len(ids))
        old = {record.storage_id for record in records.records if record.timestamp <= before.timestamp()}
        due.update({day: storage_id for day, (storage_id, of) in candidates.items() if of == key and storage_id in old})
    return due


def _covered(instance: dg.DagsterInstance, audit: dg.AssetKey) -> set[str]:
    """The days that audit runs queued or running already cover for ``audit``."""
    days: set[str] = set()
    for run in instance.get_runs(dg.RunsFilter(job_name=delivery_audit.name, statuses=_IN_FLIGHT)):
        if run.asset_selection is not None and audit not in run.asset_selection:
            continue
        tags = run.tags
        first, last = tags.get(RANGE_START, tags.get("dagster/partition")), tags.get(RANGE_END)
        if first:
            days.update(daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last or first)))
    return days


def audit_requests(instance: dg.DagsterInstance, now: dt.datetime, after_hours: float) -> list[dg.RunRequest]:
    """A request per account and range of consecutive due days."""
    requests = []
    prefixed = settings.aiq_accounts_file is not None
    for config in settings.aiq_accounts:
        pushes, audit = account_assets(config.name, prefixed=prefixed), audit_key(config.name, prefixed=prefixed)
        due = due_days(instance, [pushes.personas, pushes.sales], audit, now - dt.timedelta(hours=after_hours))
        covered = _covered(instance, audit)
        waiting = [dt.date.fromisoformat(day) for day in due if day not in covered]
        for first, last in ((a.isoformat(), b.isoformat()) for a, b in consecutive_ranges(waiting)):
            newest = max(storage_id for day, storage_id in due.items() if first <= day <= last)
            tags = {} if first == last else {RANGE_START: first, RANGE_END: last}
            requests.append(dg.RunRequest(
                run_key=f"{audit.to_user_string()}:{first}..{last}@{newest}", asset_selection=[audit],
                partition_key=first if first == last else None, tags=tags,
            ))
    return requests


@dg.schedule(
    name="delivery_audit_schedule",
    target=delivery_audit,
    cron_schedule=AUDIT_CRON,
    execution_timezone=daily_partitions.timezone,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def delivery_audit_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    """Every hour, audits the days whose latest push is at least AUDIT_AFTER_HOURS old and not audited since: a run
    per account and range of consecutive days."""
    requests = audit_requests(context.instance, context.scheduled_execution_time.astimezone(dt.UTC),
                              settings.audit_after_hours)
    return requests or dg.SkipReason(
        f"no day pushed at least {settings.audit_after_hours:g} hours ago waits for its audit")


@dg.sensor(
    name="resend_after_audit",
    target=daily_sync,
    minimum_interval_seconds=settings.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def resend_after_audit(context: dg.SensorEvaluationContext, sync: SyncDatabase) -> dg.SensorResult:
    """Runs daily_sync for each day whose delivery audit found personas AIQ does not hold as sent, so the sync sends
    them again; once per audit of the day (its run key)."""
    first, last = daily_partitions.get_first_partition_key(), daily_partitions.get_last_partition_key() or ""
    due = {day.isoformat(): audited for day, audited in days_to_resend(sync.store().engine).items()
           if first <= day.isoformat() <= last}
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=day, run_key=f"resend:{day}@{audited.isoformat()}")
                      for day, audited in sorted(due.items())],
        skip_reason=None if due else "no audited persona waits to be re-sent",
    )
