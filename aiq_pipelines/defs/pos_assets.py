"""Extract assets (group ``pos``): stage one business day of POS records per partition in the sync database."""

import datetime as dt
from typing import Any

import dagster as dg

from aiq_pipelines.defs.figures import add_partition_figures, by_partition, window_bounds
from aiq_pipelines.defs.keys import (
    CHECK_QUARANTINE,
    CHECK_STRAYS,
    CHECK_UNIQUE,
    CHECK_WINDOW,
    DROP_FILES_TAG,
    OWNERS,
    POS_INVENTORY,
    POS_PERSONAS,
    POS_TAGS,
    POS_TRANSACTIONS,
)
from aiq_pipelines.defs.partitions import daily_partitions
from aiq_pipelines.defs.resources import PosDatabase, SyncDatabase
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.source import PosSource
from aiq_pipelines.sync.progress import Progress
from aiq_pipelines.sync.reports import StageDay, StageReport, StrayReport
from aiq_pipelines.sync.store import SyncStore

_EXTRACT = {"group_name": "pos", "kinds": {"sql", "python"}, "owners": OWNERS, "tags": POS_TAGS}


def _check_specs(asset: dg.AssetKey, *, windowed: bool) -> list[dg.AssetCheckSpec]:
    specs = [
        dg.AssetCheckSpec(CHECK_UNIQUE, asset=asset, blocking=True,
                          description="Every staged record has its own key: none overwrote another in this run."),
        dg.AssetCheckSpec(CHECK_QUARANTINE, asset=asset, blocking=True,
                          description="The share of quarantined records is at most QUARANTINE_MAX_RATE "
                                      "(once at least QUARANTINE_MIN_RECORDS are quarantined)."),
    ]
    if windowed:
        specs.append(dg.AssetCheckSpec(CHECK_WINDOW, asset=asset, blocking=True,
                                       description="No staged record falls outside the partition's business days."))
        specs.append(dg.AssetCheckSpec(
            CHECK_STRAYS, asset=asset,
            description="No POS record is dated where no partition reads it (no date, later than today, or before "
                        "POS_START_DATE though modified since). Those are quarantined; a warning, not a stop.",
        ))
    return specs


def _progress_logger(context: dg.AssetExecutionContext):
    """A ``sync_progress`` line per chunk the extract stages: records done, of how many when the POS can count them
    cheaply (the reference queries), the rate and the time left, live in the run's log."""
    progress = Progress(context.log.info, f"sync_progress {context.asset_key.to_user_string()}", every=0)

    def log(report: StageReport) -> None:
        progress.total = report.expected
        progress.update(report.extracted, f"{report.staged:,} staged, {report.quarantined:,} quarantined")

    return log


def _quarantine_strays(
    context: dg.AssetExecutionContext, source: PosSource, store: SyncStore, entity: Entity
) -> tuple[StrayReport | None, dg.AssetCheckResult]:
    """Quarantine the POS records of ``entity`` that lie outside every partition, and the check that reports them."""
    if not source.reads_strays(entity):
        return None, dg.AssetCheckResult(
            check_name=CHECK_STRAYS,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"POS_QUERIES_FILE replaces the {entity.query} query but has no stray_{entity.query} query, so records "
                "dated "
                "outside every partition cannot be found; see docs/custom-schema.md."
            ),
        )
    partitions = context.assets_def.partitions_def
    assert isinstance(partitions, dg.TimeWindowPartitionsDefinition)
    first, last = partitions.get_first_partition_window(), partitions.get_last_partition_window()
    assert first is not None and last is not None  # a run of this asset has a partition
    strays = store.quarantine_strays(source, entity, first.start, last.end, run_id=context.run.run_id)
    return strays, dg.AssetCheckResult(
        check_name=CHECK_STRAYS,
        passed=strays.quarantined == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"outside_partitions": strays.quarantined},
        description=None if strays.quarantined == 0 else (
            f"{strays.quarantined} {entity.query} lie outside every partition and are quarantined: "
            f"{'; '.join(strays.reasons)}."
        ),
    )


def _extract_result(
    context: dg.AssetExecutionContext,
    sync: SyncDatabase,
    report: StageReport,
    *,
    windowed: bool,
    strays: tuple[StrayReport | None, dg.AssetCheckResult] | None = None,
) -> dg.MaterializeResult:
    max_rate, min_records = sync.quarantine_max_rate, sync.quarantine_min_records
    rate_ok = report.quarantine_rate <= max_rate or report.quarantined < min_records
    checks = [
        dg.AssetCheckResult(
            check_name=CHECK_UNIQUE,
            passed=report.keys_staged == report.staged,
            metadata={"records_written": report.staged, "distinct_keys_staged": report.keys_staged},
            description=None if report.keys_staged == report.staged else (
                f"{report.staged} records were written but only {report.keys_staged} keys are staged: the POS "
                "query returns a key more than once (is it ordered by key?) or another run staged the same window."
            ),
        ),
        dg.AssetCheckResult(
            check_name=CHECK_QUARANTINE,
            passed=rate_ok,
            metadata={"quarantined": report.quarantined, "extracted": report.extracted,
                      "quarantine_rate": report.quarantine_rate, "max_rate": max_rate,
                      "min_records": min_records},
            description=None if rate_ok else (
                f"{report.quarantined} of {report.extracted} records quarantined ({report.quarantine_rate:.1%}), "
                f"above QUARANTINE_MAX_RATE={max_rate:.1%}: look for a systemic cause in the reasons table."
            ),
        ),
    ]
    if windowed:
        checks.append(
            dg.AssetCheckResult(
                check_name=CHECK_WINDOW,
                passed=report.outside_window == 0,
                metadata={"outside_window": report.outside_window},
                description=None if report.outside_window == 0 else (
                    f"{report.outside_window} staged records fall outside the window: the POS query must filter "
                    "on :window_start/:window_end."
                ),
            )
        )
    common: dict[str, Any] = {}
    if DROP_FILES_TAG in context.run.tags:  # a run the drop sensor started: the files whose rows it syncs
        common["drop_files"] = context.run.tags[DROP_FILES_TAG]
    window: dict[str, Any] = {}
    if report.entity == Entity.TRANSACTION:
        window["sale_customers_staged"] = report.sale_customers
        window["sale_customers_without_payload"] = report.sale_customers_without_payload
    if strays is not None:
        stray_report, stray_check = strays
        checks.append(stray_check)
        if stray_report is not None:  # every record outside every partition, whichever days the run read
            common["outside_partitions"] = stray_report.quarantined
            common["outside_partitions_reasons"] = dg.MetadataValue.md(stray_report.reasons_markdown())
    if not windowed:
        return dg.MaterializeResult(metadata={**_day_figures(report), **common}, check_results=checks)
    common.update(window_bounds(report.window_start, report.window_end))
    metadata, partitions = by_partition(context, lambda day: _day_figures(report.days.get(day)), window, common)
    add_partition_figures(context, context.asset_key, partitions)
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


def _day_figures(day: StageDay | None) -> dict[str, Any]:
    """What an extract did with one business day's records (or, for the inventory snapshot, with all of them)."""
    day = day or StageDay()
    return {
        "dagster/row_count": day.staged,
        "extracted": day.extracted,
        "quarantined": day.quarantined,
        "quarantine_rate": day.quarantine_rate,
        "quarantine_reasons": dg.MetadataValue.md(day.reasons_markdown()),
    }


def _window(context: dg.AssetExecutionContext) -> tuple[dt.datetime, dt.datetime]:
    window = context.partition_time_window
    context.log.info(f"window {window.start.isoformat()} .. {window.end.isoformat()} ({len(context.partition_keys)} days)")
    return window.start, window.end


@dg.asset(
    key=POS_TRANSACTIONS,
    **_EXTRACT,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=_check_specs(POS_TRANSACTIONS, windowed=True),
)
def pos_transactions(context: dg.AssetExecutionContext, pos: PosDatabase, sync: SyncDatabase) -> dg.MaterializeResult:
    """Receipts with their line items, staged per business day (the store's local day, POS_TIMEZONE).

    Replaces the window's staged receipts with what the POS holds now, so re-runs are idempotent. A receipt whose
    store, customer or products are missing from the POS, whose lines don't reconcile with its total within a
    cent, or whose values don't parse is quarantined with its reason; the rest of the day is staged.

    The customers the day's sales name are staged too, as AIQ personas read from the POS now, however long ago they
    were modified: aiq_personas and aiq_sales send them before the sales that need them, without reading the POS.

    Each run also quarantines the sales no partition reads (no date, later than today, or dated before
    POS_START_DATE though modified since); the check none_outside_partitions warns about them.
    """
    start, end = _window(context)
    store, source = sync.store(), pos.source()
    report = store.stage_transactions(
        source, start, end, run_id=context.run.run_id, chunk_size=pos.chunk_size, on_chunk=_progress_logger(context)
    )
    strays = _quarantine_strays(context, source, store, Entity.TRANSACTION)
    return _extract_result(context, sync, report, windowed=True, strays=strays)


@dg.asset(
    key=POS_PERSONAS,
    **_EXTRACT,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=_check_specs(POS_PERSONAS, windowed=True),
)
def pos_personas(context: dg.AssetExecutionContext, pos: PosDatabase, sync: SyncDatabase) -> dg.MaterializeResult:
    """Customers created or modified on each business day, staged as personas.

    Phones and emails are kept as typed in the staged record; the persona's AIQ payload, built here and staged beside
    it, carries them normalized (invalid or placeholder values left out and named). A customer whose values don't
    parse (an impossible birthday, a missing key) is quarantined with its reason.

    Each run also quarantines the customers no partition reads (last modified at no date or later than today).
    """
    start, end = _window(context)
    store, source = sync.store(), pos.source()
    report = store.stage_personas(
        source, start, end, run_id=context.run.run_id, chunk_size=pos.chunk_size, on_chunk=_progress_logger(context)
    )
    strays = _quarantine_strays(context, source, store, Entity.PERSONA)
    return _extract_result(context, sync, report, windowed=True, strays=strays)


@dg.asset(key=POS_INVENTORY, **_EXTRACT, check_specs=_check_specs(POS_INVENTORY, windowed=False))
def pos_inventory(context: dg.AssetExecutionContext, pos: PosDatabase, sync: SyncDatabase) -> dg.MaterializeResult:
    """A snapshot of every product with its stock, unit cost and price in each store.

    The POS keeps no stock history, so this asset is unpartitioned: each run replaces the staged snapshot.
    """
    store = sync.store()
    report = store.stage_inventory(
        pos.source(), run_id=context.run.run_id, chunk_size=pos.chunk_size, on_chunk=_progress_logger(context)
    )
    return _extract_result(context, sync, report, windowed=False)
