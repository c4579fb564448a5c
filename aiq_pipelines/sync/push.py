"""Sending what changed to AIQ: staged records → payloads → diff against the ledger → batches → ledger.

One ``Pusher`` serves one run and one AIQ account. Records are read from staging in chunks; each record's payload hash
is compared with the ledger, so an unchanged record costs no request. Sales, personas and the customers the sales name
had their payloads and hashes staged by the extract: sales are sent as the stored bytes, a persona's bytes are read
back into its model only when it is sent. Only products are mapped here; the push never reads the POS. Batches go
through the client's bulk senders, which keep a few at AIQ at once; each batch's outcome comes back in order, once
AIQ answered it, and is written to the ledger in a transaction of its own. A sale's persona is always acknowledged by
AIQ before the sale is sent: the personas a chunk of sales needs are sent, and their stream drained, before any of
those sales is.
Each push holds the account's push lease (``sync.lease``), so runs that overlap take turns and none sends what another
has just sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa
from pydantic import ValidationError

from aiq_pipelines.aiq import mapping
from aiq_pipelines.aiq.client import (
    AiqClient,
    AiqContactNotFoundError,
    BatchOutcome,
    redact_personal_data,
)
from aiq_pipelines.aiq.payloads import EncodedPayload, Member, payload_hash
from aiq_pipelines.pos.records import InventoryItem
from aiq_pipelines.pos.source import chunked
from aiq_pipelines.sync.collector import old_objects_frozen
from aiq_pipelines.sync.engines import execute_with_lists
from aiq_pipelines.sync.lease import push_lease
from aiq_pipelines.sync.ledger import Ledger, LedgerEntry, aiq_ledger
from aiq_pipelines.sync.progress import Progress
from aiq_pipelines.sync.staging import (
    PersonaPayload,
    QuarantineTally,
    SyncStore,
    quarantine,
    staged_inventory,
    staged_personas,
    staged_sale_customers,
    staged_transactions,
)

PUSH_CHUNK = 500
PUSH_STAGES = ("payload", "aiq")
WAITING_FOR_PERSONA = "waiting for its persona: the customer is quarantined or was refused by AIQ"
CUSTOMER_NOT_STAGED = "payload missing: the customer is not staged; re-run the day's pos_transactions"

logger = logging.getLogger(__name__)

# Statements run once per batch or chunk, built once with their key lists as expanding parameters: building a
# statement and its cache key each time cost about as much as running it (SQLite, 100 keys). They run through
# execute_with_lists, which renders each length of key list once.
_KEYS = sa.bindparam("keys", expanding=True)
_REFUSED = sa.select(quarantine.c.record_key, quarantine.c.source_hash, quarantine.c.reason).where(
    quarantine.c.entity == sa.bindparam("entity"), quarantine.c.stage == "aiq", quarantine.c.record_key.in_(_KEYS)
)
_CLEAR_PUSH_QUARANTINE = quarantine.delete().where(
    quarantine.c.entity == sa.bindparam("entity"), quarantine.c.stage.in_(PUSH_STAGES),
    quarantine.c.record_key.in_(_KEYS),
)
_SALE_CUSTOMERS = sa.select(
    staged_sale_customers.c.customer_id, staged_sale_customers.c.content_hash, staged_sale_customers.c.payload,
    staged_sale_customers.c.payload_hash, staged_sale_customers.c.payload_issues, staged_sale_customers.c.payload_error,
).where(staged_sale_customers.c.customer_id.in_(sa.bindparam("ids", expanding=True)))


def profile_hash(member: Member) -> str:
    """A persona's payload without the fields that only the override call may change."""
    return hashlib.sha256(member.encoded_without("phone_number", "email")).hexdigest()


@dataclass(kw_only=True)
class PushReport(QuarantineTally):
    """What one push did with the records in its scope: every one is sent, unchanged, voided or quarantined."""

    entity: str
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


# The records a push reads and passes on are named tuples: a frozen dataclass took 2 µs to build against 0.7 µs, and a
# sale builds four on its way, plus its ledger entry (8% of the 100k sales step's time holding the interpreter on the
# thread that feeds the senders went to building them).
class _Staged(NamedTuple):
    """A staged record on its way to AIQ, with what the ledger needs to remember it."""

    key: str
    source_hash: str
    business_date: dt.date | None
    entry: LedgerEntry | None = None
    payload_hash: str = ""  # set once the payload is built, so it is hashed once

    # Plain constructor calls: _replace costs several times more, once or twice per record pushed.
    def with_entry(self, entry: LedgerEntry | None) -> _Staged:
        return _Staged(self.key, self.source_hash, self.business_date, entry, self.payload_hash)

    def with_payload_hash(self, digest: str) -> _Staged:
        return _Staged(self.key, self.source_hash, self.business_date, self.entry, digest)


class _StagedSale(NamedTuple):
    """What a push needs of a staged receipt: its payload was built at extract (``staged_transactions.payload``)."""

    customer_id: str | None
    is_void: bool
    payload: EncodedPayload | None
    payload_hash: str | None
    payload_error: str | None


@dataclass
class _ChunkDiff:
    """One chunk of staged records compared with the ledger, and what to write back once the chunk is done."""

    entity: str
    report: PushReport
    entries: dict[str, LedgerEntry]
    refused: dict[str, tuple[str, str]]
    cleared: list[str] = field(default_factory=list)
    bad: list[tuple[_Staged, str, str, str | None]] = field(default_factory=list)
    refresh: list[tuple[str, str]] = field(default_factory=list)

    def read(self, staged: _Staged) -> _Staged:
        """Count the record and attach what the ledger knows about it."""
        self.report.staged += 1
        return staged.with_entry(self.entries.get(staged.key))

    def quarantine(self, staged: _Staged, reason: str) -> None:
        self.report.reject(staged.key, reason)
        self.bad.append((staged, "payload", reason, None))

    def settled(self, staged: _Staged, digest: str) -> bool:
        """True when AIQ already has this payload, or refused exactly this payload before: nothing to send."""
        entry = staged.entry
        if entry is not None and entry.payload_hash == digest:
            self.report.unchanged += 1
            self.cleared.append(staged.key)
            if entry.source_hash != staged.source_hash:
                self.refresh.append((staged.key, staged.source_hash))
            return True
        if staged.key in self.refused and self.refused[staged.key][0] == digest:
            self.report.reject(staged.key, self.refused[staged.key][1])
            return True
        return False


class Pusher:
    """Pushes staged records of one window (or the inventory snapshot) to one AIQ account."""

    def __init__(self, store: SyncStore, client: AiqClient, account: str, run_id: str, log: logging.Logger | None = None):
        self.store = store
        self.client = client
        self.ledger = Ledger(store.engine, account)
        self.run_id = run_id
        self.log = log or logger
        self._meter: tuple[str, Progress] | None = None

    # -- quarantine of push stages -------------------------------------------------------------------------

    def _refused(self, entity: str, keys: Iterable[str]) -> dict[str, tuple[str, str]]:
        """Records AIQ refused: key -> (hash of the refused payload, reason)."""
        keys = list(keys)
        if not keys:
            return {}
        with self.store.engine.connect() as conn:
            rows = execute_with_lists(conn, _REFUSED, {"entity": entity, "keys": keys})
            return {key: (digest, reason) for key, digest, reason in rows}

    def _settle(
        self,
        entity: str,
        *,
        acked: Sequence[LedgerEntry] = (),
        cleared: Iterable[str] = (),
        quarantined: Sequence[tuple[_Staged, str, str, str | None]] = (),
    ) -> None:
        """One transaction: ledger rows for what AIQ acknowledged, quarantine rows replaced for the keys involved."""
        keys = {e.record_key for e in acked} | set(cleared) | {s.key for s, *_ in quarantined}
        if not keys:
            return
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with self.store.engine.begin() as conn:
            self.ledger.acknowledge(conn, entity, acked, self.run_id)
            execute_with_lists(conn, _CLEAR_PUSH_QUARANTINE, {"entity": entity, "keys": list(keys)})
            if quarantined:
                conn.execute(
                    quarantine.insert(),
                    [
                        {"entity": entity, "record_key": staged.key, "stage": stage, "business_date": staged.business_date,
                         "reason": reason, "source_hash": digest, "source": None, "run_id": self.run_id,
                         "quarantined_at": now}
                        for staged, stage, reason, digest in quarantined
                    ],
                )

    @contextlib.contextmanager
    def _pushing(self) -> Iterator[None]:
        """While a push runs: the account's push lease (pushers working at once would each send what the other has
        not acknowledged), and the objects that already exist kept out of the garbage collector's full passes."""
        with push_lease(self.store.engine, self.ledger.account, self.run_id, self.log), old_objects_frozen():
            yield

    def _diff(self, entity: str, chunk: Sequence[tuple[Any, _Staged]], report: PushReport) -> _ChunkDiff:
        keys = [staged.key for _, staged in chunk]
        return _ChunkDiff(entity, report, self.ledger.entries(entity, keys), self._refused(entity, keys))

    def _write_back(self, diff: _ChunkDiff) -> None:
        self._settle(diff.entity, cleared=diff.cleared, quarantined=diff.bad)
        self.ledger.refresh_source_hashes(diff.entity, diff.refresh)
        self._progress(diff.report)

    def _record(self, outcome: BatchOutcome, acked: Sequence[LedgerEntry], report: PushReport) -> None:
        """One batch AIQ answered: its acknowledged records into the ledger, its refused ones into quarantine."""
        refused = [(s, "aiq", _refusal(message), s.payload_hash) for s, _, message in outcome.refused]
        self._settle(report.entity, acked=acked, quarantined=refused)
        report.sent += len(acked)
        for staged, _, reason, _ in refused:
            report.reject(staged.key, reason)
        self._progress(report)

    def quarantine_count(self, entity: str) -> int:
        with self.store.engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(quarantine).where(quarantine.c.entity == entity)) or 0

    # -- personas -------------------------------------------------------------------------------------------

    def _find_contact(self, key: str, entry: LedgerEntry) -> str | None:
        """AIQ's contactID for a persona whose id we did not keep: search by the phone, then the email, last sent."""
        for term in (entry.sent_phone, entry.sent_email):
            if not term:
                continue
            matches = self.client.search_personas(term)
            mine = [m for m in matches if m.pos_user == key] or (matches if len(matches) == 1 else [])
            if mine:
                return mine[0].contact_id
        return None

    def _override(self, staged: _Staged, member: Member, report: PushReport) -> bool:
        """Send a changed phone/email of a persona AIQ has through the override call. True if the persona is done."""
        entry = staged.entry
        if entry is None:
            return False
        override = mapping.override_payload(entry.sent_phone, entry.sent_email, member)
        if override is None:
            return False
        contact_id = entry.contact_id or self._find_contact(staged.key, entry)
        if contact_id is None:
            self.log.warning(f"persona {staged.key}: contactID unknown and not found by search; sending it as an upsert")
            return False
        try:
            self.client.override_persona(contact_id, override)
        except AiqContactNotFoundError:
            self.log.warning(f"persona {staged.key}: AIQ no longer knows contactID {contact_id}; sending it as an upsert")
            return False
        report.overrides += 1
        if profile_hash(member) != entry.profile_hash:
            return False  # other fields changed as well: the upsert carries them
        acked = LedgerEntry(staged.key, payload_hash(member), staged.source_hash, entry.profile_hash,
                            member.phone_number, member.email, contact_id, entry.src_id)
        self._settle("persona", acked=[acked])
        report.sent += 1
        return True

    def _member_candidates(
        self, records: Iterable[tuple[PersonaPayload, _Staged]], report: PushReport
    ) -> Iterator[tuple[_Staged, Member]]:
        for chunk in chunked(iter(records), PUSH_CHUNK):
            diff = self._diff("persona", chunk, report)
            for payload, staged in chunk:
                staged = diff.read(staged)
                if payload.encoded is None or payload.digest is None:
                    diff.quarantine(staged, payload.error or "payload missing: re-run the day's extract")
                    continue
                report.member_issues.update(payload.issues)
                if diff.settled(staged, payload.digest):
                    continue
                member = payload.member()
                if self._override(staged, member, report):
                    continue
                yield staged.with_payload_hash(payload.digest), member
            self._write_back(diff)

    def _send_members(self, *sources: tuple[Iterable[tuple[PersonaPayload, _Staged]], PushReport]) -> None:
        """Send the personas of each source that AIQ lacks as they are, each accounted in its source's report.

        The sources share one stream of batches, so a push's personas take ceil(changed / batch size) requests, not
        one partial batch more per source.
        """
        candidates = (
            ((staged, report), member)
            for records, report in sources
            for staged, member in self._member_candidates(records, report)
        )
        for outcome in self.client.send_members(candidates):
            parts: dict[int, tuple[PushReport, BatchOutcome]] = {}
            for (staged, report), member, ack in outcome.accepted:
                parts.setdefault(id(report), (report, BatchOutcome()))[1].accepted.append((staged, member, ack))
            for (staged, report), member, message in outcome.refused:
                parts.setdefault(id(report), (report, BatchOutcome()))[1].refused.append((staged, member, message))
            for report, part in parts.values():
                acked = []
                for staged, member, ack in part.accepted:
                    previous = staged.entry
                    acked.append(LedgerEntry(
                        staged.key, staged.payload_hash, staged.source_hash, profile_hash(member), member.phone_number,
                        member.email, ack.contact_id if ack else previous and previous.contact_id,
                        ack.src_id if ack else previous and previous.src_id,
                    ))
                self._record(part, acked, report)

    def push_personas(self, start: dt.datetime, end: dt.datetime) -> tuple[PushReport, PushReport]:
        """Send the personas staged for the business days in [start, end) that AIQ doesn't have as they are.

        The customers the window's sales name that the ledger lacks follow in the same stream, as ``pos_transactions``
        staged them (``staged_sale_customers``), so the sales find them in AIQ. Returns the report of the staged
        personas and that of the sales' customers.
        """
        report = PushReport(entity="persona")
        for_sales = PushReport(entity="persona")

        with self._pushing(), ThreadPoolExecutor(1, thread_name_prefix="aiq-personas-missing") as lookup:
            self._start_progress("persona", staged_personas, start, end)
            # The lookup reads every sale of the window (0.2 s at 100k sales): it runs while the staged personas go
            # out, so neither the first batch nor the ones after the staged personas wait for it.
            missing = lookup.submit(self._personas_missing, start, end, besides_staged_personas=True)

            def for_the_sales() -> Iterator[tuple[PersonaPayload, _Staged]]:
                yield from self._sale_customers(missing.result())

            self._send_members((self._staged_personas(start, end), report), (for_the_sales(), for_sales))
        return report, for_sales

    def _sale_customers(self, customer_ids: Iterable[str]) -> Iterator[tuple[PersonaPayload, _Staged]]:
        """The staged payloads of customers that sales name, in the order given. A customer without one (it could not
        be built, or no extract staged it) comes with the reason, and ``_member_candidates`` quarantines it."""
        for ids in chunked(iter(customer_ids), PUSH_CHUNK):
            with self.store.engine.connect() as conn:
                rows = {row[0]: row for row in execute_with_lists(conn, _SALE_CUSTOMERS, {"ids": ids})}
            for key in ids:
                row = rows.get(key)
                if row is None:
                    yield PersonaPayload.failed(CUSTOMER_NOT_STAGED), _Staged(key, "", None)
                    continue
                _, content_hash, payload, digest, issues, error = row
                yield PersonaPayload.staged(payload, digest, issues, error), _Staged(key, content_hash or "", None)

    # -- sales ----------------------------------------------------------------------------------------------

    def _sale_candidates(
        self, records: Iterable[tuple[_StagedSale, _Staged]], report: PushReport, personas: PushReport
    ) -> Iterator[tuple[_Staged, EncodedPayload]]:
        for chunk in chunked(iter(records), PUSH_CHUNK):
            diff = self._diff("transaction", chunk, report)
            needed = {sale.customer_id for sale, _ in chunk if sale.customer_id and not sale.is_void}
            known = self.ledger.known("persona", needed)
            if needed - known:
                sent_before = personas.sent
                self._send_members((self._sale_customers(sorted(needed - known)), personas))
                report.personas_sent_first += personas.sent - sent_before
                known = self.ledger.known("persona", needed)
            for sale, staged in chunk:
                staged = diff.read(staged)
                if sale.is_void and staged.entry is None:
                    report.voided_unsent += 1  # voided before it was ever sent: AIQ never hears of it
                    diff.cleared.append(staged.key)
                    continue
                if not sale.is_void and sale.customer_id and sale.customer_id not in known:
                    diff.quarantine(staged, WAITING_FOR_PERSONA)
                    continue
                if sale.payload is None or sale.payload_hash is None:
                    diff.quarantine(staged, sale.payload_error or "payload missing: re-run the day's extract")
                    continue
                if not diff.settled(staged, sale.payload_hash):
                    yield staged.with_payload_hash(sale.payload_hash), sale.payload
            self._write_back(diff)

    def push_sales(
        self, start: dt.datetime, end: dt.datetime, *, personas_pushed: bool = False
    ) -> tuple[PushReport, PushReport]:
        """Send the sales staged for [start, end) that AIQ doesn't have as they are; personas they need go first.

        ``personas_pushed`` says ``push_personas`` just ran for the same window, so the customers the sales need
        are already sent or quarantined. Returns the sales report and the report of personas sent on the sales' behalf.
        """
        report = PushReport(entity="transaction")
        personas = PushReport(entity="persona")
        candidates = self._sale_candidates(self._staged_sales(start, end), report, personas)
        with self._pushing():
            self._start_progress("transaction", staged_transactions, start, end)
            if not personas_pushed:
                # The personas the window's sales need and the ledger lacks, in one stream before any sale: full
                # batches, not a partial one per chunk of sales. The per-chunk check in _sale_candidates still covers
                # anything this pass missed.
                self._send_members((self._sale_customers(self._personas_missing(start, end)), personas))
                report.personas_sent_first += personas.sent
            for outcome in self.client.send_sales(candidates):
                acked = [LedgerEntry(s.key, s.payload_hash, s.source_hash) for s, _, _ in outcome.accepted]
                self._record(outcome, acked, report)
        return report, personas

    # -- inventory ------------------------------------------------------------------------------------------

    def push_inventory(self) -> PushReport:
        """Send the staged inventory snapshot's products whose payload changed since AIQ last acknowledged them."""
        report = PushReport(entity="inventory")

        def candidates() -> Iterator[tuple[_Staged, Any]]:
            for chunk in chunked(iter(self._staged_inventory()), PUSH_CHUNK):
                diff = self._diff("inventory", chunk, report)
                for item, staged in chunk:
                    staged = diff.read(staged)
                    try:
                        payload = mapping.inventory_payload(item)
                    except ValidationError as exc:
                        diff.quarantine(staged, mapping.payload_reason(exc))
                        continue
                    digest = payload_hash(payload)
                    if not diff.settled(staged, digest):
                        yield staged.with_payload_hash(digest), payload
                self._write_back(diff)

        with self._pushing():
            self._start_progress("inventory", staged_inventory)
            for outcome in self.client.send_inventory(candidates()):
                acked = [LedgerEntry(s.key, s.payload_hash, s.source_hash) for s, _, _ in outcome.accepted]
                self._record(outcome, acked, report)
        return report

    # -- reading staging and proving delivery ---------------------------------------------------------------

    def _staged_inventory(self) -> Iterator[tuple[InventoryItem, _Staged]]:
        """The staged inventory snapshot's products, parsed, in key order."""
        table = staged_inventory
        query = sa.select(table.c.product_id, table.c.content_hash, table.c.record).order_by(table.c.product_id)
        with self.store.engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=PUSH_CHUNK).execute(query)
            for key, content_hash, record in rows:
                yield InventoryItem.model_validate_json(record), _Staged(key, content_hash, None)

    def _staged_personas(self, start: dt.datetime, end: dt.datetime) -> Iterator[tuple[PersonaPayload, _Staged]]:
        """The window's staged personas with their payloads, day by day in key order, without parsing the records."""
        table = staged_personas
        first, stop = self._days(start, end)
        query = (
            sa.select(table.c.customer_id, table.c.content_hash, table.c.business_date, table.c.payload,
                      table.c.payload_hash, table.c.payload_issues, table.c.payload_error)
            .where(table.c.business_date >= first, table.c.business_date < stop)
            .order_by(table.c.business_date, table.c.customer_id)  # ix_staged_personas_day_key_hash: no sort
        )
        with self.store.engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=PUSH_CHUNK).execute(query)
            for key, content_hash, business_date, payload, digest, issues, error in rows:
                yield PersonaPayload.staged(payload, digest, issues, error), _Staged(key, content_hash, business_date)

    def _staged_sales(self, start: dt.datetime, end: dt.datetime) -> Iterator[tuple[_StagedSale, _Staged]]:
        """The window's staged receipts with their payloads, day by day in key order, without parsing the records."""
        table = staged_transactions
        first, stop = self._days(start, end)
        query = (
            sa.select(table.c.transaction_id, table.c.content_hash, table.c.business_date, table.c.customer_id,
                      table.c.is_void, table.c.payload, table.c.payload_hash, table.c.payload_error)
            .where(table.c.business_date >= first, table.c.business_date < stop)
            .order_by(table.c.business_date, table.c.transaction_id)  # the index's order: no sort
        )
        with self.store.engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=PUSH_CHUNK).execute(query)
            for key, content_hash, business_date, customer_id, is_void, payload, digest, error in rows:
                sale = _StagedSale(customer_id, is_void, None if payload is None else EncodedPayload(bytes(payload)),
                                   digest, error)
                yield sale, _Staged(key, content_hash, business_date)

    def _days(self, start: dt.datetime, end: dt.datetime) -> tuple[dt.date, dt.date]:
        return start.astimezone(self.store.tz).date(), end.astimezone(self.store.tz).date()

    def undelivered(self, entity: str, start: dt.datetime | None = None, end: dt.datetime | None = None) -> int:
        """Staged records that are neither in AIQ as staged (per the ledger), nor quarantined, nor voided unsent."""
        table = {"transaction": staged_transactions, "persona": staged_personas, "inventory": staged_inventory}[entity]
        key = next(iter(table.primary_key.columns))
        ledger = aiq_ledger.alias("ledger")
        in_ledger = sa.and_(
            ledger.c.account == self.ledger.account, ledger.c.entity == entity, ledger.c.record_key == key
        )
        quarantined = sa.exists().where(
            quarantine.c.entity == entity, quarantine.c.stage.in_(PUSH_STAGES), quarantine.c.record_key == key
        )
        conditions = [
            sa.or_(ledger.c.record_key.is_(None), ledger.c.source_hash != table.c.content_hash),
            sa.not_(quarantined),
        ]
        if entity == "transaction":
            conditions.append(sa.not_(sa.and_(table.c.is_void, ledger.c.record_key.is_(None))))
        if start is not None and end is not None:
            first, stop = self._days(start, end)
            conditions += [table.c.business_date >= first, table.c.business_date < stop]
        query = sa.select(sa.func.count()).select_from(table.outerjoin(ledger, in_ledger)).where(*conditions)
        with self.store.engine.connect() as conn:
            return conn.scalar(query) or 0

    def _personas_missing(
        self, start: dt.datetime, end: dt.datetime, *, besides_staged_personas: bool = False
    ) -> list[str]:
        """Customers of the window's sales (voids aside) that the ledger lacks, in key order; with
        ``besides_staged_personas``, not those staged for the window (they are sent as staged)."""
        first, stop = self._days(start, end)
        sales = staged_transactions
        known = sa.exists().where(
            aiq_ledger.c.account == self.ledger.account, aiq_ledger.c.entity == "persona",
            aiq_ledger.c.record_key == sales.c.customer_id,
        )
        conditions = [sales.c.business_date >= first, sales.c.business_date < stop, sales.c.customer_id.is_not(None),
                      sa.not_(sales.c.is_void), sa.not_(known)]
        if besides_staged_personas:
            conditions.append(sa.not_(sa.exists().where(
                staged_personas.c.customer_id == sales.c.customer_id,
                staged_personas.c.business_date >= first, staged_personas.c.business_date < stop,
            )))
        query = sa.select(sales.c.customer_id).distinct().where(*conditions).order_by(sales.c.customer_id)
        with self.store.engine.connect() as conn:
            return list(conn.scalars(query))

    def _start_progress(
        self, entity: str, table: sa.Table, start: dt.datetime | None = None, end: dt.datetime | None = None
    ) -> None:
        """Count the staged records in scope, so progress lines can say how much is left."""
        query = sa.select(sa.func.count()).select_from(table)
        if start is not None and end is not None:
            first, stop = self._days(start, end)
            query = query.where(table.c.business_date >= first, table.c.business_date < stop)
        with self.store.engine.connect() as conn:
            total = conn.scalar(query) or 0
        self._meter = (entity, Progress(self.log.info, f"push {entity}", total))

    def _progress(self, report: PushReport) -> None:
        if self._meter is not None and self._meter[0] == report.entity:
            self._meter[1].update(report.accounted, f"{report.sent:,} sent, {report.unchanged:,} unchanged, "
                                                    f"{report.quarantined:,} quarantined")


def _refusal(message: str) -> str:
    return "refused by AIQ: " + redact_personal_data(message)[:300]

