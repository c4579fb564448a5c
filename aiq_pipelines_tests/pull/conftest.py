"""The pull tests' fixtures: ``pull_server_factory`` starts any number of servers, each stopped after the test (the
server handle lives in support/pull.py), and ``demo_day`` is a sync database staged from the demo POS."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiq_pipelines.pos.source import PosSource
from aiq_pipelines_tests.support.pull import DAY, PullServer, local_midnight, stage_days, start_pull_server


@pytest.fixture(scope="module")
def demo_day(demo_pos_url, tmp_path_factory) -> str:
    """A sync database holding the demo POS's sales of 2026-03-08..10 and every customer, as the extract stages them."""
    sync_url = f"sqlite:///{tmp_path_factory.mktemp('pull') / 'sync.db'}"
    store = stage_days(demo_pos_url, sync_url, DAY - dt.timedelta(days=1), DAY + dt.timedelta(days=1), "r1")
    store.stage_personas(PosSource(demo_pos_url), local_midnight(dt.date(2000, 1, 1)),
                         local_midnight(dt.date(2026, 11, 26)), run_id="r1")
    return sync_url


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
