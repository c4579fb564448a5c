"""``AiqClient``: AIQ's endpoints for one account, over a rate-limited, retrying transport and ordered bulk senders.

The bulk senders keep up to ``max_in_flight`` batches in flight and yield their outcomes strictly in input order, each
once AIQ answered it (``aiq.bulk``); one request with its retries is ``aiq.transport``'s. The search term of a persona
search is cut from httpx's request log (``aiq.redaction``); what the persona reads' answers are assumed to look like is
``aiq.reads``. Option ranges are checked where the settings are read (``aiq_pipelines.settings``);
``MAX_INVENTORY_BATCH`` and ``MAX_IN_FLIGHT`` state AIQ's and the sender's caps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from pydantic import Field

from aiq_pipelines.aiq import reads
from aiq_pipelines.aiq.bulk import MAX_IN_FLIGHT, BatchOutcome, BulkSender
from aiq_pipelines.aiq.errors import AiqAccountError, AiqContactNotFoundError, AiqError
from aiq_pipelines.aiq.payloads import AiqPayload, EncodedPayload, InventoryPayloadItem, Member, PersonaOverride, Visit
from aiq_pipelines.aiq.ratelimit import AccountRateLimiter
from aiq_pipelines.aiq.reads import PersonaMatch
from aiq_pipelines.aiq.transport import ClientStats, Transport

__all__ = ["MAX_INVENTORY_BATCH", "MAX_IN_FLIGHT", "AiqClient", "BulkBatchSize", "InFlight", "InventoryBatchSize",
           "MemberAck", "PersonaMatch"]

MAX_INVENTORY_BATCH = 100  # AIQ's cap on createUpdateInventory
MAX_BULK_BATCH = 1000  # the most sales or members the project puts in one bulk call

# The ranges of the client's options, stated once: the settings and the Dagster resource both declare their fields so.
BulkBatchSize = Annotated[int, Field(ge=1, le=MAX_BULK_BATCH)]
InventoryBatchSize = Annotated[int, Field(ge=1, le=MAX_INVENTORY_BATCH)]
InFlight = Annotated[int, Field(ge=1, le=MAX_IN_FLIGHT)]

K = TypeVar("K")


@dataclass(frozen=True)
class MemberAck:
    """AIQ's ids for a persona, from createUpdateMember(s)."""

    contact_id: str
    src_id: str | None


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
        self.uid = uid
        self.batch_size_sales = batch_size_sales
        self.batch_size_members = batch_size_members
        self.batch_size_inventory = batch_size_inventory
        self._transport = Transport(
            base_url, api_key, uid, limiter, timeout=timeout, max_attempts=max_attempts,
            max_retry_seconds=max_retry_seconds, backoff_initial=backoff_initial, backoff_max=backoff_max, seed=seed,
        )
        self.base_url = self._transport.base_url
        self._bulk = BulkSender(max_in_flight, on_refused=lambda: self._transport.count(refused=1))
        self.max_in_flight = max_in_flight

    def __repr__(self) -> str:
        return f"AiqClient(base_url={self.base_url!r}, uid={self.uid!r})"

    def __enter__(self) -> AiqClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for requests in flight, then close the connection pool (the limiter belongs to whoever created it)."""
        self._bulk.close()
        self._transport.close()

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the counters: HTTP attempts, retries, 429s received, body bytes sent, records refused."""
        return self._transport.stats

    def _path(self, call: str, *extra: str) -> str:
        return "/".join([call, quote(self.uid, safe=""), *(quote(part, safe="") for part in extra)])

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._transport.call(method, path, **kwargs)

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
        return reads.personas(self._call("GET", self._path(reads.PIIS), params={"search": search, "limit": limit,
                                                                                 "start": start}))

    def page_personas(self, *, limit: int, start: int) -> list[PersonaMatch]:
        """The account's personas from the ``start``-th, ``limit`` of them (piis without a search; ``aiq.reads``)."""
        return reads.personas(self._call("GET", self._path(reads.PIIS), params={"limit": limit, "start": start}))

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

    def send_sales(
        self, visits: Iterable[tuple[K, Visit | EncodedPayload]]
    ) -> Iterator[BatchOutcome[K, Visit | EncodedPayload, None]]:
        """Send sales in batches of ``batch_size_sales``, yielding each batch's outcome once AIQ answered it.

        A sale is a ``Visit`` or the bytes of one encoded earlier (staged at extract). The iterable is read lazily,
        one batch at a time.
        """
        return self._bulk.send(visits, self.batch_size_sales, self._post_sales)

    def send_members(self, members: Iterable[tuple[K, Member]]) -> Iterator[BatchOutcome[K, Member, MemberAck | None]]:
        """Send personas in batches of ``batch_size_members``; accepted ones carry AIQ's ids when AIQ gave them."""
        return self._bulk.send(members, self.batch_size_members, self._post_members)

    def send_inventory(
        self, items: Iterable[tuple[K, InventoryPayloadItem]]
    ) -> Iterator[BatchOutcome[K, InventoryPayloadItem, None]]:
        """Send products in batches of ``batch_size_inventory`` (at most 100, AIQ's cap)."""
        return self._bulk.send(items, self.batch_size_inventory, self._post_inventory)


def _bulk_body(payloads: Sequence[AiqPayload | EncodedPayload], wrapper: bytes = b"") -> bytes:
    """A bulk call's JSON array from each payload's encoding, each inside ``{"<wrapper>": ...}`` when given."""
    close = b"}" if wrapper else b""
    return b"[" + b",".join(wrapper + p.encoded + close for p in payloads) + b"]"


def _text_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
