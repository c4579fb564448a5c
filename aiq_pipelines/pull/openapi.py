"""The pull API's OpenAPI document as the service behaves: typed parameters with their ranges and formats, every
status each operation answers with one error body, the response headers, and the two ways a key may be sent.

Handlers read their parameters themselves (``params.py``), so FastAPI declares none and never answers 422: each
operation's parameters are written here, once, and merged into the generated document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from aiq_pipelines.pull import models
from aiq_pipelines.pull.params import DEFAULT_LIMIT, MAX_BACKFILL_DAYS, MAX_LIMIT, MAX_LOCATION

# RFC 3339 as parse_rfc3339 accepts it (2026-06-10T18:00:00Z, 2026-06-10T12:00:00.5-06:00): the pattern narrows the
# format to the forms served and accepted.
TIMESTAMP = {"type": "string", "format": "date-time",
             "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$"}


def _parameter(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


LIMIT = _parameter("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                   f"Records a page, 1-{MAX_LIMIT}.")
CURSOR = _parameter("cursor", {"type": "string", "minLength": 1, "maxLength": 4096},
                    "next_cursor of the previous page, as given; good only with a key of the same account.")
LOCATION = _parameter("location_id", {"type": "string", "minLength": 1, "maxLength": MAX_LOCATION},
                      "Only this store's records; 403 for a store of another account.")
UPDATED = [
    _parameter("updated_since", TIMESTAMP, "Incremental: changed at or after this instant (pass the last "
               "high_watermark)."),
    _parameter("updated_before", TIMESTAMP, "Changed before this instant; clamped to now minus the settle lag."),
]
OCCURRED = [
    _parameter("occurred_from", TIMESTAMP, "Backfill: rung at or after this instant; needs occurred_to, and neither "
               "updated_since nor updated_before."),
    _parameter("occurred_to", TIMESTAMP, f"Backfill: rung before this instant, at most {MAX_BACKFILL_DAYS} days after "
               "occurred_from."),
]
INCLUDE = _parameter("include", {"type": "string", "enum": ["customers"]},
                     "customers: each page also carries every customer its sales name (the shoppers of the window's "
                     "sales, whether or not they changed in it).")

IF_NONE_MATCH = {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"},
                 "description": "The ETag of a snapshot already read: 304 while this key's view of it is unchanged."}

PARAMETERS = {
    "/v1/transactions": [*UPDATED, *OCCURRED, LOCATION, INCLUDE, LIMIT, CURSOR],
    "/v1/customers": [*UPDATED, LIMIT, CURSOR],
    "/v1/inventory": [LOCATION, LIMIT, CURSOR, IF_NONE_MATCH],
    "/v1/locations": [],
}


def query_parameters(path: str) -> tuple[str, ...]:
    """The names of the query parameters ``path`` takes."""
    return tuple(p["name"] for p in PARAMETERS[path] if p["in"] == "query")


def _error(description: str, **headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"model": models.Error, "description": description}
    if headers:
        answer["headers"] = {name: {"description": text, "schema": {"type": "string"}, "required": True}
                             for name, text in headers.items()}
    return answer


ETAG = {"ETag": {"description": "The snapshot's version as this key sees it; send it as If-None-Match.",
                 "schema": {"type": "string"}, "required": True}}
BAD_REQUEST = _error("A parameter is unknown, malformed, out of range, or does not fit the others; the message names it.")
UNAUTHORIZED = _error("No valid key in the Authorization header, or a key in the URL.",
                      **{"WWW-Authenticate": "Bearer realm=\"aiq-pipelines\", Basic"})
TOO_MANY = _error("Over this key's request budget, or too many failed keys from this client.",
                  **{"Retry-After": "Seconds to wait."})
UNAVAILABLE = _error("Nothing is staged yet (run an extract), or the sync database cannot be read.")
FORBIDDEN = _error("location_id names a store this key's account does not hold.")
STALE = _error("The inventory snapshot this key sees changed since the cursor's first page: start again without "
               "cursor.")


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of an operation: 400, 401, 429 and 503 always, and the ``statuses`` given of 403, 409."""
    found: dict[int | str, dict[str, Any]] = {400: BAD_REQUEST, 401: UNAUTHORIZED, 429: TOO_MANY, 503: UNAVAILABLE}
    found.update({status: {403: FORBIDDEN, 409: STALE}[status] for status in statuses})
    return found


def document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document: FastAPI's, with the parameters, security schemes and headers written in."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
        "basic": {"type": "http", "scheme": "basic", "description": "HTTP Basic with the key as the user name; the "
                                                                     "password is ignored."},
    }
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            operation["parameters"] = PARAMETERS[path]
            operation["security"] = [{"bearer": []}, {"basic": []}]
            if path == "/v1/inventory":
                for status in ("200", "304"):
                    operation["responses"][status]["headers"] = ETAG
    app.openapi_schema = schema
    return schema
