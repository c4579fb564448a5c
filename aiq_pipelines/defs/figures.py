"""The figures of a daily asset, true for each partition after a range of days ran as one run.

A range runs as one step (``BackfillPolicy.single_run()``) and Dagster records one materialization per partition, each
with the metadata the step returned, except what the step added for that partition alone
(``context.add_asset_metadata(..., partition_key=...)``), which wins there. So each partition carries its own day's
figures under their usual names (``dagster/row_count``, ``sent``, ...), as a run of that day alone would report them,
and the plots over partitions stay true. What cannot be told apart by day (AIQ requests and bytes: a batch carries
several days' records) is the window's: named ``window_*``, with ``window_start``, ``window_end`` and ``window_days``,
so it is never read as a day's. A run of one day reports those under their usual names, since the window is the day.
"""

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

Figures = dict[str, Any]


def window_bounds(start: dt.datetime, end: dt.datetime) -> Figures:
    return {"window_start": dg.MetadataValue.timestamp(start), "window_end": dg.MetadataValue.timestamp(end)}


def by_partition(
    context: dg.AssetExecutionContext, day_figures: Callable[[dt.date], Figures], window: Figures, common: Figures
) -> tuple[Figures, dict[str, Figures]]:
    """The metadata to return, and in a range run each partition's own figures (for ``add_partition_figures``).

    ``day_figures`` gives a business day's own figures (zeros for a day without records), ``window`` the figures
    only the whole window has, ``common`` what is true of every partition.
    """
    partitions = context.partition_keys
    figures = {key: day_figures(dt.date.fromisoformat(key)) for key in partitions}
    if len(partitions) == 1:
        return {**common, **figures[partitions[0]], **window}, {}
    window_figures = {f"window_{name}": value for name, value in window.items()}
    return {**common, **window_figures, "window_days": len(partitions)}, figures


def add_partition_figures(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey, partitions: Mapping[str, Figures]
) -> None:
    """Each partition's own figures, for the materialization Dagster records for it. Called from the step's own
    thread (the context is not shared across threads), before the asset's result is yielded."""
    for key, own in partitions.items():
        context.add_asset_metadata(own, asset_key=asset_key, partition_key=key)
