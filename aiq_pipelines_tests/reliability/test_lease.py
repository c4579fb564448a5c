"""The account's push lease between real processes, on SQLite and PostgreSQL: one holder, waiters wait, the dead let go."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.sync.lease import LEASE_SECONDS, push_lease
from aiq_pipelines.sync.schema import ensure_schema, push_leases
from aiq_pipelines_tests.support.postgres import pg_database, pg_server  # noqa: F401 (fixtures)
from aiq_pipelines_tests.support.reliability import REPO

ACCOUNT = "http://127.0.0.1:8765|sandbox"
DEADLINE_SECONDS = 60
HOLDER = textwrap.dedent("""
    import logging, sys
    from aiq_pipelines.db.engines import engine_for
    from aiq_pipelines.sync.lease import push_lease

    url, account, seconds = sys.argv[1:4]
    with push_lease(engine_for(url), account, "run-A", logging.getLogger("holder"), seconds=float(seconds)):
        print("held", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
""")


class Recorder(logging.Handler):
    """Keeps the messages a logger emits."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(params=["sqlite", "postgresql"])
def sync_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The sync database the lease lives in: a SQLite file, or a database on the PostgreSQL test server."""
    url = f"sqlite:///{tmp_path / 'sync.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_database")(
        "lease"
    )
    ensure_schema(engine_for(url))  # as every run's SyncStore does before it pushes
    return url


@pytest.fixture
def log() -> logging.Logger:
    logger = logging.getLogger(f"lease-test-{time.monotonic_ns()}")
    logger.setLevel(logging.INFO)
    logger.addHandler(Recorder())
    return logger


def messages(log: logging.Logger) -> list[str]:
    return log.handlers[0].messages


def holder(sync_url: str, seconds: float = LEASE_SECONDS) -> subprocess.Popen[str]:
    """Another process holding the lease for run-A until a line arrives on its stdin."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, sync_url, ACCOUNT, str(seconds)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
    assert process.stdout.readline() == "held\n"
    return process


def release(process: subprocess.Popen[str]) -> None:
    process.stdin.write("done\n")
    process.stdin.flush()
    assert process.stdout.readline() == "released\n"
    process.wait()


def wait_for(what: str, condition) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {DEADLINE_SECONDS} s"
        time.sleep(0.02)


def test_a_pusher_waits_while_another_live_run_holds_the_lease_and_goes_once_it_is_released(sync_url, log):
    other = holder(sync_url)
    acquired = threading.Event()

    def push() -> None:
        with push_lease(engine_for(sync_url), ACCOUNT, "run-B", log):
            acquired.set()

    waiter = threading.Thread(target=push)
    waiter.start()
    wait_for("waiting", lambda: any("run run-A is pushing to it; waiting" in m for m in messages(log)))
    assert not acquired.is_set(), "two pushers at once"
    release(other)
    wait_for("taking the released lease", acquired.is_set)
    waiter.join()


def test_a_killed_holders_lease_is_taken_over_at_once_not_when_it_expires(sync_url, log):
    other = holder(sync_url)
    os.killpg(other.pid, signal.SIGKILL)
    other.wait()

    started = time.monotonic()
    with push_lease(engine_for(sync_url), ACCOUNT, "run-B", log):
        waited = time.monotonic() - started

    assert waited < LEASE_SECONDS / 2, "the dead holder's process was recognised as gone"
    assert any("took over the push lease of run run-A" in m for m in messages(log))


def test_a_lease_of_a_holder_on_another_host_is_taken_once_it_expires(sync_url, log):
    engine = engine_for(sync_url)
    with push_lease(engine, ACCOUNT, "run-setup", log):
        pass  # creates the table
    expires = time.time() + 1
    with engine.begin() as conn:
        conn.execute(push_leases.insert().values(account=ACCOUNT, holder="run-A", host="another-host", pid=1,
                                                 expires_at=expires))

    with push_lease(engine, ACCOUNT, "run-B", log):
        assert time.time() >= expires, "a live lease of another host is respected until it expires"
    assert any("took over the push lease of run run-A" in m for m in messages(log))


def test_a_holder_keeps_its_lease_past_its_length_by_renewing_it(sync_url, log):
    short = 1.0
    other = holder(sync_url, short)
    acquired = threading.Event()

    def push() -> None:
        with push_lease(engine_for(sync_url), ACCOUNT, "run-B", log, seconds=short):
            acquired.set()

    waiter = threading.Thread(target=push)
    waiter.start()
    held_until = time.monotonic() + 3 * short
    while time.monotonic() < held_until:
        assert not acquired.is_set(), "the live holder's lease expired under it"
        time.sleep(0.02)
    release(other)
    wait_for("taking the released lease", acquired.is_set)
    waiter.join()
