"""The account-wide rate limiter holds its limits within a process and across real OS processes.

Minute and hour windows are shortened through ``window_seconds`` so no test waits real minutes; the one-second
window is always real, and the sandbox enforces the real per-second limit as a referee.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from aiq_pipelines.aiq.ratelimit import SEND_LOG, STANDARD_WINDOWS, AccountRateLimiter, BudgetShare
from aiq_pipelines_tests.support.ratelimit import (
    PER_MINUTE,
    PER_SECOND,
    SHORT_MINUTE,
    _send_sales,
    assert_a_restamped_send_counts_from_when_it_left,
    most_in_any_window,
)
from aiq_pipelines_tests.support.sandbox import run_sandbox


def test_all_three_windows_hold_in_one_process(tmp_path: Path) -> None:
    windows = (0.3, 1.0, 2.0)
    limiter = AccountRateLimiter(
        f"sqlite:///{tmp_path / 'sync.db'}", "acct", 2, 4, 6, margin_seconds=0.05, window_seconds=windows
    )
    sent, waited = [], []
    with limiter:
        for _ in range(9):
            waited.append(limiter.acquire().waited)
            sent.append(time.time())
    for seconds, limit in zip(windows, (2, 4, 6), strict=True):
        assert most_in_any_window(sent, seconds) <= limit
    assert sent[6] - sent[0] >= 2.0  # the 7th send had to wait for the "hour" window
    assert waited[0] < 0.5 and max(waited) > 0.2


def test_a_long_window_keeps_a_margin_of_at_least_one_percent_of_it(tmp_path: Path) -> None:
    # AIQ stamps arrivals, we stamp sends: a send that reaches AIQ late must not make AIQ count one too many.
    limiter = AccountRateLimiter(
        f"sqlite:///{tmp_path / 'sync.db'}", "acct", 10, 10, 1, margin_seconds=0.0, window_seconds=(0.1, 0.5, 3.0)
    )
    with limiter:
        limiter.acquire()
        limiter.acquire()
    with sa.create_engine(f"sqlite:///{tmp_path / 'sync.db'}").connect() as conn:
        first, second = conn.scalars(sa.select(SEND_LOG.c.sent_at).order_by(SEND_LOG.c.sent_at)).all()
    assert 3.03 <= second - first < 3.5, "the 3 s window's send counted for 3.03 s, not 3 s"


def test_a_restamped_send_counts_from_when_it_left(tmp_path: Path) -> None:
    assert_a_restamped_send_counts_from_when_it_left(f"sqlite:///{tmp_path / 'sync.db'}")


def test_accounts_have_separate_budgets(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    with AccountRateLimiter(url, "a", 1, 10, 10) as a, AccountRateLimiter(url, "b", 1, 10, 10) as b:
        a.acquire()
        assert b.acquire().waited < 0.5  # a's send does not count against b
        assert a.acquire().waited >= 0.9  # but a's second send waits out a's one-second window


def test_a_share_of_aiq_s_limits_stretches_a_window_whose_share_is_under_one_request() -> None:
    windows = list(zip(STANDARD_WINDOWS, (5, 120, 2000), strict=True))
    assert BudgetShare("audit", 0.05).windows(windows) == ((4.0, 1), (60.0, 6), (3600.0, 100))
    assert BudgetShare("audit", 0.5).windows(windows)[0] == (1.0, 2)
    with pytest.raises(ValueError, match="fraction above 0"):
        BudgetShare("audit", 0)


def test_a_shared_limiter_takes_no_more_than_its_share_of_any_window_and_the_rest_goes_on(tmp_path: Path) -> None:
    url, windows, limits = f"sqlite:///{tmp_path / 'sync.db'}", (0.5, 2.0, 4.0), (10, 40, 100)
    share = BudgetShare("audit", 0.05)  # its windows: 1 send a second (stretched from 0.5 s), 2 in 2 s, 5 in 4 s
    pushed = threading.Event()

    def audit() -> None:
        with AccountRateLimiter(url, "acct", *limits, margin_seconds=0.0, window_seconds=windows, share=share) as one:
            while not pushed.is_set():
                one.acquire()

    auditing = threading.Thread(target=audit)
    auditing.start()
    with AccountRateLimiter(url, "acct", *limits, margin_seconds=0.0, window_seconds=windows) as push_limiter:
        for _ in range(80):  # two of the 2 s windows' worth, while the audit asks for all it can get
            push_limiter.acquire()
    pushed.set()
    auditing.join(timeout=30)
    with sa.create_engine(url).connect() as conn:
        sends = conn.execute(sa.select(SEND_LOG.c.sent_at, SEND_LOG.c.purpose).order_by(SEND_LOG.c.sent_at)).all()
    audit = [at for at, purpose in sends if purpose == "audit"]
    push = [at for at, purpose in sends if purpose == ""]

    for seconds, quota in ((1.0, 1), (2.0, 2), (4.0, 5)):
        assert most_in_any_window(audit, seconds) <= quota, seconds
    for seconds, limit in zip(windows, limits, strict=True):
        assert most_in_any_window([at for at, _ in sends], seconds) <= limit, "the audit counts against the account"
    assert len(audit) >= 3, "the share was used"
    assert most_in_any_window([at for at in push if at < push[0] + 2.0], 2.0) >= 40 - 2, (
        "in its first 2 s the push lost at most the audit's 2 sends")


def test_the_database_folder_is_created(tmp_path: Path) -> None:
    with AccountRateLimiter(f"sqlite:///{tmp_path / 'new' / 'sync.db'}", "a", 1, 1, 1) as limiter:
        limiter.acquire()
    assert (tmp_path / "new" / "sync.db").is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"database_url": "mysql://host/db"}, "SYNC_DATABASE_URL"),
        ({"per_second": 0}, "AIQ_REQUESTS_PER_SECOND"),
        ({"window_seconds": (1.0, 60.0)}, "window_seconds"),
    ],
)
def test_bad_configuration_fails_clearly(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    options: dict[str, object] = dict(
        database_url=f"sqlite:///{tmp_path / 'sync.db'}", account="a", per_second=1, per_minute=1, per_hour=1
    )
    options.update(kwargs)
    with pytest.raises(ValueError, match=message):
        AccountRateLimiter(**options)  # type: ignore[arg-type]


def test_two_processes_share_the_account_budget(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'sync.db'}"
    # The sandbox referees the real one-second limit; the (shortened) minute is checked from its arrival log.
    with run_sandbox(tmp_path / "sandbox.db", per_second=PER_SECOND, per_minute=10_000, per_hour=100_000) as sandbox:
        spawn = multiprocessing.get_context("spawn")
        start = spawn.Event()
        workers = [
            spawn.Process(
                target=_send_sales,
                args=(sandbox.base_url, sandbox.api_key, sandbox.uid, database_url, worker, 15, start),
            )
            for worker in (1, 2)
        ]
        for process in workers:
            process.start()
        start.set()
        for process in workers:
            process.join(timeout=120)
        assert [p.exitcode for p in workers] == [0, 0]
        log = [r for r in sandbox.requests() if r["path"].startswith("/api/")]
    assert len(log) == 30 and all(r["status"] == 200 and r["fault"] is None for r in log)
    assert {key.split("-")[0] for r in log for key in r["keys"]} == {"W1", "W2"}
    arrivals = [r["received_at"] for r in log]
    assert most_in_any_window(arrivals, 1.0) <= PER_SECOND
    assert most_in_any_window(arrivals, SHORT_MINUTE) <= PER_MINUTE
    assert max(arrivals) - min(arrivals) >= SHORT_MINUTE  # the "minute" limit really held some sends back
