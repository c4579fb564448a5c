"""Push assets (group ``aiq``): send what changed in the staged POS records to AIQ, and prove it arrived.

Each AIQ account has its own push assets (``sync.accounts`` decides which stores' records are its own); one step pushes
every account of a window, each in a thread of its own (``defs.fanout``).
"""

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from aiq_pipelines.aiq.transport import ClientStats
from aiq_pipelines.defs.fanout import Account, Daily, each_account
from aiq_pipelines.defs.figures import by_partition, window_bounds
from aiq_pipelines.defs.keys import (
    AIQ_POOL,
    AIQ_TAGS,
    CHECK_DELIVERED,
    CHECK_QUARANTINE_GROWTH,
    DRY_RUN_JOB,
    DRY_RUN_TAG,
    OWNERS,
    POS_INVENTORY,
    POS_PERSONAS,
    POS_TRANSACTIONS,
    account_assets,
)
from aiq_pipelines.defs.partitions import daily_partitions, settings
from aiq_pipelines.defs.preview import preview_window
from aiq_pipelines.defs.resources import AiqResource
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.settings import AccountSettings
from aiq_pipelines.sync.accounts import StoreScope, hold_unlisted_sales, hold_unplaced_shoppers
from aiq_pipelines.sync.push import Pusher
from aiq_pipelines.sync.reports import PushDay, PushReport

_PUSH = {"group_name": "aiq", "kinds": {"api", "python"}, "owners": OWNERS, "tags": AIQ_TAGS}
# The change sensor syncs the day within minutes and reconcile_finished_days re-syncs yesterday: a push asset
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


def _push_figures(day: PushDay | None) -> dict[str, Any]:
    """What a push did with one business day's records (or, for the inventory snapshot, with all of them)."""
    day = day or PushDay()
    return {
        "dagster/row_count": day.staged,
        "staged": day.staged,
        "sent": day.sent,
        "unchanged": day.unchanged,
        "quarantined": day.quarantined,
        "quarantine_reasons": dg.MetadataValue.md(day.reasons_markdown()),
    }


def _push_result(
    aiq: AiqResource, pusher: Pusher, report: PushReport, stats: ClientStats, quarantine_before: int,
    undelivered: int, *, asset_key: dg.AssetKey, context: dg.AssetExecutionContext | None = None,
    window: tuple[dt.datetime, dt.datetime] | None = None,
    day_extra: Callable[[dt.date], dict[str, Any]] | None = None, window_extra: dict[str, Any] | None = None,
) -> Daily:
    """The push's materialization. Given the run's ``context`` and ``window``, a daily asset's: its figures day by
    day (``defs.figures``), ``day_extra`` giving a day's further figures and ``window_extra`` the window's."""
    quarantine_after = pusher.quarantine_count(report.entity)
    pusher.log.info(f"{report.entity}: {report.sent:,} sent, {report.unchanged:,} unchanged, "
                    f"{report.quarantined:,} quarantined of {report.staged:,} staged, in {stats.requests:,} requests")
    balanced = report.accounted == report.staged
    delivered = balanced and undelivered == 0
    requests = {"aiq_requests": stats.requests, "aiq_retries": stats.retries, "aiq_429s": stats.throttled,
                "aiq_bytes_sent": stats.bytes_sent, **(window_extra or {})}
    common: dict[str, Any] = {"aiq_account": aiq.uid, "aiq_base_url": aiq.base_url}
    partitions: dict[str, dict[str, Any]] = {}
    if context is None or window is None:
        metadata = {**_push_figures(report), **requests, **common}
    else:
        common.update(window_bounds(*window))

        def day_figures(day: dt.date) -> dict[str, Any]:
            return {**_push_figures(report.days.get(day)), **(day_extra(day) if day_extra else {})}

        metadata, partitions = by_partition(context, day_figures, requests, common)
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
    return Daily(dg.MaterializeResult(asset_key=asset_key, metadata=metadata, check_results=checks), partitions)


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


def _for_account(name: str, accounts: int) -> str:
    return f" This is AIQ account `{name}`'s, with the records of its stores." if accounts > 1 else ""


def _push_day(
    context: dg.AssetExecutionContext, account: Account, start: dt.datetime, end: dt.datetime
) -> Iterator[Daily]:
    """One account's day: its personas, then its sales (not when a persona was not delivered)."""
    selected, keys, aiq = context.selected_asset_keys, account.assets, account.resource(context)
    with aiq.open_client() as client:
        pusher = account.pusher(context, client, aiq)
        personas_pushed, window = False, (start, end)
        if keys.personas in selected:
            before, stats = pusher.quarantine_count(Entity.PERSONA), client.stats
            staged_personas, for_sales = pusher.push_personas(start, end)
            # The personas the push sent are the window's staged ones and the customers its sales name: both count.
            report = PushReport(entity=Entity.PERSONA)
            report.add(staged_personas)
            report.add(for_sales)

            def persona_extra(day: dt.date) -> dict[str, Any]:
                figures, of_sales = report.days.get(day, PushDay()), for_sales.days.get(day, PushDay())
                return {"overrides": figures.overrides, "personas_for_sales_sent": of_sales.sent,
                        "personas_for_sales_quarantined": of_sales.quarantined}

            daily = _push_result(
                aiq, pusher, report, client.stats.since(stats), before, pusher.undelivered(Entity.PERSONA, start, end),
                asset_key=keys.personas, context=context, window=window, day_extra=persona_extra,
                window_extra={f"left_out_{k}": v for k, v in sorted(report.member_issues.items())},
            )
            yield daily
            if not _delivered(daily.result):
                return  # Dagster fails the step on the blocking check: the sales wait for their personas
            personas_pushed = True
        if keys.sales in selected:
            before, stats = pusher.quarantine_count(Entity.TRANSACTION), client.stats
            sales, personas = pusher.push_sales(start, end, personas_pushed=personas_pushed)

            def sale_extra(day: dt.date) -> dict[str, Any]:
                figures, first = sales.days.get(day, PushDay()), personas.days.get(day, PushDay())
                return {"voided_unsent": figures.voided_unsent, "personas_sent_first": first.sent,
                        "personas_quarantined": first.quarantined}

            yield _push_result(
                aiq, pusher, sales, client.stats.since(stats), before, pusher.undelivered(Entity.TRANSACTION, start, end),
                asset_key=keys.sales, context=context, window=window, day_extra=sale_extra,
            )


class PushConfig(dg.Config):
    dry_run: bool = Field(
        False, description="Extract and diff as usual, send nothing and write no ledger row: each push asset reports "
        "(as an observation, not a materialization) what a real run would send, in how many requests and how long. "
        "The run must carry the tag aiq/dry_run=true (the job daily_sync_dry_run sets both); a run with that tag is a "
        "dry run whatever this says.",
    )


def _push_inventory(context: dg.AssetExecutionContext, account: Account) -> Iterator[dg.MaterializeResult]:
    aiq = account.resource(context)
    with aiq.open_client() as client:
        pusher = account.pusher(context, client, aiq)
        before = pusher.quarantine_count(Entity.INVENTORY)
        report = pusher.push_inventory()
        stats = client.stats
    yield _push_result(aiq, pusher, report, stats, before, pusher.undelivered(Entity.INVENTORY),
                       asset_key=account.assets.inventory).result


def build_push_assets(
    configs: Sequence[AccountSettings], *, prefixed: bool
) -> tuple[dg.AssetsDefinition, dg.AssetsDefinition]:
    """The daily push (``aiq_push``: personas and sales of every account) and the inventory push (``aiq_inventory``)."""
    scopes = StoreScope.for_accounts({c.name: (c.locations, c.default) for c in configs})
    accounts = [Account(c, account_assets(c.name, prefixed=prefixed), scopes[c.name], len(configs) > 1)
                for c in configs]
    listed = frozenset(location for c in configs for location in c.locations)
    takes_the_rest = any(c.default for c in configs)
    split = not all(scope.everything for scope in scopes.values())  # some account receives only some shoppers
    specs, inventory_specs, checks, inventory_checks = [], [], [], []
    for account in accounts:
        keys, note = account.assets, _for_account(account.config.name, len(accounts))
        specs += [
            _daily_push_spec(
                keys.personas,
                # pos_transactions too: the customers of the window's sales, staged by it, go out with the personas.
                [POS_PERSONAS, POS_TRANSACTIONS],
                "Personas created or modified on each business day, upserted into AIQ (createUpdateMembers)." + note +
                "\n\nOnly personas whose payload changed since AIQ last acknowledged them are sent. A changed phone or "
                "email of a persona AIQ already has goes through AIQ's override call on its contactID, as AIQ's guide "
                "asks. Invalid and placeholder phones and invalid emails are left out (and counted), never sent. The "
                "customers of the day's sales that AIQ lacks, however long ago they were modified, are sent in the same "
                "batches as pos_transactions staged them, so each sale finds its persona in AIQ.",
                skippable=True,  # a dry run materializes nothing
            ),
            _daily_push_spec(
                keys.sales,
                [POS_TRANSACTIONS, keys.personas],
                "Sales of each business day with their line items, upserted into AIQ (createUpdateSales)." + note +
                "\n\nEach sale's persona reaches AIQ before the sale: customers the ledger lacks are sent first, as "
                "pos_transactions staged them, however long ago they were modified. Returns are their own sales with "
                "negative quantities; a sale voided before it was sent is never sent, and one voided after is re-sent "
                "with a zero total and zero quantities so it stops counting. Only sales whose payload changed since AIQ "
                "acknowledged them are sent.",
                skippable=True,  # not yielded when a persona is not delivered: the step then fails on the blocking check
            ),
        ]
        checks += _check_specs(keys.personas) + _check_specs(keys.sales)
        inventory_specs.append(dg.AssetSpec(
            keys.inventory, **_PUSH, deps=[POS_INVENTORY], freshness_policy=INVENTORY_FRESHNESS,
            description="The inventory snapshot in AIQ (createUpdateInventory, at most 100 products a call)." + note +
            "\n\nOne item per product: quantity is its stock across the account's stores; per-store stock, unit cost "
            "and margin travel as customAttr entries. Only products whose payload changed since AIQ acknowledged them "
            "are sent.",
        ))
        inventory_checks += _check_specs(keys.inventory)
    resource_keys = {"sync", *(account.assets.resource_key for account in accounts)}

    @dg.multi_asset(
        name="aiq_push", specs=specs, check_specs=checks, partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(), pool=AIQ_POOL, can_subset=True,
        required_resource_keys=resource_keys,
    )
    def aiq_push(context: dg.AssetExecutionContext, config: PushConfig) -> Iterator[Any]:
        """Push the window's personas, then its sales, of every account in one step: the sales follow without a second
        step's start and end, and the accounts send at once.

        Any asset can be materialized alone. When an account's personas and sales are both selected and a persona is
        not delivered (its blocking ``delivered`` check fails), none of that account's sales is pushed and the step
        fails, as a separate downstream step would not have run. In a dry run (the run tag ``aiq/dry_run``, with
        ``dry_run`` set), nothing is sent or written and nothing is materialized: each asset reports what a real run
        would do, an observation per day of the window.
        """
        start, end = _window(context)
        selected = context.selected_asset_keys
        tagged = context.run.tags.get(DRY_RUN_TAG) == "true"
        if config.dry_run and not tagged:
            raise dg.Failure(f"a dry run carries the run tag {DRY_RUN_TAG}=true, which finds it among the runs: launch "
                             f"the job {DRY_RUN_JOB}, or add the tag to this run")
        if tagged:  # a run labeled a dry run never sends, whatever its config says
            yield from each_account(context, {
                a.config.name: (lambda a=a: preview_window(context, a, start, end))
                for a in accounts if {a.assets.personas, a.assets.sales} & selected
            })
            return
        store, run_id = context.resources.sync.store(), context.run.run_id
        days = store.calendar.dates(start, end)
        sales, personas = (any(getattr(a.assets, kind) in selected for a in accounts) for kind in ("sales", "personas"))
        if not takes_the_rest and sales and (held := hold_unlisted_sales(store.engine, days, listed, run_id)):
            context.log.warning(f"{held} sales of stores that no AIQ account lists are quarantined: see their "
                                "reason, and list the stores in AIQ_ACCOUNTS_FILE")
        if split and personas and (held := hold_unplaced_shoppers(store.engine, days, run_id)):
            context.log.warning(f"{held} personas whose stores were never looked up in the POS go to no AIQ account "
                                "and are quarantined: re-run their days")
        yield from each_account(context, {
            a.config.name: (lambda a=a: _push_day(context, a, start, end))
            for a in accounts if {a.assets.personas, a.assets.sales} & selected
        })

    @dg.multi_asset(
        name="aiq_inventory", specs=inventory_specs, check_specs=inventory_checks, pool=AIQ_POOL, can_subset=True,
        required_resource_keys=resource_keys,
    )
    def aiq_inventory(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        """Push the inventory snapshot to every account, each with the stock of its own stores."""
        yield from each_account(context, {
            a.config.name: (lambda a=a: _push_inventory(context, a))
            for a in accounts if a.assets.inventory in context.selected_asset_keys
        })

    return aiq_push, aiq_inventory


aiq_push, aiq_inventory = build_push_assets(settings.aiq_accounts, prefixed=settings.aiq_accounts_file is not None)
