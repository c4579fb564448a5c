"""The AIQ sandbox, driven with plain httpx over loopback against the real server process."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiq_pipelines.aiq.sandbox import validation
from aiq_pipelines.aiq.sandbox.limits import RateLimiter
from aiq_pipelines_tests.sandbox_support import GENEROUS_LIMITS, HTTP, Sandbox, run_sandbox

PHONE = "3125550142"
EMAIL = "drake.ross@example.com"


def url(sandbox: Sandbox, call: str, *, uid: str | None = None, version: str = "v1.1") -> str:
    return f"{sandbox.base_url}/api/{version}/{call}/{uid or sandbox.uid}"


def post(sandbox: Sandbox, call: str, body: Any, *, timeout: float = 30) -> httpx.Response:
    return HTTP.post(url(sandbox, call), json=body, headers=sandbox.headers, timeout=timeout)


def override(sandbox: Sandbox, contact_id: str, body: Any) -> httpx.Response:
    target = f"{url(sandbox, 'loyaltyContact/override', version='v2')}/{contact_id}"
    return HTTP.post(target, json=body, headers=sandbox.headers)


def piis(sandbox: Sandbox, **params: Any) -> httpx.Response:
    return HTTP.get(url(sandbox, "piis"), params=params, headers=sandbox.headers)


def visit(pos_id: str = "r-1", **fields: Any) -> dict[str, Any]:
    line = {"sku": "AUR932k", "price": 40.0, "quantity": 1.0, "discount": 12.0, "category": "PRE-ROLL"}
    base = {
        "pos_id": pos_id,
        "pos_user": "u-1",
        "sendNotification": 0,
        "transaction_date": "2024-04-20 04:03:53 +0000",
        "transaction_total": 28.0,
        "location": "Muffins Miami",
        "visit_details_attributes": [line],
    }
    return {k: v for k, v in {**base, **fields}.items() if v is not ...}


def member(pos_user: str = "u-1", **fields: Any) -> dict[str, Any]:
    base = {
        "pos_user": pos_user,
        "pos_type": "Online",
        "email": EMAIL,
        "first_name": "Drake",
        "last_name": "Ross",
        "birthday": "05/16/1985",
        "phone_number": PHONE,
        "loyalty": False,
    }
    return {k: v for k, v in {**base, **fields}.items() if v is not ...}


def item(product_id: str = "p-1", **fields: Any) -> dict[str, Any]:
    base = {
        "sku": "100050",
        "productId": product_id,
        "name": "Chemdawg 2g",
        "quantity": "5",
        "salesPrice": "30.00",
        "dateAdded": "1660073953",
        "inStock": True,
        "customAttr": [{"parent": "cost", "key": "unit_cost", "value": "12.00"}],
    }
    return {**base, **fields}


def messages(response: httpx.Response) -> list[str]:
    body = response.json()
    assert body["code"] == response.status_code and body["success"] is False
    return [error["message"] for error in body["errors"]]


def ok_data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 200 and body["success"] is True
    return body["data"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One sandbox for tests that only send refused requests, so its state stays empty."""
    with run_sandbox(tmp_path_factory.mktemp("shared") / "sandbox.db", **GENEROUS_LIMITS) as running:
        yield running


# -- auth and account ------------------------------------------------------------------------------------------


def test_requests_without_the_right_key_are_refused_with_403(shared: Sandbox) -> None:
    target = url(shared, "createUpdateMember")
    body = {"member": member()}
    missing = HTTP.post(target, json=body)
    wrong = HTTP.post(target, json=body, headers={"x-apikey": "not-the-key"})
    in_query = HTTP.post(target, json=body, params={"apikey": shared.api_key}, headers=shared.headers)
    other_header = HTTP.post(target, json=body, headers={"authorization": f"Bearer {shared.api_key}"})

    for response in (missing, wrong, in_query, other_header):
        assert response.status_code == 403
        assert shared.api_key not in response.text
    assert "x-apikey" in messages(missing)[0]
    assert "query string" in messages(in_query)[0]
    assert shared.state()["counts"]["members"] == 0


def test_a_key_under_any_query_name_is_refused(shared: Sandbox) -> None:
    response = HTTP.get(url(shared, "piis"), params={"search": "x", "token": shared.api_key}, headers=shared.headers)
    assert response.status_code == 403


def test_a_wrong_uid_is_404_with_the_error_envelope(shared: Sandbox) -> None:
    target = url(shared, "createUpdateMember", uid="other")
    response = HTTP.post(target, json={"member": member()}, headers=shared.headers)
    assert response.status_code == 404
    assert "uid" in messages(response)[0]


def test_an_unknown_endpoint_is_404_with_the_error_envelope(shared: Sandbox) -> None:
    response = HTTP.post(url(shared, "createUpdateCoupons"), json=[], headers=shared.headers)
    assert response.status_code == 404
    assert "no such endpoint" in messages(response)[0]


# -- happy paths -------------------------------------------------------------------------------------------------


def test_single_sale_is_stored(sandbox: Sandbox) -> None:
    ok_data(post(sandbox, "createUpdateSale", {"visit": visit("r-1")}))

    (sale,) = sandbox.state()["sales"]
    assert sale["pos_id"] == "r-1" and sale["transaction_total"] == 28.0
    assert sale["visit_details_attributes"][0]["sku"] == "AUR932k"


def test_bulk_sales_are_stored(sandbox: Sandbox) -> None:
    body = [{"visit": visit(f"r-{n}", transaction_total=float(n))} for n in range(3)]
    ok_data(post(sandbox, "createUpdateSales", body))

    sales = sandbox.state()["sales"]
    assert [(s["pos_id"], s["transaction_total"]) for s in sales] == [("r-0", 0.0), ("r-1", 1.0), ("r-2", 2.0)]


def test_refunds_anonymous_sales_and_zero_quantities_are_valid(sandbox: Sandbox) -> None:
    refund_line = {"sku": "A", "price": 10, "quantity": -2, "discount": 0}
    void_line = {"sku": "B", "price": 5.5, "quantity": 0}
    body = [
        {"visit": visit("refund", transaction_total=-20, visit_details_attributes=[refund_line])},
        {"visit": visit("walk-in", pos_user=..., pos_type="Walk-in", visit_details_attributes=[void_line])},
    ]
    ok_data(post(sandbox, "createUpdateSales", body))
    assert {s["pos_id"] for s in sandbox.state()["sales"]} == {"refund", "walk-in"}


def test_single_member_answers_contact_ids(sandbox: Sandbox) -> None:
    data = ok_data(post(sandbox, "createUpdateMember", {"member": member("u-1")}))

    (stored,) = sandbox.state()["members"]
    assert data == {"contactID": stored["contactID"], "srcID": stored["srcID"]}
    assert data["contactID"] != data["srcID"]
    assert stored["email"] == EMAIL and stored["phone_number"] == PHONE and stored["loyalty"] is False


def test_bulk_members_answer_one_ack_per_element_in_request_order(sandbox: Sandbox) -> None:
    body = [{"member": member(pos_user, email=f"{pos_user}@example.com", phone_number=...)} for pos_user in "cab"]
    data = ok_data(post(sandbox, "createUpdateMembers", body))

    assert [ack["pos_user"] for ack in data] == ["c", "a", "b"]
    assert len({ack["contactID"] for ack in data}) == 3 and len({ack["srcID"] for ack in data}) == 3
    stored = {m["pos_user"]: (m["contactID"], m["srcID"]) for m in sandbox.state()["members"]}
    assert {ack["pos_user"]: (ack["contactID"], ack["srcID"]) for ack in data} == stored


def test_contact_ids_are_deterministic(sandbox_factory) -> None:
    acks = []
    for _ in range(2):
        running = sandbox_factory()
        acks.append(ok_data(post(running, "createUpdateMembers", [{"member": member(u)} for u in ("x", "y")])))
    assert acks[0] == acks[1]


def test_inventory_is_stored_and_answers_an_empty_list(sandbox: Sandbox) -> None:
    assert ok_data(post(sandbox, "createUpdateInventory", [item("p-1"), item("p-2", isArchived=False)])) == []
    assert [i["productId"] for i in sandbox.state()["inventory"]] == ["p-1", "p-2"]


def test_home_page_shows_counts_and_links(sandbox: Sandbox) -> None:
    ok_data(post(sandbox, "createUpdateInventory", [item("p-1")]))
    page = HTTP.get(sandbox.base_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<li>inventory: 1</li>" in page.text
    assert 'href="/sandbox/state"' in page.text and 'href="/sandbox/requests"' in page.text
    assert "createUpdateInventory" in page.text


# -- validation --------------------------------------------------------------------------------------------------

SALE_CASES = {
    "iso date": (visit(transaction_date="2024-04-20T04:03:53Z"),
                 'visit.transaction_date: expected "YYYY-MM-DD HH:MM:SS +0000"'),
    "other offset": (visit(transaction_date="2024-04-20 04:03:53 -0600"), "visit.transaction_date: expected"),
    "unreal date": (visit(transaction_date="2024-02-30 04:03:53 +0000"), "visit.transaction_date: not a real date"),
    "string total": (visit(transaction_total="28.00"), "visit.transaction_total: expected a JSON number, got string"),
    "bool price": (visit(visit_details_attributes=[{"sku": "A", "price": True, "quantity": 1}]),
                   "visit.visit_details_attributes[0].price: expected a JSON number, got boolean"),
    "string quantity": (visit(visit_details_attributes=[{"sku": "A", "price": 1, "quantity": "1"}]),
                        "visit.visit_details_attributes[0].quantity: expected a JSON number"),
    "unknown field": (visit(coupon="X"), "visit.coupon: unknown field"),
    "unknown line field": (visit(visit_details_attributes=[{"sku": "A", "price": 1, "quantity": 1, "cost": 1}]),
                           "visit.visit_details_attributes[0].cost: unknown field"),
    "missing pos_id": (visit(pos_id=...), "visit.pos_id: required"),
    "empty pos_id": (visit(pos_id=" "), "visit.pos_id: must not be empty"),
    "empty pos_user": (visit(pos_user=""), "visit.pos_user: must not be empty"),
    "null pos_type": (visit(pos_type=None), "visit.pos_type: expected a string, got null"),
    "missing location": (visit(location=...), "visit.location: required"),
    "bool notification": (visit(sendNotification=True), "visit.sendNotification: expected the integer 0 or 1"),
    "notification 2": (visit(sendNotification=2), "visit.sendNotification: expected the integer 0 or 1"),
    "no lines": (visit(visit_details_attributes=[]), "visit.visit_details_attributes: must hold at least one element"),
    "line without sku": (visit(visit_details_attributes=[{"price": 1, "quantity": 1}]),
                         "visit.visit_details_attributes[0].sku: required"),
}


@pytest.mark.parametrize("body, expected", SALE_CASES.values(), ids=SALE_CASES.keys())
def test_invalid_sales_are_refused_with_the_json_path(shared: Sandbox, body: dict, expected: str) -> None:
    response = post(shared, "createUpdateSale", {"visit": body})
    assert response.status_code == 400
    assert any(m.startswith(expected) for m in messages(response)), messages(response)


MEMBER_CASES = {
    "iso birthday": (member(birthday="1985-05-16"), 'member.birthday: expected "MM/DD/YYYY"'),
    "unreal birthday": (member(birthday="02/30/1985"), "member.birthday: not a real date"),
    "9-digit phone": (member(phone_number="312555014"), "member.phone_number: expected exactly 10 digits"),
    "formatted phone": (member(phone_number="(312) 555-0142"), "member.phone_number: expected exactly 10 digits"),
    "numeric phone": (member(phone_number=3125550142), "member.phone_number: expected a string of 10 digits"),
    "placeholder 1234567890": (member(phone_number="1234567890"), "member.phone_number: placeholder phone"),
    "placeholder 0000000000": (member(phone_number="0000000000"), "member.phone_number: placeholder phone"),
    "placeholder same digit": (member(phone_number="5555555555"), "member.phone_number: placeholder phone"),
    "email without @": (member(email="drake.example.com"), "member.email: expected an email address"),
    "email with two @": (member(email="a@b@example.com"), "member.email: expected an email address"),
    "email without dot": (member(email="drake@localhost"), "member.email: expected an email address"),
    "empty email": (member(email=""), "member.email: expected an email address"),
    "string loyalty": (member(loyalty="false"), "member.loyalty: expected true or false, got string"),
    "unknown field": (member(mobilePhone=PHONE), "member.mobilePhone: unknown field"),
    "missing pos_user": (member(pos_user=...), "member.pos_user: required"),
}


@pytest.mark.parametrize("body, expected", MEMBER_CASES.values(), ids=MEMBER_CASES.keys())
def test_invalid_members_are_refused_with_the_json_path(shared: Sandbox, body: dict, expected: str) -> None:
    response = post(shared, "createUpdateMember", {"member": body})
    assert response.status_code == 400
    assert any(m.startswith(expected) for m in messages(response)), messages(response)


INVENTORY_CASES = {
    "number quantity": (item(quantity=5),
                        '[0].quantity: expected a string holding a decimal number such as "12.50", got number'),
    "word price": (item(salesPrice="thirty"), "[0].salesPrice: expected a string holding a decimal number"),
    "date not unix": (item(dateUpdated="2024-01-01"), "[0].dateUpdated: expected unix seconds"),
    "string bool": (item(inStock="true"), "[0].inStock: expected true or false"),
    "missing productId": ({k: v for k, v in item().items() if k != "productId"}, "[0].productId: required"),
    "bad custom attr": (item(customAttr=[{"parent": "cost", "key": "unit_cost", "value": 12}]),
                        "[0].customAttr[0].value: expected a string, got number"),
    "unknown field": (item(cost="1.00"), "[0].cost: unknown field"),
}


@pytest.mark.parametrize("body, expected", INVENTORY_CASES.values(), ids=INVENTORY_CASES.keys())
def test_invalid_inventory_is_refused_with_the_json_path(shared: Sandbox, body: dict, expected: str) -> None:
    response = post(shared, "createUpdateInventory", [body])
    assert response.status_code == 400
    assert any(m.startswith(expected) for m in messages(response)), messages(response)


def test_every_problem_gets_its_own_message(shared: Sandbox) -> None:
    body = [{"visit": visit("a")}, {"visit": visit("b", transaction_total="1", location="", extra=1)}]
    response = post(shared, "createUpdateSales", body)

    assert response.status_code == 400
    assert sorted(m.split(":")[0] for m in messages(response)) == [
        "[1].visit.extra", "[1].visit.location", "[1].visit.transaction_total",
    ]


def test_error_messages_never_echo_phones_or_emails(shared: Sandbox) -> None:
    response = post(shared, "createUpdateMember", {"member": member(phone_number="31255501", email="x at example.com")})
    assert response.status_code == 400 and len(messages(response)) == 2
    assert "31255501" not in response.text and "x at example.com" not in response.text


BODY_CASES = {
    "not json": (b"{visit:", "createUpdateSale", "$: body is not JSON"),
    "nan total": (json.dumps({"visit": visit(transaction_total=float("nan"))}).encode(), "createUpdateSale",
                  "$: body is not JSON"),
    "infinity total": (b'{"visit": {"transaction_total": Infinity}}', "createUpdateSale", "$: body is not JSON"),
    "overflowing total": (b'{"visit": {"transaction_total": 1e400}}', "createUpdateSale", "$: body is not JSON"),
    "invalid utf-8": (b'{"visit": {"location": "\xff"}}', "createUpdateSale", "$: body is not JSON"),
    "lone surrogate": (b'{"visit": {"location": "\\ud800"}}', "createUpdateSale", "$: body is not JSON"),
    "object for bulk": (json.dumps({"visit": visit()}).encode(), "createUpdateSales",
                        "$: expected a JSON array, got object"),
    "list for single": (json.dumps([{"visit": visit()}]).encode(), "createUpdateSale",
                        "$: expected a JSON object, got array"),
    "empty bulk": (b"[]", "createUpdateMembers", "$: expected a non-empty JSON array"),
    "unwrapped element": (json.dumps([visit()]).encode(), "createUpdateSales", "[0].pos_id: unknown field"),
    "object for inventory": (json.dumps(item()).encode(), "createUpdateInventory", "$: expected a JSON array"),
}


DATE_FIELDS = [  # year, month, day, hour, minute, second: each field's edges
    ("2024", "2026", "0000", "9999"), ("00", "01", "02", "04", "12", "13"), ("00", "01", "28", "29", "30", "31", "32"),
    ("00", "23", "24"), ("00", "59", "60"), ("00", "59", "60", "61"),
]


def test_dates_are_refused_exactly_when_strptime_refuses_them() -> None:
    """The sandbox checks dates with datetime's constructor, not strptime (a third of the cost): the verdicts match."""
    for year, month, day, hour, minute, second in itertools.product(*DATE_FIELDS):
        for text, check, fmt, shown in (
            (f"{year}-{month}-{day} {hour}:{minute}:{second} +0000", validation.transaction_date,
             "%Y-%m-%d %H:%M:%S +0000", "YYYY-MM-DD HH:MM:SS +0000"),
            (f"{month}/{day}/{year}", validation.birthday, "%m/%d/%Y", "MM/DD/YYYY"),
        ):
            problems: list[str] = []
            check(text, "date", problems)
            try:
                dt.datetime.strptime(text, fmt)
            except ValueError:
                assert problems == [f'date: not a real date ("{shown}")'], text
            else:
                assert problems == [], text


@pytest.mark.parametrize("content, call, expected", BODY_CASES.values(), ids=BODY_CASES.keys())
def test_malformed_bodies_are_refused(shared: Sandbox, content: bytes, call: str, expected: str) -> None:
    headers = {**shared.headers, "content-type": "application/json"}
    response = HTTP.post(url(shared, call), content=content, headers=headers)
    assert response.status_code == 400
    assert any(m.startswith(expected) for m in messages(response)), messages(response)


def test_a_body_over_the_size_limit_is_refused(sandbox_factory) -> None:
    running = sandbox_factory(max_body_bytes=2000)
    response = post(running, "createUpdateSales", [{"visit": visit(f"r-{n}")} for n in range(20)])
    assert response.status_code == 400
    assert messages(response)[0].startswith("$: body larger than 2000 bytes")
    assert running.state()["counts"]["sales"] == 0


def test_bulk_over_the_cap_is_413_and_nothing_is_applied(sandbox: Sandbox) -> None:
    sales = post(sandbox, "createUpdateSales", [{"visit": visit(f"r-{n}")} for n in range(101)])
    members = post(sandbox, "createUpdateMembers", [{"member": member(f"u-{n}", phone_number=...)} for n in range(101)])
    inventory = post(sandbox, "createUpdateInventory", [item(f"p-{n}") for n in range(101)])

    for response in (sales, members, inventory):
        assert response.status_code == 413
        assert "at most 100" in messages(response)[0]
    assert sandbox.state()["counts"] == {"sales": 0, "members": 0, "inventory": 0, "requests": 3}
    ok_data(post(sandbox, "createUpdateSales", [{"visit": visit(f"r-{n}")} for n in range(100)]))


def test_caps_follow_the_switches(sandbox_factory) -> None:
    running = sandbox_factory(bulk_max=2, inventory_max=1)
    assert post(running, "createUpdateMembers", [{"member": member(u)} for u in "abc"]).status_code == 413
    assert post(running, "createUpdateInventory", [item("p-1"), item("p-2")]).status_code == 413
    ok_data(post(running, "createUpdateMembers", [{"member": member(u)} for u in "ab"]))


def test_one_bad_element_refuses_the_whole_bulk(sandbox: Sandbox) -> None:
    body = [{"visit": visit("r-0")}, {"visit": visit("r-1", transaction_date="2024-04-20")}, {"visit": visit("r-2")}]
    response = post(sandbox, "createUpdateSales", body)

    assert response.status_code == 400
    assert messages(response) == ['[1].visit.transaction_date: expected "YYYY-MM-DD HH:MM:SS +0000"']
    assert sandbox.state()["sales"] == []


# -- create-or-update --------------------------------------------------------------------------------------------


def test_resending_a_pos_id_replaces_the_sale(sandbox: Sandbox) -> None:
    ok_data(post(sandbox, "createUpdateSale", {"visit": visit("r-1", transaction_total=28.0)}))
    ok_data(post(sandbox, "createUpdateSales", [{"visit": visit("r-1", transaction_total=0, pos_type="void")}]))

    (sale,) = sandbox.state()["sales"]
    assert sale["transaction_total"] == 0 and sale["pos_type"] == "void"


def test_resending_a_member_keeps_its_contact_and_replaces_its_fields(sandbox: Sandbox) -> None:
    first = ok_data(post(sandbox, "createUpdateMember", {"member": member("u-1", first_name="Drake")}))
    ok_data(post(sandbox, "createUpdateMember", {"member": member("u-2")}))
    (again,) = ok_data(post(sandbox, "createUpdateMembers", [{"member": member("u-1", first_name="Dre", email=...)}]))

    assert (again["contactID"], again["srcID"]) == (first["contactID"], first["srcID"])
    stored = {m["pos_user"]: m for m in sandbox.state()["members"]}
    assert len(stored) == 2
    assert stored["u-1"]["first_name"] == "Dre" and "email" not in stored["u-1"]


def test_resending_an_item_replaces_it(sandbox: Sandbox) -> None:
    ok_data(post(sandbox, "createUpdateInventory", [item("p-1", quantity="5")]))
    ok_data(post(sandbox, "createUpdateInventory", [item("p-1", quantity="0", inStock=False)]))
    (stored,) = sandbox.state()["inventory"]
    assert stored["quantity"] == "0" and stored["inStock"] is False


# -- override and piis ---------------------------------------------------------------------------------------------


def test_override_changes_only_the_fields_sent(sandbox: Sandbox) -> None:
    contact = ok_data(post(sandbox, "createUpdateMember", {"member": member("u-1")}))["contactID"]

    data = ok_data(override(sandbox, contact, {"email": "new@example.com"}))
    assert data["contactID"] == contact and data["email"] == "new@example.com" and data["mobilePhone"] == PHONE
    ok_data(override(sandbox, contact, {"mobilePhone": "3125559999", "lastName": "Rossi"}))

    (stored,) = sandbox.state()["members"]
    assert stored["email"] == "new@example.com" and stored["phone_number"] == "3125559999"
    assert stored["last_name"] == "Rossi" and stored["first_name"] == "Drake" and stored["birthday"] == "05/16/1985"


def test_override_of_an_unknown_contact_is_404(sandbox: Sandbox) -> None:
    ok_data(post(sandbox, "createUpdateMember", {"member": member("u-1")}))
    for contact in ("C9999999", "C00000001", "nope"):
        response = override(sandbox, contact, {"email": "new@example.com"})
        assert response.status_code == 404
        assert "piis" in messages(response)[0]


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"phone_number": PHONE}, "phone_number: unknown field"),
        ({"mobilePhone": "312555014"}, "mobilePhone: expected exactly 10 digits"),
        ({"mobilePhone": "1234567890"}, "mobilePhone: placeholder phone"),
        ({"email": "nobody"}, "email: expected an email address"),
        ({}, "$: expected at least one of"),
    ],
)
def test_invalid_overrides_are_refused(sandbox: Sandbox, body: dict, expected: str) -> None:
    contact = ok_data(post(sandbox, "createUpdateMember", {"member": member("u-1")}))["contactID"]
    response = override(sandbox, contact, body)
    assert response.status_code == 400
    assert messages(response)[0].startswith(expected)
    assert sandbox.state()["members"][0]["email"] == EMAIL


def test_piis_finds_contacts_and_answers_null_when_nothing_matches(sandbox: Sandbox) -> None:
    acks = ok_data(post(sandbox, "createUpdateMembers", [
        {"member": member("u-1")},
        {"member": member("u-2", first_name="Ana", last_name="Diaz", email="ana@example.org",
                          phone_number="7205550100")},
    ]))
    drake, ana = acks

    def found(search: str, **params: Any) -> list[str] | None:
        results = ok_data(piis(sandbox, search=search, **params))["results"]
        return None if results is None else [r["contactID"] for r in results]

    assert found("DRAKE.ROSS@") == [drake["contactID"]]
    assert found("diaz") == [ana["contactID"]]
    assert found("ana diaz") == [ana["contactID"]]
    assert found(PHONE) == [drake["contactID"]]
    assert found("(720) 555-0100") == [ana["contactID"]]
    assert found(PHONE[:6]) is None
    assert found(ana["contactID"]) == [ana["contactID"]]
    assert found(drake["srcID"]) == [drake["contactID"]]
    assert found("example") == [drake["contactID"], ana["contactID"]]
    assert found("example", limit=1, start=1) == [ana["contactID"]]
    assert found("nobody@example.net") is None

    (hit,) = ok_data(piis(sandbox, search="ana@example.org"))["results"]
    assert hit == {"contactID": ana["contactID"], "srcID": ana["srcID"], "firstName": "Ana", "lastName": "Diaz",
                   "mobilePhone": "7205550100", "email": "ana@example.org", "pos_user": "u-2"}


def test_piis_refuses_a_missing_search_and_bad_paging(shared: Sandbox) -> None:
    assert messages(piis(shared))[0].startswith("search: required")
    assert messages(piis(shared, search="x", limit="0"))[0].startswith("limit: expected an integer")
    assert messages(piis(shared, search="x", start="-1"))[0].startswith("start: expected an integer")


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


# -- state, request log, persona order ----------------------------------------------------------------------------


def test_state_survives_a_restart(sandbox: Sandbox) -> None:
    contact = ok_data(post(sandbox, "createUpdateMember", {"member": member("u-1")}))["contactID"]
    ok_data(post(sandbox, "createUpdateSale", {"visit": visit("r-1")}))
    ok_data(post(sandbox, "createUpdateInventory", [item("p-1")]))
    before = sandbox.state()

    sandbox.restart()
    assert sandbox.state() == before
    again = ok_data(post(sandbox, "createUpdateMembers", [{"member": member("u-1")}, {"member": member("u-2")}]))
    assert again[0]["contactID"] == contact and again[1]["contactID"] not in (contact, None)
    assert [r["id"] for r in sandbox.requests()] == [1, 2, 3, 4]

    sandbox.restart(reset=True)
    assert sandbox.state()["counts"] == {"sales": 0, "members": 0, "inventory": 0, "requests": 0}


def test_restart_keeps_earlier_options_unless_overridden(sandbox_factory) -> None:
    running = sandbox_factory(per_second=100, per_minute=2, per_hour=10000)
    running.restart(fault_5xx=1.0)
    assert [piis(running, search="x").status_code for _ in range(3)] == [503, 503, 429]


def test_request_log_keeps_arrival_order_keys_and_counts(sandbox: Sandbox) -> None:
    before = time.time()
    post(sandbox, "createUpdateMembers", [{"member": member(u)} for u in ("u-3", "u-1", "u-2")])
    post(sandbox, "createUpdateSales", [{"visit": visit("r-2", pos_user="u-1")}, {"visit": visit("r-1")}])
    post(sandbox, "createUpdateInventory", [item("p-9"), item("p-8")])
    contact = sandbox.state()["members"][0]["contactID"]
    override(sandbox, contact, {"firstName": "X"})
    piis(sandbox, search=EMAIL)
    post(sandbox, "createUpdateSale", {"visit": visit("r-3", transaction_total="x")})
    HTTP.post(url(sandbox, "createUpdateSale"), json={"visit": visit("r-4")})

    log = sandbox.requests()
    assert [(r["method"], r["path"].split("/")[3], r["status"], r["records"], r["keys"], r["fault"]) for r in log] == [
        ("POST", "createUpdateMembers", 200, 3, ["u-3", "u-1", "u-2"], None),
        ("POST", "createUpdateSales", 200, 2, ["r-2", "r-1"], None),
        ("POST", "createUpdateInventory", 200, 2, ["p-9", "p-8"], None),
        ("POST", "loyaltyContact", 200, 1, [contact], None),
        ("GET", "piis", 200, 3, [], None),
        ("POST", "createUpdateSale", 400, 1, ["r-3"], None),
        ("POST", "createUpdateSale", 403, 0, [], None),
    ]
    assert log[0]["path"] == f"/api/v1.1/createUpdateMembers/{sandbox.uid}"
    times = [r["received_at"] for r in log]
    assert before <= times[0] and times == sorted(times) and times[-1] <= time.time()
    assert [r["id"] for r in sandbox.requests(since_id=log[4]["id"])] == [log[5]["id"], log[6]["id"]]


def test_request_log_follows_arrival_not_completion(sandbox_factory) -> None:
    running = sandbox_factory(fault_slow=0.5, fault_seed=1, slow_seconds=2)  # seed 1 draws: slow, then not slow
    slow = threading.Thread(target=post, args=(running, "createUpdateSale", {"visit": visit("first")}))
    slow.start()
    deadline = time.monotonic() + 10
    while not running.requests():
        assert time.monotonic() < deadline, "the first request never arrived"
    ok_data(post(running, "createUpdateSale", {"visit": visit("second")}))
    assert slow.is_alive()  # the first request is still being answered slowly
    slow.join()
    log = running.requests()
    assert [(r["keys"], r["fault"]) for r in log] == [(["first"], "slow"), (["second"], None)]


def test_sales_record_whether_their_persona_was_known_on_arrival(sandbox: Sandbox) -> None:
    ok_data(post(sandbox, "createUpdateSale", {"visit": visit("early", pos_user="u-1")}))
    ok_data(post(sandbox, "createUpdateMember", {"member": member("u-1")}))
    ok_data(post(sandbox, "createUpdateSales", [
        {"visit": visit("late", pos_user="u-1")},
        {"visit": visit("stranger", pos_user="u-9")},
        {"visit": visit("walk-in", pos_user=...)},
    ]))

    known = {s["pos_id"]: s["persona_known_at_arrival"] for s in sandbox.state()["sales"]}
    assert known == {"early": False, "late": True, "stranger": False, "walk-in": None}

    ok_data(post(sandbox, "createUpdateSale", {"visit": visit("early", pos_user="u-1")}))
    assert {s["pos_id"]: s["persona_known_at_arrival"] for s in sandbox.state()["sales"]}["early"] is True


def test_no_key_phone_or_email_reaches_the_log_or_the_request_log(sandbox: Sandbox) -> None:
    post(sandbox, "createUpdateMembers", [{"member": member("u-1")}])
    post(sandbox, "createUpdateMember", {"member": member("u-2", phone_number="1234567890", email="bad@x")})
    contact = sandbox.state()["members"][0]["contactID"]
    override(sandbox, contact, {"email": "other@example.com", "mobilePhone": "7205550100"})
    piis(sandbox, search=EMAIL)
    piis(sandbox, search=PHONE)
    HTTP.get(url(sandbox, "piis"), params={"search": PHONE, "apikey": sandbox.api_key})
    wrong_key = {"x-apikey": sandbox.api_key + "x"}
    HTTP.post(url(sandbox, "createUpdateMember"), json={"member": member()}, headers=wrong_key)

    requests_text = json.dumps(sandbox.requests())
    assert sandbox.api_key not in repr(sandbox)
    sandbox.stop()  # flush and close the log before reading it
    log_text = sandbox.log_path.read_text()
    assert "createUpdateMembers" in log_text and "piis" in log_text
    for secret in (sandbox.api_key, PHONE, EMAIL, "7205550100", "other@example.com", "1234567890", "bad@x"):
        assert secret not in log_text
        assert secret not in requests_text


# -- command line --------------------------------------------------------------------------------------------------


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiq_pipelines.aiq.sandbox", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )


def test_cli_without_an_api_key_says_how_to_give_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AIQ_API_KEY"}
    result = _run_cli("--db", str(tmp_path / "s.db"), env=env)
    assert result.returncode == 2
    assert "--api-key" in result.stderr and "AIQ_API_KEY" in result.stderr


def test_cli_names_the_bad_switch(tmp_path: Path) -> None:
    env = {**os.environ, "AIQ_API_KEY": "k"}
    result = _run_cli("--db", str(tmp_path / "s.db"), "--fault-drop", "1.5", env=env)
    assert result.returncode == 2 and "--fault-drop" in result.stderr
    result = _run_cli("--db", str(tmp_path / "s.db"), "--fault-5xx", "0.6", "--fault-slow", "0.6", env=env)
    assert result.returncode == 2 and "add up to at most 1" in result.stderr


def test_cli_help_documents_every_switch_with_its_default() -> None:
    result = _run_cli("--help", env={**os.environ, "AIQ_API_KEY": "do-not-print-me"})
    assert result.returncode == 0 and "do-not-print-me" not in result.stdout
    for switch in ("--host", "--port", "--db", "--api-key", "--uid", "--per-second", "--per-minute", "--per-hour",
                   "--bulk-max", "--inventory-max", "--fault-seed", "--fault-5xx", "--fault-429", "--fault-slow",
                   "--fault-drop", "--slow-seconds", "--retry-after", "--reset"):
        assert switch in result.stdout
    assert result.stdout.count("(default:") >= 19


def test_refuse_keys_refuses_the_listed_records_whole_batch(sandbox_factory) -> None:
    sandbox = sandbox_factory(refuse_keys="r-1,u-9", **GENEROUS_LIMITS)

    refused = post(sandbox, "createUpdateSales", [{"visit": visit(f"r-{n}")} for n in range(3)])
    accepted = post(sandbox, "createUpdateSales", [{"visit": visit("r-0")}, {"visit": visit("r-2")}])

    assert refused.status_code == 400
    assert refused.json()["errors"] == [{"message": "[1]: record r-1 refused by AIQ (sandbox --refuse-keys)"}]
    assert accepted.status_code == 200
    assert [s["pos_id"] for s in sandbox.state()["sales"]] == ["r-0", "r-2"]
    assert post(sandbox, "createUpdateMembers", [{"member": member("u-9")}]).status_code == 400
