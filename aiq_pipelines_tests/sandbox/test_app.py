"""The AIQ sandbox's HTTP API: auth and account, envelopes, create-or-update, override and piis, state and request log.

Driven with plain httpx over loopback against the real server process.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from aiq_pipelines_tests.support.sandbox import HTTP, Sandbox
from aiq_pipelines_tests.support.sandbox_api import (
    EMAIL,
    PHONE,
    item,
    member,
    messages,
    ok_data,
    override,
    piis,
    post,
    url,
    visit,
)

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


def test_piis_refuses_an_empty_search_and_bad_paging(shared: Sandbox) -> None:
    assert messages(piis(shared, search=" "))[0].startswith("search: empty")
    assert messages(piis(shared, search="x", limit="0"))[0].startswith("limit: expected an integer")
    assert messages(piis(shared, search="x", start="-1"))[0].startswith("start: expected an integer")

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
    assert sandbox.state()["counts"] == {"sales": 0, "members": 0, "inventory": 0, "requests": 0, "pending": 0,
                                         "dropped": 0}


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
