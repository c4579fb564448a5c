"""Reading personas back from AIQ for an audit, the cheapest way its budget allows, and comparing them with what was sent.

Two reads exist (``aiq.reads``): one search per persona, or paging through the whole account. Paging costs
``ceil((personas AIQ holds + 1) / page size)`` requests, whatever the day's size, estimated from the account's ledger
(AIQ may hold more, from other channels: then paging stops at the budget and says what it did not reach); searching
costs one request per persona, plus one for a persona without a contactID that its phone did not find (its email is
tried next). The audit takes the cheaper; when neither fits in its requests, it searches a random sample.

A persona is *found* by its contactID or by its ``pos_user``. What AIQ holds is compared with what was sent, field by
field, for the fields AIQ's read returns and the payload carried (a field not sent is AIQ's to keep): the phone as AIQ
normalizes it (its digits, a leading US 1 dropped; AIQ stores an invalid phone blank), the email without case or outer
spaces, first and last names without case or repeated spaces (a merge with another shopper changes them).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiq_pipelines.aiq.client import AiqClient
from aiq_pipelines.aiq.reads import PersonaMatch
from aiq_pipelines.sync.audit_targets import Sent

PAGE, SEARCH = "page", "search"


@dataclass(frozen=True)
class Plan:
    """How an audit reads: ``method``, the personas it reads, whether they are a sample, and the requests expected."""

    method: str
    personas: tuple[str, ...]
    sampled: bool
    expected_requests: int


def plan(readable: Iterable[str], account_personas: int, page_size: int, max_requests: int,
         rng: random.Random) -> Plan:
    """The cheapest read of ``readable`` within ``max_requests``, or a random sample searched one by one."""
    keys = sorted(readable)
    pages = math.ceil((account_personas + 1) / page_size)
    if not keys:
        return Plan(SEARCH, (), False, 0)
    if pages < len(keys) and pages <= max_requests:
        return Plan(PAGE, tuple(keys), False, pages)
    if len(keys) <= max_requests:
        return Plan(SEARCH, tuple(keys), False, len(keys))
    return Plan(SEARCH, tuple(sorted(rng.sample(keys, max_requests))), True, max_requests)


@dataclass
class Read:
    """What a read found: per persona read, AIQ's copy (None: not there). A persona paging did not reach within the
    budget, or one a search cannot look for (no contactID, phone or email), is not in it: unread."""

    found: dict[str, PersonaMatch | None] = field(default_factory=dict)
    pages: int = 0


def read(client: AiqClient, planned: Plan, sent: dict[str, Sent], page_size: int, max_requests: int) -> Read:
    if planned.method == PAGE:
        return _page(client, [sent[key] for key in planned.personas], page_size, max_requests)
    return Read({key: _search(client, sent[key]) for key in planned.personas if _terms(sent[key])})


def _page(client: AiqClient, personas: list[Sent], page_size: int, max_requests: int) -> Read:
    by_user = {p.key: p.key for p in personas}
    by_contact = {p.contact_id: p.key for p in personas if p.contact_id}
    result = Read()
    while result.pages < max_requests:
        page = client.page_personas(limit=page_size, start=result.pages * page_size)
        result.pages += 1
        for held in page:
            key = by_user.get(held.pos_user or "") or by_contact.get(held.contact_id)
            if key is not None:
                result.found.setdefault(key, held)
        if len(page) < page_size or len(result.found) == len(personas):
            result.found.update({p.key: None for p in personas if p.key not in result.found})
            return result
    return result


def _terms(persona: Sent) -> list[str]:
    """What to search a persona by: its contactID when AIQ gave one, else the phone, then the email, sent."""
    return [persona.contact_id] if persona.contact_id else [t for t in (persona.phone, persona.email) if t]


def _search(client: AiqClient, persona: Sent) -> PersonaMatch | None:
    """AIQ's copy of one persona, or None when no search for it finds it."""
    for term in _terms(persona):
        results = client.search_personas(term)
        mine = [r for r in results if r.pos_user == persona.key or (persona.contact_id and
                                                                     r.contact_id == persona.contact_id)]
        if not mine and len(results) == 1 and results[0].pos_user is None:
            mine = results  # [assumed] a read without pos_user: the one persona with this phone or email is ours
        if mine:
            return mine[0]
    return None


def _digits(phone: str | None) -> str:
    digits = re.sub(r"[^0-9]", "", phone or "")
    return digits[1:] if len(digits) == 11 and digits.startswith("1") else digits


def _text(value: str | None) -> str:
    return " ".join((value or "").split()).casefold()


_COMPARED: tuple[tuple[str, str, str, Callable[[str | None], str]], ...] = (
    ("phone", "phone", "mobile_phone", _digits),
    ("email", "email", "email", _text),
    ("first_name", "first_name", "first_name", _text),
    ("last_name", "last_name", "last_name", _text),
)


def differences(sent: Sent, held: PersonaMatch) -> tuple[str, ...]:
    """The fields AIQ holds otherwise than they were sent (names of fields only, never values)."""
    return tuple(name for name, ours, theirs, same in _COMPARED
                 if getattr(sent, ours) is not None and same(getattr(sent, ours)) != same(getattr(held, theirs)))
