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
class StageDay(QuarantineTally):
    """One business day's share of an extract: what a run of that day alone would report."""

    staged: int = 0

    @property
    def extracted(self) -> int:
        return self.staged + self.quarantined

    @property
    def quarantine_rate(self) -> float:
        return self.quarantined / self.extracted if self.extracted else 0.0


@dataclass(kw_only=True)
class StageReport(StageDay):
    """What one extract staged for one window, in all and day by day (``days``; empty for the undated inventory)."""

    entity: Entity
    window_start: dt.datetime
    window_end: dt.datetime
    chunks: int = 0
    # Counted in the staging transaction itself: once it commits, another run of the same days may restage the rows.
    keys_staged: int = 0
    outside_window: int = 0
    # pos_transactions: the customers of the window's sales staged with their payloads (staged_sale_customers), and
    # how many of them have none (the reason is staged; the push quarantines the customer if it has to send it).
    sale_customers: int = 0
    sale_customers_without_payload: int = 0
    expected: int | None = None  # records the POS holds for the window read, when it can say cheaply (progress only)
    days: dict[dt.date, StageDay] = field(default_factory=dict)

    def day(self, day: dt.date) -> StageDay:
        found = self.days.get(day)
        if found is None:
            found = self.days[day] = StageDay()
        return found

    def stage_on(self, day: dt.date | None) -> None:
        self.staged += 1
        if day is not None:
            self.day(day).staged += 1

    def reject_on(self, day: dt.date | None, key: Any, reason: str) -> None:
        self.reject(key, reason)
        if day is not None:
            self.day(day).reject(key, reason)


@dataclass(kw_only=True)
class StrayReport(QuarantineTally):
    """Records no partition reads (see ``PosSource.strays``), quarantined so they are not lost silently."""

    entity: Entity


@dataclass(kw_only=True)
class PushDay(QuarantineTally):
    """One business day's share of a push (a record's day is its own; a sale's customer's, its first sale's)."""

    staged: int = 0
    sent: int = 0
    unchanged: int = 0
    voided_unsent: int = 0
    overrides: int = 0

    @property
    def accounted(self) -> int:
        return self.sent + self.unchanged + self.voided_unsent + self.quarantined

    def add(self, other: PushDay) -> None:
        """Count ``other``'s records in these figures too."""
        self.staged += other.staged
        self.sent += other.sent
        self.unchanged += other.unchanged
        self.voided_unsent += other.voided_unsent
        self.overrides += other.overrides
        self.quarantined += other.quarantined
        self.reasons.update(other.reasons)
        for reason, keys in other.example_keys.items():
            mine = self.example_keys.setdefault(reason, [])
            mine.extend(keys[: max(0, 5 - len(mine))])


@dataclass(kw_only=True)
class PushReport(PushDay):
    """What one push did with the records in its scope: every one is sent, unchanged, voided or quarantined. The
    figures are the window's; ``days`` splits them by business day (the inventory snapshot has none)."""

    entity: Entity
    personas_sent_first: int = 0
    member_issues: Counter[str] = field(default_factory=Counter)
    days: dict[dt.date | None, PushDay] = field(default_factory=dict)

    def day(self, day: dt.date | None) -> PushDay:
        found = self.days.get(day)
        if found is None:
            found = self.days[day] = PushDay()
        return found

    def read(self, day: dt.date | None) -> None:
        self.staged += 1
        self.day(day).staged += 1

    def count_unchanged(self, day: dt.date | None) -> None:
        self.unchanged += 1
        self.day(day).unchanged += 1

    def count_sent(self, day: dt.date | None) -> None:
        self.sent += 1
        self.day(day).sent += 1

    def count_void(self, day: dt.date | None) -> None:
        self.voided_unsent += 1
        self.day(day).voided_unsent += 1

    def count_override(self, day: dt.date | None) -> None:
        self.overrides += 1
        self.day(day).overrides += 1

    def reject_on(self, day: dt.date | None, key: Any, reason: str) -> None:
        self.reject(key, reason)
        self.day(day).reject(key, reason)

    def add(self, other: PushDay) -> None:
        super().add(other)
        if isinstance(other, PushReport):
            self.personas_sent_first += other.personas_sent_first
            self.member_issues.update(other.member_issues)
            for day, figures in other.days.items():
                self.day(day).add(figures)
