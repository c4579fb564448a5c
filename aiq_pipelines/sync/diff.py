"""Diffing staged records against the ledger, one chunk at a time: what to send, what is unchanged, what waits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from aiq_pipelines.aiq.payloads import EncodedPayload, Member
from aiq_pipelines.db.hashing import digest
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.sync.ledger import LedgerEntry
from aiq_pipelines.sync.quarantine import Stage
from aiq_pipelines.sync.reports import PushReport


def profile_hash(member: Member) -> str:
    """A persona's payload without the fields that only the override call may change."""
    return digest(member.encoded_without("phone_number", "email"))


# The records a push reads and passes on are named tuples, several times cheaper to build than frozen dataclasses
# (bench/RESULTS.md, "named tuples"): a sale builds four on its way, plus its ledger entry.
class Staged(NamedTuple):
    """A staged record on its way to AIQ, with what the ledger needs to remember it."""

    key: str
    source_hash: str
    business_date: dt.date | None
    entry: LedgerEntry | None = None
    payload_hash: str = ""  # set once the payload is built, so it is hashed once

    # Plain constructor calls: _replace costs several times more, once or twice per record pushed.
    def with_entry(self, entry: LedgerEntry | None) -> Staged:
        return Staged(self.key, self.source_hash, self.business_date, entry, self.payload_hash)

    def with_payload_hash(self, payload_digest: str) -> Staged:
        return Staged(self.key, self.source_hash, self.business_date, self.entry, payload_digest)


class StagedSale(NamedTuple):
    """What a push needs of a staged receipt: its payload was built at extract (``staged_transactions.payload``)."""

    customer_id: str | None
    is_void: bool
    payload: EncodedPayload | None
    payload_hash: str | None
    payload_error: str | None


# (record, stage, reason, digest of the refused payload)
Held = tuple[Staged, Stage, str, str | None]


@dataclass
class ChunkDiff:
    """One chunk of staged records compared with the ledger, and what to write back once the chunk is done."""

    entity: Entity
    report: PushReport
    entries: dict[str, LedgerEntry]
    refused: dict[str, tuple[str, str]]  # key -> (digest of the payload AIQ refused, reason)
    cleared: list[str] = field(default_factory=list)
    bad: list[Held] = field(default_factory=list)
    refresh: list[tuple[str, str]] = field(default_factory=list)

    def read(self, staged: Staged) -> Staged:
        """Count the record and attach what the ledger knows about it."""
        self.report.read(staged.business_date)
        return staged.with_entry(self.entries.get(staged.key))

    def quarantine(self, staged: Staged, reason: str) -> None:
        self.report.reject_on(staged.business_date, staged.key, reason)
        self.bad.append((staged, Stage.PAYLOAD, reason, None))

    def settled(self, staged: Staged, payload_digest: str) -> bool:
        """True when AIQ already has this payload, or refused exactly this payload before: nothing to send."""
        entry = staged.entry
        if entry is not None and entry.payload_hash == payload_digest:
            self.report.count_unchanged(staged.business_date)
            self.cleared.append(staged.key)
            if entry.source_hash != staged.source_hash:
                self.refresh.append((staged.key, staged.source_hash))
            return True
        if staged.key in self.refused and self.refused[staged.key][0] == payload_digest:
            self.report.reject_on(staged.business_date, staged.key, self.refused[staged.key][1])
            return True
        return False


def keys_of(chunk: Sequence[tuple[object, Staged]]) -> list[str]:
    return [staged.key for _, staged in chunk]
