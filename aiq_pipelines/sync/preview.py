"""A dry run of a push: the same reading and diffing as ``Pusher``, nothing sent and nothing written.

``PreviewPusher`` is a ``Pusher`` whose sends are batched but never leave the process, whose ledger is read but never
written (the personas a real run would send first count as known, so the sales behind them are counted as sendable),
and which writes no quarantine row and takes no lease. Its ``Preview`` says per entity how many records are new,
changed (and, for personas, go through the override call), unchanged and quarantined, the requests a real run would
make and the time they take at the account's limits, how many would be sent per business day, and a few sample
payloads with the shopper masked (``mask_persona``: initials, a phone's last two digits, nothing of an email, a
birthday or an address).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiq_pipelines.aiq.bulk import BatchOutcome
from aiq_pipelines.aiq.redaction import mask_persona, redact_personal_data
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.source import chunked
from aiq_pipelines.sync import mapping
from aiq_pipelines.sync.diff import ChunkDiff, Held, Staged, profile_hash
from aiq_pipelines.sync.ledger import Ledger, LedgerEntry
from aiq_pipelines.sync.push import Pusher
from aiq_pipelines.sync.reports import PushReport

SAMPLES = 3


@dataclass
class Preview:
    """What a real push of one entity would do."""

    entity: Entity
    new: int = 0
    changed: int = 0
    requests: int = 0
    samples: list[str] = field(default_factory=list)
    by_day: Counter[dt.date | None] = field(default_factory=Counter)  # would be sent, per business day of the record

    def add(self, staged: Staged, payload: Any) -> None:
        if staged.entry is None:
            self.new += 1
        else:
            self.changed += 1
        self.by_day[staged.business_date] += 1
        if len(self.samples) < SAMPLES:
            self.samples.append(_masked(payload))

    def by_day_markdown(self) -> str:
        """Records that would be sent per business day; a sale's customer has none of its own."""
        if not self.by_day:
            return "Nothing would be sent."
        rows = [f"| {day or 'customers of the sales'} | {n:,} |"
                for day, n in sorted(self.by_day.items(), key=lambda item: (item[0] is None, item[0] or dt.date.min))]
        return "\n".join(["| business day | would send |", "|---|---:|", *rows])


def _masked(payload: Any) -> str:
    """A payload as a sample shows it: the shopper masked, and anything shaped like a phone or an email elsewhere."""
    raw = payload.encoded if hasattr(payload, "encoded") else payload.model_dump_json(by_alias=True, exclude_none=True)
    return redact_personal_data(json.dumps(mask_persona(json.loads(raw)), sort_keys=True, ensure_ascii=False))


def seconds_at_limits(requests: int, per_second: int, per_minute: int, per_hour: int) -> float:
    """The least time ``requests`` take under AIQ's sliding windows."""
    if requests == 0:
        return 0.0
    return max(requests / per_second, (math.ceil(requests / per_minute) - 1) * 60.0,
               (math.ceil(requests / per_hour) - 1) * 3600.0)


class _ReadOnlyLedger(Ledger):
    """The account's ledger as a real run would leave it: read, plus the personas it would acknowledge (the preview
    writes nothing back, so only reads reach the ledger)."""

    def __init__(self, ledger: Ledger):
        super().__init__(ledger.engine, ledger.account)
        self.would_know: set[str] = set()

    def known(self, entity: Entity, keys: Iterable[str]) -> set[str]:
        keys = set(keys)
        return super().known(entity, keys) | (keys & self.would_know if entity == Entity.PERSONA else set())


class _Batcher:
    """Stands in for the client's bulk sends: batches as the client would, each 'accepted', none sent."""

    def __init__(self, client: Any, previews: dict[Entity, Preview]):
        self.client, self.previews = client, previews

    def _batches(self, entity: Entity, items: Iterable[tuple[Any, Any]], size: int) -> Iterator[BatchOutcome]:
        preview = self.previews.setdefault(entity, Preview(entity))
        for batch in chunked(iter(items), size):
            preview.requests += 1
            outcome: BatchOutcome = BatchOutcome()
            for key, payload in batch:
                preview.add(key if isinstance(key, Staged) else key[0], payload)  # personas: (record, report)
                outcome.accepted.append((key, payload, None))
            yield outcome

    def send_members(self, members: Iterable[tuple[Any, Any]]) -> Iterator[BatchOutcome]:
        return self._batches(Entity.PERSONA, members, self.client.batch_size_members)

    def send_sales(self, visits: Iterable[tuple[Any, Any]]) -> Iterator[BatchOutcome]:
        return self._batches(Entity.TRANSACTION, visits, self.client.batch_size_sales)

    def send_inventory(self, items: Iterable[tuple[Any, Any]]) -> Iterator[BatchOutcome]:
        return self._batches(Entity.INVENTORY, items, self.client.batch_size_inventory)


class PreviewPusher(Pusher):
    """A ``Pusher`` that sends nothing and writes nothing (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.previews: dict[Entity, Preview] = {}
        self.ledger = _ReadOnlyLedger(self.ledger)
        self.client = _Batcher(self.client, self.previews)  # type: ignore[assignment]

    def preview(self, entity: Entity) -> Preview:
        return self.previews.setdefault(entity, Preview(entity))

    @contextlib.contextmanager
    def _pushing(self) -> Iterator[None]:
        yield  # nothing is sent: no lease to hold

    def _settle(self, entity: Entity, *, acked: Sequence[LedgerEntry] = (), cleared: Iterable[str] = (),
                quarantined: Sequence[Held] = ()) -> None:
        if entity == Entity.PERSONA:
            self.ledger.would_know.update(entry.record_key for entry in acked)

    def _write_back(self, diff: ChunkDiff) -> None:
        self._progress(diff.report)

    def _override(self, item: Staged, member: Any, report: PushReport) -> bool:
        """Counted as the override call a real run would make (and its search, without a kept contactID)."""
        entry = item.entry
        if entry is None or mapping.override_payload(entry.sent_phone, entry.sent_email, member) is None:
            return False
        report.overrides += 1
        preview = self.preview(Entity.PERSONA)
        preview.requests += 1 if entry.contact_id else 2  # without a kept contactID, a search finds it first
        if profile_hash(member) != entry.profile_hash:
            return False  # other fields changed as well: the upsert, counted with the batches, carries them
        preview.changed += 1
        self.ledger.would_know.add(item.key)
        report.sent += 1
        return True
