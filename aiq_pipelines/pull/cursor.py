"""Opaque page cursors: the window a pull started with and the last row served, signed so a changed one is refused.

Each account's cursors are signed with a secret of its own, so a cursor is good only with a key of the account that was
given it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import asdict, dataclass
from typing import Any


class CursorError(ValueError):
    """A cursor this service did not issue, or one altered since."""


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: the request's window (its upper bound fixed at the first page) and the sort key of
    the last row served."""

    endpoint: str
    window: dict[str, Any]
    after: list[str]


class CursorSigner:
    """Encodes cursors as base64url JSON with an HMAC-SHA256 tag under ``secret``."""

    def __init__(self, secret: bytes):
        self._secret = secret

    def _tag(self, body: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._secret, body, hashlib.sha256).digest()[:18]).decode()

    def encode(self, cursor: Cursor) -> str:
        body = base64.urlsafe_b64encode(json.dumps(asdict(cursor), separators=(",", ":")).encode()).decode()
        return f"{body}.{self._tag(body.encode())}"

    def decode(self, text: str, endpoint: str) -> Cursor:
        body, _, tag = text.partition(".")
        try:
            signed = hmac.compare_digest(tag.encode("ascii"), self._tag(body.encode("ascii")).encode())
        except UnicodeEncodeError:
            signed = False
        if not tag or not signed:
            raise CursorError("cursor: not a cursor this service issued, or it was changed; pass next_cursor as given")
        try:
            data = json.loads(base64.urlsafe_b64decode(body.encode()))
            cursor = Cursor(str(data["endpoint"]), dict(data["window"]), [str(part) for part in data["after"]])
        except (ValueError, KeyError, TypeError):
            raise CursorError("cursor: not a cursor this service issued") from None
        if cursor.endpoint != endpoint:
            raise CursorError(f"cursor: it was issued by /v1/{cursor.endpoint}, not /v1/{endpoint}")
        return cursor
