"""The production layout end to end: code server, daemon and webserver as separate services on a PostgreSQL instance.

This is what the README's Production section tells operators to run: the shipped dagster.yaml, the three commands,
runs queued by the webserver and launched by the daemon through the code server.
"""

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from dagster_graphql import DagsterGraphQLClient

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.pos import demo
from aiq_pipelines_tests.support.runs import sales_by_id
from aiq_pipelines_tests.support.sandbox import GENEROUS_LIMITS, free_port

pytestmark = [
    pytest.mark.slow,
    # dagster-graphql's client still calls gql the 3.x way; nothing this test can change.
    pytest.mark.filterwarnings("ignore:Using variable_values and operation_name:DeprecationWarning"),
]

DAY = "2026-05-02"
LOAD_TIMEOUT_SECONDS = 90
RUN_TIMEOUT_SECONDS = 150
WORKSPACE_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename } } } } }"""


@contextlib.contextmanager
def service(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running Dagster process in its own process group, SIGKILLed with its children when the block ends."""
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        # Started from a script, Dagster's services ignore SIGTERM and SIGINT.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def wait_until_loaded(client: DagsterGraphQLClient, url: str, processes: list[subprocess.Popen[bytes]],
                      logs: list[Path]) -> None:
    """Wait until the webserver serves the code location; reload it if the code server was still starting."""
    deadline = time.monotonic() + LOAD_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        for process, log in zip(processes, logs, strict=True):
            assert process.poll() is None, f"{log.name} exited:\n{log.read_text()[-3000:]}"
        with contextlib.suppress(httpx.TransportError, KeyError, TypeError, ValueError):
            [entry] = httpx.post(f"{url}/graphql", json={"query": WORKSPACE_QUERY},
                                 timeout=5).json()["data"]["workspaceOrError"]["locationEntries"]
            loaded = entry["loadStatus"] == "LOADED"
            if loaded and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation":
                return
            if loaded:  # the webserver asked before the code server answered: ask again
                client.reload_repository_location(entry["name"])
        time.sleep(0.5)  # poll interval
    raise AssertionError(f"the code location did not load within {LOAD_TIMEOUT_SECONDS} s")


def test_the_services_run_queued_runs_of_a_day_one_after_the_other(tmp_path, dagster_home, pg_server, pg_database,
                                                                   sandbox):
    _home, dagster_env = dagster_home
    pos_url, sync_url = pg_database("pos", driver="postgresql"), pg_database("sync", driver="postgresql")
    demo.generate(pos_url, demo.DemoOptions(days=3, stores=1, min_sales=6, max_sales=10, end_date=dt.date(2026, 5, 3),
                                            products=20), now=dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
    env = {**os.environ, **dagster_env, "POS_DATABASE_URL": pos_url, "SYNC_DATABASE_URL": sync_url,
           "AIQ_BASE_URL": sandbox.base_url, "AIQ_API_KEY": sandbox.api_key, "AIQ_UID": sandbox.uid,
           "AIQ_REQUESTS_PER_SECOND": str(GENEROUS_LIMITS["per_second"]),
           "AIQ_REQUESTS_PER_MINUTE": str(GENEROUS_LIMITS["per_minute"]),
           "AIQ_REQUESTS_PER_HOUR": str(GENEROUS_LIMITS["per_hour"])}
    bin_dir = Path(sys.executable).parent
    grpc_port, web_port = str(free_port()), free_port()
    grpc = ["--grpc-host", "127.0.0.1", "--grpc-port", grpc_port]
    logs = [tmp_path / name for name in ("code-server.log", "daemon.log", "webserver.log")]

    with (
        service([str(bin_dir / "dagster"), "code-server", "start", "-m", "aiq_pipelines.definitions",
                 "-h", "127.0.0.1", "-p", grpc_port], env, logs[0]) as code_server,
        service([str(bin_dir / "dagster-daemon"), "run", *grpc], env, logs[1]) as daemon,
        service([str(bin_dir / "dagster-webserver"), *grpc, "-h", "127.0.0.1", "-p", str(web_port)], env,
                logs[2]) as webserver,
    ):
        client = DagsterGraphQLClient("127.0.0.1", port_number=web_port)
        wait_until_loaded(client, f"http://127.0.0.1:{web_port}", [code_server, daemon, webserver], logs)
        # The change sensor asking again while a run of the day still runs: the second must wait its turn.
        run_ids = [client.submit_job_execution("daily_sync", tags={"dagster/partition": DAY}) for _ in range(2)]
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while (statuses := [client.get_run_status(r).value for r in run_ids]) != ["SUCCESS", "SUCCESS"]:
            assert not {"FAILURE", "CANCELED"} & set(statuses), f"{statuses}; see {logs}"
            assert time.monotonic() < deadline, f"runs still {statuses} after {RUN_TIMEOUT_SECONDS} s"
            time.sleep(1)  # poll interval

    with engine_for(pos_url).connect() as conn:
        valid = conn.scalars(sa.text("SELECT transaction_id FROM transactions WHERE NOT is_void AND "
                                     "transaction_at >= '2026-05-02 06:00' AND transaction_at < '2026-05-03 06:00'")).all()
    assert len(valid) >= 6 and sorted(sales_by_id(sandbox)) == sorted(valid)
    with engine_for(pg_server.url(dagster_env["DAGSTER_PG_DB"])).connect() as conn:
        events = conn.execute(sa.text(
            "SELECT run_id, dagster_event_type, timestamp FROM event_logs WHERE dagster_event_type IN "
            "('PIPELINE_ENQUEUED', 'PIPELINE_STARTING', 'PIPELINE_SUCCESS') ORDER BY id")).all()
    at = {(run_id, kind): moment for run_id, kind, moment in events}
    first, second = sorted(run_ids, key=lambda r: at[(r, "PIPELINE_STARTING")])
    assert all((r, "PIPELINE_ENQUEUED") in at for r in run_ids), "both runs went through the daemon's queue"
    assert at[(second, "PIPELINE_STARTING")] >= at[(first, "PIPELINE_SUCCESS")], "runs of one day never overlap"
