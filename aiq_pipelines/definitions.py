"""The code location: every asset, check, job, schedule, sensor and resource, in one Definitions object."""

import dagster as dg

from aiq_pipelines.defs.aiq_assets import aiq_inventory, aiq_push
from aiq_pipelines.defs.audit import DeliveryAudit, aiq_delivery_audit, delivery_audit
from aiq_pipelines.defs.audit_automation import delivery_audit_schedule, resend_after_audit
from aiq_pipelines.defs.automation import (
    daily_sync,
    inventory_sync,
    inventory_sync_schedule,
    pos_change_sensor,
    reconcile_finished_days,
)
from aiq_pipelines.defs.drops import drop_definitions
from aiq_pipelines.defs.dry_run import daily_sync_dry_run
from aiq_pipelines.defs.erasure import build_forget_job
from aiq_pipelines.defs.ops import (
    alert_on_run_failure,
    build_check_alerts,
    build_retry_job,
    quarantine_change_sensor,
    refresh_quarantine,
    sync_quarantine,
)
from aiq_pipelines.defs.partitions import settings
from aiq_pipelines.defs.pos_assets import pos_inventory, pos_personas, pos_transactions
from aiq_pipelines.defs.resources import build_resources

# A drop folder is read by its own sensor, which syncs the days its files touch; the change sensor is for databases.
drops = drop_definitions() if settings.pos_drop_dir is not None else {"assets": [], "jobs": [], "sensors": []}

pipeline = [*drops["assets"], pos_transactions, pos_personas, pos_inventory, aiq_push, aiq_inventory, aiq_delivery_audit,
            sync_quarantine]
# Alerts only with a webhook to post to: without ALERT_WEBHOOK_URL they are not defined at all.
alerts = [] if settings.alert_webhook_url is None else [
    alert_on_run_failure,
    build_check_alerts([key for asset in pipeline for key in asset.check_keys], [*aiq_push.keys, *aiq_inventory.keys]),
]

resources = {**build_resources(settings), "audit": DeliveryAudit.from_settings(settings)}
# Its runs are daily_sync's, resolved with its resources once the code location has loaded.
retry_quarantined = build_retry_job(lambda: defs.resolve_job_def(daily_sync.name))
forget_shopper = build_forget_job(with_drop_folder=settings.pos_drop_dir is not None)

defs = dg.Definitions(
    assets=pipeline,
    jobs=[daily_sync, daily_sync_dry_run, inventory_sync, refresh_quarantine, retry_quarantined, delivery_audit,
          forget_shopper, *drops["jobs"]],
    schedules=[inventory_sync_schedule, reconcile_finished_days, delivery_audit_schedule],
    sensors=[*(drops["sensors"] or [pos_change_sensor]), quarantine_change_sensor, resend_after_audit, *alerts],
    resources=resources,
)
