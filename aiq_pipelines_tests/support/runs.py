"""Runs of the daily assets against the sandbox, and what they left behind: their metadata and checks, and what AIQ
(the sandbox) received."""

import textwrap
from collections.abc import Sequence
from typing import Any

import dagster as dg

from aiq_pipelines.defs.aiq_assets import aiq_inventory, aiq_push
from aiq_pipelines.defs.pos_assets import pos_inventory, pos_personas, pos_transactions
from aiq_pipelines.defs.resources import AiqResource, PosDatabase, SyncDatabase
from aiq_pipelines.settings import load_settings

DAILY = [pos_transactions, pos_personas, aiq_push]
EVERY_ASSET = [*DAILY, pos_inventory, aiq_inventory]


def aiq_resource(sandbox, sync_url: str, **overrides) -> AiqResource:
    options = dict(api_key=sandbox.api_key, base_url=sandbox.base_url, uid=sandbox.uid, rate_limit_database_url=sync_url,
                   requests_per_second=1000, requests_per_minute=60_000, requests_per_hour=1_000_000,
                   timeout_seconds=5, max_attempts=4, max_retry_seconds=30)
    return AiqResource.from_settings(load_settings(), **{**options, **overrides})


def sync(pos_url: str, sync_url: str, sandbox, first: str, last: str, assets: Sequence[str] | None = None,
         instance: dg.DagsterInstance | None = None, **aiq_options):
    """Materialize the daily assets (or the ``assets`` named) for [first, last] in one run, as a backfill does (on
    ``instance``, else a throwaway one)."""
    resources = {"pos": PosDatabase.from_settings(load_settings(), url=pos_url),
                 "sync": SyncDatabase.from_settings(load_settings(), url=sync_url),
                 "aiq": aiq_resource(sandbox, sync_url, **aiq_options)}
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    if instance is not None:
        return materialize(assets, resources=resources, instance=instance, tags=tags)
    with dg.instance_for_test() as throwaway:
        return materialize(assets, resources=resources, instance=throwaway, tags=tags)


def materialize(assets: Sequence[str] | None, **options: Any) -> dg.ExecuteInProcessResult:
    """One run of the daily assets, or of the ``assets`` named: aiq_personas and aiq_sales are one multi-asset, so
    runs that want some of the assets select them by name."""
    return dg.materialize(EVERY_ASSET if assets else DAILY, selection=assets, raise_on_error=False, **options)


def materializations(result, asset: str) -> list[dg.AssetMaterialization]:
    """The asset's materializations in ``result``, one per partition (by asset: aiq_personas and aiq_sales share a
    step, so not by node)."""
    return [e.materialization for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]


# Figures every partition of a range run shares, whichever day it is: not summed over the days.
_SHARED = {"outside_partitions", "window_days"}


def metadata(result, asset: str) -> dict:
    """The asset's figures for the whole run: a one-day run's metadata as recorded; for a range run, each day's own
    figures (one materialization per partition) added up, and the window's (``window_aiq_requests``) under their
    day names (``aiq_requests``), as a one-day run records them."""
    events = materializations(result, asset)
    assert events, f"{asset} was not materialized"
    days = [{k: v.value for k, v in event.metadata.items()} for event in events]
    if len(days) == 1 or "window_days" not in days[0]:
        return days[0]
    merged = dict(days[0])
    for name, value in days[0].items():
        if name.startswith("window_") and name not in ("window_start", "window_end", "window_days"):
            merged[name.removeprefix("window_")] = value
        elif isinstance(value, int) and not isinstance(value, bool) and name not in _SHARED:
            merged[name] = sum(day[name] for day in days)
        elif name.endswith("_reasons") and name not in ("outside_partitions_reasons",):
            tables = [day[name] for day in days if day[name] != "No records quarantined."]
            merged[name] = "\n\n".join(tables) or value
    if "extracted" in merged:
        merged["quarantine_rate"] = merged["quarantined"] / merged["extracted"] if merged["extracted"] else 0.0
    return merged


def day_metadata(result, asset: str) -> dict[str, dict]:
    """The asset's metadata as recorded for each partition: partition key -> metadata."""
    return {event.partition: {k: v.value for k, v in event.metadata.items()} for event in materializations(result, asset)}


def checks(result) -> dict[str, bool]:
    return {f"{e.asset_key.to_user_string()}.{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def sales_by_id(sandbox) -> dict[str, dict]:
    return {sale["pos_id"]: sale for sale in sandbox.state()["sales"]}


def members_by_user(sandbox) -> dict[str, dict]:
    return {member["pos_user"]: member for member in sandbox.state()["members"]}


# The daily sync of June 1-7 in a process of its own, for the tests that kill it mid-send.
CRASH_SCRIPT = textwrap.dedent("""
    import sys
    import dagster as dg
    from aiq_pipelines_tests.support.runs import DAILY, aiq_resource
    from aiq_pipelines.defs.resources import PosDatabase, SyncDatabase
    from aiq_pipelines.settings import load_settings
    from aiq_pipelines_tests.support.sandbox import Sandbox

    pos_url, sync_url, base_url, api_key, uid = sys.argv[1:6]
    sandbox = Sandbox(base_url=base_url, api_key=api_key, uid=uid, db_path=None, log_path=None)
    resources = {"pos": PosDatabase.from_settings(load_settings(), url=pos_url),
                 "sync": SyncDatabase.from_settings(load_settings(), url=sync_url),
                 "aiq": aiq_resource(sandbox, sync_url, batch_size_sales=10, batch_size_members=10)}
    tags = {"dagster/asset_partition_range_start": "2026-06-01", "dagster/asset_partition_range_end": "2026-06-07"}
    with dg.instance_for_test() as instance:
        dg.materialize(DAILY, resources=resources, instance=instance, tags=tags)
""")
