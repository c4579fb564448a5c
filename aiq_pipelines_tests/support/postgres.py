"""A real PostgreSQL server for the test session, and fresh databases per test.

``pg_server`` runs ``initdb`` and ``pg_ctl start`` in a temporary folder: TCP on 127.0.0.1 at a free port, the unix
socket in the same folder. It stops the server when the session ends. PostgreSQL refuses to run as root, so a
session running as root runs the server as the ``postgres`` system user (created when absent). Where no server
binaries exist the PostgreSQL tests skip and say why; under CI (``CI=true``, as ``.ci/run`` runs) that is an error
instead, because CI must run them. ``pg_database`` creates databases (CREATE DATABASE) for one test and drops them
after it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from aiq_pipelines_tests.support.sandbox import free_port

SERVER_USER = "postgres"
"""The system user that runs the server when the tests run as root (the Debian package's user)."""
SUPERUSER = "postgres"
"""The database role the tests connect as (trust authentication: no password is checked)."""
START_TIMEOUT_SECONDS = 60
# Durability is worthless for a throwaway test server and costs seconds per test on a slow disk.
TEST_SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "300",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def find_server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: from PATH, else the newest ``/usr/lib/postgresql/*/bin``."""
    on_path = shutil.which("initdb")
    if on_path:
        folder = Path(on_path).resolve().parent
        if (folder / "pg_ctl").exists():
            return folder
    installed = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if (p.parent / "pg_ctl").exists()]
    installed.sort(key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0)
    return installed[-1] if installed else None


def _server_account() -> pwd.struct_passwd | None:
    """The account to run the server as: None when not root, else ``postgres`` (created if it does not exist)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True, capture_output=True,
        )
        return pwd.getpwnam(SERVER_USER)


@dataclass
class PostgresServer:
    """A running test server: where it listens and how to reach it."""

    bin_dir: Path
    root: Path
    port: int
    account: pwd.struct_passwd | None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def version(self) -> str:
        return (self.data_dir / "PG_VERSION").read_text().strip()

    def url(self, database: str = "postgres", *, driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URL of ``database`` on this server (``driver="postgresql"`` gives the plain libpq form)."""
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        """A psycopg connection in autocommit mode, for administration."""
        return psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database, autocommit=True)

    def create_database(self, prefix: str = "test") -> str:
        """Create an empty database named after ``prefix``; returns its name."""
        name = f"{prefix}_{secrets.token_hex(5)}"
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending any connection still open to it (a test's pooled engines hold some)."""
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _run(self, *command: str | Path) -> subprocess.CompletedProcess[str]:
        as_user = {} if self.account is None else {"user": self.account.pw_uid, "group": self.account.pw_gid,
                                                   "extra_groups": []}
        # PG* variables of the developer's shell (PGDATA, PGPORT...) must not redirect the test server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return subprocess.run([str(part) for part in command], cwd=self.root, env=env, capture_output=True, text=True,
                              timeout=START_TIMEOUT_SECONDS, **as_user)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        return ""

    def init(self) -> None:
        done = self._run(self.bin_dir / "initdb", "--pgdata", self.data_dir, "--username", SUPERUSER,
                         "--auth", "trust", "--encoding", "UTF8", "--locale", "C", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        settings = "".join(f"{name} = {value}\n" for name, value in TEST_SERVER_SETTINGS.items())
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# aiq-pipelines test server\n{settings}unix_socket_directories = '{self.root}'\n")

    def start(self) -> None:
        """Start on a free port; another port is tried if one was taken between choosing and binding it."""
        for _ in range(3):
            self.port = free_port()
            done = self._run(self.bin_dir / "pg_ctl", "--pgdata", self.data_dir, "--log", self.log_path,
                             "--wait", "--timeout", str(START_TIMEOUT_SECONDS), "-o", f"-p {self.port}", "start")
            if done.returncode == 0:
                return
            if "Address already in use" not in self._log_tail():
                break
        raise RuntimeError(f"pg_ctl start failed ({done.returncode}):\n{done.stderr}\n{self._log_tail()}")

    def stop(self) -> None:
        self._run(self.bin_dir / "pg_ctl", "--pgdata", self.data_dir, "--mode", "fast", "--wait", "stop")


@contextlib.contextmanager
def run_postgres(bin_dir: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL server in a new temporary folder until the block ends; the folder is removed afterwards."""
    account = _server_account()
    # Not under pytest's tmp_path: its parents are private to root, and the server's user must reach the folder.
    root = Path(tempfile.mkdtemp(prefix="aiq-pg-"))
    if account is not None:
        os.chown(root, account.pw_uid, account.pw_gid)
    server = PostgresServer(bin_dir=bin_dir, root=root, port=0, account=account)
    try:
        server.init()
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session (skips, saying why, where no server binaries exist)."""
    bin_dir = find_server_binaries()
    if bin_dir is None:
        reason = ("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin: "
                  "install the postgresql package (.ci/run does) to run the PostgreSQL tests")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    with run_postgres(bin_dir) as server:
        yield server


@pytest.fixture
def pg_database(pg_server: PostgresServer) -> Iterator[Callable[..., str]]:
    """``pg_database("pos")`` creates an empty database for this test and returns its SQLAlchemy URL.

    ``driver="postgresql"`` returns the plain URL form users paste. Every database is dropped after the test.
    """
    created: list[str] = []

    def create(prefix: str = "test", *, driver: str = "postgresql+psycopg") -> str:
        created.append(pg_server.create_database(prefix))
        return pg_server.url(created[-1], driver=driver)

    yield create
    for name in created:
        pg_server.drop_database(name)
