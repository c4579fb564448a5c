"""Shared pieces of the reliability suite.

A realistic week of POS data (``stock_week``); the daily sync run in this process (``sync_once``) or in a process of
its own (``start_sync_process``, which the crash and concurrency tests need); and the proofs the tests end with: AIQ
(the sandbox) holds exactly the POS state (``assert_aiq_holds``) and the ledger claims nothing that AIQ does not hold
(``assert_ledger_true``). Expected AIQ state is computed from the POS with plain SQL, never with the mapping code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from aiq_pipelines.defs.resources import AiqResource, PosDatabase, SyncDatabase
from aiq_pipelines.settings import load_settings
from aiq_pipelines.sync.schema import aiq_ledger
from aiq_pipelines_tests.support.days import DENVER, local
from aiq_pipelines_tests.support.pos_factory import PosFactory
from aiq_pipelines_tests.support.runs import materialize

REPO = Path(__file__).resolve().parents[2]
API_KEY = "reliability-key-" + secrets.token_hex(12)
"""The key every sandbox of this suite expects; the pipeline reads it from AIQ_API_KEY, as in production."""
WEEK = ("2026-06-01", "2026-06-07")
GENEROUS_CLIENT_LIMITS = {"requests_per_second": 1000, "requests_per_minute": 60_000, "requests_per_hour": 1_000_000}
PHONE_FORMATS = ("({a}) {b}-{c}", "{a}.{b}.{c}", "+1 {a} {b} {c}", "{a}{b}{c}")
FIRST_NAMES = ("Zoë", "José", "Ada", "Grace", "Mateo", "Siobhán", "Priya", "Björn")
LAST_NAMES = ("Nguyễn", "O'Brien", "Lovelace", "Hopper", "Müller", "Pérez", "Patel", "Kim")
SALE_FIELDS = ("pos_user", "transaction_date", "transaction_total", "location", "lines")
MEMBER_FIELDS = ("first_name", "last_name", "phone_number", "email", "loyalty")


@dataclass(frozen=True)
class Shopper:
    """A POS customer of the test week, with the phone and email as typed and as AIQ must hold them."""

    customer_id: str
    first_name: str
    last_name: str
    phone_as_typed: str
    phone: str
    email_as_typed: str
    email: str
    loyalty: bool


def stock_week(pos: PosFactory, *, sales_per_day: int = 10) -> list[Shopper]:
    """Sales on June 1-7, 2026 (local): most by a shopper created that morning, every fifth a walk-in, a return a day."""
    shoppers = []
    for day in range(1, 8):
        for n in range(sales_per_day):
            sale_id, at = f"S{day}-{n:02d}", local(2026, 6, day, 9 + n % 12, n)
            if n % 5 == 4:
                pos.add_sale(sale_id, at, [("P2", "2", "18.00")])
                continue
            area, exchange, line = "720", f"48{day}", f"{n:04d}"
            shopper = Shopper(
                customer_id=f"K{day}{n:02d}",
                first_name=FIRST_NAMES[(day + n) % len(FIRST_NAMES)],
                last_name=LAST_NAMES[n % len(LAST_NAMES)],
                phone_as_typed=PHONE_FORMATS[n % len(PHONE_FORMATS)].format(a=area, b=exchange, c=line),
                phone=area + exchange + line,
                email_as_typed=f"Shopper.{day}{n:02d}@Example.COM",
                email=f"shopper.{day}{n:02d}@example.com",
                loyalty=n % 3 == 0,
            )
            shoppers.append(shopper)
            pos.add_customer(shopper.customer_id, first_name=shopper.first_name, last_name=shopper.last_name,
                             phone=shopper.phone_as_typed, email=shopper.email_as_typed,
                             is_loyalty_member=shopper.loyalty, modified=local(2026, 6, day, 7))
            lines = [("P1", "1", "45.00")] if n % 2 == 0 else [("P2", "2", "18.00"), ("P1", "1", "45.00")]
            pos.add_sale(sale_id, at, lines, customer_id=shopper.customer_id)
        pos.add_sale(f"R{day}", local(2026, 6, day, 21), [("P1", "-1", "45.00")], customer_id=f"K{day}00",
                     is_return=True, return_of_transaction_id=f"S{day}-00")
    return shoppers


def local_bounds(first: str, last: str) -> tuple[str, str]:
    """The UTC bounds of local days [first, last] as the POS stores timestamps."""
    start = dt.datetime.combine(dt.date.fromisoformat(first), dt.time(), DENVER).astimezone(dt.UTC)
    end = dt.datetime.combine(dt.date.fromisoformat(last) + dt.timedelta(days=1), dt.time(), DENVER).astimezone(dt.UTC)
    return f"{start:%Y-%m-%d %H:%M:%S}", f"{end:%Y-%m-%d %H:%M:%S}"


def expected_sales(pos_url: str, first: str = WEEK[0], last: str = WEEK[1], *, ids: Collection[str] | None = None) -> dict:
    """The sales AIQ must hold for local days [first, last] (only ``ids`` when given): every sale that is not void,
    as plain SQL reads it."""
    start, end = local_bounds(first, last)
    with sa.create_engine(pos_url).connect() as conn:
        sales = conn.execute(sa.text(
            "SELECT t.transaction_id, t.customer_id, t.transaction_at, t.total, l.name FROM transactions t "
            "JOIN locations l ON l.location_id = t.location_id "
            "WHERE t.transaction_at >= :s AND t.transaction_at < :e AND NOT t.is_void"), {"s": start, "e": end}).all()
        lines = conn.execute(sa.text(
            "SELECT i.transaction_id, p.sku, i.unit_price, i.quantity FROM transaction_items i "
            "JOIN products p ON p.product_id = i.product_id ORDER BY i.transaction_id, i.line_number")).all()
    wanted = {sale_id for sale_id, *_ in sales if ids is None or sale_id in ids}
    by_sale: dict[str, list] = {}
    for sale_id, sku, price, quantity in lines:
        if sale_id in wanted:
            by_sale.setdefault(sale_id, []).append((sku, float(price), float(quantity)))
    return {
        sale_id: {"pos_user": customer, "location": location, "transaction_total": float(total),
                  "transaction_date": dt.datetime.fromisoformat(at).strftime("%Y-%m-%d %H:%M:%S +0000"),
                  "lines": by_sale[sale_id]}
        for sale_id, customer, at, total, location in sales
        if sale_id in wanted
    }


def expected_members(shoppers: Sequence[Shopper]) -> dict:
    return {
        s.customer_id: {"first_name": s.first_name, "last_name": s.last_name, "phone_number": s.phone,
                        "email": s.email, "loyalty": s.loyalty}
        for s in shoppers
    }


def held_sales(sandbox) -> dict:
    """The sales the sandbox holds, in the shape of ``expected_sales``."""
    return {
        sale["pos_id"]: {
            **{name: sale.get(name) for name in SALE_FIELDS if name != "lines"},
            "lines": [(line["sku"], line["price"], line["quantity"]) for line in sale["visit_details_attributes"]],
        }
        for sale in sandbox.state()["sales"]
    }


def held_members(sandbox) -> dict:
    return {m["pos_user"]: {name: m.get(name) for name in MEMBER_FIELDS} for m in sandbox.state()["members"]}


def assert_aiq_holds(sandbox, sales: dict, members: dict) -> None:
    """The sandbox holds exactly these sales and members: none missing, none extra, every field as expected."""
    held = held_sales(sandbox)
    assert sorted(held) == sorted(sales), "AIQ's sales differ from the POS's"
    assert {k: v for k, v in held.items() if v != sales[k]} == {}, "sales whose content differs from the POS"
    people = held_members(sandbox)
    assert sorted(people) == sorted(members), "AIQ's personas differ from the POS's"
    assert {k: v for k, v in people.items() if v != members[k]} == {}, "personas whose content differs from the POS"
    assert all(s["persona_known_at_arrival"] for s in sandbox.state()["sales"] if "pos_user" in s), "sale before persona"


def ledger_hashes(sync_url: str, account: str) -> dict[tuple[str, str], str]:
    """(entity, key) -> the payload hash the ledger says AIQ acknowledged."""
    query = sa.select(aiq_ledger.c.entity, aiq_ledger.c.record_key, aiq_ledger.c.payload_hash).where(
        aiq_ledger.c.account == account)
    with sa.create_engine(sync_url).connect() as conn:
        return {(entity, key): digest for entity, key, digest in conn.execute(query)}


def _wire_hash(body: dict[str, Any]) -> str:
    """The digest of ``body`` encoded as the client sends it: compact UTF-8 JSON, fields in the order received."""
    return hashlib.sha256(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def aiq_hashes(sandbox) -> dict[tuple[str, str], str]:
    """(entity, key) -> hash of the payload the sandbox holds, hashed as the ledger hashes what it sent."""
    state = sandbox.state()
    sales = {("transaction", s["pos_id"]): _wire_hash({k: v for k, v in s.items()
                                                       if k not in ("persona_known_at_arrival", "received_at")})
             for s in state["sales"]}
    members = {("persona", m["pos_user"]): _wire_hash({k: v for k, v in m.items()
                                                       if k not in ("contactID", "srcID", "updated_at")})
               for m in state["members"]}
    return sales | members


def assert_ledger_true(sandbox, sync_url: str, account: str, *, complete: bool) -> None:
    """Every ledger row names a payload AIQ holds exactly; with ``complete``, AIQ holds nothing the ledger lacks."""
    ledger, held = ledger_hashes(sync_url, account), aiq_hashes(sandbox)
    untrue = sorted(key for key, digest in ledger.items() if held.get(key) != digest)
    assert untrue == [], f"the ledger claims AIQ acknowledged payloads it does not hold: {untrue[:10]}"
    if complete:
        assert sorted(held) == sorted(ledger), "AIQ holds records the ledger does not know"


def sends_per_key(sandbox, call: str) -> Counter[str]:
    """How many accepted (HTTP 200) requests to ``call`` carried each record key."""
    return Counter(key for r in sandbox.requests() if f"/{call}/" in r["path"] and r["status"] == 200 for key in r["keys"])


def aiq_resource(base_url: str, uid: str, sync_url: str, **overrides: Any) -> AiqResource:
    """The AIQ resource as production wires it (the key through ``dg.EnvVar``), with small batches and quick limits."""
    options: dict[str, Any] = dict(
        api_key=dg.EnvVar("AIQ_API_KEY"), base_url=base_url, uid=uid, rate_limit_database_url=sync_url,
        timeout_seconds=5, max_attempts=4, max_retry_seconds=30, batch_size_sales=10, batch_size_members=10,
        **GENEROUS_CLIENT_LIMITS,
    )
    return AiqResource.from_settings(load_settings(), **{**options, **overrides})


def run_sync(
    instance: dg.DagsterInstance, pos_url: str, sync_url: str, aiq: AiqResource, first: str = WEEK[0],
    last: str = WEEK[1], assets: Sequence[str] | None = None, queries_file: Path | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize the daily assets (or the ``assets`` named) for local days [first, last] in one run, as a single-run
    backfill does."""
    resources = {"pos": PosDatabase.from_settings(load_settings(), url=pos_url,
                                                   queries_file=str(queries_file) if queries_file else None),
                 "sync": SyncDatabase.from_settings(load_settings(), url=sync_url), "aiq": aiq}
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    return materialize(assets, resources=resources, instance=instance, tags=tags)


def sync_once(pos_url: str, sync_url: str, aiq: AiqResource, first: str = WEEK[0], last: str = WEEK[1], *,
              assets: Sequence[str] | None = None, home: Path | None = None,
              queries_file: Path | None = None) -> dg.ExecuteInProcessResult:
    """``run_sync`` on a Dagster instance of its own (kept in ``home`` when given, else thrown away)."""
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test(temp_dir=str(home) if home else None) as instance:
        return run_sync(instance, pos_url, sync_url, aiq, first, last, assets, queries_file)


def start_sync_process(
    home: Path, pos_url: str, sync_url: str, sandbox, first: str = WEEK[0], last: str = WEEK[1], *,
    go: Path | None = None, **aiq: Any,
) -> subprocess.Popen[str]:
    """The daily sync in a process group of its own (``sync_process.py``); its stderr goes to ``home``/stderr.log.

    With ``go``, the process writes ``home``/ready once loaded and waits for the file ``go`` before its run starts.
    """
    home.mkdir(parents=True)
    job = {"home": str(home), "pos_url": pos_url, "sync_url": sync_url, "base_url": sandbox.base_url,
           "uid": sandbox.uid, "first": first, "last": last, "go": str(go) if go else None, "aiq": aiq}
    env = {**os.environ, "AIQ_API_KEY": API_KEY, "PYTHONPATH": str(REPO)}
    with (home / "stderr.log").open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "aiq_pipelines_tests.support.sync_process", json.dumps(job)],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=REPO, start_new_session=True,
        )


def process_summary(process: subprocess.Popen[str], timeout: float) -> dict:
    """Wait for a sync process and return the summary it printed last."""
    out, _ = process.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert process.returncode == 0 and lines, f"the sync process failed (exit {process.returncode}):\n{out[-2000:]}"
    return json.loads(lines[-1])
