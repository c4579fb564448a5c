"""Fixtures that run the AIQ sandbox as a real server on loopback, one OS process group per sandbox.

``run_sandbox`` starts ``python -m aiq_sandbox`` on a free port and yields a ``Sandbox`` handle;
the ``sandbox`` fixture is one with generous rate limits, ``sandbox_factory`` starts any number with any options.
Options are the CLI switches with underscores (``per_second=2``, ``fault_5xx=1.0``, ``reset=True``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

START_TIMEOUT_SECONDS = 30.0
GENEROUS_LIMITS = {"per_second": 1000, "per_minute": 100_000, "per_hour": 1_000_000}
HTTP = httpx.Client(timeout=30)
"""One loopback HTTP client for the whole test session: creating an httpx client costs ~50 ms."""


@dataclass
class Sandbox:
    """A running sandbox: where it listens, the account it serves, and its process."""

    base_url: str
    api_key: str = field(repr=False)
    uid: str
    db_path: Path
    log_path: Path
    options: dict[str, Any] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        """The auth header AIQ expects."""
        return {"x-apikey": self.api_key}

    def state(self) -> dict:
        """Everything the sandbox stores (GET /sandbox/state)."""
        return self._get("/sandbox/state")

    def requests(self, since_id: int = 0) -> list[dict]:
        """The request log after ``since_id``, in arrival order (GET /sandbox/requests)."""
        return self._get("/sandbox/requests", params={"since_id": since_id})

    def stop(self) -> None:
        """SIGKILL the sandbox's process group and wait for it; the state stays in ``db_path``."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=START_TIMEOUT_SECONDS)
        self._process = None

    def restart(self, **options: Any) -> Sandbox:
        """Stop, then start again on the same db and port; ``options`` update the previous ones.

        ``reset`` is not carried over from the earlier start: pass ``reset=True`` again to wipe the state.
        ``api_key`` and ``uid`` may be changed too.
        """
        self.stop()
        self.api_key = options.pop("api_key", self.api_key)
        self.uid = options.pop("uid", self.uid)
        self.options = {**{k: v for k, v in self.options.items() if k != "reset"}, **options}
        self._start()
        return self

    def _get(self, path: str, **kwargs: Any) -> Any:
        response = HTTP.get(self.base_url + path, **kwargs)
        response.raise_for_status()
        return response.json()

    def _start(self) -> None:
        port = self.base_url.rsplit(":", 1)[1]
        command = [
            sys.executable, "-m", "aiq_sandbox",
            "--host", "127.0.0.1", "--port", port, "--db", str(self.db_path), "--uid", self.uid,
        ]
        for name, value in self.options.items():
            switch = "--" + name.replace("_", "-")
            if value is True:
                command.append(switch)
            elif value is not False and value is not None:
                command += [switch, str(value)]
        # The key travels in the environment, not the command line, so it never shows in a process listing.
        env = {**os.environ, "AIQ_API_KEY": self.api_key, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the sandbox exited with code {self._process.returncode}:\n{self._log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if HTTP.get(self.base_url + "/sandbox/state", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the sandbox did not answer within {START_TIMEOUT_SECONDS} s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def run_sandbox(
    db_path: Path, *, api_key: str | None = None, uid: str = "test-uid", **options: Any
) -> Iterator[Sandbox]:
    """Run a sandbox on ``db_path`` until the block ends; ``api_key`` defaults to a fresh random test key."""
    sandbox = Sandbox(
        base_url=f"http://127.0.0.1:{free_port()}",
        api_key=api_key or "test-key-" + secrets.token_hex(8),
        uid=uid,
        db_path=db_path,
        log_path=db_path.with_name(db_path.stem + ".sandbox.log"),
        options=options,
    )
    try:
        sandbox._start()
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """A sandbox with default behaviour but limits high enough that tests never wait on them."""
    with run_sandbox(tmp_path / "sandbox.db", **GENEROUS_LIMITS) as running:
        yield running


@pytest.fixture
def sandbox_factory(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    """Start sandboxes with any options (each on its own db unless ``db_path`` is given); all stop at teardown."""
    with contextlib.ExitStack() as stack:
        started = 0

        def start(db_path: Path | None = None, **options: Any) -> Sandbox:
            nonlocal started
            started += 1
            return stack.enter_context(run_sandbox(db_path or tmp_path / f"sandbox-{started}.db", **options))

        yield start
