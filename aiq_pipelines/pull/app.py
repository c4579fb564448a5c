"""The pull API's HTTP surface (FastAPI): versioned, read-only JSON over the sync database's staged records.

Parameters are checked here rather than by FastAPI's validation, so that every refusal is a 400 naming the parameter
and what it expects. Keys, phones and emails never reach a log line: errors name parameters, never values.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.times import naive_utc, parse_rfc3339, rfc3339
from aiq_pipelines.pull import models, reads
from aiq_pipelines.pull.auth import ApiKeys, RequestBudget, retry_after
from aiq_pipelines.pull.cursor import Cursor, CursorError, CursorSigner
from aiq_pipelines.pull.render import customer, inventory_items, transaction

DEFAULT_LIMIT, MAX_LIMIT = 500, 1000
MAX_BACKFILL_DAYS = 31
WINDOW_PARAMETERS = ("updated_since", "updated_before", "occurred_from", "occurred_to", "location_id")
PUBLIC_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


class BadRequest(ValueError):
    """A request the service refuses with 400; the message names the parameter."""


@dataclass(frozen=True)
class PullConfig:
    """What the service needs, read once at start-up (``aiq_pipelines.settings``)."""

    engine: sa.Engine
    timezone: str
    keys: ApiKeys
    settle_seconds: float
    requests_per_minute: int


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _only(request: Request, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        takes = f"takes {', '.join(allowed)}" if allowed else "takes no parameters"
        raise BadRequest(f"{unknown[0]}: unknown parameter; this endpoint {takes}")
    for name in request.query_params:
        if len(request.query_params.getlist(name)) > 1:
            raise BadRequest(f"{name}: given more than once")


def _timestamp(name: str, text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return parse_rfc3339(text)
    except (ValueError, OverflowError):
        raise BadRequest(f"{name}: expected an RFC 3339 timestamp with Z or an offset, such as 2026-06-10T18:00:00Z")\
            from None


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit: expected a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def _window_of(params: dict[str, str | None], now: dt.datetime, settle: float, *, backfill_allowed: bool) -> dict:
    """The request's window as the cursor keeps it (RFC 3339 strings), with ``updated_before`` clamped."""
    since, before = _timestamp("updated_since", params.get("updated_since")), \
        _timestamp("updated_before", params.get("updated_before"))
    occurred_from, occurred_to = _timestamp("occurred_from", params.get("occurred_from")), \
        _timestamp("occurred_to", params.get("occurred_to"))
    if (since or before) and (occurred_from or occurred_to):
        raise BadRequest("occurred_from: give updated_since/updated_before (incremental) or occurred_from/occurred_to "
                         "(backfill), not both")
    if occurred_from or occurred_to:
        if not backfill_allowed:
            raise BadRequest("occurred_from: this endpoint is pulled by updated_since/updated_before only")
        if occurred_from is None or occurred_to is None:
            raise BadRequest(f"{'occurred_from' if occurred_from is None else 'occurred_to'}: a backfill needs both "
                             "occurred_from and occurred_to")
        if occurred_to <= occurred_from:
            raise BadRequest("occurred_to: must be later than occurred_from")
        if occurred_to - occurred_from > dt.timedelta(days=MAX_BACKFILL_DAYS):
            raise BadRequest(f"occurred_to: a backfill covers at most {MAX_BACKFILL_DAYS} days a call")
    ceiling = now - dt.timedelta(seconds=settle)
    bound = ceiling if before is None else min(before, ceiling)
    if since is not None and since > bound:
        raise BadRequest("updated_since: must not be later than updated_before (or now minus the settle lag)")
    return {
        "updated_since": None if since is None else rfc3339(since),
        "updated_before": rfc3339(bound),
        "occurred_from": None if occurred_from is None else rfc3339(occurred_from),
        "occurred_to": None if occurred_to is None else rfc3339(occurred_to),
        "location_id": params.get("location_id"),
    }


def _reads_window(window: dict) -> reads.Window:
    def moment(name: str) -> dt.datetime | None:
        value = window.get(name)
        return None if value is None else naive_utc(parse_rfc3339(value))

    before = moment("updated_before")
    assert before is not None
    return reads.Window(moment("updated_since"), before, moment("occurred_from"), moment("occurred_to"),
                        window.get("location_id"))


def create_app(config: PullConfig) -> FastAPI:
    """The service for ``config``; ``aiq-pipelines pull-api`` serves it with uvicorn."""
    app = FastAPI(
        title="aiq-pipelines pull API",
        version="1",
        description="Transactions, customers and inventory by time range for AIQ (Alpine IQ), served read-only from "
                    "the validated records the sync stages. Authenticate with `Authorization: Bearer <key>`.",
    )
    signer = CursorSigner(config.keys.derived_secret(b"aiq-pipelines cursor"))
    budget = RequestBudget(config.requests_per_minute)
    zone = zoneinfo.ZoneInfo(config.timezone)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[..., Any]) -> Response:
        root, path = request.scope.get("root_path", ""), request.scope["path"]
        if (path[len(root):] if root and path.startswith(root) else path) in PUBLIC_PATHS:
            return await call_next(request)  # every other path needs a key, whatever it is mounted under
        who = config.keys.match(request.headers.get("authorization"))
        if who is None:
            return _error(401, "unauthorized", {"WWW-Authenticate": 'Bearer realm="aiq-pipelines", Basic'})
        wait = budget.take(who)
        if wait > 0:
            return _error(429, f"more than {budget.per_minute} requests a minute for this key",
                          {"Retry-After": retry_after(wait)})
        return await call_next(request)

    @app.exception_handler(BadRequest)
    async def bad_request(_request: Request, exc: BadRequest) -> JSONResponse:
        return _error(400, str(exc))

    async def unreadable(_request: Request, _exc: Exception) -> JSONResponse:
        return _error(503, "the sync database cannot be read, or nothing is staged there yet: run an extract")

    # SQLite says "no such table" with an OperationalError, PostgreSQL with a ProgrammingError.
    app.add_exception_handler(sa.exc.OperationalError, unreadable)
    app.add_exception_handler(sa.exc.ProgrammingError, unreadable)

    def page(
        request: Request, endpoint: str, entity: Entity, fetch: Callable[..., list[sa.Row]],
        render: Callable[[sa.Row], Any], key: Callable[[sa.Row, reads.Window], tuple[dt.datetime, str]],
        backfill: bool,
    ) -> dict:
        allowed = (*WINDOW_PARAMETERS, "limit", "cursor") if backfill else (
            "updated_since", "updated_before", "limit", "cursor")
        _only(request, allowed)
        params = dict(request.query_params)
        limit = _limit(params.pop("limit", None))
        text = params.pop("cursor", None)
        if text is not None:
            try:
                cursor = signer.decode(text, endpoint)
            except CursorError as exc:
                raise BadRequest(str(exc)) from None
            # The window's parameters may be sent again with the cursor (the upper bound is the cursor's), but not others.
            for name, value in params.items():
                if name == "updated_before":
                    continue
                given = value if name == "location_id" else rfc3339(_timestamp(name, value))
                if cursor.window.get(name) != given:
                    raise BadRequest("cursor: it belongs to another window; pass only cursor (and limit) to go on")
            window = cursor.window
            after = (naive_utc(parse_rfc3339(cursor.after[0])), cursor.after[1])
        else:
            window = _window_of(params, dt.datetime.now(dt.UTC), config.settle_seconds, backfill_allowed=backfill)
            after = None
        bounds = _reads_window(window)
        with config.engine.connect() as conn:
            rows = fetch(conn, bounds, after, limit + 1)
            days = None
            if bounds.occurred_from is not None and bounds.occurred_to is not None:
                days = (bounds.occurred_from.replace(tzinfo=dt.UTC).astimezone(zone).date(),
                        (bounds.occurred_to.replace(tzinfo=dt.UTC).astimezone(zone) - dt.timedelta(microseconds=1))
                        .date() + dt.timedelta(days=1))
            held = reads.held_back(conn, entity, bounds, *(days or (None, None)))
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if more:
            last_moment, last_key = key(rows[-1], bounds)
            next_cursor = signer.encode(Cursor(endpoint, window, [rfc3339(last_moment), last_key]))
        return {"window": window, "high_watermark": window["updated_before"], "next_cursor": next_cursor,
                "held_back": held, "data": [render(row) for row in rows]}

    @app.get("/v1/transactions", response_model=models.TransactionPage, tags=["pull"])
    def get_transactions(
        request: Request,
        updated_since: str | None = Query(None, description="Incremental: changed at or after (RFC 3339)."),
        updated_before: str | None = Query(None, description="Changed before; clamped to now minus the settle lag."),
        occurred_from: str | None = Query(None, description="Backfill: rung at or after (RFC 3339)."),
        occurred_to: str | None = Query(None, description="Backfill: rung before; at most 31 days after occurred_from."),
        location_id: str | None = Query(None, description="Only this store's sales."),
        limit: str | None = Query(None, description=f"Records a page, 1-{MAX_LIMIT} ({DEFAULT_LIMIT})."),
        cursor: str | None = Query(None, description="next_cursor of the previous page."),
    ) -> dict:
        """Sales and returns with their lines, cost and margin, ordered by (updated_at, transaction_id), or for a
        backfill by (occurred_at, transaction_id).

        Pull by `updated_since` (store the returned `high_watermark` and pass it next time), or backfill by
        `occurred_from`/`occurred_to`; never both. A void or an edit bumps `updated_at`, so it reaches the next
        incremental pull. Quarantined receipts are not served; `held_back` counts them."""
        return page(request, "transactions", Entity.TRANSACTION, reads.transactions,
                    lambda row: transaction(row, zone),
                    lambda row, bounds: (row.transaction_at if bounds.backfill else row.changed_at, row.transaction_id),
                    backfill=True)

    @app.get("/v1/customers", response_model=models.CustomerPage, tags=["pull"])
    def get_customers(
        request: Request,
        updated_since: str | None = Query(None, description="Changed at or after (RFC 3339)."),
        updated_before: str | None = Query(None, description="Changed before; clamped to now minus the settle lag."),
        limit: str | None = Query(None, description=f"Records a page, 1-{MAX_LIMIT} ({DEFAULT_LIMIT})."),
        cursor: str | None = Query(None, description="next_cursor of the previous page."),
    ) -> dict:
        """Customers (AIQ personas) changed in the window, with phones and emails normalized as the push sends them;
        invalid and placeholder values are null, never served."""
        return page(request, "customers", Entity.PERSONA, reads.customers, customer,
                    lambda row, _bounds: (row.changed_at, row.customer_id), backfill=False)

    @app.get("/v1/inventory", response_model=models.InventoryPage, tags=["pull"],
             responses={304: {"description": "The snapshot has not changed since the ETag given in If-None-Match."}})
    def get_inventory(
        request: Request,
        location_id: str | None = Query(None, description="Only this store's stock."),
        limit: str | None = Query(None, description=f"Products a page, 1-{MAX_LIMIT} ({DEFAULT_LIMIT})."),
        cursor: str | None = Query(None, description="next_cursor of the previous page."),
    ) -> Any:
        """The current inventory snapshot: stock, unit cost, price and margin per product and store, with an ETag."""
        _only(request, ("location_id", "limit", "cursor"))
        size = _limit(limit)
        previous = None
        if cursor is not None:
            try:
                previous = signer.decode(cursor, "inventory")
            except CursorError as exc:
                raise BadRequest(str(exc)) from None
        with config.engine.connect() as conn:
            version, taken = reads.inventory_version(conn, location_id)
            etag = f'"{version}"'
            if previous is not None and previous.window.get("version") != version:
                return _error(409, "cursor: the inventory snapshot changed since the first page; start again without "
                                   "cursor")
            if request.headers.get("if-none-match") == etag:
                return Response(status_code=304, headers={"ETag": etag})
            rows = reads.inventory(conn, None if previous is None else previous.after[0], size + 1)
        more = len(rows) > size
        rows = rows[:size]
        items = [item for row in rows for item in inventory_items(row, location_id)]
        next_cursor = signer.encode(Cursor("inventory", {"version": version}, [rows[-1].product_id])) if more else None
        body = {"data": items, "as_of": None if taken is None else rfc3339(taken), "next_cursor": next_cursor}
        return JSONResponse(models.InventoryPage.model_validate(body).model_dump(mode="json"), headers={"ETag": etag})

    @app.get("/v1/locations", response_model=models.Locations, tags=["pull"])
    def get_locations(request: Request) -> dict:
        """The stores the staged sales name, with the time zone that defines their business day."""
        _only(request, ())
        with config.engine.connect() as conn:
            stores = reads.locations(conn)
        return {"data": [{"location_id": key, "name": name, "timezone": zone or config.timezone}
                         for key, name, zone in stores]}

    return app

