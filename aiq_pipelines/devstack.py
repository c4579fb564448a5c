"""``make dev``'s stack: the AIQ sandbox(es), the pull API and ``dg dev``, started together and stopped together.

Each service runs in a session of its own, so a Ctrl-C in the terminal reaches only this supervisor, which then stops
them in order: SIGINT to each service's process group (``dg dev`` shuts its webserver, daemon and code server down
cleanly, removing their sockets), SIGKILL to whatever is left of a group or of its descendants after a deadline. SIGTERM
does the same, so ``make dev`` stops within seconds whichever way it is asked to, and leaves no process and no port.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STOP_SECONDS = 11.0  # a service's group gets this long to stop after SIGINT before it is killed
POLL_SECONDS = 0.2


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    known: set[int]  # the service's processes seen so far, its descendants included


def _children_of() -> dict[int, list[int]]:
    """Every process's children, from ``ps`` (Linux and macOS alike)."""
    listing = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True, check=False)
    children: dict[int, list[int]] = {}
    for line in listing.stdout.splitlines():
        with contextlib.suppress(ValueError):
            pid, ppid = (int(part) for part in line.split())
            children.setdefault(ppid, []).append(pid)
    return children


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it."""
    children, found, todo = _children_of(), set(), [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(children.get(current, []))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child, now reaped
            return False
    return True


class Stack:
    """The services ``make dev`` runs, each in its own session; ``stop`` ends every one of them."""

    def __init__(self) -> None:
        self.services: list[Service] = []

    def start(self, name: str, argv: Sequence[str], log: Path | None, env: dict[str, str]) -> None:
        output = log.open("ab") if log is not None else None
        try:
            process = subprocess.Popen(list(argv), env=env, stdout=output, stderr=subprocess.STDOUT if output else None,
                                       start_new_session=True)
        finally:
            if output is not None:
                output.close()
        self.services.append(Service(name, process, {process.pid}))

    def watch(self) -> str | None:
        """The name of a service that has ended, if one has; records the services' current descendants."""
        for service in self.services:
            if service.process.poll() is not None:
                return service.name
            service.known |= descendants(service.process.pid)
        return None

    def stop(self) -> None:
        """SIGINT to every service's process group, then SIGKILL to what is left once ``STOP_SECONDS`` have passed."""
        for service in self.services:
            service.known |= descendants(service.process.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(service.process.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline and any(_alive(pid) for s in self.services for pid in s.known):
            time.sleep(POLL_SECONDS)
        for service in self.services:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(service.process.pid, signal.SIGKILL)
            for pid in service.known:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(timeout=5)


def first_sale_day(pos_url: str, timezone: str) -> dt.date | None:
    """The local day of the demo POS's first sale (reference schema), or None when it has none."""
    import sqlalchemy as sa

    from aiq_pipelines.db.engines import read_only_engine_for
    from aiq_pipelines.pos.times import BusinessCalendar, utc_timestamp

    try:
        with read_only_engine_for(pos_url).connect() as conn:
            first = conn.scalar(sa.text("SELECT min(transaction_at) FROM transactions"))
    except sa.exc.SQLAlchemyError:
        return None
    moment = utc_timestamp(first)
    return None if moment is None else BusinessCalendar(timezone).date_of(moment)


def run(stack: Stack, wanted: list[tuple[str, list[str], Path | None]], env: dict[str, str]) -> int:
    """Start the services, wait until one ends or a signal comes, stop them all; 0 after Ctrl-C or SIGTERM."""

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for name, argv, log in wanted:
            stack.start(name, argv, log, env)
        while (ended := stack.watch()) is None:
            time.sleep(1)
        print(f"make dev: {ended} stopped on its own; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("make dev: stopping...", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean stop short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("make dev: every service stopped", file=sys.stderr)
