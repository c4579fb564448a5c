"""The AIQ sandbox's rate limits (sliding windows counted from arrival) and injected faults."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from aiq_pipelines_tests.support.sandbox import GENEROUS_LIMITS, HTTP, Sandbox
from aiq_pipelines_tests.support.sandbox_api import item, member, messages, ok_data, piis, post, url, visit
from aiq_sandbox.limits import RateLimiter

# -- rate limits ---------------------------------------------------------------------------------------------------


def test_over_the_second_limit_is_429_with_retry_after(sandbox_factory) -> None:
    running = sandbox_factory(per_second=2, per_minute=1000, per_hour=10000)
    statuses = [piis(running, search="x") for _ in range(3)]
    first_accepted = running.requests()[0]["received_at"]

    assert [r.status_code for r in statuses[:2]] == [200, 200]
    throttled = statuses[2]
    assert throttled.status_code == 429 and "rate limit" in messages(throttled)[0]
    assert throttled.headers["retry-after"] == "1"

    # Requests refused by the limiter do not count: hammering while throttled still gets through once the
    # first two accepted requests leave the one-second window.
    deadline = time.monotonic() + 10
    while (response := piis(running, search="x")).status_code == 429:
        assert time.monotonic() < deadline, "the limiter never let a request through"
    log = running.requests()
    assert response.status_code == 200
    assert log[-1]["received_at"] - first_accepted >= 0.9  # the window is one second, give or take clock reads
    assert {r["fault"] for r in log[2:-1]} == {"rate_limited"} and log[-1]["fault"] is None


def test_a_request_counts_against_the_limits_from_its_arrival(sandbox_factory) -> None:
    # A gateway counts a request when it arrives; a slow upload must not move it later in the window.
    running = sandbox_factory(per_second=1, per_minute=1000, per_hour=10000)
    body = json.dumps({"visit": visit("slow-upload")}).encode()
    uploaded = threading.Event()

    def upload() -> Iterator[bytes]:
        yield body[:10]
        uploaded.wait(10)
        yield body[10:]

    answers: list[httpx.Response] = []
    headers = {**running.headers, "content-type": "application/json"}
    sender = threading.Thread(
        target=lambda: answers.append(HTTP.post(url(running, "createUpdateSale"), content=upload(), headers=headers))
    )
    sender.start()
    deadline = time.monotonic() + 10
    while not running.requests():
        assert time.monotonic() < deadline, "the slow upload never arrived"
    time.sleep(1.2)  # the upload outlasts the one-second window: the subject of the test, not a synchronisation
    uploaded.set()
    sender.join()
    ok_data(answers[0])
    # Counted when its body completed, the upload would still fill the window and this request would be refused.
    ok_data(post(running, "createUpdateSale", {"visit": visit("next")}))


def test_an_arrival_before_the_last_admitted_one_counts_as_at_it() -> None:
    # Bodies finish arriving out of order; the windows must still see the requests in order.
    limiter = RateLimiter(((1, 2),))
    assert limiter.admit(100.0) is None
    assert limiter.admit(99.5) is None  # its body finished after the one that arrived at 100.0
    assert limiter.admit(100.9) == 1, "both earlier requests are inside the window that ends at 100.9"
    assert limiter.admit(101.01) is None


def test_over_the_minute_limit_retry_after_counts_down_the_minute(sandbox_factory) -> None:
    running = sandbox_factory(per_second=100, per_minute=2, per_hour=10000)
    statuses = [post(running, "createUpdateInventory", [item(f"p-{n}")]) for n in range(3)]

    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert 50 <= int(statuses[2].headers["retry-after"]) <= 60
    assert running.state()["counts"]["inventory"] == 2


def test_auth_failures_do_not_use_the_rate_budget(sandbox_factory) -> None:
    running = sandbox_factory(per_second=100, per_minute=2, per_hour=10000)
    for _ in range(3):
        assert HTTP.get(url(running, "piis"), params={"search": "x"}).status_code == 403
    assert [piis(running, search="x").status_code for _ in range(3)] == [200, 200, 429]


# -- faults --------------------------------------------------------------------------------------------------------


def test_injected_5xx_is_503_and_not_applied(sandbox_factory) -> None:
    running = sandbox_factory(fault_5xx=1.0)
    response = post(running, "createUpdateMember", {"member": member()})

    assert response.status_code == 503 and "injected" in messages(response)[0]
    assert running.state()["counts"]["members"] == 0
    assert running.requests()[-1]["fault"] == "5xx"


def test_injected_429_carries_the_configured_retry_after_and_is_not_applied(sandbox_factory) -> None:
    running = sandbox_factory(fault_429=1.0, retry_after=7)
    response = post(running, "createUpdateSale", {"visit": visit()})

    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert running.state()["counts"]["sales"] == 0
    assert running.requests()[-1]["fault"] == "429"


def test_a_slow_response_is_applied_then_delayed(sandbox_factory) -> None:
    running = sandbox_factory(fault_slow=1.0, slow_seconds=1)
    started = time.monotonic()
    data = ok_data(post(running, "createUpdateMember", {"member": member()}))

    assert time.monotonic() - started >= 1.0
    assert data["contactID"] == running.state()["members"][0]["contactID"]
    assert running.requests()[-1]["fault"] == "slow"


def test_a_slow_response_is_applied_before_the_client_gives_up(sandbox_factory) -> None:
    running = sandbox_factory(fault_slow=1.0, slow_seconds=5)
    with pytest.raises(httpx.ReadTimeout):
        post(running, "createUpdateSale", {"visit": visit("r-1")}, timeout=0.5)
    assert [s["pos_id"] for s in running.state()["sales"]] == ["r-1"]


def test_a_dropped_response_is_applied_and_the_client_sees_a_protocol_error(sandbox_factory) -> None:
    running = sandbox_factory(fault_drop=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        post(running, "createUpdateSales", [{"visit": visit("r-1")}])

    assert [s["pos_id"] for s in running.state()["sales"]] == ["r-1"]
    (logged,) = running.requests()
    assert logged["fault"] == "drop" and logged["status"] == 200


def test_faults_spare_the_inspection_endpoints(sandbox_factory) -> None:
    running = sandbox_factory(fault_drop=1.0)  # readiness already polled /sandbox/state
    assert running.requests() == []
    assert HTTP.get(running.base_url + "/").status_code == 200


def test_the_fault_seed_makes_faults_repeatable(sandbox_factory) -> None:
    def statuses(running: Sandbox) -> list[int]:
        return [piis(running, search="x").status_code for _ in range(24)]

    first = sandbox_factory(fault_5xx=0.5, fault_seed=7, **GENEROUS_LIMITS)
    seen = statuses(first)
    assert set(seen) == {200, 503}
    assert statuses(sandbox_factory(fault_5xx=0.5, fault_seed=7, **GENEROUS_LIMITS)) == seen
    assert statuses(sandbox_factory(fault_5xx=0.5, fault_seed=8, **GENEROUS_LIMITS)) != seen
    assert statuses(first.restart()) == seen
