"""Names the Dagster wiring shares: asset keys, check names, the AIQ pool, owners and tags."""

import dataclasses

import dagster as dg

POS_TRANSACTIONS = dg.AssetKey("pos_transactions")
POS_PERSONAS = dg.AssetKey("pos_personas")
POS_INVENTORY = dg.AssetKey("pos_inventory")
POS_DROP_FILES = dg.AssetKey("pos_drop_files")
SYNC_QUARANTINE = dg.AssetKey("sync_quarantine")
AIQ_PERSONAS = dg.AssetKey("aiq_personas")
AIQ_SALES = dg.AssetKey("aiq_sales")
AIQ_INVENTORY = dg.AssetKey("aiq_inventory")

# Extract checks
CHECK_UNIQUE = "unique_keys"
CHECK_WINDOW = "within_window"
CHECK_QUARANTINE = "quarantine_rate"
CHECK_STRAYS = "none_outside_partitions"
CHECK_FILES_READABLE = "files_readable"
CHECK_QUARANTINE_AGE = "none_waiting_too_long"
# Push checks
CHECK_DELIVERED = "delivered"
CHECK_QUARANTINE_GROWTH = "quarantine_not_growing"

# Every push step takes a slot of this pool: AIQ's limits are per account, whatever run sends.
AIQ_POOL = "aiq_api"

# Who answers for the assets in the UI, and tags to filter them by.
OWNERS = ["team:data-platform"]
POS_TAGS = {"layer": "extract", "system": "pos"}
AIQ_TAGS = {"layer": "push", "system": "aiq"}
OPS_TAGS = {"layer": "ops"}
# The run tag naming the drop files whose rows a sensor-started run syncs.
DROP_FILES_TAG = "drop_files"
# The run tag of a dry run ("true"): what finds dry runs in the runs list; every dry run carries it.
DRY_RUN_TAG = "aiq/dry_run"
DRY_RUN_JOB = "daily_sync_dry_run"


@dataclasses.dataclass(frozen=True)
class AccountAssets:
    """The push assets of one AIQ account and the resource they send through."""

    name: str
    resource_key: str
    personas: dg.AssetKey
    sales: dg.AssetKey
    inventory: dg.AssetKey


def account_assets(name: str, *, prefixed: bool) -> AccountAssets:
    """With one account the push assets keep their plain keys (``aiq_sales``); with an accounts file each account's are
    prefixed by its name (``colorado/aiq_sales``) and send through the resource ``aiq_<name>``."""
    if not prefixed:
        return AccountAssets(name, "aiq", AIQ_PERSONAS, AIQ_SALES, AIQ_INVENTORY)
    return AccountAssets(name, f"aiq_{name}", AIQ_PERSONAS.with_prefix(name), AIQ_SALES.with_prefix(name),
                         AIQ_INVENTORY.with_prefix(name))
