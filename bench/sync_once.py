"""One end-to-end sync (extract, validate, diff, push) of a single-run partition range, in its own process.

``python -m bench.sync_once POS_URL SYNC_URL FIRST LAST`` materializes the daily assets for [FIRST, LAST] as one run,
the way a single-run backfill does, with the AIQ resource read from the environment (AIQ_BASE_URL, AIQ_API_KEY,
AIQ_UID, AIQ_REQUESTS_PER_*); with BENCH_PROFILE=<file> it writes a cProfile of the run there.
It prints one JSON line: the work's CPU and wall time (imports excluded), each step's
wall time, and the push assets' metadata. The parent measures the whole process's CPU and peak RSS.
"""

from __future__ import annotations

import cProfile
import json
import os
import resource
import sys
import time


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(pos_url: str, sync_url: str, first: str, last: str) -> None:
    import dagster as dg

    from aiq_pipelines.defs.aiq_assets import aiq_push
    from aiq_pipelines.defs.pos_assets import pos_personas, pos_transactions
    from aiq_pipelines.defs.resources import AiqResource, PosDatabase, SyncDatabase
    from aiq_pipelines.settings import load_settings

    settings = load_settings()  # the AIQ_* variables bench.run sets: the sandbox, its limits, the margin
    resources = {
        "pos": PosDatabase.from_settings(settings, url=pos_url),
        "sync": SyncDatabase.from_settings(settings, url=sync_url, timezone="America/Denver"),
        "aiq": AiqResource.from_settings(settings, api_key=os.environ["AIQ_API_KEY"], rate_limit_database_url=sync_url),
    }
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    instance = dg.DagsterInstance.ephemeral()
    profile_path = os.environ.get("BENCH_PROFILE")
    profiler = cProfile.Profile() if profile_path else None
    cpu, wall = _cpu(), time.monotonic()
    if profiler:
        profiler.enable()
    result = dg.materialize(
        [pos_transactions, pos_personas, aiq_push], resources=resources, instance=instance, tags=tags,
        raise_on_error=False,
    )
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile_path)
    cpu, wall = _cpu() - cpu, time.monotonic() - wall
    steps: dict[str, float] = {}
    started: dict[str, float] = {}
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        if event.event_type_value == "STEP_START":
            started[entry.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            steps[entry.step_key] = entry.timestamp - started.get(entry.step_key, entry.timestamp)
    metadata = {}
    for event in result.get_asset_materialization_events():
        asset = event.asset_key.to_user_string()
        if asset not in metadata:  # a range run's per-partition materializations all carry the same figures
            metadata[asset] = {k: v.value for k, v in event.materialization.metadata.items()
                               if isinstance(v.value, int | float)}
    print(json.dumps({"success": result.success, "work_cpu": cpu, "work_wall": wall, "steps": steps,
                      "metadata": metadata}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
