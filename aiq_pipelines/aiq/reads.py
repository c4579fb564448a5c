"""AIQ's persona reads, ``GET /api/v1.1/piis/:uid``, and every shape this SDK assumes for them, in one place.

- [doc] ``search`` finds the personas whose name, email, phone, contactID or srcID matches it.
- [seen] The answer's ``data.results`` is a list of ``{contactID, srcID, firstName, lastName, mobilePhone, email,
  ...}``, or ``null`` when nothing matches.
- [seen] Without ``search`` the same call pages through the account's personas, ``limit`` at a time from ``start``.
- [assumed] A page shorter than ``limit`` is the last, and the order does not change while a reader pages (AIQ's
  creation order in the sandbox); AIQ publishes no largest ``limit``, so the reader chooses one (AUDIT_PAGE_SIZE).
- [assumed] Each result carries the persona's ``pos_user``, as the write calls spell it; without it a persona can
  still be matched by its contactID.
- [assumed] A blank phone or email reads as ``""`` or ``null``, both read here as None.
- [assumed] Reads count against the account's rate budget like writes.

An answer of any other shape is an ``AiqError`` that says so, never "nobody found": a reader that took a changed
answer for an empty one would conclude that every persona is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiq_pipelines.aiq.errors import AiqError

PIIS = "/api/v1.1/piis"


@dataclass(frozen=True)
class PersonaMatch:
    """One persona as AIQ's piis read reports it; its repr leaves out the phone and email."""

    contact_id: str
    src_id: str | None
    first_name: str | None
    last_name: str | None
    mobile_phone: str | None = field(repr=False)
    email: str | None = field(repr=False)
    pos_user: str | None


def personas(data: Any) -> list[PersonaMatch]:
    """The personas in a piis answer's ``data``; an ``AiqError`` when it is not the shape above."""
    results = data.get("results", ...) if isinstance(data, dict) else ...
    if results is None:
        return []
    if not isinstance(results, list) or not all(isinstance(r, dict) and _text(r.get("contactID")) for r in results):
        raise AiqError("AIQ answered the piis read in an unexpected shape: expected data.results to be null or a list "
                       "of personas, each with a contactID (the assumptions are in aiq_pipelines/aiq/reads.py)")
    return [
        PersonaMatch(
            contact_id=str(r["contactID"]),
            src_id=_text(r.get("srcID")),
            first_name=_text(r.get("firstName")),
            last_name=_text(r.get("lastName")),
            mobile_phone=_text(r.get("mobilePhone")),
            email=_text(r.get("email")),
            pos_user=_text(r.get("pos_user")),
        )
        for r in results
    ]


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
