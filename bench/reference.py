"""The minimal reference: the same rows read with plain SQL, the same JSON built with the standard library, posted in
the same batches with plain httpx. Nothing else: no validation, staging, ledger, rate limiter or retries.

``python -m bench.reference POS_PATH FIRST LAST BASE_URL UID`` (API key in AIQ_API_KEY) prints one JSON line with
the work's CPU and wall time (imports excluded) and the records and requests it sent.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import resource
import sqlite3
import sys
import time
import zoneinfo
from itertools import groupby

import httpx

from aiq_pipelines.pos.queries import PERSONAS_SQL, TRANSACTIONS_SQL

BATCH = 100
DENVER = zoneinfo.ZoneInfo("America/Denver")
LINE_TEXT = ("category", "brand", "name", "size", "strain", "grade", "species")
MEMBER_TEXT = ("first_name", "last_name", "address1", "address2", "city", "state", "zip", "gender")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _bound(day: str) -> str:
    local = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), DENVER)
    return f"{local.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}"


def _visit(rows: list[sqlite3.Row]) -> dict:
    head = rows[0]
    lines = []
    for row in rows:
        line = {"sku": row["line_sku"], "price": float(row["line_unit_price"]), "quantity": float(row["line_quantity"]),
                "discount": float(row["line_discount"] or 0)}
        line.update((k, row["line_" + k]) for k in LINE_TEXT if row["line_" + k] is not None)
        lines.append(line)
    visit = {"pos_id": head["transaction_id"], "sendNotification": 0, "location": head["location_name"],
             "transaction_date": head["transaction_at"][:19] + " +0000", "transaction_total": float(head["total"]),
             "visit_details_attributes": lines}
    if head["customer_id"]:
        visit["pos_user"] = head["customer_id"]
    if head["customer_type"]:
        visit["pos_type"] = head["customer_type"]
    return {"visit": visit}


def _member(row: sqlite3.Row) -> dict:
    member = {"pos_user": row["customer_id"], "loyalty": bool(row["is_loyalty_member"])}
    member.update((k, row[k]) for k in MEMBER_TEXT if row[k])
    if row["customer_type"]:
        member["pos_type"] = row["customer_type"]
    digits = re.sub(r"\D", "", row["phone"] or "")
    digits = digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
    if len(digits) == 10 and len(set(digits)) > 1 and digits not in ("1234567890", "0123456789"):
        member["phone_number"] = digits
    email = (row["email"] or "").strip().lower()
    if re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", email):
        member["email"] = email
    if row["birthday"]:
        year, month, day = row["birthday"][:10].split("-")
        member["birthday"] = f"{month}/{day}/{year}"
    return {"member": member}


def main(pos_path: str, first: str, last: str, base_url: str, uid: str) -> None:
    cpu, wall = _cpu(), time.monotonic()
    db = sqlite3.connect(pos_path)
    db.row_factory = sqlite3.Row
    end = (dt.date.fromisoformat(last) + dt.timedelta(days=1)).isoformat()
    window = {"window_start": _bound(first), "window_end": _bound(end)}
    http = httpx.Client(base_url=base_url, headers={"x-apikey": os.environ["AIQ_API_KEY"]}, timeout=60)
    sent = {"members": 0, "sales": 0}
    requests = 0

    def post(call: str, body: list) -> None:
        nonlocal requests
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        response = http.post(f"/api/v1.1/{call}/{uid}", content=content, headers={"content-type": "application/json"})
        if response.status_code != 200:
            raise SystemExit(f"{call} answered {response.status_code}: {response.text[:500]}")
        requests += 1

    def send(call: str, kind: str, items) -> None:
        batch = []
        for item in items:
            batch.append(item)
            if len(batch) == BATCH:
                post(call, batch)
                sent[kind] += len(batch)
                batch = []
        if batch:
            post(call, batch)
            sent[kind] += len(batch)

    # Personas first: those modified in the window, then those the window's sales name that are not among them.
    window_members = {row["customer_id"]: row for row in db.execute(PERSONAS_SQL, window)}
    named = sorted({row[0] for row in db.execute(
        "SELECT DISTINCT customer_id FROM transactions WHERE transaction_at >= :window_start "
        "AND transaction_at < :window_end AND NOT is_void AND customer_id IS NOT NULL", window)} - set(window_members))

    def members():
        yield from (_member(row) for row in window_members.values())
        for start in range(0, len(named), 500):
            chunk = named[start:start + 500]
            marks = ",".join("?" * len(chunk))
            yield from (_member(row) for row in db.execute(f"SELECT * FROM customers WHERE customer_id IN ({marks})", chunk))

    send("createUpdateMembers", "members", members())
    rows = db.execute(TRANSACTIONS_SQL, window)
    groups = (list(group) for _, group in groupby(rows, key=lambda r: r["transaction_id"]))
    # A sale voided before it was ever sent is not sent, as the pipeline does on a first sync.
    send("createUpdateSales", "sales", (_visit(group) for group in groups if not group[0]["is_void"]))
    print(json.dumps({"work_cpu": _cpu() - cpu, "work_wall": time.monotonic() - wall, "records": sum(sent.values()),
                      "sent": sent, "requests": requests}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
