"""Stores in several time zones: each sale belongs to its own store's local day, across both 2026 clock changes.

A Denver store (the default POS_TIMEZONE, daylight saving) and a Phoenix store (no daylight saving): in summer Phoenix
is an hour behind Denver, in winter they agree, so a Phoenix sale after 23:00 in July is still Phoenix's day while it
is already the next day in Denver.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import dagster as dg
import pytest
import sqlalchemy as sa

from aiq_pipelines.defs.automation import Watermark, _next_tick
from aiq_pipelines.defs.partitions import business_days
from aiq_pipelines.pos.queries import PosQueryError
from aiq_pipelines.pos.source import PosSource
from aiq_pipelines.settings import load_settings
from aiq_pipelines.sync.schema import staged_transactions
from aiq_pipelines.sync.store import SyncStore
from aiq_pipelines_tests.support.automation import tick, utc_now
from aiq_pipelines_tests.support.pos_factory import PosFactory
from aiq_pipelines_tests.support.runs import sync

DENVER, PHOENIX = zoneinfo.ZoneInfo("America/Denver"), zoneinfo.ZoneInfo("America/Phoenix")
PARTITIONS = business_days(load_settings(pos_timezone="America/Denver", pos_start_date="2026-01-01"))


def at(zone: zoneinfo.ZoneInfo, *args: int, fold: int = 0) -> dt.datetime:
    """A wall-clock time in ``zone`` as the naive UTC timestamp the POS stores."""
    return dt.datetime(*args, tzinfo=zone, fold=fold).astimezone(dt.UTC).replace(tzinfo=None)


@pytest.fixture
def two_zones(pos: PosFactory) -> PosFactory:
    pos.add_location("STORE-PHX", "Muffins Phoenix", timezone="America/Phoenix")
    return pos


def stage_day(pos_url: str, sync_url: str, day: str, run_id: str):
    window = PARTITIONS.time_window_for_partition_key(day)
    return SyncStore(sync_url, "America/Denver").stage_transactions(PosSource(pos_url), window.start, window.end,
                                                                    run_id=run_id)


def staged(sync_url: str) -> dict[str, dt.date]:
    with sa.create_engine(sync_url).connect() as conn:
        query = sa.select(staged_transactions.c.transaction_id, staged_transactions.c.business_date)
        return {key: day for key, day in conn.execute(query)}


def test_a_phoenix_sale_at_2330_in_july_is_in_its_local_days_partition(two_zones, sync_url):
    two_zones.add_sale("PHX-late", at(PHOENIX, 2026, 7, 15, 23, 30), location_id="STORE-PHX")
    two_zones.add_sale("DEN-late", at(DENVER, 2026, 7, 15, 23, 30))
    assert at(PHOENIX, 2026, 7, 15, 23, 30).replace(tzinfo=dt.UTC).astimezone(DENVER).date() == dt.date(2026, 7, 16)

    first = stage_day(two_zones.url, sync_url, "2026-07-15", "r1")
    second = stage_day(two_zones.url, sync_url, "2026-07-16", "r2")

    assert staged(sync_url) == {"PHX-late": dt.date(2026, 7, 15), "DEN-late": dt.date(2026, 7, 15)}
    assert (first.staged, first.outside_window, second.staged) == (2, 0, 0), "staged by its own day's partition only"


@pytest.mark.slow
def test_the_phoenix_sale_is_sent_to_aiq_by_its_local_days_run(two_zones, sync_url, sandbox):
    two_zones.add_sale("PHX-late", at(PHOENIX, 2026, 7, 15, 23, 30), location_id="STORE-PHX")

    day = sync(two_zones.url, sync_url, sandbox, "2026-07-15", "2026-07-15")
    sent_on_its_day = [sale["pos_id"] for sale in sandbox.state()["sales"]]
    requests = len(sandbox.requests())
    next_day = sync(two_zones.url, sync_url, sandbox, "2026-07-16", "2026-07-16")

    assert day.success and next_day.success and sent_on_its_day == ["PHX-late"]
    assert len(sandbox.requests()) == requests, "the next Denver day neither sends it again nor holds it"


@pytest.mark.parametrize("days", [("2026-03-07", "2026-03-08", "2026-03-09"), ("2026-10-31", "2026-11-01", "2026-11-02")])
def test_every_sale_of_every_store_is_in_exactly_one_partition_across_a_clock_change(two_zones, sync_url, days):
    first = dt.date.fromisoformat(days[0])
    expected: dict[str, dt.date] = {}
    for store, zone in (("STORE-01", DENVER), ("STORE-PHX", PHOENIX)):
        moment = dt.datetime.combine(first, dt.time(), tzinfo=zone).astimezone(dt.UTC)
        end = dt.datetime.combine(first + dt.timedelta(days=3), dt.time(), tzinfo=zone).astimezone(dt.UTC)
        n = 0
        while moment < end:  # every 30 minutes of real time, so both 01:30s of the fall-back night are there
            key = f"{store}-{n:03d}"
            two_zones.add_sale(key, moment.replace(tzinfo=None), location_id=store)
            expected[key] = moment.astimezone(zone).date()
            moment += dt.timedelta(minutes=30)
            n += 1
    if days[1] == "2026-11-01":
        assert at(DENVER, 2026, 11, 1, 1, 30) != at(DENVER, 2026, 11, 1, 1, 30, fold=1)

    reports = [stage_day(two_zones.url, sync_url, day, f"r-{day}") for day in days]

    assert staged(sync_url) == expected
    assert sum(report.staged for report in reports) == len(expected), "no sale is staged by two partitions"
    per_day = {day: sum(1 for key, d in expected.items() if d.isoformat() == day and key.startswith("STORE-01"))
               for day in days}
    assert sorted(per_day.values()) == sorted([48, 46 if days[1] == "2026-03-08" else 50, 48]), "a 23 or 25 hour day"


def test_a_store_whose_zone_is_not_one_stops_the_extract_naming_it(two_zones, sync_url):
    two_zones.add_location("STORE-BAD", "Muffins Nowhere", timezone="Mars/Olympus_Mons")
    with pytest.raises(PosQueryError, match=r"store STORE-BAD: its timezone .* 'Mars/Olympus_Mons' is not an IANA"):
        stage_day(two_zones.url, sync_url, "2026-07-15", "r1")


def test_the_sensor_asks_for_each_stores_own_local_day(two_zones):
    first = tick(two_zones.url)
    now = utc_now()
    two_zones.add_sale("PHX-late", at(PHOENIX, 2026, 7, 15, 23, 30), location_id="STORE-PHX", modified=now)
    two_zones.add_sale("DEN-noon", at(DENVER, 2026, 7, 15, 12), modified=now)

    result = tick(two_zones.url, first.cursor)

    assert set(result.requests) == {"2026-07-15"}, "Phoenix's 23:30 is its own July 15, not Denver's July 16"
    two_zones.add_sale("PHX-next", at(PHOENIX, 2026, 7, 16, 23, 30), location_id="STORE-PHX",
                       modified=now + dt.timedelta(seconds=1))
    assert set(tick(two_zones.url, result.cursor).requests) == {"2026-07-16"}


def test_a_day_that_began_east_of_pos_timezone_is_asked_for_once_its_partition_exists(pos):
    # 00:30 in New York on July 16 is 22:30 on July 15 in Denver, whose July 16 partition does not exist yet.
    pos.add_location("STORE-NYC", "Muffins Manhattan", timezone="America/New_York")
    first = tick(pos.url)
    now = utc_now()
    pos.add_sale("NYC-early", at(zoneinfo.ZoneInfo("America/New_York"), 2026, 7, 16, 0, 30), location_id="STORE-NYC",
                 modified=now)
    source = PosSource(pos.url)

    before = _next_tick(source, Watermark.from_cursor(first.cursor), "2026-01-01", "2026-07-15")

    assert not before.run_requests and "2026-07-16 will be synced once its partition exists" in before.skip_reason.skip_message
    assert Watermark.from_cursor(before.cursor).pending == ("2026-07-16",)
    after = _next_tick(source, Watermark.from_cursor(before.cursor), "2026-01-01", "2026-07-16")
    assert [r.partition_key for r in after.run_requests] == ["2026-07-16"], "asked for at Denver's midnight"
    assert Watermark.from_cursor(after.cursor).pending == ()
    assert isinstance(_next_tick(source, Watermark.from_cursor(after.cursor), "2026-01-01", "2026-07-16"),
                      dg.SkipReason), "and only once"
