"""Personal data kept out of what the SDK shows: AIQ's messages masked, persona searches cut from httpx's log."""

from __future__ import annotations

import logging
import re

import httpx

_EMAIL = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+")
_PHONE = re.compile(r"(?<!\d)(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}(?!\d)")


def redact_personal_data(text: str) -> str:
    """``text`` with anything shaped like an email or a phone number masked, so AIQ's messages are safe to show."""
    return _PHONE.sub("[phone]", _EMAIL.sub("[email]", text))


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
