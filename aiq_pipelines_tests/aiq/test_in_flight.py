"""Batches in flight: the bulk senders overlap requests, yet hand out outcomes in input order, each after AIQ's answer.

Proofs come from the sandbox's request log: ``in_flight`` (requests it was handling when one arrived, that one
included) and ``answered_at``.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aiq_pipelines.aiq.errors import AiqAuthError, AiqUnavailableError
from aiq_pipelines.aiq.payloads import Visit
from aiq_pipelines.settings import SettingsError, load_settings
from aiq_pipelines_tests.support.client import GENEROUS, api_requests, open_client, visit
from aiq_pipelines_tests.support.sandbox import Sandbox
from aiq_sandbox.limits import FaultDraw, FaultOdds

BATCH = 10


def first_fault(odds: FaultOdds, seed: int) -> int:
    """The arrival index of the sandbox's first injected fault for ``seed`` (its draw is seeded and per request)."""
    draw = FaultDraw(odds, seed)
    return next(i for i in itertools.count() if draw.next() is not None)


def seed_failing_at(odds: FaultOdds, index: int) -> int:
    return next(seed for seed in itertools.count() if first_fault(odds, seed) == index)


def draws(odds: FaultOdds, seed: int, count: int) -> list[str | None]:
    draw = FaultDraw(odds, seed)
    return [draw.next() for _ in range(count)]


def batch_of(request: dict) -> int:
    return int(request["keys"][0].removeprefix("R-")) // BATCH


def sales(count: int) -> Iterator[tuple[int, Visit]]:
    return ((i, visit(i)) for i in range(count))


@pytest.mark.parametrize("max_in_flight", [1, 3])
def test_requests_overlap_up_to_max_in_flight_and_never_more(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path, max_in_flight: int
) -> None:
    sandbox = sandbox_factory(fault_slow=1.0, slow_seconds=0.5, **GENEROUS)
    with open_client(sandbox, tmp_path, batch_size_sales=BATCH, max_in_flight=max_in_flight) as client:
        outcomes = list(client.send_sales(sales(6 * BATCH)))
    assert [key for o in outcomes for key, _, _ in o.accepted] == list(range(6 * BATCH))
    assert max(r["in_flight"] for r in api_requests(sandbox)) == max_in_flight


def test_outcomes_come_in_input_order_each_after_aiq_answered_it(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # The first request to arrive is held back for a second; the five after it are answered at once.
    odds = FaultOdds(slow=0.5)
    seed = next(s for s in itertools.count() if draws(odds, s, 6) == ["slow", None, None, None, None, None])
    sandbox = sandbox_factory(fault_slow=0.5, fault_seed=seed, slow_seconds=1, **GENEROUS)
    seen: list[tuple[list[int], set[str]]] = []
    with open_client(sandbox, tmp_path, batch_size_sales=BATCH, max_in_flight=3) as client:
        for outcome in client.send_sales(sales(6 * BATCH)):
            stored = {s["pos_id"] for s in sandbox.state()["sales"]}
            seen.append(([key for key, _, _ in outcome.accepted], stored))
    assert [keys for keys, _ in seen] == [list(range(b * BATCH, (b + 1) * BATCH)) for b in range(6)]
    for keys, stored in seen:
        assert {f"R-{key}" for key in keys} <= stored  # handed out only once AIQ held the batch
    log = api_requests(sandbox)
    (slow,) = [r for r in log if r["fault"] == "slow"]
    overtaking = [r for r in log if batch_of(r) > batch_of(slow) and r["answered_at"] < slow["answered_at"]]
    assert overtaking, "a later batch was answered before the held-back one, and still handed out after it"


@pytest.mark.parametrize("failing", [0, 4])
def test_a_failed_batch_yields_exactly_the_batches_before_it_then_raises(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path, failing: int
) -> None:
    odds = FaultOdds(error_5xx=0.2)
    sandbox = sandbox_factory(fault_5xx=0.2, fault_seed=seed_failing_at(odds, failing), **GENEROUS)
    yielded: list[int] = []
    with open_client(sandbox, tmp_path, batch_size_sales=BATCH, max_in_flight=3, max_attempts=1) as client:
        with pytest.raises(AiqUnavailableError):
            for outcome in client.send_sales(sales(12 * BATCH)):
                yielded += [key for key, _, _ in outcome.accepted]
    log = api_requests(sandbox)
    failed_batch = min(batch_of(r) for r in log if r["fault"] == "5xx")
    assert yielded == list(range(failed_batch * BATCH))
    assert len(log) <= failed_batch + 3, "no batch is submitted once one has failed"
    assert all(r["answered_at"] is not None for r in log), "every request in flight was waited for"


def test_an_auth_error_in_flight_stops_the_stream(sandbox: Sandbox, tmp_path: Path) -> None:
    wrong = Sandbox(sandbox.base_url, sandbox.api_key + "-wrong", sandbox.uid, sandbox.db_path, sandbox.log_path)
    with open_client(wrong, tmp_path, batch_size_sales=BATCH, max_in_flight=3) as client:
        stream = client.send_sales(sales(10 * BATCH))
        with pytest.raises(AiqAuthError):
            next(stream)
    assert len(api_requests(sandbox)) <= 3


def test_stopping_early_waits_for_the_batches_in_flight(sandbox_factory: Callable[..., Sandbox], tmp_path: Path) -> None:
    sandbox = sandbox_factory(fault_slow=1.0, slow_seconds=0.5, **GENEROUS)
    with open_client(sandbox, tmp_path, batch_size_sales=BATCH, max_in_flight=3) as client:
        stream = client.send_sales(sales(10 * BATCH))
        next(stream)
        stream.close()
        sent = len(api_requests(sandbox))
        assert 1 < sent <= 4
        assert all(r["answered_at"] is not None for r in api_requests(sandbox))


@pytest.mark.parametrize("value", ["0", "17", "many"])
def test_a_bad_max_in_flight_setting_names_itself(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AIQ_MAX_IN_FLIGHT", value)
    with pytest.raises(SettingsError, match="AIQ_MAX_IN_FLIGHT: "):
        load_settings()


def test_max_in_flight_defaults_to_a_few_batches() -> None:
    assert load_settings().aiq_max_in_flight == 3


def test_a_client_gone_mid_upload_is_logged_as_ended_and_nothing_is_applied(sandbox: Sandbox) -> None:
    host, port = sandbox.base_url.removeprefix("http://").split(":")
    head = (f"POST /api/v1.1/createUpdateSales/{sandbox.uid} HTTP/1.1\r\nhost: {host}\r\nx-apikey: {sandbox.api_key}\r\n"
            "content-type: application/json\r\ncontent-length: 1000\r\n\r\n[")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(head.encode())
        deadline = time.monotonic() + 10
        while not api_requests(sandbox):
            assert time.monotonic() < deadline, "the request never arrived"
            time.sleep(0.02)
    while api_requests(sandbox)[0]["status"] is None:
        assert time.monotonic() < deadline + 10, "the request stayed in progress after its client left"
        time.sleep(0.02)
    (logged,) = api_requests(sandbox)
    assert (logged["status"], logged["fault"]) == (499, "client_gone")
    assert sandbox.state()["sales"] == []
