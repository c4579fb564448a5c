"""One daily sync in a process of its own: ``python -m aiq_pipelines_tests.support.sync_process '<job json>'``.

The crash tests SIGKILL it; the concurrency tests run two at once. The job names the Dagster home, the POS and sync
databases, the sandbox's URL and account, the local days and any AIQ resource overrides; the API key comes from
AIQ_API_KEY, as in production. With ``go``, the process writes ``<home>/ready`` once it is loaded and starts its run
when the file ``go`` names exists, so that several processes start their runs together. When the run ends, it prints
one JSON line: the run's success and the push assets' numeric metadata.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import dagster as dg

from aiq_pipelines_tests.support.reliability import aiq_resource, run_sync
from aiq_pipelines_tests.support.runs import materializations
from aiq_pipelines_tests.support.runs import metadata as metadata_of


def main() -> None:
    job = json.loads(sys.argv[1])
    aiq = aiq_resource(job["base_url"], job["uid"], job["sync_url"], **job["aiq"])
    if job["go"]:
        (Path(job["home"]) / "ready").touch()
        deadline = time.monotonic() + 120
        while not Path(job["go"]).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    with dg.instance_for_test(temp_dir=job["home"]) as instance:
        result = run_sync(instance, job["pos_url"], job["sync_url"], aiq, job["first"], job["last"])
    metadata = {}
    for asset in ("aiq_personas", "aiq_sales"):
        figures = metadata_of(result, asset) if materializations(result, asset) else None
        metadata[asset] = figures and {k: v for k, v in figures.items() if isinstance(v, (int, float))}
    print(json.dumps({"success": result.success, "metadata": metadata}), flush=True)


if __name__ == "__main__":
    main()
