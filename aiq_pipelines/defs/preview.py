"""The dry run's report: what a real push of a window would send, as an observation per day of the window."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg

from aiq_pipelines.defs.fanout import Account
from aiq_pipelines.defs.resources import SyncDatabase
from aiq_pipelines.sync.preview import PreviewPusher, seconds_at_limits
from aiq_pipelines.sync.reports import PushReport


def preview_window(
    context: dg.AssetExecutionContext, account: Account, start: dt.datetime, end: dt.datetime
) -> Iterator[dg.AssetObservation]:
    """One account's window as a dry run: what a real push would send, reported per push asset.

    Dagster records an observation for one partition, and what a run of a range sends (its requests above all: one
    stream of batches across the days) is the window's, not a day's. So each day of the window gets an observation
    labeled with the window (``window_start``, ``window_end``, ``window_days``) carrying the window's figures, plus
    how many records of that very day would be sent (``would_send_this_day``) and a per-day table.
    """
    selected, keys, aiq = context.selected_asset_keys, account.assets, account.resource(context)
    with aiq.open_client() as client:
        sync: SyncDatabase = context.resources.sync
        pusher = PreviewPusher(sync.store(), client, aiq.account, context.run.run_id, account.log(context),
                               account.scope)
        reports: list[tuple[dg.AssetKey, PushReport, PushReport | None]] = []
        if keys.personas in selected:
            reports.append((keys.personas, *pusher.push_personas(start, end)))
        if keys.sales in selected:
            report, _ = pusher.push_sales(start, end, personas_pushed=keys.personas in selected)
            reports.append((keys.sales, report, None))
    days = context.partition_keys
    for key, report, for_sales in reports:
        preview = pusher.preview(report.entity)
        limits = (aiq.requests_per_second, aiq.requests_per_minute, aiq.requests_per_hour)
        # The sales' personas go in the personas' batches (their requests are counted there, with the personas').
        quarantined = report.quarantined + (for_sales.quarantined if for_sales else 0)
        metadata = {
            "dry_run": True, "window_start": dg.MetadataValue.timestamp(start),
            "window_end": dg.MetadataValue.timestamp(end), "window_days": len(days),
            "new": preview.new, "changed": preview.changed, "overrides": report.overrides,
            "unchanged": report.unchanged, "quarantined": quarantined, "voided_unsent": report.voided_unsent,
            "would_send": preview.new + preview.changed, "aiq_requests": preview.requests,
            "seconds_at_limits": round(seconds_at_limits(preview.requests, *limits), 1),
            "aiq_account": aiq.uid,
            "would_send_by_day": dg.MetadataValue.md(preview.by_day_markdown()),
            "samples": dg.MetadataValue.md("\n\n".join(f"```json\n{s}\n```" for s in preview.samples) or "none"),
        }
        account.log(context).info(
            f"dry run of {days[0]}..{days[-1]}, {report.entity}: {metadata['would_send']:,} would be sent "
            f"({preview.new:,} new, {preview.changed:,} changed, {report.overrides:,} through the override), "
            f"{report.unchanged:,} unchanged, {quarantined:,} quarantined; {preview.requests:,} requests, "
            f"{metadata['seconds_at_limits']} s at the account's limits"
        )
        window = f"{days[0]}..{days[-1]}" if len(days) > 1 else days[0]
        for day in days:
            yield dg.AssetObservation(
                asset_key=key, partition=day,
                description=f"Dry run of {window}: the figures are the whole window's (window_days), not this day's; "
                            "would_send_this_day is this day's own.",
                metadata={**metadata, "would_send_this_day": preview.by_day[dt.date.fromisoformat(day)]},
            )
