"""The code location: every asset, check, job, schedule, sensor and resource, in one Definitions object."""

import dagster as dg

from aiq_pipelines.defs.pos_assets import pos_inventory, pos_personas, pos_transactions
from aiq_pipelines.defs.resources import database_resources
from aiq_pipelines.settings import get_settings

settings = get_settings()

defs = dg.Definitions(
    assets=[pos_transactions, pos_personas, pos_inventory],
    resources=database_resources(settings),
)
