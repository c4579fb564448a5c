"""The whole path through the real webserver and daemon: a backfill launched over GraphQL, then the change sensor."""

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from aiq_pipelines_tests.support.dagster_ui import Dagster, wait_for
from aiq_pipelines_tests.support.sandbox import free_port

REPO = Path(__file__).resolve().parents[1]
DENVER = zoneinfo.ZoneInfo("America/Denver")
SENSOR_INTERVAL_SECONDS = 5
LOAD_TIMEOUT_SECONDS = 90
RUN_TIMEOUT_SECONDS = 90
DEMO_END = dt.date(2026, 3, 10)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@contextlib.contextmanager
def dagster_dev(tmp_path: Path, env: dict[str, str]) -> Iterator[Dagster]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / ".dagster" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    log_path = tmp_path / "dagster-dev.log"
    with log_path.open("ab") as log:
        # Its own folder as cwd: `dagster dev` loads a .env from where it starts, and the checkout's must not leak in.
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-m", "aiq_pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=tmp_path, env={**env, "DAGSTER_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Dagster(port, process, log_path)
    finally:
        # Started from a script, dagster dev ignores SIGTERM and SIGINT: the whole group is killed.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def sensor_runs(dagster: Dagster) -> list[dict]:
    return dagster.runs(**{"dagster/sensor_name": "pos_change_sensor"})


def local_today() -> dt.date:
    return dt.datetime.now(DENVER).date()


def local_window(first: dt.date, last: dt.date) -> tuple[str, str]:
    """The UTC bounds of local days [first, last] as the POS stores timestamps."""
    start = dt.datetime.combine(first, dt.time(), DENVER).astimezone(dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), DENVER).astimezone(dt.UTC)
    return f"{start:%Y-%m-%d %H:%M:%S}", f"{end:%Y-%m-%d %H:%M:%S}"


def deliverable_sales(pos_url: str, sync_url: str, first: dt.date, last: dt.date) -> set[str]:
    """Non-void POS sales of local days [first, last] that the pipeline did not quarantine, by plain SQL."""
    start, end = local_window(first, last)
    with sa.create_engine(pos_url).connect() as conn:
        sales = set(conn.scalars(sa.text(
            "SELECT transaction_id FROM transactions WHERE transaction_at >= :s AND transaction_at < :e AND NOT is_void"),
            {"s": start, "e": end}))
    with sa.create_engine(sync_url).connect() as conn:
        quarantined = set(conn.scalars(sa.text("SELECT record_key FROM quarantine WHERE entity = 'transaction'")))
    return sales - quarantined


def add_sale_today(pos_url: str) -> tuple[str, str]:
    """A new customer and their one-line sale, happening now; returns (transaction_id, customer_id)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    stamp = f"{now:%Y-%m-%d %H:%M:%S}"
    with sa.create_engine(pos_url).begin() as conn:
        location = conn.scalar(sa.text("SELECT location_id FROM locations ORDER BY location_id"))
        product, price = conn.execute(sa.text(
            "SELECT product_id, unit_price FROM products WHERE NOT is_archived ORDER BY product_id")).first()
        conn.execute(sa.text(
            "INSERT INTO customers (customer_id, first_name, last_name, phone, email, is_loyalty_member, created_at, "
            "last_modified_at) VALUES ('E2E-C', 'Grace', 'Hopper', '(720) 555-0199', 'grace@example.com', 0, :t, :t)"),
            {"t": stamp})
        conn.execute(sa.text(
            "INSERT INTO transactions (transaction_id, location_id, customer_id, transaction_at, subtotal, "
            "discount_total, tax_total, total, last_modified_at) VALUES ('E2E-SALE', :l, 'E2E-C', :t, :p, 0, 0, :p, :t)"),
            {"l": location, "t": stamp, "p": price})
        conn.execute(sa.text(
            "INSERT INTO transaction_items (transaction_id, line_number, product_id, quantity, unit_price, discount) "
            "VALUES ('E2E-SALE', 1, :product, 1, :p, 0)"), {"product": product, "p": price})
    return "E2E-SALE", "E2E-C"


@pytest.fixture
def demo_pos(tmp_path: Path) -> str:
    """A small demo dispensary, March 6-10, 2026 (across the spring DST change)."""
    url = f"sqlite:///{tmp_path / 'pos.db'}"
    subprocess.run(
        [sys.executable, "-m", "aiq_pipelines.cli", "demo-data", "--database-url", url, "--days", "5", "--stores", "1",
         "--min-sales", "8", "--max-sales", "12", "--end-date", DEMO_END.isoformat()],
        check=True, capture_output=True, timeout=120,
    )
    return url


def test_a_backfill_through_graphql_then_a_new_sale_through_the_sensor(tmp_path, demo_pos, sandbox):
    pos_url, first_day = demo_pos, DEMO_END - dt.timedelta(days=4)
    sync_url = f"sqlite:///{tmp_path / 'sync.db'}"
    env = {
        **os.environ, "POS_DATABASE_URL": pos_url, "SYNC_DATABASE_URL": sync_url, "POS_START_DATE": first_day.isoformat(),
        "AIQ_BASE_URL": sandbox.base_url, "AIQ_API_KEY": sandbox.api_key, "AIQ_UID": sandbox.uid,
        "AIQ_REQUESTS_PER_SECOND": "1000", "AIQ_REQUESTS_PER_MINUTE": "100000", "AIQ_REQUESTS_PER_HOUR": "1000000",
        "SENSOR_INTERVAL_SECONDS": str(SENSOR_INTERVAL_SECONDS),
    }
    days = [first_day + dt.timedelta(days=n) for n in (1, 2, 3)]  # the demo's middle three days, March 7-9

    with dagster_dev(tmp_path, env) as dagster:
        location = wait_for("loading the code location", dagster.loaded_location, LOAD_TIMEOUT_SECONDS)

        launched = dagster.query(
            """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
                __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
            # As the docs say: Jobs > daily_sync > Partitions > Launch backfill, so its run is daily_sync's.
            params={"selector": {"partitionSetName": "daily_sync_partition_set", "repositorySelector": {
                        "repositoryName": "__repository__", "repositoryLocationName": location}},
                    "partitionNames": [day.isoformat() for day in days]},
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched

        def backfill_status() -> str | None:
            backfill = dagster.query(
                """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
                    ... on PartitionBackfill { status } } }""", id=launched["backfillId"],
            )["partitionBackfillOrError"]
            return None if backfill["status"] in ("REQUESTED", "CANCELING", "FAILING") else backfill["status"]

        status = wait_for("the backfill finishing", backfill_status, RUN_TIMEOUT_SECONDS)
        assert status == "COMPLETED_SUCCESS", f"backfill ended {status}:\n{dagster.log_tail()}"
        [backfill_run] = dagster.runs(**{"dagster/backfill": launched["backfillId"]})
        assert backfill_run["status"] == "SUCCESS", "a range of days is one run"
        assert backfill_run["jobName"] == "daily_sync", "the run shows under the job that says what it does"

        received = {sale["pos_id"] for sale in sandbox.state()["sales"]}
        expected = deliverable_sales(pos_url, sync_url, days[0], days[-1])
        assert received == expected and len(expected) >= 20, "exactly the three days' valid sales, nothing around them"

        started = dagster.query(
            """mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
                __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }""",
            selector={"repositoryLocationName": location, "repositoryName": "__repository__",
                      "sensorName": "pos_change_sensor"},
        )["startSensor"]
        assert started == {"__typename": "Sensor", "sensorState": {"status": "RUNNING"}}, started

        # The first tick syncs today and sets the watermark; the sale added after it is a change for a later tick.
        today = local_today().isoformat()
        [first_run] = wait_for("the sensor's first tick", lambda: sensor_runs(dagster), RUN_TIMEOUT_SECONDS)
        sale_id, customer_id = add_sale_today(pos_url)
        added_at = time.time()

        second_run = wait_for(
            "the sensor asking for today again",
            lambda: next((run for run in sensor_runs(dagster) if run["runId"] != first_run["runId"]), None),
            RUN_TIMEOUT_SECONDS,
        )
        # Requested within two sensor intervals of the sale, give or take the daemon's own loop.
        assert second_run["creationTime"] - added_at < 2 * SENSOR_INTERVAL_SECONDS + 5
        assert {"key": "dagster/partition", "value": today} in first_run["tags"]
        assert {"key": "dagster/partition", "value": today} in second_run["tags"]
        run_keys = [next(tag["value"] for tag in run["tags"] if tag["key"] == "dagster/run_key")
                    for run in (first_run, second_run)]
        assert run_keys[0] != run_keys[1] and all(key.startswith(f"{today}@") for key in run_keys), run_keys

        wait_for("the new sale reaching the sandbox",
                 lambda: sale_id in {sale["pos_id"] for sale in sandbox.state()["sales"]}, RUN_TIMEOUT_SECONDS)
        state = sandbox.state()
        sale = next(sale for sale in state["sales"] if sale["pos_id"] == sale_id)
        assert sale["pos_user"] == customer_id
        assert customer_id in {member["pos_user"] for member in state["members"]}
        assert {s["pos_id"] for s in state["sales"]} - expected == {sale_id}, "today's runs sent only the new sale"

        def finished_sensor_runs() -> dict[str, dict] | None:
            found = sensor_runs(dagster)
            return {run["runId"]: run for run in found} if all(run["endTime"] for run in found) else None

        runs = wait_for("both runs of today ending", finished_sensor_runs, RUN_TIMEOUT_SECONDS)
        first, second = runs[first_run["runId"]], runs[second_run["runId"]]
        assert first["status"] == second["status"] == "SUCCESS"
        assert first["jobName"] == second["jobName"] == "daily_sync"
        assert second["startTime"] >= first["endTime"], "runs of the same partition queue, never overlap"
