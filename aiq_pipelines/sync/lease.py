"""One pusher per AIQ account at a time, however its run was launched: a lease row in the sync database.

Dagster's ``aiq_api`` pool keeps push steps apart only for runs the daemon launches; ``materialize()``, ``dagster asset
materialize`` and a second deployment ignore it. Two pushers working at once each check the ledger before the other's
batches are acknowledged, and both send the same records. With the lease, the second waits until the first is done,
then finds those records in the ledger: nothing is sent twice.

The holder renews the lease from a heartbeat thread five times per ``LEASE_SECONDS``. A holder that dies leaves it to
expire, or frees it at once when it ran on this host and its process is gone (a killed run, the usual case). Expiry
compares the hosts' clocks, which must agree to within a few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from aiq_pipelines.sync.schema import push_leases

LEASE_SECONDS = 15.0
POLL_SECONDS = 0.5

def _process_gone(row: Any) -> bool:
    """Whether the holder ran on this host and its process no longer exists."""
    if row.host != socket.gethostname():
        return False
    try:
        os.kill(row.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, under another user
    return False


class _Lease:
    def __init__(self, engine: sa.Engine, account: str, holder: str, log: logging.Logger, seconds: float):
        self.engine = engine
        self.account = account
        self.holder = holder
        self.log = log
        self.seconds = seconds
        self.mine = push_leases.c.account == account

    def _row(self) -> dict[str, Any]:
        return {"account": self.account, "holder": self.holder, "host": socket.gethostname(), "pid": os.getpid(),
                "expires_at": time.time() + self.seconds}

    def claim(self) -> str | None:
        """Take the lease if it is free, ours, expired or its holder's process is gone; else name the run holding it."""
        with self.engine.begin() as conn:
            insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[conn.dialect.name]
            # A write first: on SQLite it takes the writer lock, so the read below cannot go stale before the update.
            if conn.execute(insert(push_leases).values(self._row()).on_conflict_do_nothing()).rowcount == 1:
                return None
            current = conn.execute(sa.select(push_leases).where(self.mine)).first()
            if current is None:
                return ""  # released between the two statements (PostgreSQL): claim again
            free = current.holder == self.holder or current.expires_at < time.time() or _process_gone(current)
            if not free:
                return current.holder
            same = sa.and_(self.mine, push_leases.c.holder == current.holder, push_leases.c.pid == current.pid)
            taken = conn.execute(push_leases.update().where(same).values(self._row())).rowcount == 1
        if taken and current.holder != self.holder:
            self.log.info(f"AIQ account {self.account}: took over the push lease of run {current.holder}, "
                          "whose process is gone or stopped renewing it")
        return None if taken else current.holder

    def renew(self) -> bool:
        with self.engine.begin() as conn:
            renewed = push_leases.update().where(self.mine, push_leases.c.holder == self.holder)
            return conn.execute(renewed.values(expires_at=time.time() + self.seconds)).rowcount == 1

    def release(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(push_leases.delete().where(self.mine, push_leases.c.holder == self.holder))

    def heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(self.seconds / 5):
            try:
                if not self.renew():
                    self.log.warning(f"AIQ account {self.account}: another run took over this run's push lease; "
                                     "a record both runs send may reach AIQ twice (harmless: its upserts are keyed)")
                    return
            except sa.exc.SQLAlchemyError as exc:
                self.log.warning(f"AIQ account {self.account}: could not renew the push lease ({type(exc).__name__})")


@contextlib.contextmanager
def push_lease(
    engine: sa.Engine, account: str, holder: str, log: logging.Logger, *, seconds: float = LEASE_SECONDS
) -> Iterator[None]:
    """Hold the account's push lease for the block, waiting as long as another live run holds it.

    ``seconds`` is how long a lease outlives its last renewal; tests shorten it.
    """
    lease = _Lease(engine, account, holder, log, seconds)
    waiting_for = ""
    while (other := lease.claim()) is not None:
        if other and other != waiting_for:
            waiting_for = other
            log.info(f"AIQ account {account}: run {other} is pushing to it; waiting for it to finish "
                     "so that no record is sent twice")
        time.sleep(POLL_SECONDS)
    stop = threading.Event()
    heartbeat = threading.Thread(target=lease.heartbeat, args=(stop,), name="aiq-push-lease", daemon=True)
    heartbeat.start()
    try:
        yield
    finally:
        stop.set()
        heartbeat.join()
        lease.release()
