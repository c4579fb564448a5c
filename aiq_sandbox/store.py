"""The sandbox's state in one SQLite file: sales, members, inventory and the request log.

All access happens on the server's event-loop thread (the endpoints are async and SQLite calls are short), so one
connection without a lock is enough. WAL mode keeps a SIGKILL mid-write from corrupting the file.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sales (
    pos_id TEXT PRIMARY KEY, visit TEXT NOT NULL, persona_known_at_arrival INTEGER, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pos_user TEXT NOT NULL UNIQUE, fields TEXT NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS inventory (product_id TEXT PRIMARY KEY, item TEXT NOT NULL, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL,
    status INTEGER, records INTEGER NOT NULL DEFAULT 0, keys TEXT NOT NULL DEFAULT '[]', fault TEXT,
    in_flight INTEGER NOT NULL DEFAULT 1, answered_at REAL);
"""
# Columns added to the request log after its first release, for state files written before them.
_LATER_COLUMNS = {"in_flight": "INTEGER NOT NULL DEFAULT 1", "answered_at": "REAL"}
_TABLES = ("sales", "members", "inventory", "requests")
_SQL_VARIABLES = 500  # per IN list, well under SQLite's limit on bound parameters

# How an override's field names map onto the member fields createUpdateMember uses.
_OVERRIDE_FIELDS = {"email": "email", "mobilePhone": "phone_number", "firstName": "first_name", "lastName": "last_name"}


def _json(value: Any) -> str:
    """``value`` as JSON text. orjson, not the json module: encoding each stored visit was a fifth of the sandbox's CPU,
    which it shares with the sync under test."""
    return orjson.dumps(value).decode()


def _ids(row: sqlite3.Row) -> dict[str, str]:
    """A member's contactID and srcID, derived from its row number: deterministic, unique, stable across updates."""
    return {"contactID": f"C{row['id']:07d}", "srcID": f"S{row['id']:07d}"}


def _contact_view(row: sqlite3.Row) -> dict[str, Any]:
    """A member as piis and override report it."""
    fields = orjson.loads(row["fields"])
    return {
        **_ids(row),
        "firstName": fields.get("first_name"),
        "lastName": fields.get("last_name"),
        "mobilePhone": fields.get("phone_number"),
        "email": fields.get("email"),
        "pos_user": row["pos_user"],
    }


def _matches(row: sqlite3.Row, needle: str, digits: str, term: str) -> bool:
    fields = orjson.loads(row["fields"])
    first, last = fields.get("first_name") or "", fields.get("last_name") or ""
    return (
        any(needle in value.casefold() for value in (f"{first} {last}", fields.get("email") or ""))
        or (bool(digits) and fields.get("phone_number") == digits)
        or term in _ids(row).values()
    )


class Store:
    """Create-or-update state keyed as AIQ keys it: sales by pos_id, members by pos_user, inventory by productId."""

    def __init__(self, path: Path, *, reset: bool = False):
        path.parent.mkdir(parents=True, exist_ok=True)
        if reset:
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
        # Created here, then used only by the app's store worker thread, one call at a time.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        present = {row["name"] for row in self._db.execute("PRAGMA table_info(requests)")}
        for name, declaration in _LATER_COLUMNS.items():
            if name not in present:
                self._db.execute(f"ALTER TABLE requests ADD COLUMN {name} {declaration}")

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
        """Store each visit, replacing an earlier one with the same pos_id."""
        visits = list(visits)
        with self._transaction():
            users = list({visit["pos_user"] for visit in visits if visit.get("pos_user") is not None})
            known = {
                row[0]
                for start in range(0, len(users), _SQL_VARIABLES)
                for row in self._db.execute(
                    "SELECT pos_user FROM members WHERE pos_user IN "
                    f"({','.join('?' * len(users[start:start + _SQL_VARIABLES]))})",
                    users[start : start + _SQL_VARIABLES],
                )
            }
            self._db.executemany(
                "INSERT INTO sales (pos_id, visit, persona_known_at_arrival, received_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (pos_id) DO UPDATE SET visit = excluded.visit, "
                "persona_known_at_arrival = excluded.persona_known_at_arrival, received_at = excluded.received_at",
                [
                    (visit["pos_id"], _json(visit), None if visit.get("pos_user") is None else
                     visit["pos_user"] in known, received_at)
                    for visit in visits
                ],
            )

    def upsert_members(self, members: Iterable[Mapping[str, Any]], received_at: float) -> list[dict[str, str]]:
        """Store each member (its fields replace the earlier ones); returns pos_user, contactID, srcID in order."""
        acks = []
        with self._transaction():
            for member in members:
                pos_user = member["pos_user"]
                self._db.execute(
                    "INSERT INTO members (pos_user, fields, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (pos_user) DO UPDATE SET fields = excluded.fields, updated_at = excluded.updated_at",
                    (pos_user, _json(member), received_at),
                )
                acks.append({"pos_user": pos_user, **_ids(self._member(pos_user))})
        return acks

    def override_contact(
        self, contact_id: str, changes: Mapping[str, Any], received_at: float
    ) -> dict[str, Any] | None:
        """Change only the given fields of a contact; None when no contact has that id."""
        with self._transaction():
            row = self._contact(contact_id)
            if row is None:
                return None
            fields = orjson.loads(row["fields"])
            fields.update({_OVERRIDE_FIELDS[name]: value for name, value in changes.items()})
            self._db.execute(
                "UPDATE members SET fields = ?, updated_at = ? WHERE id = ?",
                (_json(fields), received_at, row["id"]),
            )
            return _contact_view(self._db.execute("SELECT * FROM members WHERE id = ?", (row["id"],)).fetchone())

    def upsert_inventory(self, items: Iterable[Mapping[str, Any]], received_at: float) -> None:
        """Store each item, replacing an earlier one with the same productId."""
        with self._transaction():
            self._db.executemany(
                "INSERT INTO inventory (product_id, item, received_at) VALUES (?, ?, ?) "
                "ON CONFLICT (product_id) DO UPDATE SET item = excluded.item, received_at = excluded.received_at",
                [(item["productId"], _json(item), received_at) for item in items],
            )

    # -- reads -------------------------------------------------------------------------------------------------
    def _member(self, pos_user: str) -> sqlite3.Row | None:
        return self._db.execute("SELECT * FROM members WHERE pos_user = ?", (pos_user,)).fetchone()

    def _contact(self, contact_id: str) -> sqlite3.Row | None:
        number = re.fullmatch(r"C([0-9]+)", contact_id)
        row = self._db.execute("SELECT * FROM members WHERE id = ?", (int(number[1]),)).fetchone() if number else None
        return row if row is not None and _ids(row)["contactID"] == contact_id else None

    def search_contacts(self, term: str, *, limit: int, start: int) -> list[dict[str, Any]]:
        """Contacts whose name or email holds ``term`` (any case), whose phone is its digits, or whose id it is."""
        needle, digits = term.casefold(), re.sub(r"[^0-9]", "", term)
        rows = self._db.execute("SELECT * FROM members ORDER BY id").fetchall()
        hits = [_contact_view(row) for row in rows if _matches(row, needle, digits, term)]
        return hits[start : start + limit]

    def counts(self) -> dict[str, int]:
        return {table: self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in _TABLES}

    def state(self) -> dict[str, Any]:
        """Everything stored, in first-arrival order."""
        sales = [
            {**orjson.loads(row["visit"]), "persona_known_at_arrival": _bool_or_none(row["persona_known_at_arrival"]),
             "received_at": row["received_at"]}
            for row in self._db.execute("SELECT * FROM sales ORDER BY rowid")
        ]
        members = [
            {**orjson.loads(row["fields"]), **_ids(row), "updated_at": row["updated_at"]}
            for row in self._db.execute("SELECT * FROM members ORDER BY id")
        ]
        inventory = [orjson.loads(row["item"]) for row in self._db.execute("SELECT item FROM inventory ORDER BY rowid")]
        return {"sales": sales, "members": members, "inventory": inventory, "counts": self.counts()}


def _bool_or_none(value: int | None) -> bool | None:
    return None if value is None else bool(value)
