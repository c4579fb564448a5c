"""The sandbox's answers to AIQ's reads, ``GET /api/v1.1/piis/:uid``: every shape AIQ has not published, in one place.

- ``search`` matching a name, email, phone, contactID or srcID is AIQ's documented behaviour; ``data.results`` as a
  list of ``{contactID, srcID, firstName, lastName, mobilePhone, email, ...}``, ``null`` when nothing matches, is seen
  in integrator code.
- [assumed] Without ``search`` the call pages through the account's personas (seen in integrator code, shape
  unpublished): ``limit`` (default 25, at most 1000) personas from ``start`` (default 0), in the order AIQ created
  them; a page shorter than ``limit`` is the last.
- [assumed] Each result also carries the persona's ``pos_user``, as the write calls spell it.
- [assumed] A blank phone or email reads as ``""``.

Reads answer from what was *applied*, never from what was only accepted (``aiq_sandbox.processing``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

DEFAULT_LIMIT = 25
MAX_LIMIT = 1000


def contact_ids(row_id: int) -> dict[str, str]:
    """A member's contactID and srcID, derived from its row number: deterministic, unique, stable across updates."""
    return {"contactID": f"C{row_id:07d}", "srcID": f"S{row_id:07d}"}


def row_of(contact_id: str) -> int | None:
    """The row number a contactID was derived from; None when it is not one."""
    number = re.fullmatch(r"C([0-9]+)", contact_id)
    return int(number[1]) if number else None


def contact_view(row_id: int, pos_user: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A member as piis (and the sandbox's override answer) reports it."""
    return {
        **contact_ids(row_id),
        "firstName": fields.get("first_name"),
        "lastName": fields.get("last_name"),
        "mobilePhone": fields.get("phone_number"),
        "email": fields.get("email"),
        "pos_user": pos_user,
    }


def matches(row_id: int, fields: Mapping[str, Any], term: str) -> bool:
    """Whether a search ``term`` finds a member: part of its name or email (any case), its phone's digits, or its ids."""
    needle, digits = term.casefold(), re.sub(r"[^0-9]", "", term)
    first, last = fields.get("first_name") or "", fields.get("last_name") or ""
    return (
        any(needle in value.casefold() for value in (f"{first} {last}", fields.get("email") or ""))
        or (bool(digits) and fields.get("phone_number") == digits)
        or term in contact_ids(row_id).values()
    )


def query(params: Mapping[str, str]) -> tuple[str | None, int, int, list[str]]:
    """``(search or None for paging, limit, start, problems)`` from piis's query string."""
    problems: list[str] = []
    search = params.get("search")
    if search is not None and not search.strip():
        problems.append("search: empty; give a name, email, phone, contactID or srcID, or leave it out to page "
                        "through every persona")
    limit = _int_param(params.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT, problems)
    start = _int_param(params.get("start"), "start", 0, 0, None, problems)
    return (search.strip() if search else None), limit, start, problems


def answer(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"results": results or None}


def _int_param(raw: str | None, name: str, default: int, low: int, high: int | None, problems: list[str]) -> int:
    if raw is None:
        return default
    if raw.isdigit() and int(raw) >= low and (high is None or int(raw) <= high):
        return int(raw)
    problems.append(f"{name}: expected an integer from {low}" + (f" to {high}" if high is not None else " up"))
    return default
