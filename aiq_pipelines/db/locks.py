"""Locks that serialize work across processes on the database every process shares."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa


def lock_key(name: str) -> int:
    """A stable 64-bit key for ``name`` (PostgreSQL's advisory locks take integers)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def advisory_lock(conn: sa.Connection, name: str) -> None:
    """Hold a lock on ``name`` until the transaction ends on PostgreSQL. SQLite has one writer per file, so a
    transaction begun with ``BEGIN IMMEDIATE`` already holds the only lock there is."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key(name))))


def begin_exclusive(conn: sa.Connection, name: str) -> None:
    """Start ``conn``'s transaction holding the database's writer lock (SQLite) or the advisory lock on ``name``
    (PostgreSQL), so that a check followed by a write cannot race another process doing the same."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        advisory_lock(conn, name)
