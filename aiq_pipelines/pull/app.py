"""The pull API's HTTP surface (FastAPI): versioned, read-only JSON over the sync database's staged records.

Every request passes ``guard`` first: a key in the URL is refused, a client that keeps sending bad keys is throttled,
the key is checked and its budget taken, and the caller's account decides what it reads (``StoreScope``). Handlers read
their parameters themselves (``params.py``), so a refusal is a 400 naming the parameter, never FastAPI's 422. Keys,
phones and emails never reach a log line: errors name parameters, never values.
"""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.times import naive_utc, parse_rfc3339, rfc3339
from aiq_pipelines.pull import models, params, reads
from aiq_pipelines.pull.auth import ApiKeys, Caller, SlidingWindow, retry_after
from aiq_pipelines.pull.cursor import Cursor, CursorError, CursorSigner
from aiq_pipelines.pull.inventory import InventoryVersions, NoSnapshot
from aiq_pipelines.pull.logs import access, loggable
from aiq_pipelines.pull.openapi import PARAMETERS, document, query_parameters, responses
from aiq_pipelines.pull.params import BadRequest
from aiq_pipelines.pull.render import customer, shopper, transactions
from aiq_pipelines.sync.accounts import EVERYTHING, StoreScope

DOCUMENTS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
STATIC = "/docs-assets"  # Swagger UI's and ReDoc's files, served from the fastapi-offline package
UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="aiq-pipelines", Basic'}
NOT_STAGED = "the sync database cannot be read, or nothing is staged there yet: run an extract"


class Forbidden(ValueError):
    """A request for records the key's account does not hold; answered 403 naming the parameter only."""


@dataclass(frozen=True)
class PullConfig:
    """What the service needs, read once at start-up (``aiq_pipelines.settings``): ``scopes`` maps each key's
    account (None in the single-key set-up) to the stores and shoppers it reads."""

    engine: sa.Engine
    timezone: str
    keys: ApiKeys
    settle_seconds: float
    requests_per_minute: int
    failed_keys_per_minute: int = 10
    scopes: Mapping[str | None, StoreScope] = field(default_factory=lambda: {None: EVERYTHING})


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def _json(body: dict[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=dict(headers or {}))


def _query(request: Request) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        found.setdefault(name, []).append(value)
    return found


def create_app(config: PullConfig) -> FastAPI:
    """The service for ``config``; ``aiq-pipelines pull-api`` serves it with uvicorn."""
    app = FastAPIOffline(
        title="aiq-pipelines pull API",
        version="1",
        description="Transactions, customers and inventory by time range for AIQ (Alpine IQ), served read-only from "
                    "the validated records the sync stages. Send the key as `Authorization: Bearer <key>`.",
        static_url=STATIC,
    )
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
    signers = {account: CursorSigner(config.keys.derived_secret(b"aiq-pipelines cursor|" + (account or "").encode()))
               for account in config.keys.accounts}
    budget = SlidingWindow(config.requests_per_minute)
    failures = SlidingWindow(config.failed_keys_per_minute)
    zone = zoneinfo.ZoneInfo(config.timezone)
    versions = InventoryVersions()

    def refuse(request: Request) -> Response | None:
        """The answer to a request that goes no further than the guard, or None; sets the request's caller."""
        root, path = request.scope.get("root_path", ""), request.scope["path"]
        path = path[len(root):] if root and path.startswith(root) else path
        if config.keys.in_query(request.query_params.multi_items()):
            return _error(401, "send the key in the Authorization header (Bearer), never in the URL", UNAUTHORIZED)
        if path in DOCUMENTS or path.startswith(STATIC + "/"):
            return None
        if path in PARAMETERS and request.method != "GET":  # the document tells anyone which methods there are
            return _error(405, "method not allowed: this path answers GET", {"Allow": "GET"})
        client = request.client.host if request.client else "-"
        wait = failures.wait(client)
        if wait > 0:
            return _error(429, "too many requests with a wrong key from this address", {"Retry-After": retry_after(wait)})
        caller = config.keys.match(request.headers.get("authorization"))
        if caller is None:
            failures.record(client)
            return _error(401, "unauthorized", UNAUTHORIZED)
        request.state.caller = caller
        wait = budget.take(caller.budget)
        if wait > 0:
            return _error(429, f"more than {budget.allowed} requests a minute for this key",
                          {"Retry-After": retry_after(wait)})
        return None

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[..., Any]) -> Response:
        started = time.monotonic()
        response = refuse(request) or await call_next(request)
        caller: Caller | None = getattr(request.state, "caller", None)
        path = request.scope["path"]
        shown = loggable(path, request.scope.get("query_string", b"").decode("latin-1"), config.keys,
                         known_path=path.removeprefix(request.scope.get("root_path", "")) in PARAMETERS)
        access.info('%s - "%s %s" %d account=%s %.0f ms', request.client.host if request.client else "-",
                    request.method, shown, response.status_code, (caller.account or "all") if caller else "-",
                    (time.monotonic() - started) * 1000)
        return response

    @app.exception_handler(BadRequest)
    async def bad_request(_request: Request, exc: BadRequest) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(Forbidden)
    async def forbidden(_request: Request, exc: Forbidden) -> JSONResponse:
        return _error(403, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail).lower(), exc.headers)

    async def unreadable(_request: Request, exc: Exception) -> JSONResponse:
        return _error(503, str(exc) if isinstance(exc, NoSnapshot) else NOT_STAGED)

    # SQLite says "no such table" with an OperationalError, PostgreSQL with a ProgrammingError.
    for error in (sa.exc.OperationalError, sa.exc.ProgrammingError, NoSnapshot):
        app.add_exception_handler(error, unreadable)

    def scope_of(request: Request, location_id: str | None) -> tuple[Caller, StoreScope]:
        caller: Caller = request.state.caller
        scope = config.scopes[caller.account]
        if location_id is not None and not scope.covers(location_id):
            raise Forbidden("location_id: not a store this key may read")
        return caller, scope

    def decode(caller: Caller, text: str, endpoint: str) -> Cursor:
        try:
            return signers[caller.account].decode(text, endpoint)
        except CursorError as exc:
            raise BadRequest(str(exc)) from None

    def page(
        request: Request, endpoint: str, entity: Entity, fetch: Callable[..., list[sa.Row]],
        render: Callable[[list[sa.Row]], Any], key: Callable[[sa.Row, reads.Window], tuple[dt.datetime, str]],
        backfill: bool,
    ) -> Response:
        given = params.only(_query(request), query_parameters(f"/v1/{endpoint}"))
        size, includes = params.limit(given.pop("limit", None)), params.include(given.pop("include", None))
        text = given.pop("cursor", None)
        caller: Caller = request.state.caller
        if text is not None:
            cursor = decode(caller, text, endpoint)
            params.same_window(cursor.window, given)
            window = cursor.window
            after = (naive_utc(parse_rfc3339(cursor.after[0])), cursor.after[1])
        else:
            window = params.window_of(given, dt.datetime.now(dt.UTC), config.settle_seconds, backfill_allowed=backfill)
            after = None
        caller, scope = scope_of(request, window.get("location_id"))
        bounds = params.reads_window(window)
        with config.engine.connect() as conn:
            rows = fetch(conn, bounds, after, size + 1, scope)
            days = None
            if bounds.occurred_from is not None and bounds.occurred_to is not None:
                days = (bounds.occurred_from.replace(tzinfo=dt.UTC).astimezone(zone).date(),
                        (bounds.occurred_to.replace(tzinfo=dt.UTC).astimezone(zone) - dt.timedelta(microseconds=1))
                        .date() + dt.timedelta(days=1))
            held = reads.held_back(conn, entity, bounds, *(days or (None, None)), scope)
            rows, more = rows[:size], len(rows) > size
            included = None
            if includes:
                ids = [row.customer_id for row in rows if row.customer_id is not None]
                included = [shopper(found) for found in reads.shoppers(conn, ids, scope)]
        next_cursor = None
        if more:
            last_moment, last_key = key(rows[-1], bounds)
            next_cursor = signers[caller.account].encode(Cursor(endpoint, window, [rfc3339(last_moment), last_key]))
        body = {"window": window, "high_watermark": window["updated_before"], "next_cursor": next_cursor,
                "held_back": held, "data": render(rows)}
        if included is not None:
            body["customers"] = included
        return _json(body)

    @app.get("/v1/transactions", response_model=models.TransactionPage, tags=["pull"], responses=responses(403))
    def get_transactions(request: Request) -> Response:
        """Sales and returns with their lines, cost and margin, ordered by (updated_at, transaction_id), or for a
        backfill by (occurred_at, transaction_id).

        Pull by `updated_since` (store the returned `high_watermark` and pass it next time), or backfill by
        `occurred_from`/`occurred_to`; never both. A void or an edit bumps `updated_at`, so it reaches the next
        incremental pull. With `include=customers` each page also carries the customers its sales name (a void's
        only when staged otherwise: a void is never attributed). Quarantined receipts are not served; `held_back`
        counts them."""
        return page(request, "transactions", Entity.TRANSACTION, reads.transactions,
                    lambda rows: transactions(rows, zone),
                    lambda row, bounds: (row.transaction_at if bounds.backfill else row.changed_at, row.transaction_id),
                    backfill=True)

    @app.get("/v1/customers", response_model=models.CustomerPage, tags=["pull"], responses=responses())
    def get_customers(request: Request) -> Response:
        """Customers (AIQ personas) changed in the window, with phones and emails normalized as the push sends them;
        invalid and placeholder values are null, never served. The customers of the window's sales that did not
        change come with the sales (`/v1/transactions?include=customers`)."""
        return page(request, "customers", Entity.PERSONA, reads.customers, lambda rows: [customer(row) for row in rows],
                    lambda row, _bounds: (row.changed_at, row.customer_id), backfill=False)

    @app.get("/v1/inventory", response_model=models.InventoryPage, tags=["pull"], responses={
        **responses(403, 409), 304: {"description": "The snapshot has not changed since the ETag in If-None-Match."}})
    def get_inventory(request: Request) -> Response:
        """The current inventory snapshot: stock, unit cost, price and margin per product and store, with an ETag.
        A cursor carries the snapshot's version: if what this key sees changed since the first page, 409."""
        given = params.only(_query(request), query_parameters("/v1/inventory"))
        size, text = params.limit(given.pop("limit", None)), given.pop("cursor", None)
        caller: Caller = request.state.caller
        previous = None if text is None else decode(caller, text, "inventory")
        if previous is not None:
            params.same_window({"location_id": previous.window.get("location_id")}, given)
        location = previous.window.get("location_id") if previous is not None else params.location(
            given.get("location_id"))
        caller, scope = scope_of(request, location)
        with config.engine.connect() as conn:
            version, taken = versions.of(conn, caller.account, scope, location)
            etag = f'"{version}"'
            if previous is not None and previous.window.get("version") != version:
                return _error(409, "cursor: the inventory snapshot changed since the first page; start again without "
                                   "cursor")
            if request.headers.get("if-none-match") == etag:
                return Response(status_code=304, headers={"ETag": etag})
            items, last = versions.page(conn, scope, location, None if previous is None else previous.after[0], size)
        window = {"version": version, "location_id": location}
        next_cursor = None if last is None else signers[caller.account].encode(Cursor("inventory", window, [last]))
        return _json({"data": items, "as_of": None if taken is None else rfc3339(taken), "next_cursor": next_cursor},
                     {"ETag": etag})

    @app.get("/v1/locations", response_model=models.Locations, tags=["pull"], responses=responses())
    def get_locations(request: Request) -> Response:
        """The stores the staged sales name, with the time zone that defines their business day: this key's
        account's stores only."""
        params.only(_query(request), ())
        _caller, scope = scope_of(request, None)
        with config.engine.connect() as conn:
            stores = reads.locations(conn, scope)
        return _json({"data": [{"location_id": key, "name": name, "timezone": zone or config.timezone}
                               for key, name, zone in stores]})

    return app
