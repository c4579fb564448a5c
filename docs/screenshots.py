"""The README's and docs' pictures of the Dagster UI, made again: ``.venv/bin/python docs/screenshots.py``.

Starts ``make dev`` on free ports with a small demo POS (ten days, two stores, two sales of a store the POS does not
know, so the quarantine holds something) in a folder of its own, first runs ``daily_sync_dry_run`` on the first day
(what a sync would send), then backfills every finished day through ``daily_sync``'s partitions, and has headless
Chromium (Debian's ``chromium``, driven by Playwright's Python package: ``pip install playwright``, no browser download)
take one PNG per page into ``docs/images/``. Needs a browser, so it is not part of ``make test`` (see
docs/development.md).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
GROUPS = ("pos", "aiq", "ops")


def free_ports(count: int) -> list[int]:
    """``count`` different free ports (each probe held open until all are chosen, so none is handed out twice)."""
    import socket

    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def wait(what: str, condition, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if result := condition():
                return result
        except (httpx.TransportError, KeyError, TypeError):
            pass
        time.sleep(1)
    raise RuntimeError(f"{what} did not happen within {seconds} s")


class Ui:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(timeout=60)

    def query(self, query: str, **variables) -> dict:
        body = self.http.post(self.base + "/graphql", json={"query": query, "variables": variables}).json()
        if "errors" in body:
            raise RuntimeError(body["errors"])
        return body["data"]

    def loaded(self) -> bool:
        entries = self.query("{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }")
        return entries["workspaceOrError"]["locationEntries"][0]["loadStatus"] == "LOADED"

    def statuses(self, **tags: str) -> list[str]:
        runs = self.query("query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs { results { status } } } }",
                          f={"tags": [{"key": k, "value": v} for k, v in tags.items()]})["runsOrError"]["results"]
        return [run["status"] for run in runs]

    def finished(self, **tags: str) -> bool:
        statuses = self.statuses(**tags)
        return bool(statuses) and all(status in ("SUCCESS", "FAILURE", "CANCELED") for status in statuses)


def demo(data: Path) -> None:
    env = {**os.environ, "AIQ_PIPELINES_DATA_DIR": str(data)}
    subprocess.run([sys.executable, "-m", "aiq_pipelines.cli", "demo-data", "--days", "10", "--stores", "2",
                    "--min-sales", "20", "--max-sales", "40"], env=env, check=True)
    yesterday = f"{dt.datetime.now(dt.UTC) - dt.timedelta(days=1):%Y-%m-%d} 18:00:00"
    with sqlite3.connect(data / "pos.db") as conn:  # a store the POS does not know: quarantined, with the reason
        for n in (1, 2):
            conn.execute("INSERT INTO transactions (transaction_id, location_id, transaction_at, subtotal, "
                         "discount_total, tax_total, total, last_modified_at) "
                         "VALUES (?, 'STORE-GONE', ?, 10, 0, 0, 10, ?)",
                         (f"SHOT-{n}", yesterday, yesterday))


def expand_groups(page) -> None:
    """The lineage opens with its groups collapsed; the UI keeps which are open in the browser's local storage, so
    every group is opened there and the page loaded again, which also fits the graph to the window."""
    expanded = ",".join(f"global@global:{group}" for group in GROUPS)
    page.evaluate("value => localStorage.setItem('asset-graph-open-graph-nodes-global-__GLOBAL__', value)",
                  json.dumps({"expanded": expanded}))
    page.reload(wait_until="networkidle")


def daily_plots(page) -> None:
    """The plots over partitions, scrolled to the per-day figures (row count, sent, staged) of the backfilled days."""
    page.get_by_role("button", name="Plots").first.click()
    page.wait_for_load_state("networkidle")
    page.get_by_text("dagster/row_count", exact=True).first.evaluate("e => e.scrollIntoView({block: 'start'})")


def dry_run_report(page) -> None:
    """The dry run's log narrowed to its observations, the first opened: what a real push of the day would send."""
    log_filter = page.get_by_placeholder("Filter…")
    log_filter.fill("type:ASSET_OBSERVATION")
    log_filter.press("Enter")
    page.get_by_text("View full message").first.click()


PAGES = {  # file -> (path in the UI, what to do there before the picture, if anything)
    "asset-graph.png": ("/asset-groups", expand_groups),
    "partition-plots.png": ("/assets/aiq_sales", daily_plots),
    "quarantine-table.png": ("/assets/sync_quarantine", None),
    "dry-run.png": ("/runs/{dry_run}", dry_run_report),  # the dry run's own run: what a real run would send
}


def shoot(ui: Ui, dry_run: str) -> None:
    """One PNG per page, once the page has drawn; Dagster's welcome dialog is skipped first."""
    from playwright.sync_api import sync_playwright

    IMAGES.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        for name, (path, prepare) in PAGES.items():
            page.goto(ui.base + path.format(dry_run=dry_run), wait_until="networkidle")
            skip = page.get_by_role("button", name="Skip")
            if skip.count():
                skip.first.click()
            if prepare:
                prepare(page)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(1500)  # the graph's layout and the plots animate in after the data arrives
            page.screenshot(path=IMAGES / name)
            print(f"docs/images/{name}: {path.format(dry_run=dry_run)}")
        browser.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="screenshots-") as tmp:
        work = Path(tmp)
        home, data = work / "home", work / "data"
        home.mkdir()
        shutil.copy(ROOT / ".dagster" / "dagster.yaml", home / "dagster.yaml")
        demo(data)
        port, pull_port, sandbox_port = free_ports(3)
        env = {**os.environ, "DAGSTER_HOME": str(home), "DATA_DIR": str(data), "PORT": str(port),
               "PULL_PORT": str(pull_port), "AIQ_BASE_URL": f"http://127.0.0.1:{sandbox_port}"}
        with (work / "make-dev.log").open("wb") as log:
            make = subprocess.Popen(["make", "--no-print-directory", "dev"], cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        ui = Ui(port)
        try:
            wait("the code location loading", ui.loaded, 180)
            location = {"repositoryName": "__repository__", "repositoryLocationName": "aiq_pipelines"}
            keys = ui.query("query($s: PipelineSelector!) { partitionSetOrError(repositorySelector: "
                            "{repositoryName: \"__repository__\", repositoryLocationName: \"aiq_pipelines\"}, "
                            "partitionSetName: \"daily_sync_partition_set\") { ... on PartitionSet { partitionsOrError "
                            "{ ... on Partitions { results { name } } } } } pipelineOrError(params: $s) "
                            "{ __typename } }", s={**location, "pipelineName": "daily_sync"})
            days = [p["name"] for p in keys["partitionSetOrError"]["partitionsOrError"]["results"]][:-1]
            launched = ui.query("mutation($p: ExecutionParams!) { launchRun(executionParams: $p) "
                                "{ ... on LaunchRunSuccess { run { runId } } } }", p={
                "selector": {**location, "jobName": "daily_sync_dry_run"},  # its config and tag come with the job
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": days[0]},
                                               {"key": "screenshot", "value": "dry-run"}]},
            })
            dry_run = launched["launchRun"]["run"]["runId"]
            wait("the dry run", lambda: ui.finished(screenshot="dry-run"), 300)
            if ui.statuses(screenshot="dry-run") != ["SUCCESS"]:  # a picture of a failure would document nothing
                raise RuntimeError(f"the dry run {dry_run} did not succeed: see its log in the UI")
            backfill = ui.query("mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) "
                                "{ ... on LaunchBackfillSuccess { backfillId } } }",
                                p={"selector": {"partitionSetName": "daily_sync_partition_set",
                                                "repositorySelector": location}, "partitionNames": days})
            backfill_id = backfill["launchPartitionBackfill"]["backfillId"]
            wait("the backfill", lambda: ui.finished(**{"dagster/backfill": backfill_id}), 900)
            wait("the quarantine's refresh", lambda: ui.finished(**{"dagster/sensor_name": "quarantine_change_sensor"}),
                 300)
            shoot(ui, dry_run)
        finally:
            os.killpg(make.pid, signal.SIGINT)
            make.wait(timeout=60)


if __name__ == "__main__":
    main()
