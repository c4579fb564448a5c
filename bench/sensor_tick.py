"""Change-sensor ticks on a POS: ``python -m bench.sensor_tick POS_URL TICKS`` (POS_START_DATE in the environment).

Each tick follows a touch of a few sales (``last_modified_at`` set to now, as a late edit does) and is timed alone;
prints one JSON line with every tick's seconds and how many runs each asked for.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
import time

import dagster as dg
import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.defs.automation import pos_change_sensor
from aiq_pipelines.defs.resources import PosDatabase
from aiq_pipelines.settings import load_settings

TOUCHED_PER_TICK = 3


def main(pos_url: str, ticks: int) -> None:
    resources = {"pos": PosDatabase.from_settings(load_settings(), url=pos_url)}
    engine = engine_for(pos_url)
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(sa.text("SELECT transaction_id FROM transactions ORDER BY random() LIMIT 100"))]
    rng = random.Random(1)
    with dg.build_sensor_context(resources=resources) as context:
        cursor = pos_change_sensor(context).cursor
    seconds, runs = [], []
    for _ in range(ticks):
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE transactions SET last_modified_at = :now WHERE transaction_id = :id"),
                [{"now": f"{now:%Y-%m-%d %H:%M:%S.%f}", "id": tx} for tx in rng.sample(ids, TOUCHED_PER_TICK)],
            )
        with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
            started = time.perf_counter()
            result = pos_change_sensor(context)
            seconds.append(time.perf_counter() - started)
        if not isinstance(result, dg.SensorResult) or not result.run_requests:
            raise SystemExit(f"the sensor asked for no run after {TOUCHED_PER_TICK} sales were touched: {result}")
        runs.append(len(result.run_requests))
        cursor = result.cursor
    print(json.dumps({"tick_seconds": seconds, "runs_requested": runs}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
