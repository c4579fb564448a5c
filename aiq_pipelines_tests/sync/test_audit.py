"""The delivery audit against the sandbox: it finds exactly what AIQ dropped, the next sync re-sends exactly that, what
drops twice is held in quarantine with its reason, and reads stay within the audit's share of the budget."""

import datetime as dt

import pytest
import sqlalchemy as sa

from aiq_pipelines.sync.audit import wilson
from aiq_pipelines.sync.audit_outcome import days_to_resend, release_holds
from aiq_pipelines.sync.ledger import RESEND
from aiq_pipelines.sync.schema import aiq_audit, aiq_ledger
from aiq_pipelines_tests.support.audit import DAY, audit, crowd, held, keys_sent, ledger_hashes
from aiq_pipelines_tests.support.ratelimit import most_in_any_window
from aiq_pipelines_tests.support.runs import checks, members_by_user, metadata, sync

GENEROUS = {"per_second": 1000, "per_minute": 100_000, "per_hour": 1_000_000}


def sync_day(pos, sync_url, sandbox):
    result = sync(pos.url, sync_url, sandbox, DAY, DAY)
    assert result.success and all(checks(result).values()), checks(result)
    return result


def test_a_two_percent_drop_is_found_exactly_re_sent_exactly_and_then_confirmed(pos, sync_url, sandbox_factory):
    sandbox = sandbox_factory(drop_personas=0.02, drop_seed=8, **GENEROUS)
    shoppers = crowd(pos, 200)
    sync_day(pos, sync_url, sandbox)
    dropped = sorted(d["pos_user"] for d in sandbox.state()["dropped"])
    assert dropped == ["C009", "C010", "C055", "C197"], "seed 8 drops two of the day's personas and two customers"

    first = audit(sandbox, sync_url)

    (day,) = first.days
    assert day.missing_keys == dropped
    assert (day.confirmed, day.mismatched, day.missing, day.pending, day.unread) == (196, 0, 4, 0, 0)
    assert (day.sales_audited, day.sales_attributed, day.sales_unattributed) == (200, 196, 4)
    assert (first.resend, first.held) == (4, 0)
    assert {k for k, digest in ledger_hashes(sync_url, "persona").items() if digest == RESEND} == set(dropped)
    assert {k for k, digest in ledger_hashes(sync_url, "transaction").items() if digest == RESEND} == {
        f"S-{key}" for key in dropped}, "their sales are re-sent after them, to be attributed"
    assert days_to_resend(sa.create_engine(sync_url)).keys() == {dt.date(2026, 6, 10)}

    since = sandbox.requests()[-1]["id"]
    again = sync_day(pos, sync_url, sandbox)

    assert sorted(keys_sent(sandbox, "createUpdateMembers", since)) == dropped
    personas = metadata(again, "aiq_personas")
    assert (personas["sent"], personas["personas_for_sales_sent"]) == (4, 2), \
        "all four go in the personas' step: two staged that day, two for the day's sales"
    assert sorted(keys_sent(sandbox, "createUpdateSales", since)) == [f"S-{key}" for key in dropped]
    assert days_to_resend(sa.create_engine(sync_url)) == {}
    assert len(sandbox.state()["dropped"]) == 4, "none of them dropped again"
    assert all(s["persona_known_at_arrival"] for s in sandbox.state()["sales"] if s["pos_id"] in
               {f"S-{key}" for key in dropped}), "the re-sent sales found their personas"

    second = audit(sandbox, sync_url)

    (day,) = second.days
    assert (day.confirmed, day.missing, day.read, day.personas) == (200, 0, 200, len(shoppers))
    assert (day.sales_attributed, second.resend, second.held) == (200, 0, 0)
    with sa.create_engine(sync_url).connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(aiq_audit)) == 0


def test_a_persona_dropped_twice_is_held_in_quarantine_until_retried(pos, sync_url, sandbox_factory):
    sandbox = sandbox_factory(drop_keys="C007:2", **GENEROUS)
    crowd(pos, 30)
    sync_day(pos, sync_url, sandbox)
    with sa.create_engine(sync_url).begin() as conn:  # as if AIQ had accepted it 30 hours before this audit
        c007 = aiq_ledger.c.record_key == "C007"
        acked = conn.scalar(sa.select(aiq_ledger.c.acked_at).where(c007))
        conn.execute(aiq_ledger.update().where(c007).values(acked_at=acked - dt.timedelta(hours=30)))
    assert audit(sandbox, sync_url).days[0].missing_keys == ["C007"]
    sync_day(pos, sync_url, sandbox)  # re-sent, and dropped again

    second = audit(sandbox, sync_url)

    assert second.days[0].missing_keys == ["C007"] and (second.resend, second.held) == (0, 1)
    reasons = held(sync_url)
    assert list(reasons) == ["C007"] and reasons["C007"] == "accepted by AIQ, absent after 30 hours", (
        "counted from the first acceptance, not the re-send's")
    assert ledger_hashes(sync_url, "persona")["C007"] != RESEND, "held, not re-sent on its own"
    since = sandbox.requests()[-1]["id"]
    sync_day(pos, sync_url, sandbox)
    assert keys_sent(sandbox, "createUpdateMembers", since) == [], "the next sync leaves it held"
    assert held(sync_url) == reasons

    assert release_holds(sa.create_engine(sync_url)) == 1
    since = sandbox.requests()[-1]["id"]
    sync_day(pos, sync_url, sandbox)
    assert keys_sent(sandbox, "createUpdateMembers", since) == ["C007"], "released: re-sent as it is"
    assert keys_sent(sandbox, "createUpdateSales", since) == ["S-C007"]
    assert held(sync_url) == {}

    third = audit(sandbox, sync_url)
    assert (third.days[0].confirmed, third.days[0].missing, third.held) == (30, 0, 0)
    assert "C007" in members_by_user(sandbox)


def test_a_phone_aiq_blanks_is_mismatched_not_missing(pos, sync_url, sandbox_factory):
    # The push never sends a phone it deems invalid, so AIQ's own check (unpublished) is made to refuse a number ours
    # accepts: --blank-phones stands for it. C003's phone is 720-482-0003.
    sandbox = sandbox_factory(blank_phones="7204820003", **GENEROUS)
    crowd(pos, 10)
    sync_day(pos, sync_url, sandbox)
    assert members_by_user(sandbox)["C003"]["phone_number"] == ""

    first = audit(sandbox, sync_url)

    (day,) = first.days
    assert (day.confirmed, day.mismatched, day.missing) == (9, 1, 0)
    assert day.mismatched_fields == {"C003": ("phone",)} and day.sales_attributed == 10
    assert first.resend == 1 and ledger_hashes(sync_url, "transaction")["S-C003"] != RESEND, (
        "a mismatched persona is at AIQ: its sale is attributed, not re-sent")
    sync_day(pos, sync_url, sandbox)
    second = audit(sandbox, sync_url)
    assert second.held == 1
    assert held(sync_url) == {"C003": "accepted by AIQ, but AIQ holds another phone after 0 hours"}


def test_recent_acknowledgements_are_pending_and_not_read(pos, sync_url, sandbox):
    crowd(pos, 10)
    sync_day(pos, sync_url, sandbox)
    since = sandbox.requests()[-1]["id"]

    (day,) = audit(sandbox, sync_url, after=dt.timedelta(hours=24)).days

    assert (day.pending, day.read, day.personas) == (10, 0, 10)
    assert sandbox.requests(since) == [], "nothing is read before AIQ had its time to apply it"


def test_paging_reads_a_big_day_in_few_requests_within_the_share(pos, sync_url, sandbox_factory):
    # 20 requests a second: the audit's 5% is one request a second, which the sandbox's arrival log must show.
    sandbox = sandbox_factory(per_second=20, per_minute=10_000, per_hour=100_000)
    crowd(pos, 250)
    sync_day(pos, sync_url, sandbox)
    since = sandbox.requests()[-1]["id"]

    result = audit(sandbox, sync_url, limits=(20, 10_000, 100_000))

    reads = [r for r in sandbox.requests(since) if r["path"].split("/")[3] == "piis"]
    assert result.days[0].method == "page" and result.days[0].confirmed == 250
    assert len(reads) == result.requests == 3, "ceil(251 / 100) pages, not 250 searches"
    assert most_in_any_window([r["received_at"] for r in reads], 1.0) <= 1


def test_paging_stops_once_every_persona_is_found_and_a_small_day_is_searched(pos, sync_url, sandbox):
    crowd(pos, 250)
    sync_day(pos, sync_url, sandbox)

    result = audit(sandbox, sync_url, page_size=10)  # 26 pages expected against 250 searches

    assert (result.days[0].method, result.requests, result.days[0].confirmed) == ("page", 25, 250), (
        "the 25th page found the last persona: no 26th")
    pos.execute("UPDATE customers SET last_modified_at = :m WHERE customer_id IN ('C200', 'C201', 'C202')",
                m="2026-06-11 15:00:00")
    pos.execute("UPDATE customers SET phone = NULL, email = NULL WHERE customer_id = 'C202'")
    sync(pos.url, sync_url, sandbox, "2026-06-11", "2026-06-11")
    with sa.create_engine(sync_url).begin() as conn:  # as if AIQ had not answered its contactID
        conn.execute(aiq_ledger.update().where(aiq_ledger.c.record_key == "C202").values(contact_id=None))
    since = sandbox.requests()[-1]["id"]

    (day,) = audit(sandbox, sync_url, "2026-06-11").days

    assert (day.method, day.confirmed, day.missing, day.unread, day.personas) == ("search", 2, 0, 1, 3), (
        "C202 has nothing to be searched by: unread, not missing")
    searches = [r for r in sandbox.requests(since) if "piis" in r["path"]]
    assert len(searches) == 2, "searches cost no more than the 3 pages would; none for C202"


def test_a_day_too_big_for_its_share_is_sampled_and_says_what_the_sample_says(pos, sync_url, sandbox_factory):
    sandbox = sandbox_factory(drop_personas=0.02, drop_seed=8, **GENEROUS)
    crowd(pos, 200)
    sync_day(pos, sync_url, sandbox)
    since = sandbox.requests()[-1]["id"]

    paged = audit(sandbox, sync_url, page_size=10, max_requests_per_day=40)

    assert paged.days[0].method == "page", "21 pages fit in 40 requests"
    assert (paged.days[0].missing, paged.requests) == (4, 20), "AIQ holds 196: the 20th page is the short last one"
    result = audit(sandbox, sync_url, page_size=5, max_requests_per_day=20, seed=3)  # 41 pages, 200 searches

    (day,) = result.days
    assert day.sampled and day.read == 20 and day.readable == 196 and day.unread == 176
    assert day.awaiting_resend == day.not_audited == 4, "the 4 the first audit found missing wait for their re-send"
    assert len([r for r in sandbox.requests(since) if "piis" in r["path"]]) == 20 + result.requests == 40
    low, high = day.missing_interval
    assert low <= day.missing_rate <= high and high < 0.25
    assert day.missing_estimate == round(day.missing_rate * 196)


@pytest.mark.parametrize(("hits", "trials", "low", "high"), [(0, 20, 0.0, 0.1611), (4, 200, 0.0078, 0.0503),
                                                              (10, 10, 0.7225, 1.0)])
def test_the_wilson_interval(hits, trials, low, high):
    assert wilson(hits, trials) == pytest.approx((low, high), abs=1e-4)
