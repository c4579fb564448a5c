"""Each partition of a range run shows its own day's figures, as a run of that day alone does; what only the window
has (AIQ requests and bytes) is labelled as the window's."""

from aiq_pipelines_tests.support.runs import day_metadata, sync
from aiq_pipelines_tests.support.sandbox import GENEROUS_LIMITS

DAYS = ["2026-03-07", "2026-03-08", "2026-03-09"]
DAILY_ASSETS = ["pos_transactions", "pos_personas", "aiq_personas", "aiq_sales"]
# True of every partition whatever its day: the window, the account, the records outside every partition.
SHARED = {"window_start", "window_end", "aiq_account", "aiq_base_url", "outside_partitions",
          "outside_partitions_reasons"}


def test_a_three_day_backfill_records_each_days_own_figures_as_three_one_day_runs_do(
    demo_pos_url, tmp_path, sandbox_factory
):
    ranged = sync(demo_pos_url, f"sqlite:///{tmp_path / 'range.db'}", sandbox_factory(**GENEROUS_LIMITS),
                  DAYS[0], DAYS[-1])
    assert ranged.success
    one_day_sandbox, one_day_sync = sandbox_factory(**GENEROUS_LIMITS), f"sqlite:///{tmp_path / 'days.db'}"
    one_day_runs = [sync(demo_pos_url, one_day_sync, one_day_sandbox, day, day) for day in DAYS]
    assert all(run.success for run in one_day_runs)

    for asset in DAILY_ASSETS:
        by_partition = day_metadata(ranged, asset)
        assert sorted(by_partition) == DAYS, asset
        for day, run in zip(DAYS, one_day_runs, strict=True):
            [alone] = day_metadata(run, asset).values()
            ranged_day = by_partition[day]
            own = {k: v for k, v in ranged_day.items() if not k.startswith("window_") and k not in SHARED}
            # The one-day run's own figures: all but the shared ones and those the range gives as the window's.
            expected = {k: v for k, v in alone.items()
                        if not k.startswith("window_") and k not in SHARED and f"window_{k}" not in ranged_day}
            assert own == expected, f"{asset} {day}"
            assert alone["window_start"] < alone["window_end"], "a one-day run's window is its day"
        assert all(m["window_days"] == len(DAYS) for m in by_partition.values())
    for asset, figure in (("pos_transactions", "dagster/row_count"), ("aiq_sales", "sent"),
                          ("aiq_personas", "personas_for_sales_sent")):
        counts = [day_metadata(ranged, asset)[day][figure] for day in DAYS]
        assert len(set(counts)) == len(DAYS) and all(counts), f"{asset}: each day its own {figure}, {counts}"

    # Requests carry several days' records: the window's figure, named so, never a day's.
    for asset in ("aiq_personas", "aiq_sales"):
        for figures in day_metadata(ranged, asset).values():
            assert "aiq_requests" not in figures and figures["window_aiq_requests"] > 0, asset
        assert all("aiq_requests" in next(iter(day_metadata(run, asset).values())) for run in one_day_runs)
    sales = day_metadata(ranged, "aiq_sales")
    assert sum(m["sent"] for m in sales.values()) == sum(
        next(iter(day_metadata(run, "aiq_sales").values()))["sent"] for run in one_day_runs) > 0
