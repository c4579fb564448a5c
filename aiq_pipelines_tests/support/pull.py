"""The pull API under test: a real server (``aiq-pipelines pull-api`` under uvicorn) on loopback, one process group
per server, and a sync database staged as the daily extract stages it."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from aiq_pipelines.pos.source import PosSource
from aiq_pipelines.sync.store import SyncStore
from aiq_pipelines_tests.support.days import DENVER
from aiq_pipelines_tests.support.sandbox import free_port

START_TIMEOUT_SECONDS = 30.0
KEY = "pull-test-key-7c1d"
OTHER_KEY = "pull-test-key-second"


@dataclass
class PullServer:
    base_url: str
    log_path: Path
    keys: tuple[str, ...] = (KEY, OTHER_KEY)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def get(self, path: str, *, key: str | None = KEY, headers: dict[str, str] | None = None,
            **params: Any) -> httpx.Response:
        """GET ``path`` with ``params`` (None values left out), authenticated with ``key`` as a Bearer token."""
        sent = dict(headers or {})
        if key is not None:
            sent.setdefault("authorization", f"Bearer {key}")
        return self.client.get(self.base_url + path, params={k: v for k, v in params.items() if v is not None},
                               headers=sent)

    def pages(self, path: str, **params: Any) -> tuple[list[list[dict]], dict]:
        """Every page of a pull, following next_cursor; the pages' data and the last page's envelope."""
        pages, body = [], self.get(path, **params).raise_for_status().json()
        pages.append(body["data"])
        while body["next_cursor"]:
            body = self.get(path, cursor=body["next_cursor"], limit=params.get("limit")).raise_for_status().json()
            pages.append(body["data"])
        return pages, body

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=START_TIMEOUT_SECONDS)
            self._process = None
        self.client.close()


def start_pull_server(sync_url: str, log_path: Path, **settings: Any) -> PullServer:
    """``aiq-pipelines pull-api`` on a free port over ``sync_url``; ``settings`` are PULL_API_* and other variables
    by their lower-case names (``settle_seconds=0``) or upper-case ones; a setting given as None is left unset."""
    port = free_port()
    env = {**os.environ, "SYNC_DATABASE_URL": sync_url, "PULL_API_KEYS": f"{KEY}, {OTHER_KEY}",
           "PULL_API_SETTLE_SECONDS": "0", "PYTHONUNBUFFERED": "1"}
    env.update({(k if k.isupper() else f"PULL_API_{k.upper()}"): str(v) for k, v in settings.items()})
    env = {k: v for k, v in env.items() if v != "None"}  # a setting given as None is left unset
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "aiq_pipelines.cli", "pull-api", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    server = PullServer(f"http://127.0.0.1:{port}", log_path, _process=process)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the pull API exited with code {process.returncode}:\n{server.log()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if server.client.get(server.base_url + "/openapi.json", timeout=1).status_code == 200:
                return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the pull API did not answer within {START_TIMEOUT_SECONDS} s:\n{server.log()[-2000:]}")
        time.sleep(0.05)


DAY = dt.date(2026, 3, 9)


def local_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=DENVER).astimezone(dt.UTC)


def z(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stage_days(pos_url: str, sync_url: str, first: dt.date, last: dt.date, run_id: str, *,
               look_up_stores: bool = False) -> SyncStore:
    """What the daily extract does for the days [first, last], and the inventory snapshot; ``look_up_stores`` as with
    several AIQ accounts (each staged shopper's stores looked up in the POS)."""
    store = SyncStore(sync_url, "America/Denver", look_up_stores=look_up_stores)
    source = PosSource(pos_url)
    start, end = local_midnight(first), local_midnight(last + dt.timedelta(days=1))
    store.stage_transactions(source, start, end, run_id=run_id)
    store.stage_personas(source, start, end, run_id=run_id)
    store.stage_inventory(source, run_id=run_id)
    return store


def everything_served(sync_url: str) -> str:
    """Every answer of the pull API over ``sync_url`` (the app in this process, one key): every page of transactions,
    customers and inventory, and the locations, as one text to search."""
    import asyncio

    from aiq_pipelines.pull.server import build_app
    from aiq_pipelines.settings import load_settings

    app = build_app(load_settings(sync_database_url=sync_url, pull_api_keys=KEY, pull_api_settle_seconds=0))

    async def pull() -> list[dict]:
        answers = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pull",
                                     headers={"authorization": f"Bearer {KEY}"}) as client:
            for path in ("/v1/transactions", "/v1/customers", "/v1/inventory"):
                answer = await client.get(path)
                if path == "/v1/inventory" and answer.status_code == 503:  # no inventory extract yet: nothing to serve
                    answers.append(answer.json())
                    continue
                body = answer.raise_for_status().json()
                answers.append(body)
                while body["next_cursor"]:
                    body = (await client.get(path, params={"cursor": body["next_cursor"]})).raise_for_status().json()
                    answers.append(body)
            answers.append((await client.get("/v1/locations")).raise_for_status().json())
        return answers

    return json.dumps(asyncio.run(pull()), ensure_ascii=False)


# Two accounts for the pull keys' tests: colorado holds the Denver store, arizona (the default) the Phoenix one.
ACCOUNT_KEYS = {"colorado": ("pull-colorado-key-1", "pull-colorado-key-2"), "arizona": ("pull-arizona-key-1",)}


def write_accounts_file(path: Path, **extra: dict[str, Any]) -> Path:
    """An AIQ_ACCOUNTS_FILE of the two accounts, each naming PULL_KEYS_<NAME> as its pull keys' variable."""
    import yaml

    accounts = [
        {"name": "colorado", "uid": "co", "api_key_env": "AIQ_KEY_CO", "locations": ["STORE-01"],
         "pull_api_keys_env": "PULL_KEYS_COLORADO", **extra.get("colorado", {})},
        {"name": "arizona", "uid": "az", "api_key_env": "AIQ_KEY_AZ", "locations": ["STORE-PHX"], "default": True,
         "pull_api_keys_env": "PULL_KEYS_ARIZONA", **extra.get("arizona", {})},
    ]
    path.write_text(yaml.safe_dump({"accounts": accounts}))
    return path


def account_settings(accounts_file: Path) -> dict[str, Any]:
    """The server's environment for the two accounts: the file, each account's keys, and no PULL_API_KEYS."""
    return {"AIQ_ACCOUNTS_FILE": accounts_file, "PULL_API_KEYS": None,
            **{f"PULL_KEYS_{name.upper()}": ",".join(keys) for name, keys in ACCOUNT_KEYS.items()}}
