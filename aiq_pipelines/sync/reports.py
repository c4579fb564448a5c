"""What an extract or a push did, in counts the UI shows: every record is accounted for, no personal data."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.sync.held import shown_reason


@dataclass(kw_only=True)
class QuarantineTally:
    """Quarantined records of a run by reason, with a few example keys: what the UI shows, no personal data."""

    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    example_keys: dict[str, list[str]] = field(default_factory=dict)

    def reject(self, key: Any, reason: str) -> None:
        self.quarantined += 1
        self.reasons[reason] += 1
        examples = self.example_keys.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(str(key))

    def reasons_markdown(self, limit: int = 20) -> str:
        """Quarantine reasons as a markdown table: reasons and POS keys only, never personal data."""
        if not self.reasons:
            return "No records quarantined."
        lines = ["| reason | records | example keys |", "|---|---:|---|"]
        for reason, count in self.reasons.most_common(limit):
            keys = ", ".join(f"`{k}`" for k in self.example_keys.get(reason, []))
            lines.append(f"| {shown_reason(reason).replace('|', '/')} | {count} | {keys} |")
        if len(self.reasons) > limit:
            lines.append(f"| … {len(self.reasons) - limit} more reasons | | |")
        return "\n".join(lines)


@dataclass(kw_only=True)
class StageReport(QuarantineTally):
    """What one extract staged for one window."""

    entity: Entity
    window_start: dt.datetime
    window_end: dt.datetime
    staged: int = 0
    chunks: int = 0
    # Counted in the staging transaction itself: once it commits, another run of the same days may restage the rows.
    keys_staged: int = 0
    outside_window: int = 0
    # pos_transactions: the customers of the window's sales staged with their payloads (staged_sale_customers), and
    # how many of them have none (the reason is staged; the push quarantines the customer if it has to send it).
    sale_customers: int = 0
    sale_customers_without_payload: int = 0
    expected: int | None = None  # records the POS holds for the window read, when it can say cheaply (progress only)

    @property
    def extracted(self) -> int:
        return self.staged + self.quarantined

    @property
    def quarantine_rate(self) -> float:
        return self.quarantined / self.extracted if self.extracted else 0.0


@dataclass(kw_only=True)
class StrayReport(QuarantineTally):
    """Records no partition reads (see ``PosSource.strays``), quarantined so they are not lost silently."""

    entity: Entity


@dataclass(kw_only=True)
class PushReport(QuarantineTally):
    """What one push did with the records in its scope: every one is sent, unchanged, voided or quarantined."""

    entity: Entity
    staged: int = 0
    sent: int = 0
    unchanged: int = 0
    voided_unsent: int = 0
    overrides: int = 0
    personas_sent_first: int = 0
    member_issues: Counter[str] = field(default_factory=Counter)

    @property
    def accounted(self) -> int:
        return self.sent + self.unchanged + self.voided_unsent + self.quarantined
