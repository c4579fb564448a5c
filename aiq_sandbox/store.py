"""The sandbox's state in one SQLite file: sales, members, inventory, the request log, and the writes AIQ accepted but
has not applied yet (``pending``) or dropped (``dropped``; see ``aiq_sandbox.processing``).

All access happens on the app's one store worker thread, one call at a time, so one connection without a lock is
enough. WAL mode keeps a SIGKILL mid-write from corrupting the file. A member's row exists from its first acceptance,
so its contactID can be answered at once; ``applied`` says whether it holds anything AIQ would show yet.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from aiq_sandbox import reads
from aiq_sandbox.processing import Processing

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sales (
    pos_id TEXT PRIMARY KEY, visit TEXT NOT NULL, persona_known_at_arrival INTEGER, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pos_user TEXT NOT NULL UNIQUE, fields TEXT NOT NULL,
    updated_at REAL NOT NULL, applied INTEGER NOT NULL DEFAULT 1, accepted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL,
    received_at REAL NOT NULL, apply_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS pending_key ON pending (kind, key);
CREATE TABLE IF NOT EXISTS dropped (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pos_user TEXT NOT NULL, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS inventory (product_id TEXT PRIMARY KEY, item TEXT NOT NULL, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL,
    status INTEGER, records INTEGER NOT NULL DEFAULT 0, keys TEXT NOT NULL DEFAULT '[]', fault TEXT,
    in_flight INTEGER NOT NULL DEFAULT 1, answered_at REAL);
"""
# Columns added after a table's first release, for state files written before them.
_LATER_COLUMNS = {
    "requests": {"in_flight": "INTEGER NOT NULL DEFAULT 1", "answered_at": "REAL"},
    "members": {"applied": "INTEGER NOT NULL DEFAULT 1", "accepted": "INTEGER NOT NULL DEFAULT 0"},
}
_SQL_VARIABLES = 500  # per IN list, well under SQLite's limit on bound parameters

# How an override's field names map onto the member fields createUpdateMember uses.
_OVERRIDE_FIELDS = {"email": "email", "mobilePhone": "phone_number", "firstName": "first_name", "lastName": "last_name"}


def _json(value: Any) -> str:
    """``value`` as JSON text. orjson, not the json module: encoding each stored visit was a fifth of the sandbox's CPU,
    which it shares with the sync under test."""
    return orjson.dumps(value).decode()


def _view(row: sqlite3.Row) -> dict[str, Any]:
    return reads.contact_view(row["id"], row["pos_user"], orjson.loads(row["fields"]))


class Store:
    """Create-or-update state keyed as AIQ keys it: sales by pos_id, members by pos_user, inventory by productId.

    ``processing`` says how accepted sales and members are applied (later, not always, phones checked).
    """

    def __init__(self, path: Path, *, reset: bool = False, processing: Processing | None = None):
        path.parent.mkdir(parents=True, exist_ok=True)
        if reset:
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
        self.processing = processing or Processing()
        # Created here, then used only by the app's store worker thread, one call at a time.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        for table, columns in _LATER_COLUMNS.items():
            present = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, declaration in columns.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    # -- request log -------------------------------------------------------------------------------------------
    def log_arrival(self, received_at: float, method: str, path: str, in_flight: int) -> int:
        """Log a request the moment it arrives, so ids follow arrival order; returns its id.

        ``in_flight`` counts the API requests being handled at that moment, this one included.
        """
        cursor = self._db.execute(
            "INSERT INTO requests (received_at, method, path, in_flight) VALUES (?, ?, ?, ?)",
            (received_at, method, path, in_flight),
        )
        return int(cursor.lastrowid)

    def log_outcome(
        self, request_id: int, *, status: int, records: int, keys: list[str], fault: str | None,
        answered_at: float | None,
    ) -> None:
        """The request's outcome; ``answered_at`` is None while its answer is still held back (a slow fault)."""
        self._db.execute(
            "UPDATE requests SET status = ?, records = ?, keys = ?, fault = ?, answered_at = ? WHERE id = ?",
            (status, records, _json(keys), fault, answered_at, request_id),
        )

    def log_answered(self, request_id: int, answered_at: float) -> None:
        self._db.execute("UPDATE requests SET answered_at = ? WHERE id = ?", (answered_at, request_id))

    def requests(self, since_id: int = 0, *, latest: int | None = None) -> list[dict[str, Any]]:
        """Logged requests after ``since_id`` in arrival order (only the last ``latest`` when given)."""
        query = "SELECT * FROM requests WHERE id > ? ORDER BY id"
        if latest is not None:
            query = f"SELECT * FROM ({query} DESC LIMIT {int(latest)}) ORDER BY id"
        return [
            {**dict(row), "keys": orjson.loads(row["keys"])} for row in self._db.execute(query, (since_id,)).fetchall()
        ]

    # -- writes ------------------------------------------------------------------------------------------------
    def upsert_sales(self, visits: Iterable[Mapping[str, Any]], received_at: float) -> None:
        """Accept each visit; once applied it replaces an earlier one with the same pos_id. Whether its persona was
        known on arrival (accepted before, and not dropped) is kept with it."""
        visits = list(visits)
        with self._transaction():
            self._apply_due()
            users = list({visit["pos_user"] for visit in visits if visit.get("pos_user") is not None})
            known = {
                row[0]
                for start in range(0, len(users), _SQL_VARIABLES)
                for row in self._db.execute(
                    "SELECT pos_user FROM members WHERE pos_user IN "
                    f"({','.join('?' * len(users[start:start + _SQL_VARIABLES]))}) AND (applied = 1 OR EXISTS "
                    "(SELECT 1 FROM pending WHERE kind = 'member' AND key = members.pos_user))",
                    users[start : start + _SQL_VARIABLES],
                )
            }
            for visit in visits:
                user = visit.get("pos_user")
                self._accept("sale", visit["pos_id"], {"visit": visit, "known": None if user is None else user in known},
                             received_at)

    def upsert_members(self, members: Iterable[Mapping[str, Any]], received_at: float) -> list[dict[str, str]]:
        """Accept each member (once applied, its fields replace the earlier ones) unless the processing drops it;
        returns pos_user, contactID, srcID in order, dropped or not, as AIQ answers before it processes anything."""
        acks = []
        with self._transaction():
            self._apply_due()
            for member in members:
                pos_user = member["pos_user"]
                self._db.execute(
                    "INSERT INTO members (pos_user, fields, updated_at, applied) VALUES (?, '{}', ?, 0) "
                    "ON CONFLICT (pos_user) DO NOTHING", (pos_user, received_at),
                )
                row = self._db.execute("UPDATE members SET accepted = accepted + 1 WHERE pos_user = ? "
                                       "RETURNING id, accepted", (pos_user,)).fetchone()
                if self.processing.drops(pos_user, row["accepted"] - 1):
                    self._db.execute("INSERT INTO dropped (pos_user, received_at) VALUES (?, ?)", (pos_user, received_at))
                else:
                    self._accept("member", pos_user, member, received_at)
                acks.append({"pos_user": pos_user, **reads.contact_ids(row["id"])})
        return acks

    def _accept(self, kind: str, key: str, body: Mapping[str, Any], received_at: float) -> None:
        if self.processing.apply_delay <= 0:
            self._apply(kind, key, body, received_at)
            return
        self._db.execute("INSERT INTO pending (kind, key, body, received_at, apply_at) VALUES (?, ?, ?, ?, ?)",
                         (kind, key, _json(body), received_at, received_at + self.processing.apply_delay))

    def _apply(self, kind: str, key: str, body: Mapping[str, Any], received_at: float) -> None:
        if kind == "member":
            self._db.execute(
                "UPDATE members SET fields = ?, updated_at = ?, applied = 1 WHERE pos_user = ?",
                (_json(self.processing.blank_invalid_phone(body, "phone_number")), received_at, key),
            )
            return
        self._db.execute(
            "INSERT INTO sales (pos_id, visit, persona_known_at_arrival, received_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (pos_id) DO UPDATE SET visit = excluded.visit, "
            "persona_known_at_arrival = excluded.persona_known_at_arrival, received_at = excluded.received_at",
            (key, _json(body["visit"]), body["known"], received_at),
        )

    def _apply_due(self) -> None:
        """Apply the accepted writes whose delay has passed, in the order they were accepted."""
        due = self._db.execute("SELECT * FROM pending WHERE apply_at <= ? ORDER BY id", (time.time(),)).fetchall()
        for row in due:
            self._apply(row["kind"], row["key"], orjson.loads(row["body"]), row["received_at"])
        if due:
            self._db.execute("DELETE FROM pending WHERE id <= ?", (due[-1]["id"],))

    def _applied_now(self) -> None:
        with self._transaction():
            self._apply_due()

    def override_contact(
        self, contact_id: str, changes: Mapping[str, Any], received_at: float
    ) -> dict[str, Any] | None:
        """Change only the given fields of a contact at once; None when no applied contact has that id."""
        with self._transaction():
            self._apply_due()
            row = self._contact(contact_id)
            if row is None:
                return None
            fields = orjson.loads(row["fields"])
            changes = self.processing.blank_invalid_phone(changes, "mobilePhone")
            fields.update({_OVERRIDE_FIELDS[name]: value for name, value in changes.items()})
            self._db.execute(
                "UPDATE members SET fields = ?, updated_at = ? WHERE id = ?",
                (_json(fields), received_at, row["id"]),
            )
            return _view(self._db.execute("SELECT * FROM members WHERE id = ?", (row["id"],)).fetchone())

    def upsert_inventory(self, items: Iterable[Mapping[str, Any]], received_at: float) -> None:
        """Store each item, replacing an earlier one with the same productId."""
        with self._transaction():
            self._db.executemany(
                "INSERT INTO inventory (product_id, item, received_at) VALUES (?, ?, ?) "
                "ON CONFLICT (product_id) DO UPDATE SET item = excluded.item, received_at = excluded.received_at",
                [(item["productId"], _json(item), received_at) for item in items],
            )

    # -- reads: what was applied -------------------------------------------------------------------------------
    def _contact(self, contact_id: str) -> sqlite3.Row | None:
        number = reads.row_of(contact_id)
        row = None if number is None else self._db.execute(
            "SELECT * FROM members WHERE id = ? AND applied = 1", (number,)).fetchone()
        return row if row is not None and reads.contact_ids(row["id"])["contactID"] == contact_id else None

    def search_contacts(self, term: str, *, limit: int, start: int) -> list[dict[str, Any]]:
        """Contacts whose name or email holds ``term`` (any case), whose phone is its digits, or whose id it is."""
        self._applied_now()
        rows = self._db.execute("SELECT * FROM members WHERE applied = 1 ORDER BY id").fetchall()
        hits = [_view(row) for row in rows if reads.matches(row["id"], orjson.loads(row["fields"]), term)]
        return hits[start : start + limit]

    def page_contacts(self, *, limit: int, start: int) -> list[dict[str, Any]]:
        """``limit`` contacts from the ``start``-th, in the order they were created."""
        self._applied_now()
        rows = self._db.execute("SELECT * FROM members WHERE applied = 1 ORDER BY id LIMIT ? OFFSET ?", (limit, start))
        return [_view(row) for row in rows]

    def counts(self) -> dict[str, int]:
        self._applied_now()
        counts = {table: self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in ("sales", "inventory", "requests", "pending", "dropped")}
        return {**counts, "members": self._db.execute("SELECT count(*) FROM members WHERE applied = 1").fetchone()[0]}

    def state(self) -> dict[str, Any]:
        """Everything applied, in first-arrival order; the personas dropped, and how many writes wait to be applied."""
        counts = self.counts()
        sales = [
            {**orjson.loads(row["visit"]), "persona_known_at_arrival": _bool_or_none(row["persona_known_at_arrival"]),
             "received_at": row["received_at"]}
            for row in self._db.execute("SELECT * FROM sales ORDER BY rowid")
        ]
        members = [
            {**orjson.loads(row["fields"]), **reads.contact_ids(row["id"]), "updated_at": row["updated_at"]}
            for row in self._db.execute("SELECT * FROM members WHERE applied = 1 ORDER BY id")
        ]
        inventory = [orjson.loads(row["item"]) for row in self._db.execute("SELECT item FROM inventory ORDER BY rowid")]
        dropped = [dict(row) for row in self._db.execute("SELECT pos_user, received_at FROM dropped ORDER BY id")]
        return {"sales": sales, "members": members, "inventory": inventory, "dropped": dropped, "counts": counts}


def _bool_or_none(value: int | None) -> bool | None:
    return None if value is None else bool(value)
