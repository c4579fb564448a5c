"""AiqClient against the real sandbox over loopback: calls, batching, retries, refusals, secrecy."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aiq_pipelines.aiq import reads
from aiq_pipelines.aiq.bulk import SENDING_SWITCH_INTERVAL
from aiq_pipelines.aiq.client import MemberAck
from aiq_pipelines.aiq.errors import (
    AiqAccountError,
    AiqAuthError,
    AiqContactNotFoundError,
    AiqError,
    AiqRefusedError,
    AiqUnavailableError,
)
from aiq_pipelines.aiq.payloads import CustomAttr, InventoryPayloadItem, Member, PersonaOverride, Visit
from aiq_pipelines.aiq.ratelimit import SEND_LOG, AccountRateLimiter, Send
from aiq_pipelines.aiq.redaction import redact_personal_data
from aiq_pipelines.aiq.transport import retry_after_seconds
from aiq_pipelines_tests.support.client import GENEROUS, api_requests, open_client, visit
from aiq_pipelines_tests.support.sandbox import Sandbox


def member(n: int, **changes: Any) -> Member:
    return Member(pos_user=f"C-{n}", first_name=f"Name{n}", **changes)


def product(n: int) -> InventoryPayloadItem:
    return InventoryPayloadItem(
        sku=f"SKU{n}", product_id=f"P-{n}", name=f"Product {n}", quantity=Decimal("3"), sales_price=Decimal("9.99"),
        custom_attr=(CustomAttr(parent="cost", key="unit_cost", value="4.00"),), in_stock=True,
    )


class BrokenDateVisit(Visit):
    """A visit whose JSON carries a date in the wrong format, the kind of bug the sandbox must catch."""

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "transaction_date": "2026-02-01T17:30:00Z"}

    @property
    def encoded(self) -> bytes:  # what bulk calls send
        return json.dumps(self.to_json()).encode()


# -- every call ------------------------------------------------------------------------------------------------


def test_personas_are_read_page_by_page(sandbox: Sandbox, tmp_path: Path) -> None:
    with open_client(sandbox, tmp_path) as client:
        acks = [client.upsert_member(member(n, email=f"p{n}@example.com")) for n in range(5)]
        pages = [client.page_personas(limit=2, start=start) for start in (0, 2, 4)]

    assert [[m.pos_user for m in page] for page in pages] == [["C-0", "C-1"], ["C-2", "C-3"], ["C-4"]]
    assert [m.contact_id for page in pages for m in page] == [ack.contact_id for ack in acks]
    assert pages[2][0].email == "p4@example.com" and pages[2][0].mobile_phone is None
    assert [r["path"].split("/")[3] for r in api_requests(sandbox)][-3:] == ["piis"] * 3


@pytest.mark.parametrize("data", [None, [], {"result": []}, {"results": {}}, {"results": [{"firstName": "A"}]},
                                  {"results": ["C0000001"]}])
def test_a_read_answered_in_another_shape_is_an_error_not_nobody(data: Any) -> None:
    with pytest.raises(AiqError, match="unexpected shape"):
        reads.personas(data)
    assert reads.personas({"results": None}) == []
    assert reads.personas({"results": [{"contactID": 7, "mobilePhone": ""}]})[0].mobile_phone is None


def test_every_call_works(sandbox: Sandbox, tmp_path: Path) -> None:
    with open_client(sandbox, tmp_path) as client:
        contact = {"email": "ada@example.com", "phone_number": "3035550123"}
        ack = client.upsert_member(member(1, **contact))
        assert isinstance(ack, MemberAck) and ack.contact_id
        again = client.upsert_member(member(1, last_name="Lovelace", **contact))
        assert again == ack  # create-or-update by pos_user keeps the contact

        found = client.search_personas("3035550123")
        assert [(m.contact_id, m.pos_user, m.first_name) for m in found] == [(ack.contact_id, "C-1", "Name1")]
        assert found[0].email == "ada@example.com" and "ada@example.com" not in repr(found[0])
        assert client.search_personas("nobody-matches-this") == []

        client.override_persona(ack.contact_id, PersonaOverride(email="ada@new.example"))
        client.upsert_sale(visit(1, pos_user="C-1"))
        client.upsert_inventory_batch([product(1), product(2)])

    state = sandbox.state()
    (stored_member,) = state["members"]
    assert (stored_member["contactID"], stored_member["email"]) == (ack.contact_id, "ada@new.example")
    assert stored_member["phone_number"] == "3035550123"
    (sale,) = state["sales"]
    assert (sale["pos_id"], sale["pos_user"], sale["persona_known_at_arrival"]) == ("R-1", "C-1", True)
    assert sorted(i["productId"] for i in state["inventory"]) == ["P-1", "P-2"]


def test_bulk_members_return_acks_matching_aiq_state(sandbox: Sandbox, tmp_path: Path) -> None:
    with open_client(sandbox, tmp_path, batch_size_members=3) as client:
        outcomes = list(client.send_members((f"key-{n}", member(n)) for n in range(5)))
    acks = {key: ack for outcome in outcomes for key, _, ack in outcome.accepted}
    stored = {m["pos_user"]: m["contactID"] for m in sandbox.state()["members"]}
    assert {key: ack.contact_id for key, ack in acks.items() if ack} == {f"key-{n}": stored[f"C-{n}"] for n in range(5)}


@pytest.mark.parametrize("n", [0, 1, 100, 101, 250])
@pytest.mark.parametrize("kind", ["sales", "members", "inventory"])
def test_batch_boundaries_make_ceil_n_over_size_requests(sandbox: Sandbox, tmp_path: Path, kind: str, n: int) -> None:
    make, keys_of = {
        "sales": (visit, lambda i: f"R-{i}"),
        "members": (member, lambda i: f"C-{i}"),
        "inventory": (product, lambda i: f"P-{i}"),
    }[kind]
    with open_client(sandbox, tmp_path) as client:
        send = {"sales": client.send_sales, "members": client.send_members, "inventory": client.send_inventory}[kind]
        outcomes = list(send((i, make(i)) for i in range(n)))
        assert client.stats.requests == math.ceil(n / 100)
    logged = api_requests(sandbox)
    assert len(logged) == len(outcomes) == math.ceil(n / 100)
    assert [r["keys"] for r in logged] == [[keys_of(i) for i in range(s, min(s + 100, n))] for s in range(0, n, 100)]
    assert [key for o in outcomes for key, _, _ in o.accepted] == list(range(n))
    assert all(r["status"] == 200 for r in logged)


def test_bulk_senders_read_the_iterable_lazily(sandbox: Sandbox, tmp_path: Path) -> None:
    taken = 0

    def source() -> Iterator[tuple[int, Visit]]:
        nonlocal taken
        for i in range(250):
            taken += 1
            yield i, visit(i)

    with open_client(sandbox, tmp_path, batch_size_sales=100) as client:
        outcomes = client.send_sales(source())
        first = next(outcomes)
        assert len(first.accepted) == 100 and taken <= 101
        assert len(api_requests(sandbox)) == 1  # the batch was acknowledged before it was handed out
        assert sum(len(o.accepted) for o in outcomes) == 150


def test_threads_hand_over_promptly_while_batches_are_in_flight_and_as_before_after(
        sandbox: Sandbox, tmp_path: Path) -> None:
    seen: list[float] = []

    def source() -> Iterator[tuple[int, Visit]]:
        for i in range(150):
            seen.append(sys.getswitchinterval())  # read while the sender builds batches
            yield i, visit(i)

    before = sys.getswitchinterval()
    with open_client(sandbox, tmp_path, batch_size_sales=100, max_in_flight=2) as client:
        delivered = sum(len(outcome.accepted) for outcome in client.send_sales(source()))

    assert delivered == 150
    assert set(seen) == {min(before, SENDING_SWITCH_INTERVAL)} and before > SENDING_SWITCH_INTERVAL
    assert sys.getswitchinterval() == before


# -- refusals --------------------------------------------------------------------------------------------------


def test_one_refused_sale_is_isolated_and_the_rest_delivered(sandbox: Sandbox, tmp_path: Path) -> None:
    items = [(i, visit(i)) for i in range(10)]
    broken = BrokenDateVisit(**visit(6).model_dump())
    items[6] = (6, broken)
    with open_client(sandbox, tmp_path, batch_size_sales=10) as client:
        (outcome,) = list(client.send_sales(items))
        assert client.stats.refused == 1
    assert sorted(key for key, _, _ in outcome.accepted) == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    ((key, payload, message),) = outcome.refused
    assert key == 6 and payload is broken
    assert "visit.transaction_date" in message and "YYYY-MM-DD HH:MM:SS +0000" in message
    assert sorted(s["pos_id"] for s in sandbox.state()["sales"]) == [f"R-{i}" for i in (0, 1, 2, 3, 4, 5, 7, 8, 9)]


def test_a_member_with_a_placeholder_phone_is_refused_alone(sandbox: Sandbox, tmp_path: Path) -> None:
    items = [(i, member(i)) for i in range(5)] + [("bad", member(99, phone_number="1234567890"))]
    with open_client(sandbox, tmp_path, batch_size_members=6) as client:
        (outcome,) = list(client.send_members(items))
    assert [key for key, _, _ in outcome.refused] == ["bad"]
    assert "placeholder phone" in outcome.refused[0][2]
    assert "1234567890" not in outcome.refused[0][2]
    assert all(ack is not None for _, _, ack in outcome.accepted) and len(outcome.accepted) == 5
    assert sorted(m["pos_user"] for m in sandbox.state()["members"]) == [f"C-{i}" for i in range(5)]


def test_a_single_refused_sale_raises_with_aiq_message(sandbox: Sandbox, tmp_path: Path) -> None:
    with open_client(sandbox, tmp_path) as client, pytest.raises(AiqRefusedError) as caught:
        client.upsert_sale(BrokenDateVisit(**visit(1).model_dump()))
    assert caught.value.status == 400 and "visit.transaction_date" in caught.value.message
    assert len(api_requests(sandbox)) == 1  # refusals are not retried


def test_batches_over_the_server_cap_are_split_until_accepted(sandbox_factory: Callable[..., Sandbox], tmp_path: Path) -> None:
    sandbox = sandbox_factory(bulk_max=30, **GENEROUS)
    with open_client(sandbox, tmp_path, batch_size_sales=100) as client:
        (outcome,) = list(client.send_sales((i, visit(i)) for i in range(100)))
    assert len(outcome.accepted) == 100 and outcome.refused == []
    assert len(sandbox.state()["sales"]) == 100


def test_aiq_messages_come_back_with_emails_and_phones_masked() -> None:
    message = (
        '[0].member.email: "Ada.L@example.com" is taken; phones (303) 555-0123, +1 720.362.8300 and 7203628300; '
        "[12].visit.transaction_date: 2026-02-01 17:30:00 is late"
    )
    assert redact_personal_data(message) == (
        '[0].member.email: "[email]" is taken; phones [phone], [phone] and [phone]; '
        "[12].visit.transaction_date: 2026-02-01 17:30:00 is late"
    )


def test_wrong_key_is_an_auth_error_without_retries(sandbox: Sandbox, tmp_path: Path) -> None:
    wrong = Sandbox(sandbox.base_url, "not-the-key-" + "x" * 8, sandbox.uid, sandbox.db_path, sandbox.log_path)
    with open_client(wrong, tmp_path) as client, pytest.raises(AiqAuthError) as caught:
        client.upsert_sale(visit(1))
    assert str(caught.value) == f"AIQ refused the API key for account {sandbox.uid}: check AIQ_API_KEY"
    assert len(api_requests(sandbox)) == 1


def test_wrong_uid_is_an_account_error(sandbox: Sandbox, tmp_path: Path) -> None:
    wrong = Sandbox(sandbox.base_url, sandbox.api_key, "someone-else", sandbox.db_path, sandbox.log_path)
    with open_client(wrong, tmp_path) as client, pytest.raises(AiqAccountError, match="AIQ_UID"):
        list(client.send_sales([(1, visit(1))]))
    assert len(api_requests(sandbox)) == 1


def test_override_of_an_unknown_contact(sandbox: Sandbox, tmp_path: Path) -> None:
    with open_client(sandbox, tmp_path) as client, pytest.raises(AiqContactNotFoundError, match="search_personas"):
        client.override_persona("no-such-contact", PersonaOverride(mobile_phone="3035550123"))


# -- retries ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "extra"),
    [
        ("fault_5xx", {}),
        ("fault_429", {"retry_after": 1}),
        ("fault_slow", {"slow_seconds": 1}),
        ("fault_drop", {}),
    ],
)
def test_faults_are_retried_until_everything_is_delivered(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path, fault: str, extra: dict[str, Any]
) -> None:
    sandbox = sandbox_factory(fault_seed=7, **{fault: 0.3}, **extra, **GENEROUS)
    with open_client(sandbox, tmp_path, batch_size_sales=4, timeout=0.5) as client:
        outcomes = list(client.send_sales((i, visit(i)) for i in range(20)))
        stats = client.stats
    assert sorted(key for o in outcomes for key, _, _ in o.accepted) == list(range(20))
    assert len(sandbox.state()["sales"]) == 20
    faults = [r for r in api_requests(sandbox) if r["fault"]]
    assert faults and stats.retries == len(faults) and stats.requests == 5 + len(faults)
    assert stats.throttled == (len(faults) if fault == "fault_429" else 0)


def test_retry_after_is_honoured(sandbox_factory: Callable[..., Sandbox], tmp_path: Path) -> None:
    sandbox = sandbox_factory(fault_seed=3, fault_429=0.5, retry_after=1, **GENEROUS)
    with open_client(sandbox, tmp_path, batch_size_sales=1) as client:
        list(client.send_sales((i, visit(i)) for i in range(4)))
    log = api_requests(sandbox)
    throttled = [i for i, r in enumerate(log) if r["fault"] == "429"]
    assert throttled and throttled[-1] < len(log) - 1
    for i in throttled:
        assert log[i + 1]["received_at"] - log[i]["received_at"] >= 1.0


def test_the_sandbox_rate_limit_is_waited_out(sandbox_factory: Callable[..., Sandbox], tmp_path: Path) -> None:
    sandbox = sandbox_factory(per_second=2, per_minute=1000, per_hour=10000)
    with open_client(sandbox, tmp_path, batch_size_sales=1) as client:
        outcomes = list(client.send_sales((i, visit(i)) for i in range(5)))
        assert client.stats.throttled >= 1
    assert sum(len(o.accepted) for o in outcomes) == 5
    limited = [r for r in api_requests(sandbox) if r["fault"] == "rate_limited"]
    assert limited and all(r["status"] == 429 for r in limited)


def test_the_limiter_keeps_the_client_within_the_account_limits(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = sandbox_factory(per_second=3, per_minute=1000, per_hour=10000)
    with open_client(sandbox, tmp_path, limits=(3, 1000, 10000), batch_size_sales=1, max_attempts=1) as client:
        list(client.send_sales((i, visit(i)) for i in range(10)))
        assert client.stats.throttled == 0
    log = api_requests(sandbox)
    assert len(log) == 10 and all(r["status"] == 200 for r in log)
    arrivals = [r["received_at"] for r in log]
    assert all(later - earlier >= 1.0 for earlier, later in zip(arrivals, arrivals[3:], strict=False))


def test_a_request_that_leaves_late_is_counted_from_when_it_left(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamped: list[Send] = []
    acquire = AccountRateLimiter.acquire

    def acquire_then_stall(self: AccountRateLimiter) -> Send:
        send = acquire(self)
        stamped.append(send)
        time.sleep(0.3)  # the sender loses the CPU between the stamp and the send: the situation under test
        return send

    monkeypatch.setattr(AccountRateLimiter, "acquire", acquire_then_stall)
    with open_client(sandbox, tmp_path) as client:
        client.upsert_sale(visit(1))
    with sa.create_engine(f"sqlite:///{tmp_path / 'ratelimit.db'}").connect() as conn:
        (counted_from,) = conn.scalars(sa.select(SEND_LOG.c.sent_at)).all()
    (arrival,) = [r["received_at"] for r in api_requests(sandbox)]
    assert counted_from >= stamped[0].at + 0.3, "the send is counted from when it left, not from its stamp"
    assert counted_from <= arrival + 0.001


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("3") == 3.0
    in_ten = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
    assert 8 <= (retry_after_seconds(in_ten.strftime("%a, %d %b %Y %H:%M:%S GMT")) or 0) <= 10
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


@pytest.mark.parametrize(
    ("fault", "extra"),
    [
        ("fault_5xx", {}),
        ("fault_429", {"retry_after": 1}),
        ("fault_slow", {"slow_seconds": 1}),
        ("fault_drop", {}),
    ],
)
def test_permanent_faults_give_up_within_the_retry_bound(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path, fault: str, extra: dict[str, Any]
) -> None:
    sandbox = sandbox_factory(**{fault: 1.0}, **extra, **GENEROUS)
    started = time.monotonic()
    with open_client(sandbox, tmp_path, timeout=0.5, max_attempts=100, max_retry_seconds=3.0) as client:
        with pytest.raises(AiqUnavailableError) as caught:
            list(client.send_sales([(1, visit(1))]))
    assert time.monotonic() - started < 3.0 + 1.5  # the bound, plus slack for a loaded machine
    attempts = len(api_requests(sandbox))
    assert attempts >= 2
    message = str(caught.value)
    assert sandbox.base_url in message and f"{attempts} attempts" in message and "AIQ_MAX_RETRY_SECONDS" in message
    assert sandbox.api_key not in message


def test_max_attempts_bounds_the_retries(sandbox_factory: Callable[..., Sandbox], tmp_path: Path) -> None:
    sandbox = sandbox_factory(fault_5xx=1.0, **GENEROUS)
    with open_client(sandbox, tmp_path, max_attempts=3) as client, pytest.raises(AiqUnavailableError, match="3 attempts"):
        client.upsert_member(member(1))
    assert len(api_requests(sandbox)) == 3


# -- counters and secrecy --------------------------------------------------------------------------------------


def test_stats_count_bytes_sent(sandbox: Sandbox, tmp_path: Path) -> None:
    sale = visit(1)
    with open_client(sandbox, tmp_path) as client:
        client.upsert_sale(sale)
        stats = client.stats
    body = json.dumps({"visit": sale.to_json()}, separators=(",", ":")).encode()
    assert (stats.requests, stats.retries, stats.throttled, stats.refused, stats.bytes_sent) == (1, 0, 0, 0, len(body))


def test_key_phone_and_email_never_reach_logs_reprs_or_errors(
    sandbox_factory: Callable[..., Sandbox], tmp_path: Path, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    sandbox = sandbox_factory(fault_seed=5, fault_5xx=0.3, fault_drop=0.2, **GENEROUS)
    phone, email = "7203628300", "private.person@example.com"
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    with open_client(sandbox, tmp_path, batch_size_members=2) as client:
        list(client.send_members([(1, member(1, phone_number=phone, email=email)), (2, member(2))]))
        assert [m.contact_id for m in client.search_personas(phone)]
        assert [m.contact_id for m in client.search_personas(email)]
        list(client.send_members([("bad", member(3, email=email, phone_number="0000000000"))]))
        texts = [repr(client), str(client.stats)]
    wrong = Sandbox(sandbox.base_url, sandbox.api_key + "-wrong", sandbox.uid, sandbox.db_path, sandbox.log_path)
    with open_client(wrong, tmp_path) as client:
        try:
            client.upsert_member(member(4))
        except AiqAuthError as exc:
            errors.append(str(exc))
    out, err = capfd.readouterr()
    assert errors and "httpx" in caplog.text  # the request log was really captured
    for text in [caplog.text, out, err, *texts, *errors]:
        assert sandbox.api_key not in text
        assert phone not in text and email not in text
