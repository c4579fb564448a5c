"""The pull API's query parameters, checked here rather than by FastAPI's validation so that every refusal is a 400
naming the parameter and what it expects, never the value given (it could be a key or a phone number)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from aiq_pipelines.pos.times import naive_utc, parse_rfc3339, rfc3339
from aiq_pipelines.pull import reads

DEFAULT_LIMIT, MAX_LIMIT = 500, 1000
MAX_BACKFILL_DAYS = 31
MAX_LOCATION = 200
INCREMENTAL = ("updated_since", "updated_before")
BACKFILL = ("occurred_from", "occurred_to")
TIMESTAMPS = (*INCREMENTAL, *BACKFILL)
TIMESTAMP_FORMS = "an RFC 3339 timestamp with Z or an offset, such as 2026-06-10T18:00:00Z (send + as %2B)"
INCLUDABLE = ("customers",)


class BadRequest(ValueError):
    """A request the service refuses with 400; the message names the parameter."""


def only(query: Mapping[str, list[str]], allowed: tuple[str, ...]) -> dict[str, str]:
    """The query's parameters, each given once and all of them ``allowed``."""
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        takes = f"takes {', '.join(allowed)}" if allowed else "takes no parameters"
        raise BadRequest(f"{unknown[0]}: unknown parameter; this endpoint {takes}")
    for name, values in query.items():
        if len(values) > 1:
            raise BadRequest(f"{name}: given more than once")
    return {name: values[0] for name, values in query.items()}


def timestamp(name: str, text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        raise BadRequest(f"{name}: expected {TIMESTAMP_FORMS}") from None


def limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit: expected a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def location(text: str | None) -> str | None:
    if text is not None and not 1 <= len(text) <= MAX_LOCATION:
        raise BadRequest(f"location_id: expected a store's location_id, 1 to {MAX_LOCATION} characters")
    return text


def include(text: str | None) -> frozenset[str]:
    if text is None:
        return frozenset()
    asked = frozenset(text.split(","))
    if not asked or not asked <= set(INCLUDABLE):
        raise BadRequest(f"include: expected {' or '.join(INCLUDABLE)}")
    return asked


def window_of(params: Mapping[str, str], now: dt.datetime, settle: float, *, backfill_allowed: bool) -> dict:
    """The request's window as the cursor keeps it (RFC 3339 strings), with ``updated_before`` clamped."""
    since, before, occurred_from, occurred_to = (timestamp(name, params.get(name)) for name in TIMESTAMPS)
    if (since or before) and (occurred_from or occurred_to):
        raise BadRequest("occurred_from: give updated_since/updated_before (incremental) or occurred_from/occurred_to "
                         "(backfill), not both")
    if occurred_from or occurred_to:
        if not backfill_allowed:
            raise BadRequest("occurred_from: this endpoint is pulled by updated_since/updated_before only")
        if occurred_from is None or occurred_to is None:
            raise BadRequest(f"{'occurred_from' if occurred_from is None else 'occurred_to'}: a backfill needs both "
                             "occurred_from and occurred_to")
        if occurred_to <= occurred_from:
            raise BadRequest("occurred_to: must be later than occurred_from")
        if occurred_to - occurred_from > dt.timedelta(days=MAX_BACKFILL_DAYS):
            raise BadRequest(f"occurred_to: a backfill covers at most {MAX_BACKFILL_DAYS} days a call")
    ceiling = now - dt.timedelta(seconds=settle)
    bound = ceiling if before is None else min(before, ceiling)
    if since is not None and since > bound:
        raise BadRequest("updated_since: must not be later than updated_before (or now minus the settle lag)")
    return {
        "updated_since": None if since is None else rfc3339(since),
        "updated_before": rfc3339(bound),
        "occurred_from": None if occurred_from is None else rfc3339(occurred_from),
        "occurred_to": None if occurred_to is None else rfc3339(occurred_to),
        "location_id": location(params.get("location_id")),
    }


def same_window(window: Mapping[str, str | None], params: Mapping[str, str]) -> None:
    """Refuse window parameters sent with a cursor that differ from the cursor's own (its upper bound is the cursor's,
    so ``updated_before`` may differ)."""
    for name, value in params.items():
        if name == "updated_before":
            timestamp(name, value)
            continue
        given = value if name == "location_id" else rfc3339(timestamp(name, value))
        if window.get(name) != given:
            raise BadRequest("cursor: it belongs to another window; pass only cursor (and limit) to go on")


def reads_window(window: Mapping[str, str | None]) -> reads.Window:
    def moment(name: str) -> dt.datetime | None:
        value = window.get(name)
        return None if value is None else naive_utc(parse_rfc3339(value))

    before = moment("updated_before")
    assert before is not None
    return reads.Window(moment("updated_since"), before, moment("occurred_from"), moment("occurred_to"),
                        window.get("location_id"))
