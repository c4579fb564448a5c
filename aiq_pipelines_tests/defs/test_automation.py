"""The change sensor, schedules, jobs and run concurrency, evaluated on real SQLite POS files."""

import datetime as dt
import os
import subprocess
import sys
import zoneinfo
from pathlib import Path

import dagster as dg
import pytest
import yaml

from aiq_pipelines.definitions import defs
from aiq_pipelines.defs.automation import CLOCK_SKEW_OVERLAP, Watermark, reconcile_finished_days
from aiq_pipelines.defs.partitions import daily_partitions
from aiq_pipelines.defs.resources import PosDatabase
from aiq_pipelines.pos.queries import PosQueryError
from aiq_pipelines.pos.source import PosSource
from aiq_pipelines.settings import load_settings
from aiq_pipelines_tests.support.automation import Tick, tick, utc_now

DENVER = zoneinfo.ZoneInfo("America/Denver")
REPO = Path(__file__).resolve().parents[2]


def local(*args: int) -> dt.datetime:
    """A Denver wall-clock time as the naive UTC timestamp the POS stores."""
    return dt.datetime(*args, tzinfo=DENVER).astimezone(dt.UTC).replace(tzinfo=None)


def today() -> str:
    return daily_partitions.get_last_partition_key()


@pytest.fixture
def shop(pos):
    """Sales on June 8-12, 2026 and their customers, all last modified long ago."""
    pos.add_customer("C1", phone="(303) 555-0142", modified=local(2026, 6, 8, 9))
    for day in range(8, 13):
        pos.add_sale(f"S-{day}-a", local(2026, 6, day, 10), customer_id="C1")
        pos.add_sale(f"S-{day}-b", local(2026, 6, day, 23, 59, 59))
    pos.add_sale("S-2025", local(2025, 12, 31, 12))
    return pos


@pytest.fixture
def watching(shop) -> Tick:
    """The sensor after its first tick on the shop: nothing changed in the last day."""
    first = tick(shop.url)
    assert first.requests.keys() == {today()}
    return first


def edit_sale(pos, transaction_id: str, modified: dt.datetime, stamp: str = "%Y-%m-%d %H:%M:%S") -> None:
    pos.execute("UPDATE transactions SET employee_id = 'E99', last_modified_at = :m WHERE transaction_id = :t",
                m=modified.strftime(stamp), t=transaction_id)


def test_the_first_tick_syncs_today_and_starts_from_the_newest_change(shop):
    now = utc_now()
    edit_sale(shop, "S-9-a", now - dt.timedelta(minutes=5))
    shop.add_customer("C2", modified=now - dt.timedelta(minutes=10))

    first = tick(shop.url)

    assert first.requests == {today(): f"{today()}@{first.watermark}"}, "today only: older days are a backfill"
    assert first.watermark.at == (now - dt.timedelta(minutes=5)).replace(tzinfo=dt.UTC)
    assert first.watermark.overlap_rows == 1
    assert len(first.cursor) < 100, "the cursor is a watermark, not a set of ids"


def test_no_change_skips_and_says_since_when(shop, watching):
    again = tick(shop.url, watching.cursor)

    assert again.requests == {}
    assert again.skip == f"no POS changes since {watching.watermark.at.isoformat()}"
    assert again.cursor == watching.cursor


def test_a_new_sale_today_requests_today_only(shop, watching):
    now = utc_now()
    shop.add_sale("NEW", now, customer_id="C1")

    result = tick(shop.url, watching.cursor)

    assert result.requests == {today(): f"{today()}@{result.watermark}"}
    assert result.watermark == Watermark(now.replace(tzinfo=dt.UTC), 1)
    assert tick(shop.url, result.cursor).skip is not None, "the same sale is not requested twice"


def test_a_row_stamped_in_the_future_does_not_blind_the_sensor(shop, watching):
    edit_sale(shop, "S-10-a", dt.datetime(2099, 1, 1))
    now = utc_now()
    shop.add_sale("NEW", now, customer_id="C1")

    result = tick(shop.url, watching.cursor)
    later = now + dt.timedelta(seconds=1)
    shop.add_sale("NEWER", later, customer_id="C1")
    next_result = tick(shop.url, result.cursor)

    assert result.requests.keys() == {today()} and result.watermark.at == now.replace(tzinfo=dt.UTC)
    assert next_result.requests.keys() == {today()}, "changes after a future-stamped row are still seen"
    assert next_result.watermark.at == later.replace(tzinfo=dt.UTC)


def test_a_late_edit_to_an_older_day_requests_exactly_that_day(shop, watching):
    edit_sale(shop, "S-9-b", utc_now())

    result = tick(shop.url, watching.cursor)

    assert list(result.requests) == ["2026-06-09"]


@pytest.mark.parametrize("stamp", ["%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S.123456"])
def test_timestamps_stored_with_a_fraction_are_seen_exactly_once(shop, watching, stamp):
    edit_sale(shop, "S-11-b", utc_now(), stamp)

    result = tick(shop.url, watching.cursor)

    assert list(result.requests) == ["2026-06-11"]
    assert result.watermark.overlap_rows == 1
    assert tick(shop.url, result.cursor).skip is not None


def test_a_burst_across_days_requests_each_changed_day_once(shop, watching):
    now = utc_now()
    for n, transaction_id in enumerate(["S-8-a", "S-10-a", "S-10-b", "S-12-b", "S-2025"]):
        edit_sale(shop, transaction_id, now + dt.timedelta(seconds=n))
    for n in range(40):  # many receipts of one day in one go
        shop.add_sale(f"BULK-{n}", local(2026, 6, 11, 14, n), modified=now)
    tomorrow = dt.date.fromisoformat(today()) + dt.timedelta(days=1)
    shop.add_sale("FUTURE", local(tomorrow.year, tomorrow.month, tomorrow.day, 12), modified=now)
    shop.add_customer("C2", modified=now + dt.timedelta(seconds=9))

    result = tick(shop.url, watching.cursor)

    assert sorted(result.requests) == ["2026-06-08", "2026-06-10", "2026-06-11", "2026-06-12", today()], (
        "the sale before POS_START_DATE and the one dated tomorrow are ignored; the customer is today's"
    )
    assert set(result.requests.values()) == {f"{day}@{result.watermark}" for day in result.requests}
    assert result.watermark.at == (now + dt.timedelta(seconds=9)).replace(tzinfo=dt.UTC)


def test_a_sale_whose_timestamp_is_not_one_names_no_day_and_does_not_stop_the_sensor(shop, watching):
    now = utc_now()
    shop.add_sale("GARBLED", local(2026, 6, 10, 12), modified=now)
    shop.execute("UPDATE transactions SET transaction_at = 'last tuesday' WHERE transaction_id = 'GARBLED'")
    edit_sale(shop, "S-10-a", now + dt.timedelta(seconds=1))

    result = tick(shop.url, watching.cursor)

    assert list(result.requests) == ["2026-06-10"], "the garbled sale is the extract's to quarantine"
    assert result.watermark.at == (now + dt.timedelta(seconds=1)).replace(tzinfo=dt.UTC)


def test_a_burst_comes_back_as_one_group_per_business_hour(pos):
    now = utc_now()
    for n in range(120):
        pos.add_sale(f"B-{n}", dt.datetime(2026, 6, 10, 18, 0, 30) + dt.timedelta(seconds=10 * n), modified=now)
    pos.add_sale("NEXT-HOUR", dt.datetime(2026, 6, 10, 19, 5), modified=now)

    groups = PosSource(pos.url).changes(now - dt.timedelta(seconds=1), now + dt.timedelta(seconds=1))

    assert [(g.first_business_at, g.last_business_at, g.rows) for g in groups] == [
        (dt.datetime(2026, 6, 10, 18, 0, 30, tzinfo=dt.UTC), dt.datetime(2026, 6, 10, 18, 20, 20, tzinfo=dt.UTC), 120),
        (dt.datetime(2026, 6, 10, 19, 5, tzinfo=dt.UTC), dt.datetime(2026, 6, 10, 19, 5, tzinfo=dt.UTC), 1),
    ]


def test_a_cursor_from_before_a_restart_picks_up_exactly_what_changed_since(shop, watching):
    now = utc_now()
    edit_sale(shop, "S-8-b", now)
    before_restart = tick(shop.url, watching.cursor)
    assert list(before_restart.requests) == ["2026-06-08"]
    edit_sale(shop, "S-11-a", now + dt.timedelta(seconds=1))
    edit_sale(shop, "S-12-a", now + dt.timedelta(seconds=2))

    after_restart = tick(shop.url, before_restart.cursor)

    assert sorted(after_restart.requests) == ["2026-06-11", "2026-06-12"], "June 8 was already requested"


def test_an_unreachable_pos_fails_the_tick_and_the_cursor_still_holds(shop, watching, tmp_path):
    unreadable = tmp_path / "not-a-database"
    unreadable.mkdir()
    edit_sale(shop, "S-10-b", utc_now())

    with pytest.raises(PosQueryError, match=r"cannot read changes from the POS database \(sqlite:///.*not-a-database\)"):
        tick(f"sqlite:///{unreadable}", watching.cursor)

    assert list(tick(shop.url, watching.cursor).requests) == ["2026-06-10"], "nothing changed during the outage is lost"


def test_later_changes_to_the_same_day_get_new_run_keys(shop, watching):
    now = utc_now()
    edit_sale(shop, "S-10-a", now)
    first = tick(shop.url, watching.cursor)
    edit_sale(shop, "S-10-a", now + dt.timedelta(seconds=7))
    second = tick(shop.url, first.cursor)

    later = now + dt.timedelta(seconds=7)
    assert first.requests["2026-06-10"] == f"2026-06-10@{now.replace(tzinfo=dt.UTC).isoformat()}#1"
    assert second.requests["2026-06-10"] == f"2026-06-10@{later.replace(tzinfo=dt.UTC).isoformat()}#1"


def test_a_row_committed_late_within_the_overlap_is_still_requested(shop, watching):
    now = utc_now()
    edit_sale(shop, "S-12-a", now)
    seen = tick(shop.url, watching.cursor)
    late = now - CLOCK_SKEW_OVERLAP + dt.timedelta(seconds=30)  # older than the watermark, inside the overlap
    edit_sale(shop, "S-9-a", late)

    result = tick(shop.url, seen.cursor)

    assert "2026-06-09" in result.requests
    assert set(result.requests) <= {"2026-06-09", "2026-06-12"}, "only the overlap's days are asked again"
    assert result.watermark == Watermark(seen.watermark.at, 2)
    assert result.requests["2026-06-12"] != seen.requests["2026-06-12"], "a new key: the late row is not deduplicated"
    assert tick(shop.url, result.cursor).skip is not None


def test_changes_outside_the_partitions_move_the_cursor_without_runs(shop, watching):
    edit_sale(shop, "S-2025", utc_now())

    result = tick(shop.url, watching.cursor)

    assert result.requests == {}
    assert "none on a business day from POS_START_DATE (2026-01-01) to today" in result.skip
    assert result.watermark.at > watching.watermark.at
    assert tick(shop.url, result.cursor).skip.startswith("no POS changes since")


def test_a_custom_changes_query_may_return_one_row_per_record(shop, watching, tmp_path):
    queries = tmp_path / "queries.yaml"
    queries.write_text(
        "changes: |\n"
        "  SELECT transaction_at AS first_business_at, transaction_at AS last_business_at, last_modified_at,\n"
        "         1 AS changed_rows\n"
        "  FROM transactions WHERE last_modified_at >= :since AND last_modified_at < :until\n"
    )
    edit_sale(shop, "S-9-a", utc_now())
    edit_sale(shop, "S-12-b", utc_now())

    result = tick(shop.url, watching.cursor, queries)

    assert sorted(result.requests) == ["2026-06-09", "2026-06-12"]
    assert result.watermark.overlap_rows == 2


def test_a_custom_changes_query_without_its_bounds_is_refused(shop, tmp_path):
    queries = tmp_path / "queries.yaml"
    queries.write_text("changes: SELECT * FROM transactions WHERE last_modified_at >= :since\n")

    with pytest.raises(PosQueryError, match="changes query must filter last_modified_at on :since and :until"):
        tick(shop.url, None, queries)


def test_a_cursor_that_is_not_a_watermark_says_how_to_recover(shop):
    with pytest.raises(ValueError, match="Clear cursor"):
        tick(shop.url, '["S-1", "S-2"]')


def test_the_sensor_targets_daily_sync_at_the_configured_interval():
    sensor = defs.resolve_sensor_def("pos_change_sensor")
    assert sensor.job_name == "daily_sync"
    assert sensor.minimum_interval_seconds == 60
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_the_jobs_cover_what_operators_sync():
    daily = defs.resolve_job_def("daily_sync")
    assert daily.partitions_def == daily_partitions
    assert {key.to_user_string() for key in daily.asset_layer.executable_asset_keys} == {
        "pos_transactions", "pos_personas", "aiq_personas", "aiq_sales"}
    inventory = defs.resolve_job_def("inventory_sync")
    assert inventory.partitions_def is None
    assert {key.to_user_string() for key in inventory.asset_layer.executable_asset_keys} == {
        "pos_inventory", "aiq_inventory"}


def scheduled(schedule: dg.ScheduleDefinition, *wall_clock: int, pos_url: str | None = None) -> list[dg.RunRequest] | str:
    resources = {"pos": PosDatabase.from_settings(load_settings(), url=pos_url)} if pos_url else None
    with dg.build_schedule_context(scheduled_execution_time=dt.datetime(*wall_clock, tzinfo=DENVER),
                                   repository_def=defs.get_repository_def(), resources=resources) as context:
        data = schedule.evaluate_tick(context)  # inside the block: the resources are released when it ends
    return data.skip_message if data.skip_message else data.run_requests


@pytest.mark.parametrize(("stores", "wall_clock", "day"), [
    ((), (2026, 6, 11, 4, 30), "2026-06-10"),
    ((), (2026, 6, 11, 3, 30), "2026-06-09"),  # yesterday is not settled yet: the day before (already asked for)
    ((), (2026, 3, 9, 4, 30), "2026-03-08"),  # the morning after the spring DST change
    ((), (2026, 11, 2, 4, 30), "2026-11-01"),  # the morning after the 25-hour day
    # Phoenix keeps standard time: in July its day ends an hour after Denver's, in January with it.
    (("America/Phoenix",), (2026, 7, 16, 4, 30), "2026-07-14"),
    (("America/Phoenix",), (2026, 7, 16, 5, 30), "2026-07-15"),
    (("America/Phoenix",), (2026, 1, 16, 4, 30), "2026-01-15"),
    (("America/Phoenix", "Pacific/Honolulu"), (2026, 7, 16, 7, 30), "2026-07-14"),
    (("America/Phoenix", "Pacific/Honolulu"), (2026, 7, 16, 8, 30), "2026-07-15"),
    (("America/New_York",), (2026, 7, 16, 4, 30), "2026-07-15"),  # a store east of POS_TIMEZONE is done earlier
])
def test_the_reconcile_finished_days_resyncs_each_day_once_every_store_has_closed(pos, stores, wall_clock, day):
    for n, zone in enumerate(stores):
        pos.add_location(f"STORE-{n + 2:02}", f"Store {n + 2}", timezone=zone)

    [request] = scheduled(reconcile_finished_days, *wall_clock, pos_url=pos.url)

    assert (request.partition_key, request.run_key) == (day, day), "asked for once: the run key is the day"
    schedule = defs.resolve_schedule_def("reconcile_finished_days")
    assert schedule.job_name == "daily_sync"
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 * * * *", "America/Denver")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_the_reconcile_finished_days_skips_days_before_the_start(pos):
    assert scheduled(reconcile_finished_days, 2026, 1, 1, 4, 30, pos_url=pos.url) == (
        "the last day every store has closed (2025-12-31) is before POS_START_DATE (2026-01-01)")


def test_a_store_with_a_bad_zone_fails_the_reconciliation_tick_naming_it(pos):
    pos.add_location("STORE-MARS", "Olympus", timezone="Mars/Olympus")
    with pytest.raises(dg.DagsterUserCodeExecutionError) as raised:
        scheduled(reconcile_finished_days, 2026, 6, 11, 4, 30, pos_url=pos.url)
    assert "store STORE-MARS: its timezone (locations.timezone) 'Mars/Olympus' is not an IANA time zone name" in str(
        raised.value.user_exception)


def test_the_inventory_schedule_runs_the_inventory_sync_hourly_in_store_time():
    schedule = defs.resolve_schedule_def("inventory_sync_schedule")
    assert schedule.job_name == "inventory_sync"
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 * * * *", "America/Denver")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    [request] = scheduled(schedule, 2026, 6, 11, 9)
    assert request.partition_key is None


def test_a_bad_inventory_cron_names_its_setting():
    env = {**os.environ, "INVENTORY_SYNC_CRON": "every hour"}
    result = subprocess.run([sys.executable, "-c", "import aiq_pipelines.defs.automation"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "INVENTORY_SYNC_CRON: expected a cron expression" in result.stderr


def test_runs_of_the_same_partition_queue_behind_each_other():
    config = yaml.safe_load((REPO / ".dagster" / "dagster.yaml").read_text())
    with dg.instance_for_test(overrides=config) as instance:
        concurrency = instance.get_concurrency_config()
    assert concurrency.run_queue_config.tag_concurrency_limits == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    assert concurrency.pool_config.default_pool_limit == 1
