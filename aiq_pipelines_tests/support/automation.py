"""The change sensor's ticks, evaluated as the daemon evaluates them, and the clock they compare against."""

import dataclasses
import datetime as dt
from pathlib import Path

import dagster as dg

from aiq_pipelines.defs.automation import Watermark, pos_change_sensor
from aiq_pipelines.defs.resources import PosDatabase
from aiq_pipelines.settings import load_settings


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


@dataclasses.dataclass
class Tick:
    requests: dict[str, str]  # partition key -> run key
    cursor: str | None
    skip: str | None

    @property
    def watermark(self) -> Watermark:
        return Watermark.from_cursor(self.cursor)


def tick(pos_url: str, cursor: str | None = None, queries_file: Path | None = None) -> Tick:
    """One sensor evaluation on a fresh instance, as after a restart of the daemon."""
    pos = PosDatabase.from_settings(load_settings(), url=pos_url, queries_file=str(queries_file) if queries_file else None)
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"pos": pos})
        result = pos_change_sensor(context)
    if isinstance(result, dg.SkipReason):
        return Tick({}, cursor, result.skip_message)
    requests = {request.partition_key: request.run_key for request in result.run_requests or []}
    assert len(requests) == len(result.run_requests or []), "one request per partition"
    return Tick(requests, result.cursor, result.skip_reason.skip_message if result.skip_reason else None)
