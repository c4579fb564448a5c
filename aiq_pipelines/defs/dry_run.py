"""The dry run as a job of its own, ``daily_sync_dry_run``: ``daily_sync``'s extract, then a push that sends nothing.

It is ``daily_sync`` with the push's ``dry_run`` set and the run tag ``aiq/dry_run=true`` (what finds dry runs in the
runs list), without the push assets' checks: a dry run delivers nothing, so there is nothing for ``delivered`` to prove,
and a check left unevaluated would be logged as an output the step did not yield. The extract's checks still run.
"""

import dagster as dg

from aiq_pipelines.defs.aiq_assets import aiq_push
from aiq_pipelines.defs.keys import DRY_RUN_JOB, DRY_RUN_TAG, POS_PERSONAS, POS_TRANSACTIONS

DRY_RUN_SELECTION = dg.AssetSelection.assets(POS_TRANSACTIONS, POS_PERSONAS) | dg.AssetSelection.assets(
    *aiq_push.keys).without_checks()
DRY_RUN_CONFIG = {"ops": {"aiq_push": {"config": {"dry_run": True}}}}
DRY_RUN_TAGS = {DRY_RUN_TAG: "true"}

daily_sync_dry_run = dg.define_asset_job(
    DRY_RUN_JOB,
    selection=DRY_RUN_SELECTION,
    config=DRY_RUN_CONFIG,
    tags=DRY_RUN_TAGS,
    executor_def=dg.in_process_executor,
    description=(
        "A dry run of daily_sync: extract business days as daily_sync does, then report per push asset what a real "
        "run would send (new, changed, unchanged, quarantined), in how many requests and how long at AIQ's limits, "
        "with masked samples. Sends nothing to AIQ and writes no ledger row. Pick a day, or a range as one run."
    ),
)
