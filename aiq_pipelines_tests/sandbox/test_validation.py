"""The AIQ sandbox's payload validation: each problem a 400 with its JSON path, malformed bodies, size and bulk caps."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import pytest

from aiq_pipelines_tests.support.sandbox import HTTP, Sandbox
from aiq_pipelines_tests.support.sandbox_api import PHONE, item, member, messages, ok_data, post, url, visit
from aiq_sandbox import validation

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
    assert sandbox.state()["counts"] == {"sales": 0, "members": 0, "inventory": 0, "requests": 3, "pending": 0,
                                         "dropped": 0}
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
