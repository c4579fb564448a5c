"""Schemathesis hooks for the pull API's test: positive cases keep to the rules between parameters that the OpenAPI
document states in words but cannot express in a schema (loaded through SCHEMATHESIS_HOOKS).

A cursor is valid only as the service issued it, a window is incremental or a backfill (not both), a backfill has both
ends in order and at most 31 days apart, and updated_since is not after updated_before. A positive case that breaks
one of these is no valid request, so it is not generated; negative cases and every check are left as they are.
"""

from __future__ import annotations

import datetime as dt

import schemathesis

from aiq_pipelines.pos.times import parse_rfc3339
from aiq_pipelines.pull.params import MAX_BACKFILL_DAYS, TIMESTAMPS


def _moments(query: dict) -> dict[str, dt.datetime] | None:
    found = {}
    for name in TIMESTAMPS:
        if name in query:
            try:
                found[name] = parse_rfc3339(str(query[name]))
            except ValueError:
                return None
    return found


def valid_window(query: dict) -> bool:
    """Whether a query keeps the pull API's documented rules between its parameters."""
    if "cursor" in query:
        return False
    moments = _moments(query)
    if moments is None:
        return False
    incremental = {"updated_since", "updated_before"} & set(moments)
    backfill = {"occurred_from", "occurred_to"} & set(moments)
    if incremental and backfill:
        return False
    if backfill:
        if len(backfill) == 1:
            return False
        span = moments["occurred_to"] - moments["occurred_from"]
        if not dt.timedelta(0) < span <= dt.timedelta(days=MAX_BACKFILL_DAYS):
            return False
    bound = min(moments.get("updated_before", dt.datetime.now(dt.UTC)), dt.datetime.now(dt.UTC))
    return "updated_since" not in moments or moments["updated_since"] <= bound


@schemathesis.hook
def filter_case(context, case) -> bool:
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return True
    return valid_window(dict(case.query or {}))
