"""The drop folder (POS_DROP_DIR): the asset that loads its files into the mirror, its job, and the sensor that watches
it and then syncs exactly the business days the loaded files touch.

``pos_drop_sensor`` looks at the folder every SENSOR_INTERVAL_SECONDS. A file is taken in once it is stable (the same
size and modification time on two looks in a row, so a file still being written waits) and its content (SHA-256)
differs from what was last loaded under its name: the sensor asks ``drop_intake`` to load exactly those files. Once
loads are recorded in the mirror, the next tick asks ``daily_sync`` for each business day their rows touch, and
``inventory_sync`` when products or stock changed. Its cursor holds the last look at each file and the last load it
turned into syncs.
"""

import dataclasses
import hashlib
import json
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from aiq_pipelines.db.engines import read_only_engine_for
from aiq_pipelines.defs.automation import daily_sync, inventory_sync
from aiq_pipelines.defs.keys import CHECK_FILES_READABLE, DROP_FILES_TAG, OWNERS, POS_DROP_FILES, POS_TAGS
from aiq_pipelines.defs.partitions import SENSOR_STATUS, daily_partitions, settings
from aiq_pipelines.defs.resources import DropFolder, SyncDatabase
from aiq_pipelines.pos.dropfiles import sha256
from aiq_pipelines.pos.mirror import LoadResult, drop_loads, loads_after
from aiq_pipelines.sync.intake import take_in

INVENTORY_KINDS = {"products", "inventory", "locations"}
_FILES_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("file", "string"), dg.TableColumn("kind", "string"), dg.TableColumn("status", "string"),
    dg.TableColumn("rows", "int"), dg.TableColumn("changed", "int"), dg.TableColumn("rejected", "int"),
    dg.TableColumn("blank", "int"),
    dg.TableColumn("days", "string"),
])


class DropIntakeConfig(dg.Config):
    files: list[str] = Field(
        default_factory=list,
        description="Names of the drop files to take in; empty: every file in the folder (unchanged ones are skipped).",
    )


def _status(result: LoadResult) -> str:
    return "failed" if result.error else "unchanged" if result.unchanged else "loaded"


@dg.asset(
    key=POS_DROP_FILES,
    group_name="pos",
    kinds={"csv", "python"},
    owners=OWNERS,
    tags=POS_TAGS,
    check_specs=[dg.AssetCheckSpec(
        CHECK_FILES_READABLE, asset=POS_DROP_FILES,
        description="Every drop file taken in could be read: none lacks a required column or is not CSV.",
    )],
)
def pos_drop_files(
    context: dg.AssetExecutionContext, config: DropIntakeConfig, drop: DropFolder, sync: SyncDatabase
) -> dg.MaterializeResult:
    """The drop folder's CSV exports (POS_DROP_DIR) loaded into the mirror the extract assets read.

    Each new or changed file is loaded in one transaction: a row replaces the mirror's row with the same key (a
    corrected re-export), a line that does not parse is quarantined (stage intake, keyed file:line) and the rest of
    the file is loaded, and a file without a required column loads nothing and fails the files_readable check. The
    files are never moved or changed.
    """
    files = drop.files()
    if config.files:
        wanted = set(config.files)
        missing = sorted(wanted - {f.name for f in files})
        if missing:
            context.log.warning(f"not in the drop folder any more: {', '.join(missing)}")
        files = [f for f in files if f.name in wanted]
    results = take_in(drop.mirror(), sync.store().engine, files, context.run.run_id, drop.column_map())
    for result in results:
        if not result.unchanged:
            context.log.info(f"{result.name}: {_status(result)}, {result.rows:,} rows ({result.changed:,} changed), "
                             f"{result.rejected:,} rejected, {result.blank:,} blank lines skipped"
                             + (f", days {', '.join(result.days)}" if result.days else ""))
    failed = [r for r in results if r.error]
    table = [dg.TableRecord({"file": r.name, "kind": r.kind, "status": _status(r), "rows": r.rows,
                             "changed": r.changed, "rejected": r.rejected, "blank": r.blank,
                             "days": ", ".join(r.days)})
             for r in results]
    return dg.MaterializeResult(
        metadata={
            "files": dg.MetadataValue.table(table, schema=_FILES_SCHEMA),
            "files_loaded": sum(not r.error and not r.unchanged for r in results),
            "files_unchanged": sum(r.unchanged for r in results),
            "files_failed": len(failed),
            "rows_loaded": sum(r.rows for r in results),
            "rows_changed": sum(r.changed for r in results),
            "rows_rejected": sum(r.rejected for r in results),
            "lines_blank": sum(r.blank for r in results),
        },
        check_results=[dg.AssetCheckResult(
            check_name=CHECK_FILES_READABLE, passed=not failed, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"failed": len(failed)},
            description="; ".join(r.error for r in failed if r.error) or None,
        )],
    )


drop_intake = dg.define_asset_job(
    "drop_intake", selection=[pos_drop_files], executor_def=dg.in_process_executor,
    description="Load the drop folder's new and changed CSV files into the mirror the extract reads.",
)


@dataclasses.dataclass
class DropCursor:
    """The last look at each file (size, modification time), the contents already asked for, the last load synced."""

    looks: dict[str, list[Any]] = dataclasses.field(default_factory=dict)  # name -> [size, mtime_ns, SHA-256?]
    asked: dict[str, str] = dataclasses.field(default_factory=dict)  # file name -> SHA-256 handed to drop_intake
    synced_through: int = 0

    @classmethod
    def from_cursor(cls, cursor: str | None) -> "DropCursor":
        if not cursor:
            return cls()
        try:
            data = json.loads(cursor)
            return cls({k: list(v) for k, v in data["looks"].items()}, dict(data["asked"]), int(data["synced_through"]))
        except (TypeError, ValueError, KeyError, AttributeError):
            raise ValueError("pos_drop_sensor: its cursor is not one it wrote; clear it on the sensor's page in the UI "
                             "(Clear cursor): the sensor then starts afresh, and files already loaded start nothing") from None

    def to_cursor(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _loaded(url: str) -> dict[str, tuple[int, int, str]]:
    """Each file's fingerprint as last loaded: name -> (size, modification time, SHA-256)."""
    engine = read_only_engine_for(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("drop_loads"):
                return {}
            rows = conn.execute(sa.select(drop_loads.c.name, drop_loads.c.size, drop_loads.c.mtime_ns,
                                          drop_loads.c.sha256).order_by(drop_loads.c.id))
            return {name: (size, mtime, digest) for name, size, mtime, digest in rows}
    except sa.exc.OperationalError:
        return {}  # no mirror yet: nothing was loaded


def _syncs(url: str, cursor: DropCursor, first: str, today: str) -> list[dg.RunRequest]:
    try:
        loads = loads_after(read_only_engine_for(url), cursor.synced_through)
    except sa.exc.OperationalError:
        return []  # no mirror yet: nothing was loaded
    if not loads:
        return []
    cursor.synced_through = loads[-1][0]
    files_of_day: dict[str, set[str]] = {}
    for _, name, _, days, _ in loads:
        for day in days:
            files_of_day.setdefault(day, set()).add(name)
    requests = [
        dg.RunRequest(job_name=daily_sync.name, partition_key=day, run_key=f"{day}@drop:{cursor.synced_through}",
                      tags={DROP_FILES_TAG: ", ".join(sorted(names))})
        for day, names in sorted(files_of_day.items()) if first <= day <= today
    ]
    # Only a load that changed products, stock or stores asks for inventory_sync: a re-export of the same rows does not.
    stock = sorted(name for _, name, kind, _, changed in loads if kind in INVENTORY_KINDS and changed)
    if stock:
        requests.append(dg.RunRequest(job_name=inventory_sync.name, run_key=f"inventory@drop:{cursor.synced_through}",
                                      tags={DROP_FILES_TAG: ", ".join(stock)}))
    return requests


@dg.sensor(
    name="pos_drop_sensor",
    jobs=[drop_intake, daily_sync, inventory_sync],
    minimum_interval_seconds=settings.sensor_interval_seconds,
    default_status=SENSOR_STATUS,
    description="Loads each new or changed drop file once it is no longer being written (drop_intake), then runs "
    "daily_sync for each business day its rows touch, and inventory_sync when products or stock changed.",
)
def pos_drop_sensor(context: dg.SensorEvaluationContext, drop: DropFolder) -> dg.SensorResult:
    """Takes in each new or changed drop file once it is no longer being written, then syncs the days it touches.

    A file is stable when two looks in a row find the same size and modification time; one whose content is what was
    last loaded under its name starts nothing. Days before POS_START_DATE or after today are not synced. The first
    tick starts after the loads already made (by hand, before the sensor was on): their days are a backfill.
    """
    cursor = DropCursor.from_cursor(context.cursor)
    first, today = daily_partitions.get_first_partition_key(), daily_partitions.get_last_partition_key() or ""
    requests = _syncs(drop.mirror_url, cursor, first, today)
    if context.cursor is None:
        # A first tick (or a cleared cursor) starts after the loads already made, as the change sensor starts from
        # now: re-syncing every day ever loaded is a backfill, an operator's decision.
        requests = []
    loaded = _loaded(drop.mirror_url)
    looks: dict[str, list[Any]] = {}
    new: dict[str, str] = {}
    for file in drop.files():
        looks[file.name] = list(file.look)
        previous, last = cursor.looks.get(file.name), loaded.get(file.name)
        if previous is None or previous[:2] != list(file.look) or (last is not None and last[:2] == file.look):
            continue  # first seen or still being written, or loaded as it is
        # The content's hash is kept with the look, so a file touched but unchanged is read once, not every tick.
        digest = previous[2] if len(previous) > 2 else sha256(file.path)
        looks[file.name].append(digest)
        if (last is None or last[2] != digest) and cursor.asked.get(file.name) != digest:
            new[file.name] = digest
    if new:
        key = hashlib.sha256(json.dumps(new, sort_keys=True).encode()).hexdigest()[:16]
        requests.insert(0, dg.RunRequest(
            job_name=drop_intake.name, run_key=f"drop:{key}", tags={DROP_FILES_TAG: ", ".join(sorted(new))},
            run_config={"ops": {"pos_drop_files": {"config": {"files": sorted(new)}}}},
        ))
        cursor.asked.update(new)
    cursor.looks = looks
    cursor.asked = {name: digest for name, digest in cursor.asked.items() if name in looks}
    skip = None if requests else f"no new or changed drop file that is complete ({len(looks)} files in the folder)"
    return dg.SensorResult(run_requests=requests, cursor=cursor.to_cursor(), skip_reason=skip)


def drop_definitions() -> dict[str, Any]:
    """What the drop folder adds to the code location."""
    return {"assets": [pos_drop_files], "jobs": [drop_intake], "sensors": [pos_drop_sensor]}
