"""`make dev` as a newcomer runs it: it starts without a warning, and Ctrl-C (SIGINT) or SIGTERM stops every process
it started, within 15 s, leaving every port free."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiq_pipelines.devstack import descendants
from aiq_pipelines_tests.support.dagster_ui import Dagster, wait_for
from aiq_pipelines_tests.support.sandbox import free_port

REPO = Path(__file__).resolve().parents[1]
STOP_SECONDS = 15

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A small demo POS where make dev looks for one, so its demo-data step leaves it as it is."""
    data = tmp_path_factory.mktemp("make-dev") / "data"
    subprocess.run([sys.executable, "-m", "aiq_pipelines.cli", "demo-data", "--days", "3", "--stores", "1",
                    "--min-sales", "5", "--max-sales", "8"], env={**os.environ, "AIQ_PIPELINES_DATA_DIR": str(data)},
                   check=True, capture_output=True, timeout=120)
    return data


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_make_dev_starts_without_a_warning_and_stops_whole_on_a_signal(tmp_path, data_dir, stop):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / ".dagster" / "dagster.yaml", home / "dagster.yaml")
    chosen: set[int] = set()
    while len(chosen) < 3:  # three different ones: a port just probed may be handed out again
        chosen.add(free_port())
    ports = dict(zip(("PORT", "PULL_PORT", "sandbox"), sorted(chosen), strict=True))
    env = {**os.environ, "DAGSTER_HOME": str(home), "DATA_DIR": str(data_dir), "PORT": str(ports["PORT"]),
           "PULL_PORT": str(ports["PULL_PORT"]), "AIQ_BASE_URL": f"http://127.0.0.1:{ports['sandbox']}"}
    log_path = tmp_path / "make-dev.log"
    with log_path.open("wb") as log:
        make = subprocess.Popen(["make", "--no-print-directory", "dev"], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    started: set[int] = set()
    try:
        dagster = Dagster(ports["PORT"], make, log_path)
        wait_for("the code location loading", dagster.loaded_location, 120)
        started |= descendants(make.pid)
        assert len(started) >= 8, "make, the supervisor, sandbox, pull API, dg dev, code server, webserver, daemon"
        assert not any(port_free(port) for port in ports.values()), "every service is listening"

        began = time.monotonic()
        os.killpg(make.pid, stop)
        make.wait(timeout=STOP_SECONDS)
        wait_for("every process ending", lambda: not any(alive(pid) for pid in started),
                 STOP_SECONDS - (time.monotonic() - began), interval=0.2)
        assert time.monotonic() - began < STOP_SECONDS
        assert all(port_free(port) for port in ports.values()), "every port is free again"
        output = log_path.read_text(errors="replace")
        assert "make dev: every service stopped" in output
        assert "Warning" not in output, "no warning at start, in the runs or at the stop"
    finally:
        for pid in started | ({make.pid} if make.poll() is None else set()):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
