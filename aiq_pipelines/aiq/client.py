"""``AiqClient``: AIQ's REST API over one reused connection pool, rate-limited, retried and batch-aware.

Every HTTP attempt first passes the account-wide ``AccountRateLimiter``; one that leaves the process noticeably later
than the limiter stamped it (a new connection, a thread waiting for the interpreter lock) is re-stamped with the moment
its headers went out, so the limiter's margin only has to cover the network. 429s, 5xx answers, timeouts and broken
connections are retried with exponential backoff and jitter (a 429's ``Retry-After`` is the wait when present),
bounded by ``max_attempts`` and by ``max_retry_seconds`` of time spent on AIQ (waiting for our own rate budget does
not count: it says nothing about AIQ's health). Any other 4xx is final: a bulk batch is bisected to isolate the
records AIQ refuses, and the rest are delivered.

The bulk senders keep up to ``max_in_flight`` batches in flight on a small thread pool (httpx's client is thread-safe;
every attempt still passes the limiter) and yield the outcomes strictly in input order, each once AIQ answered it.
The input iterable is read, and the outcomes consumed, on the caller's thread only.

The API key lives only in the connection pool's headers: it is in no repr, exception or log line. Request bodies
are never logged, AIQ's error messages are returned with emails and phone numbers masked, and the search term of
a persona search is cut from httpx's request log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import functools
import itertools
import json
import logging
import random
import re
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import tenacity

from aiq_pipelines.aiq.payloads import AiqPayload, EncodedPayload, InventoryPayloadItem, Member, PersonaOverride, Visit
from aiq_pipelines.aiq.ratelimit import AccountRateLimiter

logger = logging.getLogger(__name__)

MAX_INVENTORY_BATCH = 100
MAX_IN_FLIGHT = 16
# A request that left this much later than the rate limiter stamped it is re-stamped with the moment it left.
RESTAMP_AFTER_SECONDS = 0.005
# While batches are in flight, the interpreter hands over between threads every 0.5 ms instead of every 5 ms: a
# sender thread waking for its rate-limit slot otherwise waits up to 5 ms for the thread building the next batches,
# and on a loaded 2-core machine those waits cost about 4% of the sends' throughput (100k sales step, alternating
# runs: median 23.2 s at 5 ms, 22.3 s at 0.5 ms).
SENDING_SWITCH_INTERVAL = 0.0005

K = TypeVar("K")
P = TypeVar("P")
A = TypeVar("A")


class AiqError(Exception):
    """Base of every error the AIQ client raises; messages never contain the API key."""


class AiqAuthError(AiqError):
    """AIQ refused the API key (401/403)."""


class AiqAccountError(AiqError):
    """AIQ does not know the account id (404 on the uid)."""


class AiqContactNotFoundError(AiqError):
    """The override call named a contactID that AIQ does not know."""


class AiqUnavailableError(AiqError):
    """AIQ kept failing (5xx, 429, timeouts, broken connections) until the retry bound ran out."""


class AiqRefusedError(AiqError):
    """AIQ refused a request's content (a 4xx other than 401/403/404/429); not retried."""

    def __init__(self, status: int, message: str):
        super().__init__(f"AIQ refused the request with HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class MemberAck:
    """AIQ's ids for a persona, from createUpdateMember(s)."""

    contact_id: str
    src_id: str | None


@dataclass(frozen=True)
class PersonaMatch:
    """One persona found by ``search_personas``; its repr leaves out the phone and email."""

    contact_id: str
    src_id: str | None
    first_name: str | None
    last_name: str | None
    mobile_phone: str | None = field(repr=False)
    email: str | None = field(repr=False)
    pos_user: str | None


@dataclass
class BatchOutcome(Generic[K, P, A]):
    """What AIQ did with one batch: ``(key, payload, ack)`` accepted, ``(key, payload, AIQ's message)`` refused."""

    accepted: list[tuple[K, P, A]] = field(default_factory=list)
    refused: list[tuple[K, P, str]] = field(default_factory=list)


@dataclass
class ClientStats:
    """Counters since the client was opened, reported by the assets as metadata."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    bytes_sent: int = 0
    refused: int = 0

    def since(self, earlier: ClientStats) -> ClientStats:
        """The counts between ``earlier``, a snapshot of the same client, and this one."""
        return ClientStats(*(getattr(self, f.name) - getattr(earlier, f.name) for f in dataclasses.fields(self)))


class _Retryable(Exception):
    """An attempt that may succeed later; ``retry_after`` is AIQ's requested wait in seconds, if it sent one."""

    def __init__(self, description: str, retry_after: float | None = None):
        super().__init__(description)
        self.description = description
        self.retry_after = retry_after


@dataclass
class _Budget:
    """Time one request may spend on AIQ; waits for our own rate budget are not AIQ's fault and do not count."""

    limit: float
    started: float = field(default_factory=time.monotonic)
    limiter_waited: float = 0.0

    def spent(self) -> float:
        return time.monotonic() - self.started - self.limiter_waited

    def remaining(self) -> float:
        return self.limit - self.spent()


_EMAIL = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+")
_PHONE = re.compile(r"(?<!\d)(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}(?!\d)")


def redact_personal_data(text: str) -> str:
    """``text`` with anything shaped like an email or a phone number masked, so AIQ's messages are safe to show."""
    return _PHONE.sub("[phone]", _EMAIL.sub("[email]", text))


class _HideSearchTerms(logging.Filter):
    """Cuts the query (a phone or email) from httpx's request log line for persona searches."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.copy_with(query=None) if isinstance(arg, httpx.URL) and "/piis/" in arg.path else arg
                for arg in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_HideSearchTerms())


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds, from either of its forms (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(response: httpx.Response) -> str:
    try:
        envelope = response.json()
    except ValueError:
        return redact_personal_data(response.text[:200]) or f"HTTP {response.status_code}"
    if isinstance(envelope, dict):
        errors = envelope.get("errors")
        if isinstance(errors, list):
            messages = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
            if messages:
                return redact_personal_data("; ".join(messages))
        if envelope.get("message"):
            return redact_personal_data(str(envelope["message"]))
    return f"HTTP {response.status_code}"


class AiqClient:
    """AIQ's API for one account. Use as a context manager (or call ``close()``) to release connections."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        uid: str,
        limiter: AccountRateLimiter,
        *,
        batch_size_sales: int,
        batch_size_members: int,
        batch_size_inventory: int,
        timeout: float,
        max_attempts: int,
        max_retry_seconds: float,
        max_in_flight: int = 1,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        seed: int | None = None,
    ) -> None:
        if not api_key or not api_key.strip():
            raise AiqError("no AIQ API key: set AIQ_API_KEY")
        if not uid:
            raise AiqError("no AIQ account id: set AIQ_UID")
        if min(batch_size_sales, batch_size_members, batch_size_inventory) < 1:
            raise ValueError("batch sizes must be at least 1 (AIQ_BATCH_SIZE_SALES/MEMBERS/INVENTORY)")
        if batch_size_inventory > MAX_INVENTORY_BATCH:
            raise ValueError(
                f"AIQ takes at most {MAX_INVENTORY_BATCH} inventory items a call (AIQ_BATCH_SIZE_INVENTORY)"
            )
        if max_attempts < 1 or max_retry_seconds <= 0 or timeout <= 0:
            raise ValueError("AIQ_MAX_ATTEMPTS must be >= 1, AIQ_MAX_RETRY_SECONDS and AIQ_TIMEOUT_SECONDS > 0")
        if not 1 <= max_in_flight <= MAX_IN_FLIGHT:
            raise ValueError(f"AIQ_MAX_IN_FLIGHT must be from 1 to {MAX_IN_FLIGHT}, got {max_in_flight}")
        self.base_url = base_url.rstrip("/")
        self.uid = uid
        self.batch_size_sales = batch_size_sales
        self.batch_size_members = batch_size_members
        self.batch_size_inventory = batch_size_inventory
        self._limiter = limiter
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._max_retry_seconds = max_retry_seconds
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self.max_in_flight = max_in_flight
        self._random = random.Random(seed)
        self._stats = ClientStats()
        self._stats_lock = threading.Lock()
        # One pool for every bulk send of this client, so nested sends (personas inside a sales stream) share it and
        # no more than max_in_flight batches are at AIQ at once.
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="aiq-send")
        self._http = httpx.Client(
            base_url=self.base_url, headers={"x-apikey": api_key, "accept": "application/json"}, timeout=timeout,
            verify=_tls_context(),
        )

    def __repr__(self) -> str:
        return f"AiqClient(base_url={self.base_url!r}, uid={self.uid!r})"

    def __enter__(self) -> AiqClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for requests in flight, then close the connection pool (the limiter belongs to whoever created it)."""
        self._pool.shutdown(wait=True)
        self._http.close()

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the counters: HTTP attempts, retries, 429s received, body bytes sent, records refused."""
        with self._stats_lock:
            return dataclasses.replace(self._stats)

    def _count(self, **increments: int) -> None:
        with self._stats_lock:
            for name, value in increments.items():
                setattr(self._stats, name, getattr(self._stats, name) + value)

    def _path(self, call: str, *extra: str) -> str:
        return "/".join([call, quote(self.uid, safe=""), *(quote(part, safe="") for part in extra)])

    # -- one request, retried ------------------------------------------------------------------------------

    def _backoff(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Retryable) and error.retry_after is not None:
            return error.retry_after
        ceiling = min(self._backoff_max, self._backoff_initial * 2 ** (state.attempt_number - 1))
        return ceiling * self._random.uniform(0.5, 1.0)

    def _attempt(
        self, method: str, path: str, content: bytes | None, params: dict[str, Any] | None, budget: _Budget
    ) -> Any:
        send = self._limiter.acquire()
        budget.limiter_waited += send.waited
        self._count(requests=1, bytes_sent=len(content or b""))
        timeout = min(self._timeout, max(budget.remaining(), 0.05))
        headers = {"content-type": "application/json"} if content is not None else None
        left: list[float] = []

        def trace(event: str, _info: Any) -> None:
            if event.endswith("send_request_headers.started"):
                left.append(time.time())

        try:
            response = self._http.request(
                method, path, content=content, params=params, headers=headers, timeout=timeout,
                extensions={"trace": trace},
            )
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        finally:
            if left and left[0] - send.at > RESTAMP_AFTER_SECONDS:
                self._limiter.restamp(send, left[0])
        status = response.status_code
        logger.debug("AIQ %s %s -> %d (%d bytes sent)", method, path, status, len(content or b""))
        if status == 429:
            self._count(throttled=1)
            raise _Retryable("HTTP 429", retry_after=_retry_after_seconds(response.headers.get("retry-after")))
        if status >= 500:
            raise _Retryable(f"HTTP {status}")
        if status in (401, 403):
            raise AiqAuthError(f"AIQ refused the API key for account {self.uid}: check AIQ_API_KEY")
        if status == 404:
            raise AiqAccountError(
                f"AIQ answered 404 for {method} {path}: check AIQ_UID ({self.uid!r}) "
                f"and AIQ_BASE_URL ({self.base_url})"
            )
        if status >= 400:
            raise AiqRefusedError(status, _error_message(response))
        try:
            envelope = response.json()
        except ValueError:
            raise AiqError(f"AIQ answered {method} {path} with HTTP {status} but no JSON body") from None
        if isinstance(envelope, dict) and envelope.get("success") is False:
            # A refusal dressed as a success status: treat it like the 4xx it means.
            raise AiqRefusedError(status, _error_message(response))
        return envelope.get("data") if isinstance(envelope, dict) else envelope

    def _call(
        self, method: str, path: str, *, body: Any = None, content: bytes | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """One logical request with its retries; returns the envelope's ``data``. ``content`` is a body already
        encoded as JSON, ``body`` one to encode."""
        if body is not None:
            content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        budget = _Budget(self._max_retry_seconds)

        def give_up(state: tenacity.RetryCallState) -> bool:
            return state.attempt_number >= self._max_attempts or budget.spent() + state.upcoming_sleep >= budget.limit

        def before_sleep(state: tenacity.RetryCallState) -> None:
            self._count(retries=1)
            error = state.outcome.exception() if state.outcome else None
            logger.warning(
                "AIQ %s %s failed (%s); retrying in %.1f s (attempt %d of %d)",
                method, path, getattr(error, "description", error), state.upcoming_sleep,
                state.attempt_number + 1, self._max_attempts,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            wait=self._backoff,
            stop=give_up,
            before_sleep=before_sleep,
        )
        try:
            return retrying(self._attempt, method, path, content, params, budget)
        except tenacity.RetryError as exc:
            last = exc.last_attempt.exception()
            raise AiqUnavailableError(
                f"AIQ is unreachable or unhealthy at {self.base_url}: {method} {path} failed "
                f"{exc.last_attempt.attempt_number} attempts over {budget.spent():.1f} s "
                f"(last: {getattr(last, 'description', last)}). Check AIQ's status and AIQ_BASE_URL, "
                "or raise AIQ_MAX_ATTEMPTS / AIQ_MAX_RETRY_SECONDS; re-running sends only what AIQ did not acknowledge."
            ) from None

    # -- single calls -----------------------------------------------------------------------------------

    def upsert_sale(self, visit: Visit) -> None:
        """Create or replace one sale (keyed by ``pos_id``). Raises ``AiqRefusedError`` if AIQ refuses it."""
        self._call("POST", self._path("/api/v1.1/createUpdateSale"), body={"visit": visit.to_json()})

    def upsert_member(self, member: Member) -> MemberAck:
        """Create or update one persona (keyed by ``pos_user``) and return AIQ's ids for it."""
        data = self._call("POST", self._path("/api/v1.1/createUpdateMember"), body={"member": member.to_json()})
        if not isinstance(data, dict) or data.get("contactID") in (None, ""):
            raise AiqError("AIQ accepted the persona but its answer has no contactID")
        return MemberAck(contact_id=str(data["contactID"]), src_id=_text_or_none(data.get("srcID")))

    def override_persona(self, contact_id: str, override: PersonaOverride) -> None:
        """Change only the fields set in ``override`` on an existing persona."""
        try:
            self._call("POST", self._path("/api/v2/loyaltyContact/override", contact_id), body=override.to_json())
        except AiqAccountError:
            raise AiqContactNotFoundError(
                f"AIQ has no contact {contact_id} in account {self.uid}: find it again with search_personas "
                "(or check AIQ_UID)"
            ) from None

    def upsert_inventory_batch(self, items: Sequence[InventoryPayloadItem]) -> None:
        """Create or update up to ``batch_size_inventory`` products in one call (keyed by ``productId``)."""
        if not 1 <= len(items) <= self.batch_size_inventory:
            raise ValueError(f"an inventory call takes 1 to {self.batch_size_inventory} items, got {len(items)}")
        self._post_inventory(list(items))

    def search_personas(self, search: str, *, limit: int = 25, start: int = 0) -> list[PersonaMatch]:
        """Personas whose name, email, phone, contactID or srcID match ``search`` (AIQ's piis lookup)."""
        data = self._call(
            "GET", self._path("/api/v1.1/piis"), params={"search": search, "limit": limit, "start": start}
        )
        results = data.get("results") if isinstance(data, dict) else None
        return [
            PersonaMatch(
                contact_id=str(r.get("contactID")),
                src_id=_text_or_none(r.get("srcID")),
                first_name=_text_or_none(r.get("firstName")),
                last_name=_text_or_none(r.get("lastName")),
                mobile_phone=_text_or_none(r.get("mobilePhone")),
                email=_text_or_none(r.get("email")),
                pos_user=_text_or_none(r.get("pos_user")),
            )
            for r in results or []
            if isinstance(r, dict)
        ]

    # -- bulk senders ---------------------------------------------------------------------------------------

    def _post_sales(self, visits: list[Visit | EncodedPayload]) -> list[None]:
        self._call("POST", self._path("/api/v1.1/createUpdateSales"), content=_bulk_body(visits, b'{"visit":'))
        return [None] * len(visits)

    def _post_members(self, members: list[Member]) -> list[MemberAck | None]:
        data = self._call(
            "POST", self._path("/api/v1.1/createUpdateMembers"), content=_bulk_body(members, b'{"member":')
        )
        # [assumed] AIQ does not publish createUpdateMembers' answer; the sandbox's data is a list of
        # {pos_user, contactID, srcID}. Acks are matched by pos_user, so any other answer just yields None.
        acks: dict[str, MemberAck] = {}
        for entry in data if isinstance(data, list) else []:
            if isinstance(entry, dict) and entry.get("pos_user") is not None and entry.get("contactID"):
                acks[str(entry["pos_user"])] = MemberAck(str(entry["contactID"]), _text_or_none(entry.get("srcID")))
        return [acks.get(m.pos_user) for m in members]

    def _post_inventory(self, items: list[InventoryPayloadItem]) -> list[None]:
        self._call("POST", self._path("/api/v1.1/createUpdateInventory"), content=_bulk_body(items))
        return [None] * len(items)

    def _deliver(
        self, batch: list[tuple[K, P]], post: Callable[[list[P]], list[A]], outcome: BatchOutcome[K, P, A]
    ) -> None:
        """Send ``batch``; if AIQ refuses it, bisect until each refused record stands alone."""
        try:
            acks = post([payload for _, payload in batch])
        except AiqRefusedError as exc:
            if len(batch) == 1:
                key, payload = batch[0]
                outcome.refused.append((key, payload, exc.message))
                self._count(refused=1)
                return
            middle = len(batch) // 2
            self._deliver(batch[:middle], post, outcome)
            self._deliver(batch[middle:], post, outcome)
            return
        outcome.accepted.extend((key, payload, ack) for (key, payload), ack in zip(batch, acks, strict=True))

    def _answer(self, batch: list[tuple[K, P]], post: Callable[[list[P]], list[A]]) -> BatchOutcome[K, P, A]:
        """One batch delivered (on a pool thread), with any bisection of a refused batch."""
        outcome: BatchOutcome[K, P, A] = BatchOutcome()
        self._deliver(batch, post, outcome)
        if outcome.refused:
            logger.info("AIQ refused %d of %d records in a batch", len(outcome.refused), len(batch))
        return outcome

    def _send(
        self, items: Iterable[tuple[K, P]], size: int, post: Callable[[list[P]], list[A]]
    ) -> Iterator[BatchOutcome[K, P, A]]:
        """Batches of ``size`` from ``items``, up to ``max_in_flight`` at AIQ at once, outcomes yielded in order.

        When a batch fails, no further batch is submitted, the ones in flight are waited for, the outcomes before the
        failed batch are yielded, and its error is raised. Batches after it may have reached AIQ unacknowledged by
        the caller; re-sending them is harmless (AIQ's upserts are keyed).
        """
        with _prompt_thread_switches():
            iterator = iter(items)
            in_flight: deque[Future[BatchOutcome[K, P, A]]] = deque()
            exhausted = False
            try:
                while True:
                    while not exhausted and len(in_flight) < self.max_in_flight and not _any_failed(in_flight):
                        batch = list(itertools.islice(iterator, size))
                        if batch:
                            in_flight.append(self._pool.submit(self._answer, batch, post))
                        exhausted = len(batch) < size
                    if not in_flight:
                        return
                    yield in_flight.popleft().result()
            finally:
                # Also reached when the caller stops early or a batch failed: nothing stays in flight behind its back.
                for future in in_flight:
                    future.cancel()
                for future in in_flight:
                    if not future.cancelled() and future.exception() is not None:
                        logger.info("a later AIQ batch failed as well: %s", future.exception())

    def send_sales(
        self, visits: Iterable[tuple[K, Visit | EncodedPayload]]
    ) -> Iterator[BatchOutcome[K, Visit | EncodedPayload, None]]:
        """Send sales in batches of ``batch_size_sales``, yielding each batch's outcome once AIQ answered it.

        A sale is a ``Visit`` or the bytes of one encoded earlier (staged at extract). The iterable is read lazily,
        one batch at a time.
        """
        return self._send(visits, self.batch_size_sales, self._post_sales)

    def send_members(self, members: Iterable[tuple[K, Member]]) -> Iterator[BatchOutcome[K, Member, MemberAck | None]]:
        """Send personas in batches of ``batch_size_members``; accepted ones carry AIQ's ids when AIQ gave them."""
        return self._send(members, self.batch_size_members, self._post_members)

    def send_inventory(
        self, items: Iterable[tuple[K, InventoryPayloadItem]]
    ) -> Iterator[BatchOutcome[K, InventoryPayloadItem, None]]:
        """Send products in batches of ``batch_size_inventory`` (at most 100, AIQ's cap)."""
        return self._send(items, self.batch_size_inventory, self._post_inventory)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, built once per process: building it (loading the CA bundle) takes ~40 ms, which
    every push step would otherwise spend before its first request."""
    return httpx.create_ssl_context()


@contextlib.contextmanager
def _prompt_thread_switches() -> Iterator[None]:
    """``SENDING_SWITCH_INTERVAL`` for the duration (never a longer interval than the one set), then the previous
    interval again."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, SENDING_SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _any_failed(futures: Iterable[Future[Any]]) -> bool:
    return any(f.done() and not f.cancelled() and f.exception() is not None for f in futures)


def _bulk_body(payloads: Sequence[AiqPayload | EncodedPayload], wrapper: bytes = b"") -> bytes:
    """A bulk call's JSON array from each payload's encoding, each inside ``{"<wrapper>": ...}`` when given."""
    close = b"}" if wrapper else b""
    return b"[" + b",".join(wrapper + p.encoded + close for p in payloads) + b"]"


def _text_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
