"""Personal data kept out of what the SDK shows: AIQ's messages masked, personas shown masked, persona searches cut
from httpx's log."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import httpx

_EMAIL = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+")
_PHONE = re.compile(r"(?<!\d)(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}(?!\d)")


def redact_personal_data(text: str) -> str:
    """``text`` with anything shaped like an email or a phone number masked, so AIQ's messages are safe to show."""
    return _PHONE.sub("[phone]", _EMAIL.sub("[email]", text))


# A persona's fields as the UI may show them (AIQ's spelling: members and overrides): names by their initial, the phone
# by its last two digits, the rest only as present. The full record stays in the sync database.
_INITIAL = ("first_name", "last_name")
_LAST_TWO = ("phone_number", "mobilePhone")
_PRESENT = {"email": "[email]", "birthday": "[birthday]", "address1": "[address]", "address2": "[address]",
            "city": "[address]", "state": "[address]", "zip": "[address]", "gender": "[gender]"}


def mask_persona(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` (a member's or an override's) with the shopper masked: "Zoë" is "Z.", a phone "…42", an email, a
    birthday and every part of an address only "[email]", "[birthday]", "[address]". Other fields are kept."""
    masked = dict(fields)
    for name, value in fields.items():
        if value in (None, ""):
            continue
        if name in _INITIAL:
            masked[name] = f"{str(value).strip()[:1]}."
        elif name in _LAST_TWO:
            masked[name] = "…" + re.sub(r"\D", "", str(value))[-2:]
        elif name in _PRESENT:
            masked[name] = _PRESENT[name]
    return masked


class _HideSearchTerms(logging.Filter):
    """Cuts the query (a phone or email) from httpx's request log line for persona searches."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.copy_with(query=None) if isinstance(arg, httpx.URL) and "/piis/" in arg.path else arg
                for arg in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_HideSearchTerms())
