"""After a realistic sync, the API key is nowhere, and phones and emails are only in the sync and sandbox databases;
after every job, no shopper's name, phone, email, address or birthday is anywhere Dagster keeps or posts anything.

The first sync takes every path that handles secrets or personal data: retries (logged), a record AIQ refuses (its
message quarantined), a changed phone sent through the override call after a ``piis`` search by the old phone (a phone
in a URL), AIQ down (a failure message), and a wrong API key (an auth failure). Then every file of the Dagster instance
(event logs, run storage, compute logs), the sandbox's log, the captured output and log records, and the sync
database's log-like columns are searched. The second runs every job, the alerts included, and searches every event
record, the instance's files, the output, the log records and the webhook bodies.
"""

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from aiq_pipelines.defs.aiq_assets import aiq_inventory, aiq_push
from aiq_pipelines.defs.automation import daily_sync, inventory_sync
from aiq_pipelines.defs.dry_run import daily_sync_dry_run
from aiq_pipelines.defs.ops import (
    alert_on_run_failure,
    build_check_alerts,
    build_retry_job,
    refresh_quarantine,
    sync_quarantine,
)
from aiq_pipelines.defs.resources import PosDatabase, SyncDatabase
from aiq_pipelines.settings import load_settings
from aiq_pipelines.sync.schema import aiq_ledger
from aiq_pipelines_tests.support.days import local
from aiq_pipelines_tests.support.personal import found, personal_forms
from aiq_pipelines_tests.support.reliability import API_KEY, aiq_resource, stock_week, sync_once
from aiq_pipelines_tests.support.runs import EVERY_ASSET, metadata

WRONG_KEY = "wrong-key-" + API_KEY[::-1]
# 20% 503, 10% 429, 10% dropped connections; the seed never fails a request more than 3 times in a row.
FAULTS = dict(fault_5xx=0.2, fault_429=0.1, fault_drop=0.1, retry_after=0, fault_seed=6040)
# Where personal data is kept by design: the staged persona and its payload, the payload of a customer the sales name,
# the phone and email last sent (for the override call and the piis search), and the POS rows of a quarantined record
# (for the operator).
PERSONAL_COLUMNS = {("staged_personas", "record"), ("staged_personas", "payload"), ("staged_sale_customers", "payload"),
                    ("aiq_ledger", "sent_phone"), ("aiq_ledger", "sent_email"), ("quarantine", "source")}
SQLITE_HEADER = b"SQLite format 3\x00"


def sqlite_values(path: Path, skip: set[tuple[str, str]] = frozenset()) -> Iterator[tuple[str, str]]:
    """(table.column, value as text) for every value of every table of a SQLite file, but the ``skip`` columns."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')
            columns = [c[0] for c in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row, strict=True):
                    if (table, column) not in skip and value is not None:
                        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                        yield f"{path.name}:{table}.{column}", text


def file_texts(root: Path) -> Iterator[tuple[str, str]]:
    """Every file under ``root`` as text (its raw bytes), and every value of the SQLite files among them."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        yield str(path.relative_to(root)), data.decode("utf-8", "replace")
        if data.startswith(SQLITE_HEADER):
            yield from sqlite_values(path)


@pytest.mark.slow
def test_the_api_key_phones_and_emails_leak_nowhere(tmp_path, pos, sync_url, start_sandbox, capfd, caplog,
                                                    monkeypatch):
    caplog.set_level(logging.DEBUG)  # every logger at every level: nothing leaks even while debugging
    shoppers = stock_week(pos, sales_per_day=4)
    new_phone = "(970) 555-0123"
    sandbox = start_sandbox(refuse_keys="S2-01", **FAULTS)
    home = tmp_path / "dagster_home"
    aiq = aiq_resource(sandbox.base_url, sandbox.uid, sync_url, max_attempts=6, timeout_seconds=2)

    first = [metadata(sync_once(pos.url, sync_url, aiq, home=home), asset) for asset in ("aiq_personas", "aiq_sales")]
    assert sum(m["aiq_retries"] for m in first) > 0 and first[1]["quarantined"] == 1, "retries and a refusal happened"
    pos.execute("UPDATE customers SET phone = :phone, last_modified_at = :at WHERE customer_id = 'K100'",
                phone=new_phone, at=local(2026, 6, 7, 12))
    with sa.create_engine(sync_url).begin() as conn:  # a ledger that never learned K100's contactID: AIQ is searched
        conn.execute(aiq_ledger.update().where(aiq_ledger.c.record_key == "K100").values(contact_id=None))
    since = sandbox.requests()[-1]["id"]
    sync_once(pos.url, sync_url, aiq, home=home)
    calls = [r["path"].split("/")[3] for r in sandbox.requests(since_id=since) if r["status"] == 200]
    assert "piis" in calls and "loyaltyContact" in calls, "the search and the override were exercised"
    sandbox.stop()
    down = aiq_resource(sandbox.base_url, sandbox.uid, sync_url, max_attempts=2, max_retry_seconds=2)
    pos.execute("UPDATE customers SET last_name = 'Changed', last_modified_at = :at WHERE customer_id = 'K101'",
                at=local(2026, 6, 7, 13))
    assert not sync_once(pos.url, sync_url, down, home=home).success
    sandbox.restart(**{name: 0 for name in ("fault_5xx", "fault_429", "fault_drop")})
    monkeypatch.setenv("AIQ_OTHER_KEY", WRONG_KEY)
    wrong = aiq_resource(sandbox.base_url, sandbox.uid, sync_url, api_key=dg.EnvVar("AIQ_OTHER_KEY"))
    assert not sync_once(pos.url, sync_url, wrong, home=home).success
    sandbox.stop()

    out, err = capfd.readouterr()
    personal = [new_phone, "9705550123"] + [value for s in shoppers
                                            for value in (s.phone_as_typed, s.phone, s.email_as_typed, s.email)]
    logs = [("stdout", out), ("stderr", err), ("log records", caplog.text),
            ("sandbox log", sandbox.log_path.read_text(errors="replace"))]
    assert "AIQ refused the API key" in err and "AIQ is unreachable" in err, "the failures were logged"
    assert list(home.glob("storage/*/compute_logs/*.err")), "the runs' compute logs are among the files searched"

    # tmp_path holds the Dagster instance, the sync database, the POS, the sandbox's database and its log.
    assert found(iter([*logs, *file_texts(tmp_path)]), [API_KEY, WRONG_KEY]) == [], "the API key leaked"
    assert found(iter([*logs, *file_texts(home)]), personal) == [], "a phone or an email leaked"
    sync_values = sqlite_values(Path(sa.make_url(sync_url).database), PERSONAL_COLUMNS)
    assert found(sync_values, personal) == [], "a phone or an email is in a log-like column of the sync database"


# Shoppers whose every personal value is distinctive, so a hit anywhere is theirs. P1 is modified on the day and
# buys; P2 was modified long ago and buys (a customer the sales name); P3 is refused by AIQ, then retried; P4's
# birthday is impossible (quarantined at extract, its POS row kept in the sync database).
PII_DAY = "2026-06-10"
PII_SHOPPERS = {
    "P1": dict(first_name="Zebulonia", last_name="Quackenbush", phone="(720) 482-9163", email="Zebulonia.Q@Example.COM",
               birthday="1931-02-27", address1="4417 Wandering Heron Lane", address2="Apt 9Quill", city="Quillbrook"),
    "P2": dict(first_name="Thaddeusina", last_name="Vorhees", phone="303.482.7716", email="THADV@Mailbox.Example",
               birthday="1942-11-03", address1="88 Gilded Marmot Court", address2="Unit Z7", city="Fernwhistle"),
    "P3": dict(first_name="Ophelantha", last_name="Brackenridge", phone="+1 970 482 5528", email="oph.b@Example.net",
               birthday="1950-07-19", address1="12 Crooked Aspen Row", address2="Suite 4Lark", city="Pebblemoor"),
    "P4": dict(first_name="Ximenadora", last_name="Pellingham", phone="719-482-3391", email="xime@example.org",
               birthday="1961-02-30", address1="3 Lonesome Vole Path", address2="Box 77Vole", city="Dunmarrow"),
}


def pii_shop(pos) -> None:
    for key, fields in PII_SHOPPERS.items():
        modified = local(2026, 6, 10, 8) if key != "P2" else local(2025, 3, 1, 8)
        pos.add_customer(key, modified=modified, **fields)
        pos.add_sale(f"SALE-{key}", local(2026, 6, 10, 12, int(key[1])), customer_id=key)
    pos.insert("inventory", product_id="P1", location_id="STORE-01", quantity_available=4,
               last_modified_at=local(2026, 6, 10, 7))


def event_texts(instance: dg.DagsterInstance) -> Iterator[tuple[str, str]]:
    """Every event record of every run, serialized whole (messages, metadata, check results, errors)."""
    for run in instance.get_runs():
        for entry in instance.all_logs(run.run_id):
            yield f"run {run.job_name} {run.run_id[:8]}", dg.serialize_value(entry)


@pytest.mark.slow
def test_no_shopper_reaches_dagsters_event_log_run_logs_or_alerts(tmp_path, pos, sync_url, start_sandbox, webhook,
                                                                    capfd, caplog):
    caplog.set_level(logging.DEBUG)
    pii_shop(pos)
    sandbox = start_sandbox(refuse_keys="P3")
    alerts, posts = webhook
    settings = load_settings()
    pipeline = [*EVERY_ASSET, sync_quarantine]
    resources = {"pos": PosDatabase.from_settings(settings, url=pos.url),
                 "sync": SyncDatabase.from_settings(settings, url=sync_url), "alerts": alerts,
                 "aiq": aiq_resource(sandbox.base_url, sandbox.uid, sync_url)}
    check_alerts = build_check_alerts([key for asset in pipeline for key in asset.check_keys],
                                      [*aiq_push.keys, *aiq_inventory.keys])
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:

        def run(job: str, aiq=resources["aiq"], **options) -> dg.ExecuteInProcessResult:
            return location(aiq).resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False,
                                                                         **options)

        def location(aiq=resources["aiq"]) -> dg.Definitions:
            return dg.Definitions(assets=pipeline, jobs=[daily_sync, daily_sync_dry_run, inventory_sync,
                                                         refresh_quarantine], resources={**resources, "aiq": aiq})

        assert run("daily_sync_dry_run", partition_key=PII_DAY).success and sandbox.requests() == []
        assert run("daily_sync", partition_key=PII_DAY).success
        assert {"P1", "P2"} <= {m["pos_user"] for m in sandbox.state()["members"]}, "the shoppers went to AIQ"
        check_alerts(dg.build_sensor_context(instance=instance, resources={"alerts": alerts}))  # P3 refused: warns
        assert run("refresh_quarantine").success
        assert build_retry_job(lambda: location().resolve_job_def("daily_sync")).execute_in_process(
            instance=instance, resources=resources).success
        assert run("inventory_sync").success
        sandbox.stop()  # AIQ down while P1 changed: the run fails and is alerted
        pos.execute("UPDATE customers SET last_name = 'Quackenbush-Hale', last_modified_at = :at WHERE customer_id = 'P1'",
                    at=f"{local(2026, 6, 10, 9):%Y-%m-%d %H:%M:%S}")
        down = aiq_resource(sandbox.base_url, sandbox.uid, sync_url, max_attempts=1)
        failed = run("daily_sync", aiq=down, partition_key=PII_DAY)
        assert not failed.success
        failure = next(e for e in failed.all_events if e.event_type_value == "PIPELINE_FAILURE")
        alert_on_run_failure(dg.build_run_status_sensor_context(
            sensor_name="alert_on_run_failure", dagster_event=failure, dagster_instance=instance,
            dagster_run=instance.get_run_by_id(failed.run_id), resources={"alerts": alerts}).for_run_failure())
        texts = list(event_texts(instance))

    samples = [text for where, text in texts if where.startswith("run daily_sync_dry_run") and '\\"pos_user\\"' in text]
    assert samples, "the dry run showed sample payloads"
    assert sorted(post["text"].split("\n")[0] for post in posts) == [
        "aiq-pipelines: check quarantine_not_growing on aiq_personas failed",  # P3 refused
        "aiq-pipelines: check quarantine_not_growing on aiq_sales failed",  # P3's sale waits for P3
        "aiq-pipelines: run of daily_sync failed"], "failed checks and a failed run were alerted"
    assert list(home.glob("storage/*/compute_logs/*.err")), "the runs' compute logs are among the files searched"
    out, err = capfd.readouterr()
    needles = [form for fields in PII_SHOPPERS.values() for form in personal_forms(fields)] + ["Quackenbush-Hale"]
    everywhere = [*texts, ("stdout", out), ("stderr", err), ("log records", caplog.text),
                  *((f"webhook post {n}", post["text"]) for n, post in enumerate(posts)), *file_texts(home)]
    assert found(iter(everywhere), needles) == [], "personal data reached Dagster's event log, a run log or an alert"
