"""The code location: every asset, check, job, schedule, sensor and resource, in one Definitions object."""

import dagster as dg

from aiq_pipelines.defs.aiq_assets import aiq_inventory, aiq_push
from aiq_pipelines.defs.automation import (
    daily_sync,
    inventory_sync,
    inventory_sync_schedule,
    nightly_reconciliation,
    pos_change_sensor,
)
from aiq_pipelines.defs.drops import drop_definitions
from aiq_pipelines.defs.partitions import settings
from aiq_pipelines.defs.pos_assets import pos_inventory, pos_personas, pos_transactions
from aiq_pipelines.defs.resources import build_resources

# A drop folder is read by its own sensor, which syncs the days its files touch; the change sensor is for databases.
drops = drop_definitions() if settings.pos_drop_dir is not None else {"assets": [], "jobs": [], "sensors": []}

# Each asset links to its source file in the UI. In production, dg.link_code_references_to_git turns the links into
# URLs of the deployed commit (see the README's deployment section).
assets = dg.with_source_code_references(
    [*drops["assets"], pos_transactions, pos_personas, pos_inventory, aiq_push, aiq_inventory]
)

defs = dg.Definitions(
    assets=assets,
    jobs=[daily_sync, inventory_sync, *drops["jobs"]],
    schedules=[inventory_sync_schedule, nightly_reconciliation],
    sensors=drops["sensors"] or [pos_change_sensor],
    resources=build_resources(settings),
)
