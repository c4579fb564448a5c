"""``aiq-sandbox``: run the local AIQ stand-in (``python -m aiq_sandbox`` works too)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from aiq_sandbox.app import SandboxConfig, create_app, log
from aiq_sandbox.limits import FaultOdds
from aiq_sandbox.processing import Processing, parse_drop_keys
from aiq_sandbox.store import Store

# The sandbox is a package of its own and imports nothing from the pipelines; these repeat the pipelines' defaults
# (the AIQ base URL, the data folder, the account id) so that both sides meet without any configuration.
DEFAULT_URL = "http://127.0.0.1:8765"
DATA_DIR = Path(os.environ.get("AIQ_PIPELINES_DATA_DIR", ".data"))
DEFAULT_UID = "sandbox"

_DEFAULT_URL = urlsplit(DEFAULT_URL)


def _number(cast: Callable[[str], Any], low: float, high: float | None = None) -> Callable[[str], Any]:
    """An argparse type accepting ``cast`` values from ``low`` (to ``high``), with a message that says so."""
    expected = f"a number from {low}" + (f" to {high}" if high is not None else " up")

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command line, every switch with its default in --help."""
    parser = argparse.ArgumentParser(
        prog="aiq-sandbox",
        description="A local stand-in for the AIQ (Alpine IQ) API: same paths, envelopes, auth and rate limits, "
        "strict payload validation, injectable faults, state in SQLite, inspection at / and /sandbox/*.",
    )
    count, probability = _number(int, 1), _number(float, 0, 1)
    add = parser.add_argument
    add("--host", default=_DEFAULT_URL.hostname, help="interface to listen on (default: %(default)s)")
    add("--port", type=_number(int, 1, 65535), default=_DEFAULT_URL.port, help="port (default: %(default)s)")
    add("--db", type=Path, default=DATA_DIR / "sandbox.db",
        help="SQLite file holding the state; parent folders are created (default: %(default)s)")
    add("--api-key", help="API key clients must send in x-apikey (default: the AIQ_API_KEY environment variable)")
    add("--uid", default=os.environ.get("AIQ_UID") or DEFAULT_UID,
        help="account id expected in every path (default: AIQ_UID, else %(default)s)")
    add("--per-second", type=count, default=5, help="account requests per sliding second (default: %(default)s)")
    add("--per-minute", type=count, default=120, help="account requests per sliding minute (default: %(default)s)")
    add("--per-hour", type=count, default=2000, help="account requests per sliding hour (default: %(default)s)")
    add("--bulk-max", type=count, default=100,
        help="most elements per createUpdateSales / createUpdateMembers request; more gets 413 (default: %(default)s)")
    add("--inventory-max", type=count, default=100,
        help="most items per createUpdateInventory request; more gets 413 (default: %(default)s)")
    add("--max-body-bytes", type=count, default=10_000_000,
        help="largest request body; a larger one gets 400 (default: %(default)s)")
    add("--fault-seed", type=int, default=0,
        help="seed of the fault draw, one draw per API request (default: %(default)s)")
    add("--fault-5xx", type=probability, default=0.0,
        help="probability of answering 503 without applying the request (default: %(default)s)")
    add("--fault-429", type=probability, default=0.0,
        help="probability of answering 429 with Retry-After without applying the request (default: %(default)s)")
    add("--fault-slow", type=probability, default=0.0,
        help="probability of applying the request, then answering after --slow-seconds (default: %(default)s)")
    add("--fault-drop", type=probability, default=0.0,
        help="probability of applying the request, then dropping the connection mid-response (default: %(default)s)")
    add("--slow-seconds", type=_number(float, 0), default=5.0, help="delay of a slow response (default: %(default)s)")
    add("--retry-after", type=_number(int, 0), default=1,
        help="Retry-After seconds on injected 429s (default: %(default)s)")
    add("--refuse-keys", default="",
        help="comma-separated pos_id / pos_user / productId values refused with 400, as AIQ refuses records for "
        "reasons of its own; a bulk request holding one is refused whole (default: none)")
    add("--apply-delay", type=_number(float, 0), default=0.0,
        help="seconds between AIQ accepting a sale or persona and applying it: until then reads and /sandbox/state "
        "do not show it (default: %(default)s)")
    add("--drop-personas", type=probability, default=0.0,
        help="fraction of accepted personas silently never applied, drawn per persona and acceptance "
        "(default: %(default)s)")
    add("--drop-seed", type=int, default=0, help="seed of the --drop-personas draw (default: %(default)s)")
    add("--drop-keys", default="",
        help="comma-separated pos_user values dropped on every acceptance, or pos_user:N on their first N "
        "(default: none)")
    add("--blank-phones", default="",
        help="comma-separated 10-digit phones that AIQ stores blank, as it stores any invalid phone, although they "
        "look valid (default: none)")
    add("--reset", action="store_true", help="wipe the state in --db before starting (default: keep it)")
    return parser


def _processing(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Processing:
    try:
        drop_keys = parse_drop_keys(args.drop_keys)
    except ValueError as exc:
        parser.error(f"--drop-keys: {exc}")
    return Processing(apply_delay=args.apply_delay, drop_fraction=args.drop_personas, drop_seed=args.drop_seed,
                      drop_keys=drop_keys, blank_phones=frozenset(p for p in args.blank_phones.split(",") if p))


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> SandboxConfig:
    api_key = args.api_key or os.environ.get("AIQ_API_KEY")
    if not api_key:
        parser.error("no API key: pass --api-key or set AIQ_API_KEY (any value; clients must send the same one)")
    try:
        faults = FaultOdds(args.fault_5xx, args.fault_429, args.fault_slow, args.fault_drop)
    except ValueError:
        parser.error("--fault-5xx + --fault-429 + --fault-slow + --fault-drop must add up to at most 1")
    return SandboxConfig(
        api_key=api_key,
        uid=args.uid,
        per_second=args.per_second,
        per_minute=args.per_minute,
        per_hour=args.per_hour,
        bulk_max=args.bulk_max,
        inventory_max=args.inventory_max,
        faults=faults,
        fault_seed=args.fault_seed,
        slow_seconds=args.slow_seconds,
        retry_after=args.retry_after,
        max_body_bytes=args.max_body_bytes,
        refuse_keys=frozenset(key for key in args.refuse_keys.split(",") if key),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the switches and serve until interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config, processing = _config(parser, args), _processing(parser, args)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(message)s", force=True)
    store = Store(args.db, reset=args.reset, processing=processing)
    # Arrivals are stamped on the event loop while the store's worker thread validates and writes earlier requests;
    # a short interpreter switch interval (5 ms by default) keeps a stamp close to the moment the request came in.
    sys.setswitchinterval(0.0005)
    log.info(
        "AIQ sandbox for account %s on http://%s:%d, state in %s", config.uid, args.host, args.port, args.db
    )
    try:
        uvicorn.run(create_app(config, store), host=args.host, port=args.port, access_log=False, log_level="info")
    finally:
        store.close()
