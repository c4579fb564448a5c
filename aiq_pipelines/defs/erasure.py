"""Erasing a shopper (``sync.erasure``) from Dagster, the job ``forget_shopper``, and from the terminal
(``aiq-pipelines forget-shopper``), both through ``erase``: the POS (or the drop folder) is checked for the shopper,
the drop folder's mirror forgets them, then the sync database. The job's events name the shopper by their key only."""

import dagster as dg
from pydantic import Field

from aiq_pipelines.defs.resources import DropFolder, PosDatabase, SyncDatabase
from aiq_pipelines.pos.dropfiles import files_naming
from aiq_pipelines.pos.queries import PosQueryError
from aiq_pipelines.sync.erasure import Erasure, forget_shopper


def erase(customer_id: str, erased_by: str, sync: SyncDatabase, pos: PosDatabase, drop: DropFolder | None) -> Erasure:
    """Erase one shopper; the result says where they are still held (the POS, drop files)."""
    still_in: list[str] = []
    elsewhere: dict[str, int] = {}
    if drop is not None:  # the POS is the folder's exports; the mirror is our copy of them
        files = files_naming(drop.files(), "customers", "customer_id", customer_id, drop.column_map())
        still_in += [f"the drop file {name}" for name in files]
        elsewhere["drop mirror customers"] = drop.mirror().forget_customer(customer_id)
    else:
        try:
            if any(True for _ in pos.source().personas_by_id([customer_id])):
                still_in.append("the POS")
        except PosQueryError as exc:
            still_in.append(f"perhaps the POS, which could not be read ({exc})")
    return forget_shopper(sync.store().engine, customer_id, erased_by, still_in=still_in, elsewhere=elsewhere)


class ForgetShopperConfig(dg.Config):
    customer_id: str = Field(min_length=1, description="The shopper's POS key (customers.customer_id, AIQ's pos_user).")


def build_forget_job(with_drop_folder: bool) -> dg.JobDefinition:
    """``forget_shopper``: erase one shopper's personal data from everything aiq-pipelines keeps."""

    @dg.op(required_resource_keys={"sync", "pos", *(["drop"] if with_drop_folder else [])})
    def forget_shopper_data(context: dg.OpExecutionContext, config: ForgetShopperConfig) -> dg.Output[int]:
        """Removes the shopper's personal data from staging, the ledger, the quarantine and the drop folder's mirror,
        records the erasure, and says whether the POS still holds the shopper."""
        erasure = erase(config.customer_id, f"dagster run {context.run.run_id}", context.resources.sync,
                        context.resources.pos, context.resources.drop if with_drop_folder else None)
        for line in erasure.summary():
            (context.log.warning if line.startswith("WARNING") else context.log.info)(line)
        return dg.Output(erasure.rows_removed, metadata={
            "customer_id": erasure.customer_id, "rows_removed": erasure.rows_removed,
            "still_held_by_the_source": bool(erasure.still_in), **erasure.removed})

    @dg.job(name="forget_shopper", executor_def=dg.in_process_executor, description=(
        "Erase one shopper (config: customer_id) from everything aiq-pipelines keeps: staging, the ledger's copies, "
        "the quarantine and the drop folder's mirror, so the pull API no longer serves them; the erasure is recorded. "
        "Erase in the POS first, and delete the persona in AIQ's UI (AIQ has no delete call)."))
    def forget_shopper_job() -> None:
        forget_shopper_data()

    return forget_shopper_job
