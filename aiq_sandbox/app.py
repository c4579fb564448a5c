"""The sandbox's Starlette app: AIQ's endpoints with AIQ's envelopes, plus read-only inspection pages.

Each API request passes the same checks in this order: logged at arrival -> auth (403) -> account uid (404) ->
rate limit (429) -> fault draw -> validation (400/413) -> applied. Nothing in a log line or in the request log holds the
API key, a phone number or an email: only method, path, status, record count and record keys, with the moment the
request arrived, how many requests were being handled then (itself included) and the moment it was answered.

A request counts against the rate limits at the moment it arrived, as a gateway in front of AIQ would count it.
The store's work (the request log, validation and writes) runs on one worker thread, in arrival order, so the event
loop is never blocked and a request's arrival is not stamped late because another request's bulk write is running.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import html
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from aiq_sandbox import reads, validation
from aiq_sandbox.limits import FaultDraw, FaultOdds, RateLimiter
from aiq_sandbox.store import Store

log = logging.getLogger("aiq_sandbox")

_QUERY_KEY_NAMES = frozenset({"apikey", "xapikey", "key"})
CLIENT_GONE = 499  # nginx's "client closed request": the body never arrived, nothing was applied


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox behaves; the CLI switches map one to one onto these fields."""

    api_key: str = field(repr=False)
    uid: str
    per_second: int
    per_minute: int
    per_hour: int
    bulk_max: int
    inventory_max: int
    faults: FaultOdds
    fault_seed: int
    slow_seconds: float
    retry_after: int
    max_body_bytes: int
    refuse_keys: frozenset[str] = frozenset()


class _Refused(Exception):
    """An API request answered with an error envelope."""

    def __init__(self, status: int, messages: list[str], *, headers: dict[str, str] | None = None):
        super().__init__(status, messages)
        self.status = status
        self.messages = messages
        self.headers = headers or {}


@dataclass
class _Call:
    """One API request on its way through the checks."""

    request: Request
    received_at: float
    body: Any = None
    body_problem: str | None = None
    records: int = 0
    keys: list[str] = field(default_factory=list)
    fault: str | None = None

    def valid_body(self, problems: list[str]) -> Any:
        """The parsed body, or a refusal listing the body's problems."""
        if self.body_problem or problems:
            raise _Refused(400, [self.body_problem] if self.body_problem else problems)
        return self.body


Handler = Callable[["_Sandbox", _Call], Any]
Describe = Callable[[Request, Any], tuple[int, list[str]]]
"""How many records a parsed body holds and their keys, best effort, for the request log."""


def _keys_of(elements: list[Any], key_path: tuple[str, ...]) -> tuple[int, list[str]]:
    keys = []
    for element in elements:
        for part in key_path:
            element = element.get(part) if isinstance(element, dict) else None
        if isinstance(element, str):
            keys.append(element)
    return len(elements), keys


def _single(*key_path: str) -> Describe:
    return lambda request, body: _keys_of([body], key_path)


def _bulk(*key_path: str) -> Describe:
    return lambda request, body: _keys_of(body if isinstance(body, list) else [], key_path)


def _contact(request: Request, body: Any) -> tuple[int, list[str]]:
    return 1, [request.path_params["contact_id"]]


def _search(request: Request, body: Any) -> tuple[int, list[str]]:
    return 0, []  # the search term may be a phone or an email: never logged; records are the results, set later


@dataclass(frozen=True)
class _Endpoint:
    method: str
    path: str
    handler: Handler
    describe: Describe


class _DroppedResponse(Response):
    """Starts the response, then returns without its body, so uvicorn closes the connection mid-response.

    The client sees a status line and headers promising a body that never comes: httpx raises RemoteProtocolError.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})


class _Sandbox:
    """The account's state, limiter and fault draw, and the one path every API request takes through them."""

    def __init__(self, config: SandboxConfig, store: Store):
        self.config = config
        self.store = store
        self.limiter = RateLimiter(((1, config.per_second), (60, config.per_minute), (3600, config.per_hour)))
        self.faults = FaultDraw(config.faults, config.fault_seed)
        self.in_flight = 0
        self._store_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-store")

    def in_store(self, work: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``work(*args)`` on the store's worker thread: one at a time, in the order they were asked for."""
        return asyncio.get_running_loop().run_in_executor(self._store_worker, functools.partial(work, *args))

    async def handle(self, endpoint: _Endpoint | None, request: Request) -> Response:
        """Answer an API request; ``endpoint`` is None when no endpoint has the request's method and path."""
        self.in_flight += 1
        try:
            return await self._handle(endpoint, request)
        finally:
            self.in_flight -= 1

    async def _handle(self, endpoint: _Endpoint | None, request: Request) -> Response:
        arrived = time.monotonic()
        call = _Call(request, received_at=time.time())
        logged = self.in_store(self.store.log_arrival, call.received_at, request.method, request.url.path,
                               self.in_flight)
        headers: dict[str, str] = {}
        try:
            self._authorize(request)
            if endpoint is None:
                served = ", ".join(f"{e.method} {e.path}" for e in _ENDPOINTS)
                raise _Refused(404, [f"no such endpoint: {request.method} {request.url.path}; served: {served}"])
            if request.path_params["uid"] != self.config.uid:
                raise _Refused(404, ["unknown account uid: this sandbox serves the uid set with --uid (AIQ_UID)"])
            if request.method == "POST":
                await self._read_json(call)
            if not call.body_problem:
                call.records, call.keys = endpoint.describe(request, call.body)
            self._throttle(call, arrived)
            self._refuse_listed_keys(call)
            data = await self.in_store(endpoint.handler, self, call)
            status, envelope = 200, {"code": 200, "success": True, "data": data}
        except _Refused as refusal:
            status, headers = refusal.status, refusal.headers
            envelope = {"code": status, "success": False, "errors": [{"message": m} for m in refusal.messages]}
        slow = call.fault == "slow"
        request_id = await logged
        await self.in_store(functools.partial(
            self.store.log_outcome, request_id, status=status, records=call.records, keys=call.keys,
            fault=call.fault, answered_at=None if slow else time.time(),
        ))
        log.info(
            "%s %s %d records=%d%s",
            request.method, request.url.path, status, call.records, f" fault={call.fault}" if call.fault else "",
        )
        if slow:
            await asyncio.sleep(self.config.slow_seconds)
            await self.in_store(self.store.log_answered, request_id, time.time())
        if call.fault == "drop":
            return _DroppedResponse(status_code=status)
        return JSONResponse(envelope, status_code=status, headers=headers)

    def _refuse_listed_keys(self, call: _Call) -> None:
        """Stand in for AIQ refusing a record for reasons of its own: --refuse-keys lists the keys it refuses."""
        refused = [f"[{i}]: record {key} refused by AIQ (sandbox --refuse-keys)"
                   for i, key in enumerate(call.keys) if key in self.config.refuse_keys]
        if refused:
            raise _Refused(400, refused)

    def _authorize(self, request: Request) -> None:
        expected = self.config.api_key.encode()
        for name, value in request.query_params.multi_items():
            if name.lower().replace("-", "").replace("_", "") in _QUERY_KEY_NAMES or hmac.compare_digest(
                value.encode(), expected
            ):
                raise _Refused(403, ["an API key in the query string is refused: send it in the x-apikey header"])
        given = request.headers.get("x-apikey")
        if given is None:
            raise _Refused(403, ["missing x-apikey header: send the account's API key (AIQ_API_KEY) in it"])
        if not hmac.compare_digest(given.encode(), expected):
            raise _Refused(403, ["the x-apikey header does not hold this account's API key: check AIQ_API_KEY"])

    async def _read_json(self, call: _Call) -> None:
        limit, chunks, size = self.config.max_body_bytes, [], 0
        try:
            async for chunk in call.request.stream():
                size += len(chunk)
                if size > limit:
                    call.body_problem = f"$: body larger than {limit} bytes: send fewer records per request"
                    return
                chunks.append(chunk)
        except ClientDisconnect:
            # A client killed mid-upload: log the request as ended rather than leave it in progress forever.
            call.fault = "client_gone"
            raise _Refused(CLIENT_GONE, ["the client closed the connection before its body arrived"]) from None
        try:
            # orjson: two thirds of the json module's time on a bulk body (its floats cost most), and strict as the
            # JSON standard is: NaN, Infinity, invalid UTF-8 and lone surrogates are refused, not read.
            call.body = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as error:
            call.body_problem = f"$: body is not JSON ({error.msg} at line {error.lineno} column {error.colno})"

    def _throttle(self, call: _Call, arrived: float) -> None:
        """Apply the account's rate limits as of the request's arrival, then the fault drawn for this request."""
        wait = self.limiter.admit(arrived)
        if wait is not None:
            call.fault = "rate_limited"
            raise _Refused(
                429,
                [f"rate limit: at most {self.config.per_second}/s, {self.config.per_minute}/min and "
                 f"{self.config.per_hour}/h requests per account; retry after {wait} s"],
                headers={"Retry-After": str(wait)},
            )
        call.fault = self.faults.next()
        if call.fault == "5xx":
            raise _Refused(503, ["injected fault: service unavailable (--fault-5xx); nothing was applied"])
        if call.fault == "429":
            raise _Refused(
                429,
                ["injected fault: too many requests (--fault-429); nothing was applied"],
                headers={"Retry-After": str(self.config.retry_after)},
            )


def _check_cap(call: _Call, cap: int, switch: str) -> None:
    if not call.body_problem and isinstance(call.body, list) and len(call.body) > cap:
        raise _Refused(413, [f"$: {len(call.body)} elements; at most {cap} per request ({switch})"])


def _sale(sandbox: _Sandbox, call: _Call) -> Any:
    body = call.valid_body(validation.check_single(call.body, validation.SALE_BODY))
    sandbox.store.upsert_sales([body["visit"]], call.received_at)
    return {}  # [assumed] AIQ publishes no response data for sales.


def _sales(sandbox: _Sandbox, call: _Call) -> Any:
    _check_cap(call, sandbox.config.bulk_max, "--bulk-max")
    body = call.valid_body(validation.check_bulk(call.body, validation.SALE_BODY))
    sandbox.store.upsert_sales([element["visit"] for element in body], call.received_at)
    return []  # [assumed] AIQ publishes no response data for sales.


def _member(sandbox: _Sandbox, call: _Call) -> Any:
    body = call.valid_body(validation.check_single(call.body, validation.MEMBER_BODY))
    (ack,) = sandbox.store.upsert_members([body["member"]], call.received_at)
    return {"contactID": ack["contactID"], "srcID": ack["srcID"]}


def _members(sandbox: _Sandbox, call: _Call) -> Any:
    _check_cap(call, sandbox.config.bulk_max, "--bulk-max")
    body = call.valid_body(validation.check_bulk(call.body, validation.MEMBER_BODY))
    # [assumed] AIQ does not publish the bulk response; we answer one {pos_user, contactID, srcID} per element,
    # in request order, mirroring createUpdateMember's single response.
    return sandbox.store.upsert_members([element["member"] for element in body], call.received_at)


def _override(sandbox: _Sandbox, call: _Call) -> Any:
    contact_id = call.request.path_params["contact_id"]
    body = call.valid_body(validation.check_override(call.body))
    contact = sandbox.store.override_contact(contact_id, body, call.received_at)
    if contact is None:
        raise _Refused(404, [f"no contact {contact_id}: find its contactID with GET /api/v1.1/piis/<uid>?search="])
    return contact  # [assumed] AIQ publishes no response data for overrides; we answer the updated contact.


def _inventory(sandbox: _Sandbox, call: _Call) -> Any:
    _check_cap(call, sandbox.config.inventory_max, "--inventory-max")
    body = call.valid_body(validation.check_bulk(call.body, validation.INVENTORY_ITEM))
    sandbox.store.upsert_inventory(body, call.received_at)
    return []


def _piis(sandbox: _Sandbox, call: _Call) -> Any:
    search, limit, start, problems = reads.query(call.request.query_params)
    if problems:
        raise _Refused(400, problems)
    if search is None:
        results = sandbox.store.page_contacts(limit=limit, start=start)
    else:
        results = sandbox.store.search_contacts(search, limit=limit, start=start)
    call.records = len(results)
    return reads.answer(results)


_ENDPOINTS = (
    _Endpoint("POST", "/api/v1.1/createUpdateSale/{uid}", _sale, _single("visit", "pos_id")),
    _Endpoint("POST", "/api/v1.1/createUpdateSales/{uid}", _sales, _bulk("visit", "pos_id")),
    _Endpoint("POST", "/api/v1.1/createUpdateMember/{uid}", _member, _single("member", "pos_user")),
    _Endpoint("POST", "/api/v1.1/createUpdateMembers/{uid}", _members, _bulk("member", "pos_user")),
    _Endpoint("POST", "/api/v2/loyaltyContact/override/{uid}/{contact_id}", _override, _contact),
    _Endpoint("POST", "/api/v1.1/createUpdateInventory/{uid}", _inventory, _bulk("productId")),
    _Endpoint("GET", "/api/v1.1/piis/{uid}", _piis, _search),
)


def create_app(config: SandboxConfig, store: Store) -> Starlette:
    """The ASGI app serving ``config``'s account from ``store``."""
    sandbox = _Sandbox(config, store)

    def api_route(path: str, endpoint: _Endpoint | None, methods: list[str]) -> Route:
        async def serve(request: Request) -> Response:
            return await sandbox.handle(endpoint, request)

        return Route(path, serve, methods=methods)

    async def state(request: Request) -> Response:
        return JSONResponse(await sandbox.in_store(store.state))

    async def requests(request: Request) -> Response:
        since_id = request.query_params.get("since_id", "0")
        if not since_id.isdigit():
            return JSONResponse({"error": "since_id: expected a non-negative integer"}, status_code=400)
        return JSONResponse(await sandbox.in_store(store.requests, int(since_id)))

    async def home(request: Request) -> Response:
        return HTMLResponse(await sandbox.in_store(_home_page, config, store))

    return Starlette(
        routes=[
            *(api_route(endpoint.path, endpoint, [endpoint.method]) for endpoint in _ENDPOINTS),
            api_route("/api/{rest:path}", None, ["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/sandbox/state", state),
            Route("/sandbox/requests", requests),
            Route("/", home),
        ]
    )


def _request_row(request: dict[str, Any]) -> str:
    keys = ", ".join(request["keys"][:5]) + (" …" if len(request["keys"]) > 5 else "")
    when = time.strftime("%H:%M:%S", time.localtime(request["received_at"]))
    cells = (request["id"], when, request["method"], request["path"], request["status"], request["records"],
             request["fault"] or "", keys)
    return "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells) + "</tr>"


def _home_page(config: SandboxConfig, store: Store) -> str:
    counts = "".join(f"<li>{html.escape(name)}: {count}</li>" for name, count in store.counts().items())
    rows = "".join(_request_row(request) for request in reversed(store.requests(latest=25)))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5"><title>AIQ sandbox</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:left}}</style></head>
<body><h1>AIQ sandbox: account {html.escape(config.uid)}</h1>
<ul>{counts}</ul>
<p>JSON: <a href="/sandbox/state">/sandbox/state</a> · <a href="/sandbox/requests">/sandbox/requests</a></p>
<h2>Latest requests (newest first)</h2>
<table><tr><th>id</th><th>time</th><th>method</th><th>path</th><th>status</th><th>records</th><th>fault</th>
<th>keys</th></tr>{rows}</table></body></html>"""
