"""Who may pull: API keys compared in constant time, and a request budget per key.

A key comes as ``Authorization: Bearer <key>`` or as HTTP Basic with the key as the user name (password ignored). A
request without a valid key gets 401 and no hint which part was wrong. Keys are never logged: only a short digest of
the key names its budget.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import threading
import time
from collections import deque
from collections.abc import Sequence


class ApiKeys:
    """The keys this service accepts."""

    def __init__(self, keys: Sequence[str]):
        self._keys = [key.encode() for key in keys if key]
        if not self._keys:
            raise ValueError("PULL_API_KEYS: expected one or more API keys separated by commas")

    def __repr__(self) -> str:  # never the keys themselves
        return f"ApiKeys({len(self._keys)} keys)"

    def derived_secret(self, purpose: bytes) -> bytes:
        """A secret for ``purpose`` (signing cursors) that every process with the same keys derives alike."""
        return hmac.new(b"\0".join(sorted(self._keys)), purpose, hashlib.sha256).digest()

    def match(self, authorization: str | None) -> str | None:
        """The budget name (a digest) of the key ``authorization`` carries, or None when it carries no valid key."""
        given = _presented_key(authorization)
        if given is None:
            return None
        matched = False
        for key in self._keys:  # every key is compared, so the time taken does not tell which one matched
            matched |= hmac.compare_digest(given, key)
        return hashlib.sha256(given).hexdigest()[:12] if matched else None


def _presented_key(authorization: str | None) -> bytes | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and value:
        return value.encode()
    if scheme == "basic" and value:
        try:
            user, _, _password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user.encode() or None
    return None


class RequestBudget:
    """At most ``per_minute`` requests per key in any sliding minute, in this process."""

    def __init__(self, per_minute: int, *, window_seconds: float = 60.0):
        self.per_minute = per_minute
        self.window = window_seconds
        self._sent: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Count a request of ``key``: 0 when it may proceed, else the seconds to wait (for Retry-After)."""
        now = time.monotonic()
        with self._lock:
            sent = self._sent.setdefault(key, deque())
            while sent and sent[0] <= now - self.window:
                sent.popleft()
            if len(sent) >= self.per_minute:
                return max(sent[0] + self.window - now, 0.001)
            sent.append(now)
            return 0.0


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least one."""
    return str(max(1, math.ceil(seconds)))
