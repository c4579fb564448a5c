"""Who may pull: API keys compared in constant time, each reading one account's records (or, without
``AIQ_ACCOUNTS_FILE``, everything); a request budget per key; and a throttle on clients that keep sending bad keys.

A key comes as ``Authorization: Bearer <key>`` or as HTTP Basic with the key as the user name (password ignored), and
only there: a key in the URL would be written by every proxy and access log on the way. A request without a valid key
gets 401 and no hint which part was wrong. Keys are never logged: a short digest of the key names its budget.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# Query parameters that are a key whatever they hold: the names clients and libraries use for one.
KEY_PARAMETERS = frozenset({"api_key", "apikey", "api-key", "x-apikey", "x-api-key", "key", "token", "access_token",
                            "auth", "authorization", "bearer", "password", "secret"})


@dataclass(frozen=True)
class Caller:
    """Whom a valid key belongs to: its account (None: the single-key set-up, which reads everything) and the name of
    its request budget (a digest of the key)."""

    account: str | None
    budget: str


class ApiKeys:
    """The keys this service accepts, by the account each reads (None for the single-key set-up)."""

    def __init__(self, keys: Mapping[str | None, Sequence[str]]):
        self._keys: list[tuple[bytes, str | None]] = []
        owners: dict[bytes, str | None] = {}
        for account, given in keys.items():
            for key in dict.fromkeys(k for k in given if k):
                encoded = key.encode()
                if encoded in owners:
                    raise ValueError(f"a pull key is configured for both account {owners[encoded]!r} and {account!r}: "
                                     "give each account keys of its own")
                owners[encoded] = account
                self._keys.append((encoded, account))
        if not self._keys:
            raise ValueError("no pull API key is configured")

    def __repr__(self) -> str:  # never the keys themselves
        return f"ApiKeys({len(self._keys)} keys)"

    @property
    def accounts(self) -> set[str | None]:
        return {account for _, account in self._keys}

    def derived_secret(self, purpose: bytes) -> bytes:
        """A secret for ``purpose`` (signing cursors) that every process with the same keys derives alike."""
        return hmac.new(b"\0".join(sorted(key for key, _ in self._keys)), purpose, hashlib.sha256).digest()

    def _owner(self, given: bytes) -> tuple[bool, str | None]:
        matched, owner = False, None
        for key, account in self._keys:  # every key is compared, so the time taken does not tell which one matched
            hit = hmac.compare_digest(given, key)
            matched |= hit
            owner = account if hit else owner
        return matched, owner

    def holds_key(self, text: str) -> bool:
        """Whether ``text`` is one of the keys (compared in constant time)."""
        return self._owner(text.encode())[0]

    def match(self, authorization: str | None) -> Caller | None:
        """Whom the key ``authorization`` carries belongs to, or None when it carries no valid key."""
        given = _presented_key(authorization)
        if given is None:
            return None
        matched, account = self._owner(given)
        return Caller(account, hashlib.sha256(given).hexdigest()[:12]) if matched else None

    def in_query(self, items: Iterable[tuple[str, str]]) -> bool:
        """Whether a query string carries a key: a parameter named like one, or a name or value that is a key."""
        found = False
        for name, value in items:
            found |= name.lower() in KEY_PARAMETERS
            found |= self.holds_key(name) | self.holds_key(value)
        return found


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


class SlidingWindow:
    """At most ``allowed`` events per name in any sliding ``window_seconds``, in this process; the oldest names are
    forgotten past ``max_names``, so a flood of names cannot grow it without bound."""

    def __init__(self, allowed: int, *, window_seconds: float = 60.0, max_names: int = 10_000):
        self.allowed = allowed
        self.window = window_seconds
        self._max_names = max_names
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, name: str, now: float) -> deque[float]:
        events = self._events.setdefault(name, deque())
        self._events.move_to_end(name)
        while events and events[0] <= now - self.window:
            events.popleft()
        while len(self._events) > self._max_names:
            self._events.popitem(last=False)
        return events

    def wait(self, name: str) -> float:
        """0 when ``name`` is within its allowance, else the seconds until it is (for Retry-After)."""
        now = time.monotonic()
        with self._lock:
            events = self._recent(name, now)
            return max(events[0] + self.window - now, 0.001) if len(events) >= self.allowed else 0.0

    def record(self, name: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._recent(name, now).append(now)

    def take(self, name: str) -> float:
        """Count an event of ``name`` if it is within its allowance (0 returned), else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            events = self._recent(name, now)
            if len(events) >= self.allowed:
                return max(events[0] + self.window - now, 0.001)
            events.append(now)
            return 0.0


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least one."""
    return str(max(1, math.ceil(seconds)))
