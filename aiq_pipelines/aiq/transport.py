"""One request to AIQ, rate-limited and retried, over a reused connection pool.

Every HTTP attempt first passes the account-wide ``AccountRateLimiter``; one that leaves the process noticeably later
than the limiter stamped it (a new connection, a thread waiting for the interpreter lock) is re-stamped with the moment
its headers went out, so the limiter's margin only has to cover the network. 429s, 5xx answers, timeouts and broken
connections are retried with exponential backoff and jitter (a 429's ``Retry-After`` is the wait when present),
bounded by ``max_attempts`` and by ``max_retry_seconds`` of time spent on AIQ (waiting for our own rate budget does
not count: it says nothing about AIQ's health). Any other 4xx is final (``AiqRefusedError``).

The API key lives only in the connection pool's headers: it is in no repr, exception or log line. Request bodies are
never logged, and AIQ's error messages are returned with emails and phone numbers masked.
"""

from __future__ import annotations

import dataclasses
import email.utils
import functools
import json
import logging
import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import tenacity

from aiq_pipelines.aiq.errors import AiqAccountError, AiqAuthError, AiqError, AiqRefusedError, AiqUnavailableError
from aiq_pipelines.aiq.ratelimit import AccountRateLimiter
from aiq_pipelines.aiq.redaction import redact_personal_data

logger = logging.getLogger(__name__)

# A request that left this much later than the rate limiter stamped it is re-stamped with the moment it left.
RESTAMP_AFTER_SECONDS = 0.005


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


def retry_after_seconds(value: str | None) -> float | None:
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


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, built once per process: loading the CA bundle would otherwise delay every push
    step's first request (bench/RESULTS.md, "TLS context")."""
    return httpx.create_ssl_context()


class Transport:
    """AIQ's HTTP API for one account: ``call`` sends one logical request with its retries."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        uid: str,
        limiter: AccountRateLimiter,
        *,
        timeout: float,
        max_attempts: int,
        max_retry_seconds: float,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        seed: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.uid = uid
        self._limiter = limiter
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._max_retry_seconds = max_retry_seconds
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._random = random.Random(seed)
        self._stats = ClientStats()
        self._stats_lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.base_url, headers={"x-apikey": api_key, "accept": "application/json"}, timeout=timeout,
            verify=_tls_context(),
        )

    def close(self) -> None:
        self._http.close()

    @property
    def stats(self) -> ClientStats:
        with self._stats_lock:
            return dataclasses.replace(self._stats)

    def count(self, **increments: int) -> None:
        with self._stats_lock:
            for name, value in increments.items():
                setattr(self._stats, name, getattr(self._stats, name) + value)

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
        self.count(requests=1, bytes_sent=len(content or b""))
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
            self.count(throttled=1)
            raise _Retryable("HTTP 429", retry_after=retry_after_seconds(response.headers.get("retry-after")))
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

    def call(
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
            self.count(retries=1)
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
