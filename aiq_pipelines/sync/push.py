"""Sending what changed to AIQ: staged records → diff against the ledger → batches → ledger.

One ``Pusher`` serves one run and one AIQ account, and sends only the records of that account's stores
(``sync.accounts``). Records are read from staging in chunks (``sync.staged``); each
record's payload hash is compared with the ledger (``sync.diff``), so an unchanged record costs no request. Sales,
personas and the customers the sales name had their payloads staged by the extract; only products are mapped here, and
the push never reads the POS. Batches go through the client's bulk senders, which keep a few at AIQ at once; each
batch's outcome comes back in order, once AIQ answered it, and is written to the ledger in a transaction of its own.
A sale's persona is always acknowledged by AIQ before the sale is sent: the personas a chunk of sales needs are sent,
and their stream drained, before any of those sales is. Each push holds the account's push lease (``sync.lease``),
so runs that overlap take turns and none sends what another has just sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from aiq_pipelines.aiq.bulk import BatchOutcome
from aiq_pipelines.aiq.client import AiqClient
from aiq_pipelines.aiq.errors import AiqContactNotFoundError
from aiq_pipelines.aiq.payloads import EncodedPayload, Member, payload_hash
from aiq_pipelines.aiq.redaction import redact_personal_data
from aiq_pipelines.db.statements import execute_with_lists
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.source import chunked
from aiq_pipelines.pos.times import utc_now
from aiq_pipelines.sync import mapping, staged
from aiq_pipelines.sync.accounts import EVERYTHING, StoreScope
from aiq_pipelines.sync.collector import old_objects_frozen
from aiq_pipelines.sync.delivery import undelivered
from aiq_pipelines.sync.diff import ChunkDiff, Held, Staged, StagedSale, keys_of, profile_hash
from aiq_pipelines.sync.lease import push_lease
from aiq_pipelines.sync.ledger import Ledger, LedgerEntry
from aiq_pipelines.sync.payload import PersonaPayload
from aiq_pipelines.sync.progress import Progress
from aiq_pipelines.sync.quarantine import NO_ACCOUNT, PUSH_STAGES, Stage, quarantine_count
from aiq_pipelines.sync.reports import PushReport
from aiq_pipelines.sync.schema import quarantine
from aiq_pipelines.sync.staged import CHUNK, CUSTOMER_NOT_STAGED, Days
from aiq_pipelines.sync.store import SyncStore

__all__ = ["CUSTOMER_NOT_STAGED", "WAITING_FOR_PERSONA", "PushReport", "Pusher"]

WAITING_FOR_PERSONA = "waiting for its persona: the customer is quarantined or was refused by AIQ"

logger = logging.getLogger(__name__)

# Statements run once per batch or chunk, built once with their key lists as expanding parameters, and run through
# execute_with_lists, which renders each length of key list once.
_KEYS = sa.bindparam("keys", expanding=True)
_REFUSED = sa.select(quarantine.c.record_key, quarantine.c.source_hash, quarantine.c.reason).where(
    quarantine.c.entity == sa.bindparam("entity"), quarantine.c.stage == Stage.AIQ,
    quarantine.c.account == sa.bindparam("account"), quarantine.c.record_key.in_(_KEYS),
)
# A record this account settles leaves its own push quarantine, and that of no account (a store newly listed).
_CLEAR_PUSH_QUARANTINE = quarantine.delete().where(
    quarantine.c.entity == sa.bindparam("entity"), quarantine.c.stage.in_(PUSH_STAGES),
    quarantine.c.account.in_([sa.bindparam("account"), NO_ACCOUNT]), quarantine.c.record_key.in_(_KEYS),
)


class Pusher:
    """Pushes staged records of one window (or the inventory snapshot) of the stores in ``scope`` to one AIQ account."""

    def __init__(
        self, store: SyncStore, client: AiqClient, account: str, run_id: str, log: logging.Logger | None = None,
        scope: StoreScope = EVERYTHING,
    ):
        self.store = store
        self.engine = store.engine
        self.client = client
        self.scope = scope
        self.ledger = Ledger(store.engine, account)
        self.run_id = run_id
        self.log = log or logger
        self._meter: tuple[Entity, Progress] | None = None

    # -- settling: ledger and quarantine ---------------------------------------------------------------------

    def _refused(self, entity: Entity, keys: list[str]) -> dict[str, tuple[str, str]]:
        """Records AIQ refused: key -> (hash of the refused payload, reason)."""
        if not keys:
            return {}
        with self.engine.connect() as conn:
            rows = execute_with_lists(conn, _REFUSED, {"entity": str(entity), "account": self.ledger.account,
                                                       "keys": keys})
            return {key: (digest, reason) for key, digest, reason in rows}

    def _settle(
        self, entity: Entity, *, acked: Sequence[LedgerEntry] = (), cleared: Iterable[str] = (),
        quarantined: Sequence[Held] = (),
    ) -> None:
        """One transaction: ledger rows for what AIQ acknowledged, quarantine rows replaced for the keys involved."""
        keys = {e.record_key for e in acked} | set(cleared) | {s.key for s, *_ in quarantined}
        if not keys:
            return
        now = utc_now()
        with self.engine.begin() as conn:
            self.ledger.acknowledge(conn, entity, acked, self.run_id)
            execute_with_lists(conn, _CLEAR_PUSH_QUARANTINE,
                               {"entity": str(entity), "account": self.ledger.account, "keys": list(keys)})
            if quarantined:
                conn.execute(quarantine.insert(), [
                    {"entity": entity, "record_key": s.key, "stage": stage, "account": self.ledger.account,
                     "business_date": s.business_date,
                     "reason": reason, "source_hash": digest, "source": None, "run_id": self.run_id,
                     "quarantined_at": now}
                    for s, stage, reason, digest in quarantined
                ])

    @contextlib.contextmanager
    def _pushing(self) -> Iterator[None]:
        """While a push runs: the account's push lease (pushers working at once would each send what the other has
        not acknowledged), and the objects that already exist kept out of the garbage collector's full passes."""
        with push_lease(self.engine, self.ledger.account, self.run_id, self.log), old_objects_frozen():
            yield

    def _diff(self, entity: Entity, chunk: Sequence[tuple[Any, Staged]], report: PushReport) -> ChunkDiff:
        keys = keys_of(chunk)
        return ChunkDiff(entity, report, self.ledger.entries(entity, keys), self._refused(entity, keys))

    def _write_back(self, diff: ChunkDiff) -> None:
        self._settle(diff.entity, cleared=diff.cleared, quarantined=diff.bad)
        self.ledger.refresh_source_hashes(diff.entity, diff.refresh)
        self._progress(diff.report)

    def _record(self, outcome: BatchOutcome, acked: Sequence[LedgerEntry], report: PushReport) -> None:
        """One batch AIQ answered: its acknowledged records into the ledger, its refused ones into quarantine."""
        refused: list[Held] = [(s, Stage.AIQ, _refusal(message), s.payload_hash) for s, _, message in outcome.refused]
        self._settle(report.entity, acked=acked, quarantined=refused)
        for item, _, _ in outcome.accepted:
            report.count_sent(item.business_date)
        for held, _, reason, _ in refused:
            report.reject_on(held.business_date, held.key, reason)
        self._progress(report)

    def quarantine_count(self, entity: Entity) -> int:
        """The entity's records this account holds back, and those no account does (see ``quarantine_count``)."""
        return quarantine_count(self.engine, entity, self.ledger.account)

    def undelivered(self, entity: Entity, start: dt.datetime | None = None, end: dt.datetime | None = None) -> int:
        """Staged records neither in AIQ as staged, nor quarantined, nor voided unsent (``sync.delivery``)."""
        return undelivered(self.engine, self.ledger.account, entity, self._days(start, end), self.scope)

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

    def _override(self, item: Staged, member: Member, report: PushReport) -> bool:
        """Send a changed phone/email of a persona AIQ has through the override call. True if the persona is done."""
        entry = item.entry
        if entry is None:
            return False
        override = mapping.override_payload(entry.sent_phone, entry.sent_email, member)
        if override is None:
            return False
        contact_id = entry.contact_id or self._find_contact(item.key, entry)
        if contact_id is None:
            self.log.warning(f"persona {item.key}: contactID unknown and not found by search; sending it as an upsert")
            return False
        try:
            self.client.override_persona(contact_id, override)
        except AiqContactNotFoundError:
            self.log.warning(f"persona {item.key}: AIQ no longer knows contactID {contact_id}; sending it as an upsert")
            return False
        report.count_override(item.business_date)
        if profile_hash(member) != entry.profile_hash:
            return False  # other fields changed as well: the upsert carries them
        acked = LedgerEntry(item.key, payload_hash(member), item.source_hash, entry.profile_hash,
                            member.phone_number, member.email, contact_id, entry.src_id)
        self._settle(Entity.PERSONA, acked=[acked])
        report.count_sent(item.business_date)
        return True

    def _member_candidates(
        self, records: Iterable[tuple[PersonaPayload, Staged]], report: PushReport
    ) -> Iterator[tuple[Staged, Member]]:
        for chunk in chunked(iter(records), CHUNK):
            diff = self._diff(Entity.PERSONA, chunk, report)
            for payload, item in chunk:
                item = diff.read(item)
                if payload.encoded is None or payload.digest is None:
                    diff.quarantine(item, payload.error or "payload missing: re-run the day's extract")
                    continue
                report.member_issues.update(payload.issues)
                if diff.settled(item, payload.digest):
                    continue
                member = payload.member()
                if self._override(item, member, report):
                    continue
                yield item.with_payload_hash(payload.digest), member
            self._write_back(diff)

    def _send_members(self, *sources: tuple[Iterable[tuple[PersonaPayload, Staged]], PushReport]) -> None:
        """Send the personas of each source that AIQ lacks as they are, each accounted in its source's report.

        The sources share one stream of batches, so a push's personas take ceil(changed / batch size) requests, not
        one partial batch more per source.
        """
        candidates = (
            ((item, report), member)
            for records, report in sources
            for item, member in self._member_candidates(records, report)
        )
        for outcome in self.client.send_members(candidates):
            parts: dict[int, tuple[PushReport, BatchOutcome]] = {}
            for (item, report), member, ack in outcome.accepted:
                parts.setdefault(id(report), (report, BatchOutcome()))[1].accepted.append((item, member, ack))
            for (item, report), member, message in outcome.refused:
                parts.setdefault(id(report), (report, BatchOutcome()))[1].refused.append((item, member, message))
            for report, part in parts.values():
                acked = []
                for item, member, ack in part.accepted:
                    previous = item.entry
                    acked.append(LedgerEntry(
                        item.key, item.payload_hash, item.source_hash, profile_hash(member), member.phone_number,
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
        report, for_sales = PushReport(entity=Entity.PERSONA), PushReport(entity=Entity.PERSONA)
        days = self._days(start, end)
        with self._pushing(), ThreadPoolExecutor(1, thread_name_prefix="aiq-personas-missing") as lookup:
            self._start_progress(Entity.PERSONA, days)
            # The lookup reads every sale of the window: it runs while the staged personas go out, so neither the
            # first batch nor the ones after the staged personas wait for it.
            missing = lookup.submit(staged.personas_missing, self.engine, self.ledger.account, days, self.scope,
                                    besides_staged_personas=True)

            def for_the_sales() -> Iterator[tuple[PersonaPayload, Staged]]:
                yield from staged.sale_customers(self.engine, missing.result())

            self._send_members((staged.personas(self.engine, days, self.scope), report), (for_the_sales(), for_sales))
        return report, for_sales

    # -- sales ----------------------------------------------------------------------------------------------

    def _sale_candidates(
        self, records: Iterable[tuple[StagedSale, Staged]], report: PushReport, personas: PushReport
    ) -> Iterator[tuple[Staged, EncodedPayload]]:
        for chunk in chunked(iter(records), CHUNK):
            diff = self._diff(Entity.TRANSACTION, chunk, report)
            needed: dict[str, dt.date | None] = {}
            for sale, item in chunk:  # each customer with the day of its first sale in the chunk (days come in order)
                if sale.customer_id and not sale.is_void:
                    needed.setdefault(sale.customer_id, item.business_date)
            known = self.ledger.known(Entity.PERSONA, needed)
            if needed.keys() - known:
                sent_before = personas.sent
                missing = sorted((key, day) for key, day in needed.items() if key not in known)
                self._send_members((staged.sale_customers(self.engine, missing), personas))
                report.personas_sent_first += personas.sent - sent_before
                known = self.ledger.known(Entity.PERSONA, needed)
            for sale, item in chunk:
                item = diff.read(item)
                if sale.is_void and item.entry is None:
                    report.count_void(item.business_date)  # voided before it was ever sent: AIQ never hears of it
                    diff.cleared.append(item.key)
                    continue
                if not sale.is_void and sale.customer_id and sale.customer_id not in known:
                    diff.quarantine(item, WAITING_FOR_PERSONA)
                    continue
                if sale.payload is None or sale.payload_hash is None:
                    diff.quarantine(item, sale.payload_error or "payload missing: re-run the day's extract")
                    continue
                if not diff.settled(item, sale.payload_hash):
                    yield item.with_payload_hash(sale.payload_hash), sale.payload
            self._write_back(diff)

    def push_sales(
        self, start: dt.datetime, end: dt.datetime, *, personas_pushed: bool = False
    ) -> tuple[PushReport, PushReport]:
        """Send the sales staged for [start, end) that AIQ doesn't have as they are; personas they need go first.

        ``personas_pushed`` says ``push_personas`` just ran for the same window, so the customers the sales need
        are already sent or quarantined. Returns the sales report and the report of personas sent on the sales' behalf.
        """
        report, personas = PushReport(entity=Entity.TRANSACTION), PushReport(entity=Entity.PERSONA)
        days = self._days(start, end)
        candidates = self._sale_candidates(staged.sales(self.engine, days, self.scope), report, personas)
        with self._pushing():
            self._start_progress(Entity.TRANSACTION, days)
            if not personas_pushed:
                # The personas the window's sales need and the ledger lacks, in one stream before any sale: full
                # batches, not a partial one per chunk of sales. The per-chunk check in _sale_candidates still covers
                # anything this pass missed.
                missing = staged.personas_missing(self.engine, self.ledger.account, days, self.scope)
                self._send_members((staged.sale_customers(self.engine, missing), personas))
                report.personas_sent_first += personas.sent
            for outcome in self.client.send_sales(candidates):
                acked = [LedgerEntry(s.key, s.payload_hash, s.source_hash) for s, _, _ in outcome.accepted]
                self._record(outcome, acked, report)
        return report, personas

    # -- inventory ------------------------------------------------------------------------------------------

    def push_inventory(self) -> PushReport:
        """Send the staged inventory snapshot's products whose payload changed since AIQ last acknowledged them."""
        report = PushReport(entity=Entity.INVENTORY)

        def candidates() -> Iterator[tuple[Staged, Any]]:
            mine = ((self.scope.product(product), item) for product, item in staged.inventory(self.engine))
            for chunk in chunked((pair for pair in mine if pair[0] is not None), CHUNK):
                diff = self._diff(Entity.INVENTORY, chunk, report)
                for product, item in chunk:
                    item = diff.read(item)
                    try:
                        payload = mapping.inventory_payload(product)
                    except ValidationError as exc:
                        diff.quarantine(item, mapping.payload_reason(exc))
                        continue
                    digest = payload_hash(payload)
                    if not diff.settled(item, digest):
                        yield item.with_payload_hash(digest), payload
                self._write_back(diff)

        with self._pushing():
            self._start_progress(Entity.INVENTORY, None)
            for outcome in self.client.send_inventory(candidates()):
                acked = [LedgerEntry(s.key, s.payload_hash, s.source_hash) for s, _, _ in outcome.accepted]
                self._record(outcome, acked, report)
        return report

    # -- scope and progress ---------------------------------------------------------------------------------

    def _days(self, start: dt.datetime | None, end: dt.datetime | None) -> Days:
        return None if start is None or end is None else self.store.calendar.dates(start, end)

    def _start_progress(self, entity: Entity, days: Days) -> None:
        """Count the staged records in scope, so progress lines can say how much is left."""
        total = staged.count(self.engine, entity, days, self.scope)
        self._meter = (entity, Progress(self.log.info, f"push {entity}", total))

    def _progress(self, report: PushReport) -> None:
        if self._meter is not None and self._meter[0] == report.entity:
            self._meter[1].update(report.accounted, f"{report.sent:,} sent, {report.unchanged:,} unchanged, "
                                                    f"{report.quarantined:,} quarantined")


def _refusal(message: str) -> str:
    return "refused by AIQ: " + redact_personal_data(message)[:300]
