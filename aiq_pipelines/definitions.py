"""The code location: every asset, check, job, schedule, sensor and resource, in one Definitions object."""

import dagster as dg

from aiq_pipelines.aiq.resource import AiqResource
from aiq_pipelines.defs.aiq_assets import aiq_inventory, aiq_push
from aiq_pipelines.defs.automation import (
    daily_sync,
    inventory_sync,
    inventory_sync_schedule,
    nightly_reconciliation,
    pos_change_sensor,
)
from aiq_pipelines.defs.pos_assets import pos_inventory, pos_personas, pos_transactions
from aiq_pipelines.defs.resources import database_resources
from aiq_pipelines.settings import get_settings

settings = get_settings()

defs = dg.Definitions(
    assets=[pos_transactions, pos_personas, pos_inventory, aiq_push, aiq_inventory],
    jobs=[daily_sync, inventory_sync],
    schedules=[inventory_sync_schedule, nightly_reconciliation],
    sensors=[pos_change_sensor],
    resources={
        **database_resources(settings),
        # Every other AIQ setting defaults from aiq_pipelines.settings; the key is read at launch and never shown.
        "aiq": AiqResource(api_key=dg.EnvVar("AIQ_API_KEY")),
    },
)
