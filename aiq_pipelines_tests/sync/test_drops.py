"""A drop folder of CSV exports synced like a database: the same AIQ state as the database it was exported from,
corrected re-exports, files still being written, and the bad files a real export brings."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.defs.drops import pos_drop_files, pos_drop_sensor
from aiq_pipelines.defs.resources import DropFolder, PosDatabase, SyncDatabase
from aiq_pipelines.pos.dropfiles import export_tables
from aiq_pipelines.pos.mirror import drop_loads
from aiq_pipelines.settings import SettingsError, load_settings
from aiq_pipelines.sync.schema import quarantine
from aiq_pipelines_tests.support.runs import EVERY_ASSET, aiq_resource, materialize

DAYS = ("2026-03-04", "2026-03-10")  # the demo POS of conftest.py


@pytest.fixture
def folder(tmp_path, demo_pos_url) -> Path:
    """The demo POS exported as a POS would drop it: one CSV file per reference table."""
    export_tables(engine_for(demo_pos_url), tmp_path / "drop")
    return tmp_path / "drop"


def drop_resource(folder: Path, tmp_path: Path, columns_file: Path | None = None) -> DropFolder:
    return DropFolder.from_settings(load_settings(), folder=str(folder), mirror_url=f"sqlite:///{tmp_path / 'mirror.db'}",
                                    columns_file=str(columns_file) if columns_file else None)


def take_in(drop: DropFolder, sync_url: str, files: list[str] | None = None) -> dg.ExecuteInProcessResult:
    """One run of pos_drop_files, as drop_intake runs it."""
    config = {"ops": {"pos_drop_files": {"config": {"files": files or []}}}}
    with dg.instance_for_test() as instance:
        return dg.materialize([pos_drop_files], run_config=config, instance=instance, raise_on_error=False,
                              resources={"drop": drop, "sync": SyncDatabase.from_settings(load_settings(), url=sync_url)})


def files_table(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    [event] = result.get_asset_materialization_events()
    return {r.data["file"]: r.data for r in event.materialization.metadata["files"].value.records}


def readable(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def sync_all(pos_url: str, sync_url: str, sandbox, first: str, last: str,
             run_tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    settings = load_settings()
    resources = {"pos": PosDatabase.from_settings(settings, url=pos_url),
                 "sync": SyncDatabase.from_settings(settings, url=sync_url), "aiq": aiq_resource(sandbox, sync_url)}
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last, **(run_tags or {})}
    with dg.instance_for_test() as instance:
        daily = materialize(None, resources=resources, instance=instance, tags=tags)
        assert daily.success, [e.message for e in daily.all_events if e.is_failure]
        inventory = dg.materialize(EVERY_ASSET, selection=["pos_inventory", "aiq_inventory"], resources=resources,
                                   instance=instance, raise_on_error=False)
        assert inventory.success
    return daily


def aiq_state(sandbox) -> dict[str, dict[str, Any]]:
    """What AIQ holds, without the sandbox's own arrival times and ids."""
    state = sandbox.state()
    drop = {"received_at", "updated_at", "contactID", "srcID", "persona_known_at_arrival"}
    return {
        "sales": {s["pos_id"]: {k: v for k, v in s.items() if k not in drop} for s in state["sales"]},
        "members": {m["pos_user"]: {k: v for k, v in m.items() if k not in drop} for m in state["members"]},
        "inventory": {i["productId"]: i for i in state["inventory"]},
    }


def tick(drop: DropFolder, cursor: str | None) -> dg.SensorResult:
    with dg.DagsterInstance.ephemeral() as instance:
        return pos_drop_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources={"drop": drop}))


def quarantined(sync_url: str) -> list[tuple[str, str, str]]:
    with sa.create_engine(sync_url).connect() as conn:
        query = sa.select(quarantine.c.stage, quarantine.c.record_key, quarantine.c.reason).order_by(quarantine.c.id)
        return [tuple(row) for row in conn.execute(query)]


@pytest.mark.slow
def test_a_drop_folder_gives_aiq_the_same_state_as_the_database_it_was_exported_from(
    folder, tmp_path, demo_pos_url, sandbox_factory
):
    drop = drop_resource(folder, tmp_path)
    intake = take_in(drop, f"sqlite:///{tmp_path / 'sync-drop.db'}")
    assert intake.success and readable(intake).passed
    assert {name: row["status"] for name, row in files_table(intake).items()} == {
        f"{table}.csv": "loaded" for table in
        ("locations", "customers", "products", "inventory", "transactions", "transaction_items")}
    from_drop, from_database = sandbox_factory(), sandbox_factory()

    sync_all(drop.mirror_url, f"sqlite:///{tmp_path / 'sync-drop.db'}", from_drop, *DAYS)
    sync_all(demo_pos_url, f"sqlite:///{tmp_path / 'sync-db.db'}", from_database, *DAYS)

    drop_state, database_state = aiq_state(from_drop), aiq_state(from_database)
    assert len(database_state["sales"]) > 300 and len(database_state["inventory"]) > 50
    for part in ("sales", "members", "inventory"):
        assert drop_state[part] == database_state[part], part


def test_a_corrected_re_export_syncs_exactly_its_day_and_re_sends_only_what_changed(folder, tmp_path, sandbox):
    drop, sync_url = drop_resource(folder, tmp_path), f"sqlite:///{tmp_path / 'sync.db'}"
    take_in(drop, sync_url)
    sync_all(drop.mirror_url, sync_url, sandbox, *DAYS)
    before = len(sandbox.requests())
    first = tick(drop, None)
    assert not first.run_requests, "a first look starts after the loads already made, as a backfill synced them"
    lines = (folder / "transactions.csv").read_text().splitlines()
    header, day = lines[0].split(","), [line for line in lines[1:] if "-20260307-" in line][:2]
    void = header.index("is_void")
    corrected = [",".join([*fields[:void], "1", *fields[void + 1:]]) for fields in (line.split(",") for line in day)]
    (folder / "transactions-corrections.csv").write_text("\n".join([lines[0], *corrected]) + "\n")

    seen = tick(drop, first.cursor)
    assert not seen.run_requests, "a file seen once may still be being written"
    stable = tick(drop, seen.cursor)
    [intake_request] = stable.run_requests
    assert intake_request.job_name == "drop_intake"
    assert intake_request.run_config == {"ops": {"pos_drop_files": {"config": {"files": ["transactions-corrections.csv"]}}}}
    intake = take_in(drop, sync_url, ["transactions-corrections.csv"])
    assert files_table(intake)["transactions-corrections.csv"]["days"] == "2026-03-07"
    synced = tick(drop, stable.cursor)

    assert [(r.job_name, r.partition_key) for r in synced.run_requests] == [("daily_sync", "2026-03-07")]
    assert synced.run_requests[0].tags["drop_files"] == "transactions-corrections.csv"
    resynced = sync_all(drop.mirror_url, sync_url, sandbox, "2026-03-07", "2026-03-07", synced.run_requests[0].tags)
    [extract] = [e.materialization for e in resynced.get_asset_materialization_events()
                 if e.asset_key == dg.AssetKey("pos_transactions")]
    assert extract.metadata["drop_files"].value == "transactions-corrections.csv", "the run lists the files it syncs"
    sent = [key for r in sandbox.requests()[before:] for key in r["keys"]]
    assert sorted(sent) == sorted(line.split(",")[0] for line in day), "only the two corrected sales"
    assert all(sale["transaction_total"] == 0 for sale in sandbox.state()["sales"] if sale["pos_id"] in sent)
    assert not tick(drop, synced.cursor).run_requests, "nothing more to do"


def test_a_file_dropped_in_two_halves_is_read_once_complete(folder, tmp_path):
    drop, sync_url = drop_resource(folder, tmp_path), f"sqlite:///{tmp_path / 'sync.db'}"
    take_in(drop, sync_url)
    cursor = tick(drop, None).cursor
    lines = (folder / "transactions.csv").read_text().splitlines(keepends=True)
    header, body = lines[0], [line.replace("-2026", "-X2026", 1) for line in lines[1:]]
    late = folder / "transactions-late.csv"
    late.write_text(header + "".join(body[: len(body) // 2]))

    first_half = tick(drop, cursor)
    with late.open("a") as handle:
        handle.write("".join(body[len(body) // 2:]))
    os.utime(late, ns=(late.stat().st_atime_ns, late.stat().st_mtime_ns + 1_000_000))
    growing = tick(drop, first_half.cursor)
    complete = tick(drop, growing.cursor)

    assert not first_half.run_requests and not growing.run_requests
    [request] = complete.run_requests
    take_in(drop, sync_url, request.run_config["ops"]["pos_drop_files"]["config"]["files"])
    with sa.create_engine(drop.mirror_url).connect() as conn:
        loads = conn.execute(sa.select(drop_loads.c.name, drop_loads.c.rows).where(drop_loads.c.name == late.name)).all()
    assert loads == [(late.name, len(body))], "one load, of every line"


def test_a_file_seen_before_and_unchanged_starts_nothing(folder, tmp_path):
    drop, sync_url = drop_resource(folder, tmp_path), f"sqlite:///{tmp_path / 'sync.db'}"
    take_in(drop, sync_url)
    synced = tick(drop, tick(drop, None).cursor)
    touched = folder / "customers.csv"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 5_000_000_000))
    shutil.copy(folder / "products.csv", folder / "products-copy.csv")

    looked = tick(drop, tick(drop, synced.cursor).cursor)

    [request] = looked.run_requests
    assert request.run_config["ops"]["pos_drop_files"]["config"]["files"] == ["products-copy.csv"], (
        "the touched file's content is unchanged; the copy is a new file")
    again = take_in(drop, sync_url)
    assert {name for name, row in files_table(again).items() if row["status"] == "loaded"} == {"products-copy.csv"}


def test_bad_files_fail_alone_bad_lines_are_quarantined_and_empty_files_do_nothing(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "locations.csv").write_text("location_id,name,timezone\nSTORE-01,Muffins Denver,America/Denver\n")
    (folder / "customers.csv").write_text("customer_id,first_name,email\nC1,Ada,ada@example.com\n")  # no timestamps
    (folder / "transactions.csv").write_text(
        "transaction_id,location_id,customer_id,transaction_at,subtotal,total,last_modified_at\n"
        "T1,STORE-01,,2026-03-07 18:00:00,10.00,11.50,2026-03-07 18:00:00\n"
        "T2,STORE-01,,2026-03-07 18:05:00,ten,11.50,2026-03-07 18:05:00\n"
        "T3,STORE-01,,2026-02-30 18:10:00,10.00,11.50,2026-03-07 18:10:00\n"
        "T4,STORE-01,,2026-03-08 19:00:00,10.00,11.50,2026-03-08 19:00:00\n"
    )
    (folder / "transaction_items.csv").write_text("")
    with gzip.open(folder / "products.csv.gz", "wt") as handle:
        handle.write("product_id,sku,name,unit_price,created_at,last_modified_at\n"
                     "P1,SKU-1,Blue Dream,45.00,2026-01-01 00:00:00,2026-01-01 00:00:00\n")
    drop, sync_url = drop_resource(folder, tmp_path), f"sqlite:///{tmp_path / 'sync.db'}"

    result = take_in(drop, sync_url)

    table = files_table(result)
    assert (table["customers.csv"]["status"], table["customers.csv"]["rows"]) == ("failed", 0)
    check = readable(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.description == ("customers.csv: missing required columns created_at, last_modified_at (the header "
                                 "has customer_id, first_name, email; map an export's own headers in "
                                 "POS_DROP_COLUMNS_FILE)")
    assert (table["transactions.csv"]["rows"], table["transactions.csv"]["rejected"]) == (2, 2)
    assert table["transactions.csv"]["days"] == "2026-03-07, 2026-03-08"
    assert quarantined(sync_url) == [
        ("intake", "transactions.csv:3", "transactions.csv line 3: subtotal: 'ten' is not a number"),
        ("intake", "transactions.csv:4", "transactions.csv line 4: transaction_at: '2026-02-30 18:10:00' is not a "
                                         "timestamp such as 2026-06-10 14:00:05 (UTC) or 2026-06-10T08:00:05-06:00"),
    ]
    assert (table["transaction_items.csv"]["status"], table["transaction_items.csv"]["rows"],
            table["transaction_items.csv"]["days"]) == ("loaded", 0, "")
    assert (table["products.csv.gz"]["status"], table["products.csv.gz"]["rows"]) == ("loaded", 1)
    with sa.create_engine(drop.mirror_url).connect() as conn:
        assert conn.exec_driver_sql("SELECT transaction_id FROM transactions ORDER BY 1").scalars().all() == ["T1", "T4"]

    (folder / "transactions.csv").write_text(
        "transaction_id,location_id,customer_id,transaction_at,subtotal,total,last_modified_at\n"
        "T2,STORE-01,,2026-03-07 18:05:00,10.00,11.50,2026-03-07 18:05:00\n")
    fixed = take_in(drop, sync_url, ["transactions.csv"])
    assert files_table(fixed)["transactions.csv"]["status"] == "loaded"
    assert quarantined(sync_url) == [], "loading the file again replaces its lines' quarantine"


def test_an_export_with_its_own_headers_loads_through_a_column_map(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "locations.csv").write_text("Store,Store Name,TZ\nSTORE-01,Muffins Denver,America/Phoenix\n")
    columns = tmp_path / "columns.yaml"
    columns.write_text("locations:\n  location_id: Store\n  name: Store Name\n  timezone: TZ\n")

    result = take_in(drop_resource(folder, tmp_path, columns), f"sqlite:///{tmp_path / 'sync.db'}")

    assert files_table(result)["locations.csv"]["rows"] == 1
    with sa.create_engine(f"sqlite:///{tmp_path / 'mirror.db'}").connect() as conn:
        assert conn.exec_driver_sql("SELECT * FROM locations").all() == [("STORE-01", "Muffins Denver", "America/Phoenix")]


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("POS_DROP_DIR", "/nonexistent/drop", "POS_DROP_DIR: expected the path of an existing folder"),
    ("POS_DROP_COLUMNS_FILE", "columns.yaml", "POS_DROP_COLUMNS_FILE: columns.yaml: 'sales' is not a file kind"),
    ("POS_DATABASE_URL", "postgresql://pos/db", "POS_DATABASE_URL: with POS_DROP_DIR it names the SQLite mirror"),
])
def test_drop_settings_are_checked_at_start_up(monkeypatch, tmp_path, variable, value, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "columns.yaml").write_text("sales:\n  transaction_id: Receipt\n")
    monkeypatch.setenv("POS_DROP_DIR", str(tmp_path))
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert message in str(raised.value)


def test_with_a_drop_folder_the_pos_is_its_mirror(monkeypatch, tmp_path):
    monkeypatch.setenv("POS_DROP_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.pos_database_url.endswith("/pos_drop.db") and settings.pos_drop_dir == tmp_path
    assert load_settings(pos_database_url="sqlite:///elsewhere.db").pos_database_url == "sqlite:///elsewhere.db"
    assert not load_settings(pos_drop_dir=None).pos_database_url.endswith("/pos_drop.db"), "a database POS as before"


def test_the_sensor_takes_in_a_first_drop_before_any_mirror_exists(folder, tmp_path):
    drop = drop_resource(folder, tmp_path)
    assert not (tmp_path / "mirror.db").exists()

    first = tick(drop, None)
    second = tick(drop, first.cursor)

    assert not first.run_requests and "6 files in the folder" in first.skip_reason.skip_message
    [request] = second.run_requests
    assert sorted(request.run_config["ops"]["pos_drop_files"]["config"]["files"]) == sorted(
        path.name for path in folder.iterdir())
    assert not tick(drop, second.cursor).run_requests, "asked once, while the intake runs"


def test_a_full_re_export_touches_only_the_days_of_the_rows_that_changed(folder, tmp_path):
    drop, sync_url = drop_resource(folder, tmp_path), f"sqlite:///{tmp_path / 'sync.db'}"
    take_in(drop, sync_url)
    sales = (folder / "transactions.csv").read_text().splitlines(keepends=True)
    header = sales[0].rstrip("\n").split(",")
    void = header.index("is_void")
    changed = {i for i, line in enumerate(sales) if "-20260308-" in line}
    changed = set(sorted(changed)[:3])
    (folder / "transactions-2.csv").write_text("".join(
        ",".join([*f[:void], "1", *f[void + 1:]]) + "\n" if i in changed else line
        for i, line in enumerate(sales) for f in [line.rstrip("\n").split(",")]
    ))
    items = (folder / "transaction_items.csv").read_text().splitlines(keepends=True)
    receipt = next(line.split(",")[0] for line in items[1:] if line.split(",")[1] == "2" and "-20260305-" in line)
    (folder / "transaction_items-2.csv").write_text("".join(
        line for line in items if not (line.startswith(receipt + ",") and line.split(",")[1] == "2")))

    result = take_in(drop, sync_url, ["transactions-2.csv", "transaction_items-2.csv"])

    table = files_table(result)
    assert (table["transactions-2.csv"]["rows"], table["transactions-2.csv"]["changed"]) == (len(sales) - 1, 3)
    assert table["transactions-2.csv"]["days"] == "2026-03-08"
    assert table["transaction_items-2.csv"]["days"] == "2026-03-05", "the receipt that lost a line"
    with sa.create_engine(drop.mirror_url).connect() as conn:
        lines = conn.exec_driver_sql("SELECT line_number FROM transaction_items WHERE transaction_id = ? ORDER BY 1",
                                     (receipt,)).scalars().all()
    assert 2 not in lines and 1 in lines


def test_a_shifted_column_puts_no_email_or_phone_in_the_quarantine(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "transactions.csv").write_text(
        "transaction_id,location_id,customer_id,transaction_at,subtotal,total,last_modified_at\n"
        "T1,STORE-01,,2026-03-07 18:00:00,ada@example.com,303-555-0142,2026-03-07 18:00:00\n")
    sync_url = f"sqlite:///{tmp_path / 'sync.db'}"

    take_in(drop_resource(folder, tmp_path), sync_url)

    [(_, _, reason)] = quarantined(sync_url)
    assert reason == "transactions.csv line 2: subtotal: '[email]' is not a number"


def test_blank_lines_are_skipped_and_counted_and_control_characters_refused_never_loaded(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "products.csv").write_text(
        "product_id,sku,name,unit_price,created_at,last_modified_at\n"
        "P1,SKU-1,Blue Dream,45.00,2026-01-01 00:00:00,2026-01-01 00:00:00\n"
        ",,,,,\n"
        "P2,SKU-2,Sour\x00Diesel,40.00,2026-01-01 00:00:00,2026-01-01 00:00:00\n"
        "P3,SKU-3,\"Two\nlines\tand a tab\",40.00,2026-01-01 00:00:00,2026-01-01 00:00:00\n"
        "P4,SKU-4,Gelato\x1b[0m,40.00,2026-01-01 00:00:00,2026-01-01 00:00:00\n"
        "\n"
        "  ,  ,,,,\n"
    )
    drop, sync_url = drop_resource(folder, tmp_path), f"sqlite:///{tmp_path / 'sync.db'}"

    result = take_in(drop, sync_url)

    row = files_table(result)["products.csv"]
    assert (row["rows"], row["rejected"], row["blank"]) == (2, 2, 3), row
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["lines_blank"].value == 3
    assert quarantined(sync_url) == [
        ("intake", "products.csv:4", "products.csv line 4: name: contains the control character U+0000"),
        ("intake", "products.csv:7", "products.csv line 7: name: contains the control character U+001B"),
    ]
    with sa.create_engine(drop.mirror_url).connect() as conn:
        names = dict(conn.exec_driver_sql("SELECT product_id, name FROM products ORDER BY 1").all())
    assert names == {"P1": "Blue Dream", "P3": "Two\nlines\tand a tab"}, "line breaks and tabs inside a value are text"


def test_a_stock_file_without_a_change_asks_for_no_inventory_sync(folder, tmp_path):
    drop, sync_url = drop_resource(folder, tmp_path), f"sqlite:///{tmp_path / 'sync.db'}"
    take_in(drop, sync_url)
    cursor = tick(drop, None).cursor
    stock = (folder / "inventory.csv").read_text()

    def load(name: str, text: str) -> list[dg.RunRequest]:
        nonlocal cursor
        (folder / name).write_text(text)
        cursor = tick(drop, tick(drop, cursor).cursor).cursor  # seen twice unchanged: complete
        take_in(drop, sync_url, [name])
        synced = tick(drop, cursor)
        cursor = synced.cursor
        return list(synced.run_requests)

    assert load("inventory-same.csv", stock) == [], "the same stock again: nothing to sync"
    lines = stock.splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    quantity = header.index("quantity_available")
    fields = lines[1].rstrip("\n").split(",")
    fields[quantity] = str(int(float(fields[quantity])) + 7)
    [request] = load("inventory-changed.csv", lines[0] + ",".join(fields) + "\n")
    assert request.job_name == "inventory_sync"
