"""The errors the AIQ SDK raises. None of their messages contains the API key, a phone or an email."""

from __future__ import annotations


class AiqError(Exception):
    """Base of every error the AIQ client raises; messages never contain the API key."""


class AiqAuthError(AiqError):
    """AIQ refused the API key (401/403)."""


class AiqAccountError(AiqError):
    """AIQ does not know the account id (404 on the uid)."""


class AiqContactNotFoundError(AiqError):
    """The override call named a contactID that AIQ does not know."""


class AiqUnavailableError(AiqError):
    """AIQ kept failing (5xx, 429, timeouts, broken connections) until the retry bound ran out."""


class AiqRefusedError(AiqError):
    """AIQ refused a request's content (a 4xx other than 401/403/404/429); not retried."""

    def __init__(self, status: int, message: str):
        super().__init__(f"AIQ refused the request with HTTP {status}: {message}")
        self.status = status
        self.message = message
