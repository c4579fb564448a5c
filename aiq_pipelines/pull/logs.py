"""The pull API's access log: one line a request, its path written with every query value that could hold a key
redacted. uvicorn's own access log is off (it writes the raw query string)."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any
from urllib.parse import parse_qsl, quote

from aiq_pipelines.pull.auth import ApiKeys

ACCESS_LOGGER = "aiq_pipelines.pull.access"
HIDDEN = "***"
# The values written as given: those whose documented shape cannot hold a key; the rest are written as ***.
SHOWN = {
    "limit": re.compile(r"[0-9]{1,4}"),
    "include": re.compile(r"[a-z,]{1,40}"),
    **{name: re.compile(r"[0-9T:.+Z-]{1,40}")
       for name in ("updated_since", "updated_before", "occurred_from", "occurred_to")},
}
KNOWN = {*SHOWN, "location_id", "cursor"}


def loggable(path: str, query: str, keys: ApiKeys, *, known_path: bool) -> str:
    """``path?query`` as the access log writes it: an unknown path as ***, an unknown parameter as ***, the value of
    a known one unless it has its documented shape (a store id: unless it is a key)."""
    if not known_path:
        return "/" + HIDDEN
    parts = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in KNOWN:
            parts.append(HIDDEN)
            continue
        shape = SHOWN.get(name)
        shown = (shape.fullmatch(value) is not None if shape else name == "location_id") and not keys.holds_key(value)
        parts.append(f"{name}={quote(value, safe=':') if shown else HIDDEN}")
    return path + ("?" + "&".join(parts) if parts else "")


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with the access log above in place of its own."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"][ACCESS_LOGGER] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


access = logging.getLogger(ACCESS_LOGGER)
