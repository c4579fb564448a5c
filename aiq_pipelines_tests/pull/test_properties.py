"""Properties of the one timestamp parser and of the cursor codec, over inputs Hypothesis draws (no server)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aiq_pipelines.pos.times import parse_rfc3339, rfc3339
from aiq_pipelines.pull.cursor import Cursor, CursorError, CursorSigner

GRAMMAR = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})")
INSTANTS = st.datetimes(min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31), timezones=st.just(dt.UTC))
OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)


def written(instant: dt.datetime, offset_minutes: int, digits: int) -> tuple[str, dt.datetime]:
    """``instant`` written in RFC 3339 at ``offset_minutes`` with ``digits`` of fraction, and the instant it names."""
    local = instant.astimezone(dt.timezone(dt.timedelta(minutes=offset_minutes)))
    fraction = f"{local.microsecond:06d}"[:digits]
    sign, minutes = ("-" if offset_minutes < 0 else "+"), abs(offset_minutes)
    zone = "Z" if offset_minutes == 0 and digits % 2 else f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    text = (f"{local.year:04d}-{local:%m-%dT%H:%M:%S}" + (f".{fraction}" if digits else "")  # %Y does not pad
            + zone)
    named = local.replace(microsecond=int(fraction.ljust(6, "0")) if digits else 0)
    return text, named.astimezone(dt.UTC)


@given(INSTANTS, OFFSETS, st.integers(min_value=0, max_value=6))
def test_every_rfc_3339_form_it_documents_parses_to_the_instant_it_names(instant, offset, digits):
    text, named = written(instant, offset, digits)
    assert parse_rfc3339(text) == named


@given(INSTANTS)
def test_what_the_service_writes_it_reads_back(instant):
    assert parse_rfc3339(rfc3339(instant)) == instant


@given(st.text(max_size=40))
@example("2026-W41-1")
@example("20261005T000000Z")
@example("2026-10-05T00:00:00Z\x00")
@example("2026-10-05T00:00:00z")
@example("2026-10-05t00:00:00Z")
@example("٢٠٢٦-10-05T00:00:00Z")
def test_text_outside_the_grammar_is_refused(text):
    if GRAMMAR.fullmatch(text):
        return
    with pytest.raises(ValueError):
        parse_rfc3339(text)


@given(INSTANTS, OFFSETS, st.integers(0, 6), st.sampled_from(["\x00", " ", "\n", "x", "Z", "0"]), st.booleans())
def test_a_valid_timestamp_with_anything_before_or_after_is_refused(instant, offset, digits, extra, before):
    text, _ = written(instant, offset, digits)
    with pytest.raises(ValueError):
        parse_rfc3339(extra + text if before else text + extra)


WINDOWS = st.dictionaries(st.sampled_from(["updated_since", "updated_before", "location_id", "version"]),
                          st.none() | st.text(max_size=30), max_size=4)
CURSORS = st.builds(Cursor, st.sampled_from(["transactions", "customers", "inventory"]), WINDOWS,
                    st.lists(st.text(max_size=30), min_size=1, max_size=2))
SIGNER, OTHER_ACCOUNT = CursorSigner(b"account one's secret"), CursorSigner(b"account two's secret")


@given(CURSORS)
def test_a_cursor_decodes_to_what_was_encoded_and_only_under_its_own_secret(cursor):
    text = SIGNER.encode(cursor)
    assert SIGNER.decode(text, cursor.endpoint) == cursor
    with pytest.raises(CursorError):
        OTHER_ACCOUNT.decode(text, cursor.endpoint)


@settings(max_examples=200)
@given(CURSORS, st.data())
def test_any_change_to_a_cursor_is_refused(cursor, data):
    text = SIGNER.encode(cursor)
    at = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != text[at]))
    with pytest.raises(CursorError):
        SIGNER.decode(text[:at] + replacement + text[at + 1:], cursor.endpoint)


@given(st.text(max_size=200))
def test_any_text_is_a_cursor_error_never_another_exception(text):
    with pytest.raises(CursorError):
        SIGNER.decode(text, "transactions")
