"""The extract's staging, shared by its SQLite and PostgreSQL tests: a day's window, what was staged, and the bodies of
the tests both backends run (``assert_*``)."""

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from aiq_pipelines.db import statements
from aiq_pipelines.db.statements import execute_with_lists, upsert
from aiq_pipelines.defs.partitions import business_days
from aiq_pipelines.pos.source import PosSource
from aiq_pipelines.settings import load_settings
from aiq_pipelines.sync import push
from aiq_pipelines.sync.schema import quarantine, staged_transactions
from aiq_pipelines.sync.store import SyncStore
from aiq_pipelines_tests.support.days import local
from aiq_pipelines_tests.support.pos_factory import PosFactory


def window(day: str) -> tuple[dt.datetime, dt.datetime]:
    """The time window Dagster hands the asset for a partition key."""
    partitions = business_days(load_settings(pos_timezone="America/Denver", pos_start_date="2025-01-01"))
    w = partitions.time_window_for_partition_key(day)
    return w.start, w.end


def staged_ids(store: SyncStore, day: str | None = None) -> list[str]:
    query = sa.select(staged_transactions.c.transaction_id)
    if day:
        query = query.where(staged_transactions.c.business_date == dt.date.fromisoformat(day))
    with store.engine.connect() as conn:
        return sorted(conn.scalars(query))


def assert_an_older_staging_layout_is_rebuilt(pos: PosFactory, sync_url: str) -> None:
    """Shared with the PostgreSQL tests: the DDL below is valid on both."""
    pos.add_sale("in-day", local(2026, 6, 10, 12))
    with sa.create_engine(sync_url).begin() as conn:  # staged_transactions as it was before payloads were staged
        conn.exec_driver_sql("CREATE TABLE staged_transactions (transaction_id VARCHAR PRIMARY KEY, business_date DATE,"
                             " record TEXT, content_hash VARCHAR(64), run_id VARCHAR, staged_at TIMESTAMP)")
        conn.exec_driver_sql(
            "INSERT INTO staged_transactions VALUES ('old', '2026-06-01', '{}', 'h', 'r0', '2026-06-01')")
        conn.exec_driver_sql("CREATE TABLE other_table (k VARCHAR)")  # such as the ledger: left alone
        conn.exec_driver_sql("INSERT INTO other_table VALUES ('kept')")

    store = SyncStore(sync_url, "America/Denver")
    store.stage_transactions(PosSource(pos.url), *window("2026-06-10"), run_id="r1")

    assert staged_ids(store) == ["in-day"], "the old rows went with the old layout; the extract restaged its days"
    with store.engine.connect() as conn:
        payload = conn.scalar(sa.select(staged_transactions.c.payload))
        assert conn.exec_driver_sql("SELECT k FROM other_table").scalar() == "kept"
    assert json.loads(payload)["pos_id"] == "in-day"


def assert_a_staging_table_without_an_index_is_rebuilt(sync_url: str) -> None:
    """Shared with the PostgreSQL tests: a query that relies on an index must not run without it. The table is
    rebuilt (its previous version's index goes with it), not merely given the missing index as a kept table is."""
    store = SyncStore(sync_url, "America/Denver")
    with store.engine.begin() as conn:  # the index as the previous version named it
        conn.exec_driver_sql("DROP INDEX ix_staged_transactions_day_key")
        conn.exec_driver_sql("CREATE INDEX ix_staged_transactions_day_key_customer ON staged_transactions "
                             "(business_date, transaction_id, customer_id, is_void)")

    SyncStore(sync_url, "America/Denver")

    indexes = {index["name"] for index in sa.inspect(store.engine).get_indexes("staged_transactions")}
    assert "ix_staged_transactions_day_key" in indexes
    assert "ix_staged_transactions_day_key_customer" not in indexes


def assert_a_kept_table_gets_the_indexes_it_lacks(sync_url: str) -> None:
    """Shared with the PostgreSQL tests: the quarantine is not rebuilt on upgrade, so its new index is added to it."""
    store = SyncStore(sync_url, "America/Denver")
    with store.engine.begin() as conn:
        conn.execute(sa.insert(quarantine).values(entity="transaction", record_key="T1", stage="aiq", reason="why",
                                                  run_id="r0", quarantined_at=dt.datetime(2026, 6, 1)))
        conn.exec_driver_sql("DROP INDEX quarantine_key")  # the quarantine as an older version left it

    SyncStore(sync_url, "America/Denver")

    indexes = {index["name"] for index in sa.inspect(store.engine).get_indexes("quarantine")}
    assert {"quarantine_key", "quarantine_lookup"} <= indexes
    with store.engine.connect() as conn:
        assert conn.scalars(sa.select(quarantine.c.record_key)).all() == ["T1"], "its rows are kept"


def assert_statements_with_key_lists_run_as_sqlalchemy_runs_them(sync_url: str) -> None:
    """Shared with the PostgreSQL tests: ``execute_with_lists`` returns and changes what ``conn.execute`` would, for
    every length of key list (none included), and renders each length once."""
    store = SyncStore(sync_url, "America/Denver")
    rows = [{"entity": "transaction", "record_key": f"K{n}", "stage": stage, "reason": f"why {n}",
             "source_hash": f"h{n}", "run_id": "r0", "quarantined_at": dt.datetime(2026, 6, 1), "account": account}
            for n in range(10) for stage, account in (("aiq", "mine"), ("payload", "mine"), ("extract", ""))]
    # Another account's rows: neither read nor cleared by this account's statements.
    rows += [{**row, "account": "other"} for row in rows if row["stage"] != "extract" and row["record_key"] == "K1"]
    refused = push._REFUSED
    with store.engine.begin() as conn:
        conn.execute(sa.insert(quarantine), rows)
        for keys in ([], ["K1"], ["K2", "K3", "nobody"], [f"K{n}" for n in range(10)], ["K4", "K5", "K6"]):
            parameters = {"entity": "transaction", "account": "mine", "keys": keys}
            expected = sorted(tuple(row) for row in conn.execute(refused, parameters))
            assert sorted(tuple(row) for row in execute_with_lists(conn, refused, parameters)) == expected, keys
            assert len(expected) == len({k for k in keys if k != "nobody"})
        rendered = statements._rendered.cache_info().currsize
        execute_with_lists(conn, refused, {"entity": "transaction", "account": "mine", "keys": ["K7", "K8", "K9"]})
        assert statements._rendered.cache_info().currsize == rendered, "a length seen before is not rendered again"

        execute_with_lists(conn, push._CLEAR_PUSH_QUARANTINE,
                           {"entity": "transaction", "account": "mine", "keys": ["K1", "K2"]})
        left = conn.execute(sa.select(quarantine.c.record_key, quarantine.c.stage, quarantine.c.account)
                            .where(quarantine.c.record_key.in_(["K1", "K2", "K3"]))).all()
    assert sorted(left) == [("K1", "aiq", "other"), ("K1", "extract", ""), ("K1", "payload", "other"),
                            ("K2", "extract", ""), ("K3", "aiq", "mine"), ("K3", "extract", ""), ("K3", "payload", "mine")]


def assert_upsert_stores_every_type_and_replaces_by_key(sync_url: str) -> None:
    """Shared with the PostgreSQL tests: the upsert hands the driver rows converted as SQLAlchemy would (dates,
    timestamps, booleans, bytes, NULLs), inserts new keys and replaces existing ones, and names a row it cannot bind."""
    store = SyncStore(sync_url, "America/Denver")

    def row(key: str, day: int, void: bool, payload: bytes | None) -> dict:
        return {"transaction_id": key, "business_date": dt.date(2026, 6, day),
                "transaction_at": dt.datetime(2026, 6, day, 14, 0, 5, 120000), "customer_id": None if void else "C1",
                "is_void": void, "last_modified_at": dt.datetime(2026, 6, day, 14, 0, 18), "record": "{}",
                "content_hash": "c" * 64, "payload": payload, "payload_hash": None if payload is None else "p" * 64,
                "payload_error": "why" if payload is None else None, "run_id": "r1", "staged_at": dt.datetime(2026, 7, 1),
                "location_id": "STORE-01", "location_name": "Muffins Denver", "location_timezone": None,
                "changed_at": None if void else dt.datetime(2026, 7, 1, 0, 0, 1, 5)}

    with store.engine.begin() as conn:
        upsert(conn, staged_transactions, [row("A", 9, False, b'{"pos_id":"A"}'), row("B", 9, False, None)])
        upsert(conn, staged_transactions, [row("B", 10, True, b"\x00\xff"), row("C", 11, False, None)])
    with store.engine.connect() as conn:
        stored = {r["transaction_id"]: dict(r) for r in conn.execute(sa.select(staged_transactions)).mappings()}

    assert sorted(stored) == ["A", "B", "C"]
    for key, want in {"A": row("A", 9, False, b'{"pos_id":"A"}'), "B": row("B", 10, True, b"\x00\xff"),
                      "C": row("C", 11, False, None)}.items():
        got = stored[key]
        got["payload"] = None if got["payload"] is None else bytes(got["payload"])
        assert got == want, key
    with store.engine.connect() as conn:
        day_of_b = conn.scalar(sa.select(sa.func.count()).select_from(staged_transactions).where(
            staged_transactions.c.business_date == dt.date(2026, 6, 10)))
    assert day_of_b == 1, "dates are stored so that SQL compares them as dates"
    with pytest.raises(ValueError, match=r"has no columns \['no_such_column'\]"), store.engine.begin() as conn:
        upsert(conn, staged_transactions, [{**row("D", 9, False, None), "no_such_column": 1}])
