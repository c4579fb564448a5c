"""A running Dagster (webserver and daemon) spoken to over GraphQL, and polling with a deadline."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


def wait_for(what: str, condition: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll ``condition`` until it returns something truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout} s")


class Dagster:
    """``dagster dev`` (webserver and daemon) in its own process group, spoken to over GraphQL."""

    def __init__(self, port: int, process: subprocess.Popen[bytes], log_path: Path):
        self.url = f"http://127.0.0.1:{port}/graphql"
        self.process = process
        self.log_path = log_path
        self.http = httpx.Client(timeout=30)

    def query(self, query: str, **variables: Any) -> dict:
        response = self.http.post(self.url, json={"query": query, "variables": variables})
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def loaded_location(self) -> str | None:
        """The code location's name once it has loaded; None before (or if the webserver is not up yet)."""
        if self.process.poll() is not None:
            raise AssertionError(f"dagster dev exited with code {self.process.returncode}:\n{self.log_tail()}")
        with contextlib.suppress(httpx.TransportError, httpx.HTTPStatusError):
            data = self.query("""{ workspaceOrError { ... on Workspace {
                locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } }
            } } }""")
            [entry] = data["workspaceOrError"]["locationEntries"]
            error = entry["locationOrLoadError"]
            if error and error["__typename"] == "PythonError":
                raise AssertionError(f"the code location failed to load: {error['message']}")
            return entry["name"] if entry["loadStatus"] == "LOADED" else None
        return None

    def runs(self, **tags: str) -> list[dict]:
        data = self.query(
            """query($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs { results {
                runId jobName status creationTime startTime endTime tags { key value } } } } }""",
            filter={"tags": [{"key": key, "value": value} for key, value in tags.items()]},
        )
        return data["runsOrError"]["results"]

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
