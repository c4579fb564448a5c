"""The sandbox processes what it accepted as AIQ does: later (--apply-delay), not always (--drop-personas,
--drop-keys), invalid phones blank; piis answers from what was applied, by search or page by page."""

from __future__ import annotations

import time

from aiq_pipelines_tests.support.sandbox import GENEROUS_LIMITS, Sandbox
from aiq_pipelines_tests.support.sandbox_api import member, ok_data, override, piis, post, visit


def members(sandbox: Sandbox) -> dict[str, dict]:
    return {m["pos_user"]: m for m in sandbox.state()["members"]}


def found(sandbox: Sandbox, search: str) -> list[dict] | None:
    return ok_data(piis(sandbox, search=search))["results"]


def test_piis_without_a_search_pages_through_the_personas_in_creation_order(sandbox: Sandbox) -> None:
    body = [{"member": member(f"u-{n}", email=f"u{n}@example.com", phone_number=...)} for n in (3, 1, 4, 0, 2)]
    acks = ok_data(post(sandbox, "createUpdateMembers", body))

    pages = [ok_data(piis(sandbox, limit=2, start=start))["results"] for start in (0, 2, 4, 6)]

    assert [None if page is None else [r["pos_user"] for r in page] for page in pages] == [
        ["u-3", "u-1"], ["u-4", "u-0"], ["u-2"], None]
    assert pages[0][0] == {"contactID": acks[0]["contactID"], "srcID": acks[0]["srcID"], "firstName": "Drake",
                           "lastName": "Ross", "mobilePhone": None, "email": "u3@example.com", "pos_user": "u-3"}
    assert len(ok_data(piis(sandbox))["results"]) == 5, "25 a page unless limit says otherwise"
    assert sandbox.requests()[-1]["records"] == 5


def test_writes_show_in_reads_only_once_applied_after_the_delay(sandbox_factory) -> None:
    running = sandbox_factory(apply_delay=3, **GENEROUS_LIMITS)
    before = time.time()
    ack = ok_data(post(running, "createUpdateMember", {"member": member("u-1")}))
    ok_data(post(running, "createUpdateSales", [{"visit": visit("r-1", pos_user="u-1")}]))

    state = running.state()
    assert (state["members"], state["sales"], state["counts"]["pending"]) == ([], [], 2), "accepted, not applied"
    assert ack["contactID"], "the contactID is answered on acceptance"
    assert found(running, ack["contactID"]) is None and ok_data(piis(running))["results"] is None
    assert override(running, ack["contactID"], {"firstName": "X"}).status_code == 404

    deadline = time.monotonic() + 30
    while not running.state()["sales"]:
        assert time.monotonic() < deadline, "the accepted writes were never applied"
        time.sleep(0.1)
    assert time.time() >= before + 3, "applied no earlier than the delay after acceptance"
    state = running.state()
    assert [m["pos_user"] for m in state["members"]] == ["u-1"] and state["counts"]["pending"] == 0
    assert state["sales"][0]["persona_known_at_arrival"] is True, "its persona was accepted before it"
    assert [r["contactID"] for r in found(running, "drake")] == [ack["contactID"]]


def test_dropped_personas_are_acknowledged_then_never_applied_and_the_draw_is_seeded(sandbox_factory) -> None:
    body = [{"member": member(f"u-{n:02d}", email=f"u{n}@example.com", phone_number=...)} for n in range(60)]
    everyone = {f"u-{n:02d}" for n in range(60)}
    runs = []
    for _ in range(2):
        running = sandbox_factory(drop_personas=0.2, drop_seed=3, **GENEROUS_LIMITS)
        acks = ok_data(post(running, "createUpdateMembers", body))
        runs.append({d["pos_user"] for d in running.state()["dropped"]})
    dropped = runs[0]

    assert len(acks) == 60 and all(ack["contactID"] for ack in acks), "every persona is acknowledged"
    assert runs[1] == dropped and 0 < len(dropped) < 30, "the same seed drops the same personas"
    assert set(members(running)) == everyone - dropped
    assert all(found(running, f"u{n}@example.com") is None for n in range(60) if f"u-{n:02d}" in dropped)

    ok_data(post(running, "createUpdateSales", [{"visit": visit(f"r-{u}", pos_user=u)} for u in sorted(everyone)]))
    known = {s["pos_user"] for s in running.state()["sales"] if s["persona_known_at_arrival"]}
    assert known == everyone - dropped, "a dropped persona is not there for its sale"

    ok_data(post(running, "createUpdateMembers", [{"member": member(u)} for u in sorted(dropped)]))
    again = [d["pos_user"] for d in running.state()["dropped"]][len(dropped):]
    assert set(members(running)) == everyone - set(again), "a re-send is drawn afresh"


def test_drop_keys_drop_a_persona_on_its_first_acceptances_or_always(sandbox_factory) -> None:
    running = sandbox_factory(drop_keys="u-1:2,u-2", **GENEROUS_LIMITS)
    present = []
    for _ in range(3):
        ok_data(post(running, "createUpdateMembers", [{"member": member(u)} for u in ("u-1", "u-2", "u-3")]))
        present.append(sorted(members(running)))

    assert present == [["u-3"], ["u-3"], ["u-1", "u-3"]]
    assert [d["pos_user"] for d in running.state()["dropped"]] == ["u-1", "u-2", "u-1", "u-2", "u-2"]


def test_invalid_phones_are_stored_blank(sandbox_factory) -> None:
    running = sandbox_factory(blank_phones="3035550142", **GENEROUS_LIMITS)
    phones = {"listed": "3035550142", "area-1": "1235550100", "exchange-0": "7200550100", "n11": "9115550100",
              "fine": "7204821234"}
    acks = ok_data(post(running, "createUpdateMembers", [
        {"member": member(u, phone_number=phone, email=f"{u}@example.com")} for u, phone in phones.items()]))

    stored = {u: m["phone_number"] for u, m in members(running).items()}
    assert stored == {"listed": "", "area-1": "", "exchange-0": "", "n11": "", "fine": "7204821234"}
    assert found(running, "3035550142") is None, "a blank phone is not found by the number sent"
    (read,) = found(running, acks[0]["contactID"])
    assert read["mobilePhone"] == "" and read["email"] == "listed@example.com"

    fine = acks[-1]["contactID"]
    assert ok_data(override(running, fine, {"mobilePhone": "1235550100"}))["mobilePhone"] == ""
    assert ok_data(override(running, fine, {"mobilePhone": "7205550100"}))["mobilePhone"] == "7205550100"
