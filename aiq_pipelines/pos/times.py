"""Time, one way: POS timestamps are UTC (naive values mean UTC), a business day is a local date in a store's zone.

The sync database stores naive UTC datetimes; partitions and AIQ's ``transaction_date`` are derived from aware ones.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterable
from typing import Any


def as_utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC datetime; a naive value is read as UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def naive_utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC without its zone, as the sync database stores datetimes."""
    return as_utc(value).replace(tzinfo=None)


def utc_now() -> dt.datetime:
    """Now, as the sync database stores it (naive UTC)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def utc_timestamp(value: Any) -> dt.datetime | None:
    """A timestamp as a POS returns it (text on SQLite, a datetime on PostgreSQL) as an aware UTC datetime, or None
    when it is missing or not a timestamp."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    return as_utc(value)


class StoreDays:
    """Business days store by store: each store's day is its own local day (``locations.timezone``), the default zone
    (``POS_TIMEZONE``) for a store without one."""

    def __init__(self, default: zoneinfo.ZoneInfo, zones: Iterable[str | None] = ()):
        self.default = default
        self._zones: dict[str, zoneinfo.ZoneInfo] = {}
        self.zones = [default]
        for name in zones:
            self.include(name)

    def include(self, name: str | None) -> None:
        """Count the store zone ``name`` among the stores' (ValueError for a name that is not an IANA zone)."""
        zone = self.zone(name)
        if zone not in self.zones:
            self.zones.append(zone)

    def zone(self, name: str | None) -> zoneinfo.ZoneInfo:
        """The zone called ``name`` (the default for None); ValueError for a name that is not an IANA zone."""
        if not name:
            return self.default
        found = self._zones.get(name)
        if found is None:
            try:
                found = self._zones[name] = zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{name!r} is not an IANA time zone name such as America/Phoenix") from None
        return found

    def date_of(self, moment: dt.datetime, zone: str | None) -> dt.date:
        """The local day of ``moment`` (naive values are UTC) in the store zone ``zone``."""
        return as_utc(moment).astimezone(self.zone(zone)).date()

    def span(self, first: dt.date, end: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """The UTC window holding the days [first, end) of every store: from the earliest store's midnight starting
        ``first`` to the latest store's midnight ending the day before ``end``."""
        def midnight(day: dt.date, zone: zoneinfo.ZoneInfo) -> dt.datetime:
            return dt.datetime.combine(day, dt.time(), tzinfo=zone).astimezone(dt.UTC)

        return min(midnight(first, z) for z in self.zones), max(midnight(end, z) for z in self.zones)


class BusinessCalendar:
    """Business days in one IANA time zone: a UTC moment's local date, and a window's local dates."""

    def __init__(self, timezone: str | zoneinfo.ZoneInfo):
        self.tz = timezone if isinstance(timezone, zoneinfo.ZoneInfo) else zoneinfo.ZoneInfo(timezone)

    def date_of(self, moment: dt.datetime) -> dt.date:
        """The local day of ``moment`` (naive values are UTC)."""
        return as_utc(moment).astimezone(self.tz).date()

    def dates(self, start: dt.datetime, end: dt.datetime) -> tuple[dt.date, dt.date]:
        """The first local day of the window [start, end) and the day after its last (``end``'s local date)."""
        return start.astimezone(self.tz).date(), end.astimezone(self.tz).date()


def rfc3339(value: dt.datetime) -> str:
    """``value`` (naive means UTC) in UTC as RFC 3339 with ``Z``; microseconds only when it has some."""
    return (value if value.tzinfo is None else naive_utc(value)).isoformat() + "Z"


# The one timestamp form the project accepts from outside: RFC 3339's date-time with T, seconds, an optional fraction of
# up to six digits and Z or a ±HH:MM offset. fromisoformat alone also takes week dates, the basic format, a space for T
# and missing offsets, so the text is matched first and only then handed to it for the calendar's own checks.
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})")


def parse_rfc3339(text: str) -> dt.datetime:
    """An RFC 3339 timestamp as an aware UTC datetime: ``YYYY-MM-DDTHH:MM:SS``, an optional fraction of 1-6 digits, and
    ``Z`` or an offset ``±HH:MM``; nothing before or after it. ValueError for anything else, a date that does not exist,
    or an instant outside years 1-9999 in UTC."""
    if not isinstance(text, str) or _RFC3339.fullmatch(text) is None:
        raise ValueError("expected an RFC 3339 timestamp such as 2026-06-10T18:00:00Z")
    try:
        return dt.datetime.fromisoformat(text).astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("the instant lies outside years 1-9999 in UTC") from None
