"""After a realistic sync, the API key is nowhere, and phones and emails are only in the sync and sandbox databases.

The sync takes every path that handles secrets or personal data: retries (logged), a record AIQ refuses (its message
quarantined), a changed phone sent through the override call after a ``piis`` search by the old phone (a phone in a
URL), AIQ down (a failure message), and a wrong API key (an auth failure). Then every file of the Dagster instance
(event logs, run storage, compute logs), the sandbox's log, the captured output and log records, and the sync
database's log-like columns are searched.
"""

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from aiq_pipelines.sync.schema import aiq_ledger
from aiq_pipelines_tests.support.days import local
from aiq_pipelines_tests.support.reliability import API_KEY, aiq_resource, stock_week, sync_once
from aiq_pipelines_tests.support.runs import metadata

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


def found(texts: Iterator[tuple[str, str]], needles: list[str]) -> list[tuple[str, str]]:
    """(where, needle) for every needle in a text, emails matched in any case."""
    lowered = [needle.lower() for needle in needles]
    return [(where, needle) for where, text in texts for needle in lowered if needle in text.lower()]


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
