"""How soon a change in the POS reaches AIQ on ``make dev``'s defaults: ``.venv/bin/python -m bench.latency``.

Setup, not measured: ``make dev`` itself (the supervisor, the sandbox, the pull API and ``dg dev`` with its daemon) on
free ports, with a Dagster home and a data folder of its own and the demo POS ``make dev`` writes (90 days, two
stores). The automation starts running (``AUTOMATION_DEFAULT_STATUS=running``) and the change sensor looks every 5 s,
as ``make dev`` sets them; the benchmark waits until the sensor's first run (today's sync) has ended. Then, one at a
time, ``--changes`` changes (20) are committed to the POS, alternately a new sale of a new customer and a new phone
number of a customer AIQ already has, and the benchmark polls the sandbox's request log (every 0.2 s) until a write
naming the change was accepted: the sale's ``pos_id``, the persona's ``pos_user`` or ``contactID``. Receipt, not
application: the dev sandbox applies writes a minute later, as AIQ does (``SANDBOX_APPLY_DELAY``), which no sync can
shorten. Measured: commit to receipt, per change; the table gives the
median, the 95th percentile (nearest rank) and the worst, per kind and in all. It replaces the ``## Change latency``
section of ``bench/RESULTS.md`` (inserted before ``## Pull API`` when absent; the rest of the file is kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.run import RESULTS, ROOT, _free_port, log, machine

HEADING = "## Change latency (make dev)"
NEXT_HEADING = "## Pull API"
POLL_SECONDS = 0.2


def wait(what: str, condition, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"{what} did not happen within {seconds} s")


class Dev:
    """``make dev`` in its own process group, and what it serves."""

    def __init__(self, work: Path):
        ports: set[int] = set()
        while len(ports) < 3:  # three different ones: a port just probed may be handed out again
            ports.add(_free_port())
        self.ports = dict(zip(("PORT", "PULL_PORT", "sandbox"), sorted(ports), strict=True))
        home, self.data = work / "dagster_home", work / "data"
        home.mkdir()
        shutil.copy(ROOT / ".dagster" / "dagster.yaml", home / "dagster.yaml")
        self.sandbox = f"http://127.0.0.1:{self.ports['sandbox']}"
        env = {**os.environ, "DAGSTER_HOME": str(home), "DATA_DIR": str(self.data), "AIQ_BASE_URL": self.sandbox,
               "PORT": str(self.ports["PORT"]), "PULL_PORT": str(self.ports["PULL_PORT"])}
        self.log_path = work / "make-dev.log"
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(["make", "--no-print-directory", "dev"], cwd=ROOT, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.http = httpx.Client(timeout=30)

    def graphql(self, query: str) -> dict:
        response = self.http.post(f"http://127.0.0.1:{self.ports['PORT']}/graphql", json={"query": query})
        return response.json()["data"]

    def sensor_runs_done(self) -> bool:
        try:
            runs = self.graphql('{ runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: "pos_change_sensor"}]})'
                                " { ... on Runs { results { status } } } }")["runsOrError"]["results"]
        except (httpx.TransportError, KeyError, TypeError, ValueError):
            return False
        return bool(runs) and all(run["status"] in ("SUCCESS", "FAILURE", "CANCELED") for run in runs)

    def state(self) -> dict:
        return self.http.get(f"{self.sandbox}/sandbox/state").json()

    def last_request(self) -> int:
        requests = self.http.get(f"{self.sandbox}/sandbox/requests").json()
        return requests[-1]["id"] if requests else 0

    def received(self, since_id: int, keys: set[str]) -> bool:
        """Whether the sandbox accepted a write naming one of ``keys`` after request ``since_id``: receipt, not
        application, which the dev sandbox delays as AIQ does (SANDBOX_APPLY_DELAY)."""
        requests = self.http.get(f"{self.sandbox}/sandbox/requests", params={"since_id": since_id}).json()
        return any(request["status"] == 200 and keys & set(request["keys"]) for request in requests)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=30)


def now_text() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S}"


def add_sale(pos: Path, n: int) -> str:
    with sqlite3.connect(pos) as conn:
        location = conn.execute("SELECT location_id FROM locations ORDER BY location_id").fetchone()[0]
        product, price = conn.execute("SELECT product_id, unit_price FROM products WHERE NOT is_archived "
                                      "ORDER BY product_id").fetchone()
        stamp, customer, sale = now_text(), f"LAT-C{n}", f"LAT-S{n}"
        conn.execute("INSERT INTO customers (customer_id, first_name, last_name, phone, is_loyalty_member, created_at, "
                     "last_modified_at) VALUES (?, 'Lat', 'Ency', ?, 0, ?, ?)",
                     (customer, f"(720) 555-{1000 + n:04d}", stamp, stamp))
        conn.execute("INSERT INTO transactions (transaction_id, location_id, customer_id, transaction_at, subtotal, "
                     "discount_total, tax_total, total, last_modified_at) VALUES (?, ?, ?, ?, ?, 0, 0, ?, ?)",
                     (sale, location, customer, stamp, price, price, stamp))
        conn.execute("INSERT INTO transaction_items (transaction_id, line_number, product_id, quantity, unit_price, "
                     "discount) VALUES (?, 1, ?, 1, ?, 0)", (sale, product, price))
    return sale


def change_phone(pos: Path, customer: str, n: int) -> str:
    phone = f"303555{2000 + n:04d}"
    with sqlite3.connect(pos) as conn:
        conn.execute("UPDATE customers SET phone = ?, last_modified_at = ? WHERE customer_id = ?",
                     (f"({phone[:3]}) {phone[3:6]}-{phone[6:]}", now_text(), customer))
    return phone


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def measure(changes: int, work: Path) -> dict[str, list[float]]:
    dev = Dev(work)
    try:
        log("make dev: waiting for the sensor's first run (today's sync) to end")
        wait("the first sync of today", dev.sensor_runs_done, 600)
        pos = dev.data / "pos.db"
        # A phone change is measured on customers AIQ already has: the sandbox applies writes a minute after accepting
        # them, so the first sync's personas are waited for (setup, not measured).
        def applied() -> list[tuple[str, str]] | None:
            members = sorted((m["pos_user"], m["contactID"]) for m in dev.state()["members"] if m.get("phone_number"))
            return members if len(members) >= changes else None

        known = wait("the sandbox applying the first sync", applied, 300)
        latencies: dict[str, list[float]] = {"new sale": [], "phone change": []}
        for n in range(changes):
            since = dev.last_request()
            if n % 2 == 0:
                began = time.monotonic()
                sale = add_sale(pos, n)
                wait(f"sale {sale}", lambda sale=sale, since=since: dev.received(since, {sale}), 300)
                kind = "new sale"
            else:
                customer, contact = known[n]
                began = time.monotonic()
                change_phone(pos, customer, n)
                wait(f"{customer}'s phone", lambda keys={customer, contact}, since=since: dev.received(since, keys), 300)
                kind = "phone change"
            latencies[kind].append(time.monotonic() - began)
            log(f"{kind} {n + 1}/{changes}: {latencies[kind][-1]:.1f} s")
        return latencies
    finally:
        dev.stop()


def table(latencies: dict[str, list[float]]) -> str:
    rows = ["| changes | n | median s | p95 s | worst s |", "|---|---:|---:|---:|---:|"]
    for name, values in [*latencies.items(), ("all", [v for vs in latencies.values() for v in vs])]:
        rows.append(f"| {name} | {len(values)} | {statistics.median(values):.1f} | {percentile(values, 95):.1f} | "
                    f"{max(values):.1f} |")
    return "\n".join(rows)


def write(body: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else ""
    section = f"{HEADING}\n\n{body}\n\n"
    if HEADING in text:
        head, rest = text.split(HEADING, 1)
        tail = rest[rest.index("\n## "):].lstrip("\n") if "\n## " in rest else ""
        text = head + section + tail
    elif NEXT_HEADING in text:
        head, tail = text.split(NEXT_HEADING, 1)
        text = head + section + NEXT_HEADING + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=20, help="changes committed to the POS, one at a time (20)")
    parser.add_argument("--no-write", action="store_true", help="print the table without writing bench/RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as work:
        latencies = measure(args.changes, Path(work))
    body = (f"`python -m bench.latency --changes {args.changes}`, {dt.date.today()}, {machine()}: POS commit to the "
            "sandbox accepting a write that names the change (receipt: the dev sandbox applies it a minute later, as "
            "AIQ does), on `make dev`'s defaults (automation running, the change sensor every 5 s), one change at a "
            "time after the first sync of today ended and was applied.\n\n" + table(latencies))
    print(body)
    if not args.no_write:
        write(body)


if __name__ == "__main__":
    main()
