"""How the sandbox, like AIQ, processes what it accepted: later, not always, and with invalid phones blanked.

AIQ answers 200 when it *accepts* a bulk write and applies it asynchronously, "up to 24 hours depending on ingestion
volume" (its guide); an accepted persona may still never appear ([assumed] in docs/how-it-works.md). The sandbox
stands in for that with three switches: ``--apply-delay`` (seconds between acceptance and the write showing in reads
and in ``/sandbox/state``), ``--drop-personas`` (the fraction of accepted personas silently dropped) and
``--drop-keys`` (personas dropped on their first N acceptances, or always), so tests can make the same persona drop
again on its re-send. The draw is a hash of the seed, the ``pos_user`` and how many times it was accepted before, so
it does not depend on the order concurrent requests arrive in.

"If an invalid phone number is submitted, AIQ will process it as a blank value" (the guide). What AIQ deems invalid is
unpublished; the sandbox blanks a 10-digit number that is not a North American number (area code or exchange starting
with 0 or 1, or an N11 service code), and the numbers ``--blank-phones`` lists, which stand for numbers a check of
AIQ's own (a carrier lookup, say) refuses although they look valid.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_NANP = re.compile(r"[2-9][0-9]{2}[2-9][0-9]{6}")
ALWAYS = -1  # --drop-keys without a count: dropped on every acceptance


@dataclass(frozen=True)
class Processing:
    """How accepted writes are applied: after ``apply_delay`` seconds, some personas never, invalid phones blank."""

    apply_delay: float = 0.0
    drop_fraction: float = 0.0
    drop_seed: int = 0
    drop_keys: Mapping[str, int] = field(default_factory=dict)  # pos_user -> first N acceptances dropped (or ALWAYS)
    blank_phones: frozenset[str] = frozenset()

    def drops(self, pos_user: str, accepted_before: int) -> bool:
        """Whether the persona's acceptance number ``accepted_before`` (0 for its first) is silently dropped."""
        times = self.drop_keys.get(pos_user)
        if times is not None and (times == ALWAYS or accepted_before < times):
            return True
        if self.drop_fraction <= 0:
            return False
        draw = hashlib.sha256(f"{self.drop_seed}:{pos_user}:{accepted_before}".encode()).digest()
        return int.from_bytes(draw[:8], "big") / 2**64 < self.drop_fraction

    def valid_phone(self, phone: str) -> bool:
        return bool(_NANP.fullmatch(phone)) and "11" not in (phone[1:3], phone[4:6]) and phone not in self.blank_phones

    def blank_invalid_phone(self, fields: Mapping[str, Any], phone_field: str) -> dict[str, Any]:
        """``fields`` as AIQ stores them: the phone in ``phone_field`` blank when it is invalid."""
        phone = fields.get(phone_field)
        if isinstance(phone, str) and phone and not self.valid_phone(phone):
            return {**fields, phone_field: ""}
        return dict(fields)


def parse_drop_keys(text: str) -> dict[str, int]:
    """``--drop-keys``: comma-separated ``pos_user`` (always dropped) or ``pos_user:N`` (its first N acceptances)."""
    keys: dict[str, int] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        key, _, times = entry.rpartition(":") if ":" in entry else (entry, "", "")
        if times and not times.isdigit():
            raise ValueError(f"{entry!r}: expected pos_user or pos_user:N with N a whole number")
        keys[key] = int(times) if times else ALWAYS
    return keys
