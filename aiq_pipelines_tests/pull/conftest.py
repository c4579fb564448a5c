"""The pull API servers of the pull tests: ``pull_server_factory`` starts any number, each stopped after the test
(the server handle lives in support/pull.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiq_pipelines_tests.support.pull import PullServer, start_pull_server


@pytest.fixture
def pull_server_factory(tmp_path: Path) -> Iterator[Callable[..., PullServer]]:
    servers: list[PullServer] = []

    def start(sync_url: str, **settings: Any) -> PullServer:
        server = start_pull_server(sync_url, tmp_path / f"pull-{len(servers)}.log", **settings)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
