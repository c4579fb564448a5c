"""Push assets (group ``aiq``): send what changed in the staged POS records to AIQ, and prove it arrived."""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg

from aiq_pipelines.aiq.transport import ClientStats
from aiq_pipelines.defs.keys import (
    AIQ_INVENTORY,
    AIQ_PERSONAS,
    AIQ_POOL,
    AIQ_SALES,
    AIQ_TAGS,
    CHECK_DELIVERED,
    CHECK_QUARANTINE_GROWTH,
    OWNERS,
    POS_INVENTORY,
    POS_PERSONAS,
    POS_TRANSACTIONS,
)
from aiq_pipelines.defs.partitions import daily_partitions
from aiq_pipelines.defs.resources import AiqResource, SyncDatabase
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.sync.push import Pusher, PushReport

_PUSH = {"group_name": "aiq", "kinds": {"api", "python"}, "owners": OWNERS, "tags": AIQ_TAGS}
# The change sensor syncs the day within minutes and the nightly reconciliation re-syncs yesterday: a push asset
# older than this has stopped syncing.
SALES_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=26), warn_window=dt.timedelta(hours=2))
INVENTORY_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=6), warn_window=dt.timedelta(hours=2))


def _check_specs(asset: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            CHECK_DELIVERED, asset=asset, blocking=True,
            description="Every staged record is in AIQ as staged (per the ledger), quarantined, or a void never sent.",
        ),
        dg.AssetCheckSpec(
            CHECK_QUARANTINE_GROWTH, asset=asset,
            description="Warns when this run left more records of the entity in quarantine than there were before it.",
        ),
    ]


def _push_result(
    aiq: AiqResource, pusher: Pusher, report: PushReport, stats: ClientStats, quarantine_before: int,
    undelivered: int, extra: dict[str, Any] | None = None, *, asset_key: dg.AssetKey | None = None,
) -> dg.MaterializeResult:
    quarantine_after = pusher.quarantine_count(report.entity)
    balanced = report.accounted == report.staged
    delivered = balanced and undelivered == 0
    metadata: dict[str, Any] = {
        "dagster/row_count": report.staged,
        "staged": report.staged,
        "sent": report.sent,
        "unchanged": report.unchanged,
        "quarantined": report.quarantined,
        "aiq_requests": stats.requests,
        "aiq_retries": stats.retries,
        "aiq_429s": stats.throttled,
        "aiq_bytes_sent": stats.bytes_sent,
        "aiq_account": aiq.uid,
        "quarantine_reasons": dg.MetadataValue.md(report.reasons_markdown()),
        **(extra or {}),
    }
    checks = [
        dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=CHECK_DELIVERED,
            passed=delivered,
            metadata={"staged": report.staged, "sent": report.sent, "unchanged": report.unchanged,
                      "voided_unsent": report.voided_unsent, "quarantined": report.quarantined,
                      "undelivered": undelivered},
            description=None if delivered else (
                f"sent {report.sent} + unchanged {report.unchanged} + voided unsent {report.voided_unsent} + "
                f"quarantined {report.quarantined} = {report.accounted}, staged {report.staged}; "
                f"{undelivered} staged records are neither in the ledger as staged nor quarantined. Re-run the partition."
            ),
        ),
        dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=CHECK_QUARANTINE_GROWTH,
            passed=quarantine_after <= quarantine_before,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"quarantine_before": quarantine_before, "quarantine_after": quarantine_after},
            description=None if quarantine_after <= quarantine_before else (
                f"{quarantine_after - quarantine_before} more {report.entity} records in quarantine than before this "
                "run: see the reasons table and fix them at the source."
            ),
        ),
    ]
    return dg.MaterializeResult(asset_key=asset_key, metadata=metadata, check_results=checks)


def _delivered(result: dg.MaterializeResult) -> bool:
    """Whether the push's blocking ``delivered`` check passed."""
    return all(c.passed for c in result.check_results or () if c.check_name == CHECK_DELIVERED)


def _window(context: dg.AssetExecutionContext) -> tuple[dt.datetime, dt.datetime]:
    window = context.partition_time_window
    return window.start, window.end


def _daily_push_spec(key: dg.AssetKey, deps: list[Any], description: str, **options: Any) -> dg.AssetSpec:
    """A daily push asset of ``aiq_push``; ``description`` is the UI's."""
    return dg.AssetSpec(key, **_PUSH, deps=deps, freshness_policy=SALES_FRESHNESS, description=description,
                        **options)


@dg.multi_asset(
    specs=[
        _daily_push_spec(
            AIQ_PERSONAS,
            # pos_transactions too: the customers of the window's sales, staged by it, go out with the personas.
            [POS_PERSONAS, POS_TRANSACTIONS],
            "Personas created or modified on each business day, upserted into AIQ (createUpdateMembers).\n\n"
            "Only personas whose payload changed since AIQ last acknowledged them are sent. A changed phone or email "
            "of a persona AIQ already has goes through AIQ's override call on its contactID, as AIQ's guide asks. "
            "Invalid and placeholder phones and invalid emails are left out (and counted), never sent. The customers "
            "of the day's sales that AIQ lacks, however long ago they were modified, are sent in the same batches as "
            "pos_transactions staged them, so each sale finds its persona in AIQ.",
        ),
        _daily_push_spec(
            AIQ_SALES,
            [POS_TRANSACTIONS, AIQ_PERSONAS],
            "Sales of each business day with their line items, upserted into AIQ (createUpdateSales).\n\n"
            "Each sale's persona reaches AIQ before the sale: customers the ledger lacks are sent first, as "
            "pos_transactions staged them, however long ago they were modified. Returns are their own sales with "
            "negative quantities; a sale voided before it was sent is never sent, and one voided after is re-sent with "
            "a zero total and zero quantities so it stops counting. Only sales whose payload changed since AIQ "
            "acknowledged them are sent.",
            skippable=True,  # not yielded when a persona is not delivered: the step then fails on the blocking check
        ),
    ],
    check_specs=_check_specs(AIQ_PERSONAS) + _check_specs(AIQ_SALES),
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=AIQ_POOL,
    can_subset=True,
)
def aiq_push(context: dg.AssetExecutionContext, sync: SyncDatabase, aiq: AiqResource) -> Iterator[dg.MaterializeResult]:
    """Push the window's personas, then its sales, in one step: the sales follow without a second step's start and end.

    Either asset can be materialized alone. When both are selected and a persona is not delivered (``aiq_personas``'s
    blocking ``delivered`` check fails), no sale is pushed and the step fails, as a separate downstream step would not
    have run.
    """
    start, end = _window(context)
    selected = context.selected_asset_keys
    with aiq.open_client() as client:
        pusher = Pusher(sync.store(), client, aiq.account, context.run.run_id, context.log)
        personas_pushed = False
        if AIQ_PERSONAS in selected:
            before, stats = pusher.quarantine_count(Entity.PERSONA), client.stats
            report, for_sales = pusher.push_personas(start, end)
            extra = {"overrides": report.overrides, "personas_for_sales_sent": for_sales.sent,
                     "personas_for_sales_quarantined": for_sales.quarantined,
                     **{f"left_out_{k}": v for k, v in sorted(report.member_issues.items())}}
            result = _push_result(aiq, pusher, report, client.stats.since(stats), before,
                                  pusher.undelivered(Entity.PERSONA, start, end), extra, asset_key=AIQ_PERSONAS)
            yield result
            if not _delivered(result):
                return  # Dagster fails the step on the blocking check: the sales wait for their personas
            personas_pushed = True
        if AIQ_SALES in selected:
            before, stats = pusher.quarantine_count(Entity.TRANSACTION), client.stats
            report, personas = pusher.push_sales(start, end, personas_pushed=personas_pushed)
            extra = {"voided_unsent": report.voided_unsent, "personas_sent_first": personas.sent,
                     "personas_quarantined": personas.quarantined}
            yield _push_result(aiq, pusher, report, client.stats.since(stats), before,
                               pusher.undelivered(Entity.TRANSACTION, start, end), extra, asset_key=AIQ_SALES)


@dg.asset(
    key=AIQ_INVENTORY,
    **_PUSH,
    pool=AIQ_POOL,
    deps=[POS_INVENTORY],
    freshness_policy=INVENTORY_FRESHNESS,
    check_specs=_check_specs(AIQ_INVENTORY),
)
def aiq_inventory(context: dg.AssetExecutionContext, sync: SyncDatabase, aiq: AiqResource) -> dg.MaterializeResult:
    """The inventory snapshot in AIQ (createUpdateInventory, at most 100 products a call).

    One item per product: quantity is its stock across the account's stores; per-store stock, unit cost and margin
    travel as customAttr entries. Only products whose payload changed since AIQ acknowledged them are sent.
    """
    with aiq.open_client() as client:
        pusher = Pusher(sync.store(), client, aiq.account, context.run.run_id, context.log)
        before = pusher.quarantine_count(Entity.INVENTORY)
        report = pusher.push_inventory()
        stats = client.stats
    return _push_result(aiq, pusher, report, stats, before, pusher.undelivered(Entity.INVENTORY))
