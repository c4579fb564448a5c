"""Local days of the default store: the POS's time zone and its wall-clock times as the POS stores them."""

import datetime as dt
import zoneinfo

DENVER = zoneinfo.ZoneInfo("America/Denver")


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=DENVER).astimezone(dt.UTC).replace(tzinfo=None)
