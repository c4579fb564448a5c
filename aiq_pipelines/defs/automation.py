"""What keeps AIQ current without anyone pressing buttons: the jobs operators launch, the POS change sensor, schedules.

``pos_change_sensor`` watches ``last_modified_at`` on the POS's transactions and customers and asks ``daily_sync`` for
exactly the business days that changed. Its cursor is a watermark: the newest ``last_modified_at`` seen and how many
rows lay in the clock-skew overlap just before it. Each tick re-reads that overlap; when its row count moved (a row
committed late, with a timestamp older than the watermark), the overlap's days are requested again, so a late row is
never lost while the cursor stays two numbers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable

import dagster as dg

from aiq_pipelines.defs.aiq_assets import aiq_inventory, aiq_push
from aiq_pipelines.defs.partitions import BUSINESS_TIMEZONE, SCHEDULE_STATUS, SENSOR_STATUS, daily_partitions, settings
from aiq_pipelines.defs.pos_assets import pos_inventory, pos_personas, pos_transactions
from aiq_pipelines.defs.resources import PosDatabase
from aiq_pipelines.pos.source import PosChange, PosSource
from aiq_pipelines.pos.times import StoreDays

# Writers whose clocks lag the newest timestamp by up to this much (or whose transactions commit late) are still seen.
CLOCK_SKEW_OVERLAP = dt.timedelta(minutes=2)
# The first tick starts from the newest change in this look-back (or its start): earlier history is a backfill's job.
FIRST_TICK_LOOKBACK = dt.timedelta(days=1)
# A day is reconciled early the next morning in the store whose day ends last, when it is complete and nobody is
# editing it; the schedule looks hourly so that moment is found in whichever zone that store is.
RECONCILIATION_CRON = "30 * * * *"
RECONCILIATION_SETTLE = dt.timedelta(hours=4, minutes=30)
_JUST_AFTER = dt.timedelta(microseconds=1)

# One process per run, not per step: while the stores sell, the sensor starts a run every minute or two, and a
# process per step would cost more CPU than the steps themselves. Pools still hold across runs.
daily_sync = dg.define_asset_job(
    "daily_sync",
    selection=[pos_transactions, pos_personas, aiq_push],
    executor_def=dg.in_process_executor,
    description=(
        "Extract business days from the POS and push what changed to AIQ: personas first, then sales. "
        "Pick one day, or a range of days that runs as one run."
    ),
)

inventory_sync = dg.define_asset_job(
    "inventory_sync",
    selection=[pos_inventory, aiq_inventory],
    executor_def=dg.in_process_executor,
    description="Snapshot the POS inventory and push the products whose stock, cost or price changed to AIQ.",
)


@dataclasses.dataclass(frozen=True)
class Watermark:
    """The change sensor's position: the newest ``last_modified_at`` seen and the rows in the overlap before it, and
    the days that changed before their partition existed (a store east of POS_TIMEZONE past its midnight)."""

    at: dt.datetime
    overlap_rows: int
    pending: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.at.isoformat()}#{self.overlap_rows}"

    def to_cursor(self) -> str:
        cursor: dict[str, object] = {"watermark": self.at.isoformat(), "overlap_rows": self.overlap_rows}
        if self.pending:
            cursor["pending_days"] = list(self.pending)
        return json.dumps(cursor)

    @classmethod
    def from_cursor(cls, cursor: str) -> Watermark:
        try:
            data = json.loads(cursor)
            pending = tuple(dt.date.fromisoformat(day).isoformat() for day in data.get("pending_days", ()))
            return cls(dt.datetime.fromisoformat(data["watermark"]).astimezone(dt.UTC), int(data["overlap_rows"]),
                       pending)
        except (TypeError, ValueError, KeyError, AttributeError):
            raise ValueError(
                "pos_change_sensor: its cursor is not a watermark such as "
                '{"watermark": "2026-06-10T18:00:00+00:00", "overlap_rows": 0}; clear it on the sensor\'s page in '
                "the UI (Clear cursor) to start again from the newest change"
            ) from None


def _rows(changes: Iterable[PosChange]) -> int:
    return sum(change.rows for change in changes)


def _local_days(changes: Iterable[PosChange], days: StoreDays) -> set[str]:
    # A change group spans at most an hour of one store zone, so its first and last rows name every local day it
    # touches there. Rows without a business timestamp name none: the next extract of any day quarantines them.
    return {
        days.date_of(moment, change.timezone).isoformat()
        for change in changes
        for moment in (change.first_business_at, change.last_business_at)
        if moment is not None
    }


def _request(partition: str, watermark: Watermark) -> dg.RunRequest:
    # "<day>@<watermark>#<overlap rows>": a later change to the same day is a new run, never deduplicated away.
    return dg.RunRequest(partition_key=partition, run_key=f"{partition}@{watermark}")


def _overlap(source: PosSource, watermark_at: dt.datetime) -> list[PosChange]:
    """The changes in the clock-skew overlap that ends at (and includes) ``watermark_at``."""
    return source.changes(watermark_at - CLOCK_SKEW_OVERLAP, watermark_at + _JUST_AFTER)


def _horizon() -> dt.datetime:
    """The newest change a tick looks at. A row stamped in the future (a register's clock far ahead, a placeholder
    date) would otherwise drag the watermark past every real change to come, and the sensor would see nothing again."""
    return dt.datetime.now(dt.UTC) + CLOCK_SKEW_OVERLAP


def _first_tick(source: PosSource, today: str) -> dg.SensorResult:
    since = dt.datetime.now(dt.UTC) - FIRST_TICK_LOOKBACK
    newest = max((change.last_modified_at for change in source.changes(since, _horizon())), default=since)
    watermark = Watermark(newest, _rows(_overlap(source, newest)))
    return dg.SensorResult(run_requests=[_request(today, watermark)], cursor=watermark.to_cursor())


def _next_tick(source: PosSource, previous: Watermark, first: str, today: str) -> dg.SensorResult | dg.SkipReason:
    after = previous.at + _JUST_AFTER
    newer = source.changes(after, _horizon())
    newest = max((change.last_modified_at for change in newer), default=previous.at)
    # Counted before the rows it covers are read below: a row landing in between is counted next tick, never lost.
    overlap_rows = _rows(_overlap(source, newest)) if newer else None
    overlap = _overlap(source, previous.at)
    late = _rows(overlap) != previous.overlap_rows
    due = {day for day in previous.pending if day <= today}
    if not newer and not late and not due:
        return dg.SkipReason(f"no POS changes since {previous.at.isoformat()}")
    changed = (source.changes(after, newest + _JUST_AFTER) if newer else []) + (overlap if late else [])
    try:
        local_days = _local_days(changed, StoreDays(BUSINESS_TIMEZONE)) | set(previous.pending)
    except ValueError as exc:
        raise ValueError(f"pos_change_sensor: a store's timezone (locations.timezone) {exc}") from None
    days = sorted(day for day in local_days if first <= day <= today)
    # A store east of POS_TIMEZONE starts its day before that day's partition exists: asked for once it does.
    pending = tuple(sorted(day for day in local_days if day > today))
    watermark = Watermark(newest, _rows(overlap) if overlap_rows is None else overlap_rows, pending)
    if not days:
        waiting = f"; {', '.join(pending)} will be synced once its partition exists" if pending else ""
        return dg.SensorResult(
            skip_reason=(
                f"{_rows(changed)} POS rows changed since {previous.at.isoformat()}, none on a business day from "
                f"POS_START_DATE ({first}) to today ({today}){waiting}"
            ),
            cursor=watermark.to_cursor(),
        )
    return dg.SensorResult(run_requests=[_request(day, watermark) for day in days], cursor=watermark.to_cursor())


@dg.sensor(
    name="pos_change_sensor",
    target=daily_sync,
    minimum_interval_seconds=settings.sensor_interval_seconds,
    default_status=SENSOR_STATUS,
    description="Looks at the POS every SENSOR_INTERVAL_SECONDS and runs daily_sync once for each business day whose "
    "sales or customers changed: today for new sales, older days for late edits, voids and returns.",
)
def pos_change_sensor(context: dg.SensorEvaluationContext, pos: PosDatabase) -> dg.SensorResult | dg.SkipReason:
    """Runs daily_sync for each business day whose POS transactions or customers changed since the last tick.

    A sale's day is its transaction_at in its store's zone (locations.timezone), a customer's the day they were
    modified in POS_TIMEZONE; days before POS_START_DATE are ignored. A day a store east of POS_TIMEZONE has begun
    before its partition exists waits in the cursor and is asked for at POS_TIMEZONE's midnight. The first tick syncs
    today and starts watching from the newest change; older days are a backfill. A POS that cannot be read fails the
    tick and leaves the cursor where it was.
    """
    first, today = daily_partitions.get_first_partition_key(), daily_partitions.get_last_partition_key()
    if today is None:
        return dg.SkipReason(f"POS_START_DATE ({settings.pos_start_date}) is after today: nothing to sync yet")
    source = pos.source()
    if context.cursor is None:
        return _first_tick(source, today)
    return _next_tick(source, Watermark.from_cursor(context.cursor), first, today)


inventory_sync_schedule = dg.ScheduleDefinition(
    name="inventory_sync_schedule",
    job=inventory_sync,
    cron_schedule=settings.inventory_sync_cron,  # validated in settings.py
    execution_timezone=daily_partitions.timezone,
    default_status=SCHEDULE_STATUS,
    description="Syncs the inventory snapshot to AIQ on INVENTORY_SYNC_CRON (in POS_TIMEZONE).",
)


@dg.schedule(
    name="reconcile_finished_days",
    target=daily_sync,
    cron_schedule=RECONCILIATION_CRON,
    execution_timezone=daily_partitions.timezone,
    default_status=SCHEDULE_STATUS,
    description="Runs daily_sync once for each business day that has ended (4 h 30 min after midnight in the store "
    "that closes last), catching anything the change sensor missed; it looks every hour. Unchanged records cost "
    "no request.",
)
def reconcile_finished_days(context: dg.ScheduleEvaluationContext, pos: PosDatabase) -> dg.RunRequest | dg.SkipReason:
    """Re-syncs each business day once it has ended in every store, catching anything the sensor missed.

    It looks every hour and asks for the newest day that ended at least 4 h 30 min ago in the store whose day ends
    last (the westernmost): 04:30 local time for a chain in one zone. A day is asked for once (its run key), and only
    records that changed since AIQ acknowledged them are sent, so a day the sensor kept current costs no request.
    """
    now = context.scheduled_execution_time.astimezone(dt.UTC)
    days = pos.source().store_days(BUSINESS_TIMEZONE)  # a store with a bad zone fails the tick, naming the store
    today = now.astimezone(BUSINESS_TIMEZONE).date()
    day = next(day for day in (today - dt.timedelta(days=n) for n in range(1, 4))
               if days.span(day, day + dt.timedelta(days=1))[1] + RECONCILIATION_SETTLE <= now)
    first = daily_partitions.get_first_partition_key()
    if day.isoformat() < first:
        return dg.SkipReason(f"the last day every store has closed ({day}) is before POS_START_DATE ({first})")
    return dg.RunRequest(partition_key=day.isoformat(), run_key=day.isoformat())
