"""The delivery audit of one AIQ account: read back what AIQ acknowledged for some business days, and say per day how
much of it AIQ holds as it was sent. "Accepted" is AIQ's word; "confirmed" is this audit's.

Each persona of a day (``sync.audit_targets``) is:

- **confirmed**: AIQ holds it as sent (the compared fields: ``sync.audit_reads``);
- **mismatched**: AIQ holds it with other values in some fields (named, never shown);
- **missing**: AIQ acknowledged it and does not have it;
- **pending**: acknowledged less than ``after`` ago (AIQ applies bulk writes "up to 24 hours" later), so not read yet;
- **unread**: left out of a random sample, not reached by paging within the budget, or (searching) with neither a
  contactID, a phone nor an email to look for;
- **not audited**: the ledger does not hold it as staged (not sent yet, changed since, quarantined, or found missing
  before and waiting to be re-sent: ``awaiting_resend``).

A day's audited sales are **attributed** when their persona is at AIQ (confirmed or mismatched) and **unattributed**
when it is missing; their lines are not read back, because AIQ publishes no read for sales. What did not land is
re-sent or held (``sync.audit_outcome``).

Days are audited a week at a time (``DAYS_PER_PASS``), each pass with one read plan, so a long range holds one week of
targets in memory and pages through the account at most once a week of days. A pass may make up to
``max_requests_per_day`` requests per day it covers; when the cheaper read does not fit, it searches a random sample
and each sampled day reports its sample size and a 95% (Wilson) interval for its missing rate.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
from dataclasses import dataclass, field

import sqlalchemy as sa

from aiq_pipelines.aiq.client import AiqClient
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.times import utc_now
from aiq_pipelines.sync.accounts import EVERYTHING, StoreScope
from aiq_pipelines.sync.audit_outcome import CONFIRMED, MISMATCHED, MISSING, Verdict, settle
from aiq_pipelines.sync.audit_reads import Plan, differences, plan, read
from aiq_pipelines.sync.audit_targets import Sale, Targets, targets
from aiq_pipelines.sync.ledger import Ledger

DAYS_PER_PASS = 7
_Z95 = 1.959964


def wilson(hits: int, trials: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate seen as ``hits`` of ``trials`` (0 to 1 when nothing was seen)."""
    if trials == 0:
        return 0.0, 1.0
    z2 = _Z95 * _Z95
    centre = (hits + z2 / 2) / (trials + z2)
    half = _Z95 * math.sqrt(hits * (trials - hits) / trials + z2 / 4) / (trials + z2)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class DayAudit:
    """One day's audit, as its materialization reports it: counts, and the keys of what did not land."""

    day: dt.date
    personas: int = 0
    confirmed: int = 0
    mismatched: int = 0
    missing: int = 0
    pending: int = 0
    unread: int = 0
    not_audited: int = 0
    awaiting_resend: int = 0
    readable: int = 0  # acknowledged long enough ago to be read
    sampled: bool = False
    sales_audited: int = 0
    sales_attributed: int = 0
    sales_unattributed: int = 0
    method: str = ""
    requests: int = 0  # of the pass that read this day
    days_in_pass: int = 1
    missing_keys: list[str] = field(default_factory=list)
    mismatched_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def read(self) -> int:
        return self.confirmed + self.mismatched + self.missing

    @property
    def missing_rate(self) -> float:
        return self.missing / self.read if self.read else 0.0

    @property
    def missing_interval(self) -> tuple[float, float]:
        """Where the day's missing rate lies (95%): exact when every readable persona was read."""
        return wilson(self.missing, self.read) if self.sampled else (self.missing_rate, self.missing_rate)

    @property
    def missing_estimate(self) -> int:
        """The missing personas the day holds, read or not (the sample's rate over the readable ones)."""
        return round(self.missing_rate * self.readable) if self.sampled else self.missing


@dataclass
class AuditResult:
    days: list[DayAudit]
    requests: int = 0
    resend: int = 0
    held: int = 0


class Auditor:
    """Audits business days of one account through ``client``, whose limiter holds the audit to its budget share."""

    def __init__(
        self, engine: sa.Engine, client: AiqClient, account: str, run_id: str, *, after: dt.timedelta,
        page_size: int, max_requests_per_day: int, scope: StoreScope = EVERYTHING, seed: int | None = None,
        log: logging.Logger | logging.LoggerAdapter | None = None,
    ):
        self.engine, self.client, self.account, self.run_id, self.scope = engine, client, account, run_id, scope
        self.after, self.page_size, self.max_requests_per_day = after, page_size, max_requests_per_day
        self.rng = random.Random(seed)
        self.log = log or logging.getLogger(__name__)

    def audit(self, first: dt.date, stop: dt.date) -> AuditResult:
        """Audit the local dates ``[first, stop)``, a pass of at most ``DAYS_PER_PASS`` days at a time."""
        result = AuditResult([])
        day = first
        while day < stop:
            end = min(stop, day + dt.timedelta(days=DAYS_PER_PASS))
            self._pass(day, end, result)
            day = end
        return result

    def _pass(self, first: dt.date, stop: dt.date, result: AuditResult) -> None:
        found = targets(self.engine, self.account, (first, stop), self.scope)
        now = utc_now()
        readable = {key for key, sent in found.sent.items() if sent.acked_at <= now - self.after}
        days = [first + dt.timedelta(days=n) for n in range((stop - first).days)]
        budget = self.max_requests_per_day * len(days)
        planned = plan(readable, Ledger(self.engine, self.account).count(Entity.PERSONA), self.page_size, budget,
                       self.rng)
        before = self.client.stats
        got = read(self.client, planned, found.sent, self.page_size, budget)
        requests = self.client.stats.since(before).requests
        status: dict[str, str] = {}
        fields: dict[str, tuple[str, ...]] = {}
        for key, held in got.found.items():
            fields[key] = () if held is None else differences(found.sent[key], held)
            status[key] = MISSING if held is None else MISMATCHED if fields[key] else CONFIRMED
        day_of = {key: day for day in sorted(found.personas, reverse=True) for key in found.personas[day]}
        verdicts = [Verdict(found.sent[key], day_of[key], state, fields[key])
                    for key, state in sorted(status.items()) if state != CONFIRMED]
        by_customer: dict[str, list[Sale]] = {}
        for sales in found.sales.values():
            for sale in sales:
                by_customer.setdefault(sale.customer, []).append(sale)
        confirmed = [key for key, state in status.items() if state == CONFIRMED]
        resend, held = settle(self.engine, self.account, self.run_id, now, confirmed, verdicts, by_customer)
        result.requests += requests
        result.resend += resend
        result.held += held
        for day in days:
            report = self._day(day, found, readable, planned, status, fields)
            report.requests, report.days_in_pass = requests, len(days)
            result.days.append(report)
            self.log.info(
                f"audit {day}: {report.confirmed:,} confirmed, {report.mismatched:,} mismatched, {report.missing:,} "
                f"missing of {report.read:,} read ({planned.method}{', a sample' if report.sampled else ''}); "
                f"{report.pending:,} pending, {report.unread:,} unread, {report.not_audited:,} not audited"
            )
        self.log.info(f"audit pass {first}..{stop - dt.timedelta(days=1)}: {requests:,} requests ({planned.method}), "
                      f"{resend:,} personas to re-send, {held:,} held in quarantine")

    @staticmethod
    def _day(day: dt.date, found: Targets, readable: set[str], planned: Plan, status: dict[str, str],
             fields: dict[str, tuple[str, ...]]) -> DayAudit:
        personas = found.personas.get(day, set())
        states = [status[key] for key in personas if key in status]
        report = DayAudit(
            day, personas=len(personas), confirmed=states.count(CONFIRMED), mismatched=states.count(MISMATCHED),
            missing=states.count(MISSING), pending=len(personas & (found.sent.keys() - readable)),
            not_audited=len(personas - found.sent.keys()), awaiting_resend=len(personas & found.awaiting_resend),
            readable=len(personas & readable), sampled=planned.sampled, method=planned.method,
        )
        report.unread = report.readable - report.read
        report.missing_keys = sorted(key for key in personas if status.get(key) == MISSING)
        report.mismatched_fields = {key: fields[key] for key in sorted(personas) if status.get(key) == MISMATCHED}
        for sale in found.sales.get(day, ()):
            report.sales_audited += 1
            state = status.get(sale.customer)
            report.sales_attributed += state in (CONFIRMED, MISMATCHED)
            report.sales_unattributed += state == MISSING
        return report
