"""The one content digest of the project: what the ledger, staging and quarantine compare to tell changed from
unchanged."""

from __future__ import annotations

import hashlib


def digest(data: bytes | str) -> str:
    """SHA-256 of ``data`` (text as UTF-8), as 64 hex characters."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()
