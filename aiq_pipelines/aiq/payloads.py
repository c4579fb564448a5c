"""The bodies the pipeline writes to AIQ, as pydantic models that serialize exactly as AIQ's guide spells them.

Attributes have Python names; ``to_json()`` produces the guide's field names and formats:

- ``transaction_date``: ``"YYYY-MM-DD HH:MM:SS +0000"`` in UTC, from an aware datetime.
- ``birthday``: ``"MM/DD/YYYY"`` (and read back from it: a member's bytes, staged at extract, validate to the same
  member).
- Money and quantities in a visit: JSON numbers (the float of the Decimal; two-decimal values stay exact).
- Inventory numbers (``quantity``, ``salesPrice``, ``MSRP``, ``thc``, ...) : decimal strings; ``dateAdded`` and
  ``dateUpdated``: unix seconds as strings; cost and margin travel as ``customAttr`` entries.
- Optional fields left as ``None`` are absent from the JSON, never ``null``.

``encoded`` is that JSON as bytes, computed once per payload: the bulk calls send these bytes and the ledger
hashes them.

``repr()`` of a model never shows an email or a phone number, so a logged payload leaks neither.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from aiq_pipelines.db.hashing import digest

AIQ_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S +0000"


def _aiq_datetime(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime(AIQ_DATETIME_FORMAT)


def _unix_seconds(value: dt.datetime) -> str:
    return str(int(value.timestamp()))


def _us_date(value: dt.date) -> str:
    return f"{value.month:02d}/{value.day:02d}/{value.year:04d}"


def _from_us_date(value: Any) -> Any:
    """Read back the ``MM/DD/YYYY`` that ``_us_date`` writes, so an encoded payload validates to the same model."""
    if isinstance(value, str) and len(value) == 10 and value[2] == value[5] == "/":
        month, day, year = value.split("/")
        return dt.date(int(year), int(month), int(day))
    return value


def _decimal_string(value: Decimal) -> str:
    # Fixed-point, never exponent notation ("1E+2"), which AIQ's examples never show.
    return format(value, "f")


# A JSON number is sent as a float: beyond this, cents are lost, and past float range it would serialize as null.
JSON_NUMBER_LIMIT = Decimal("1e12")
JsonNumber = Annotated[
    Decimal,
    Field(allow_inf_nan=False, gt=-JSON_NUMBER_LIMIT, lt=JSON_NUMBER_LIMIT),
    PlainSerializer(float, return_type=float, when_used="json"),
]
DecimalString = Annotated[
    Decimal, Field(allow_inf_nan=False), PlainSerializer(_decimal_string, return_type=str, when_used="json")
]
AiqDatetime = Annotated[AwareDatetime, PlainSerializer(_aiq_datetime, return_type=str, when_used="json")]
UnixSeconds = Annotated[AwareDatetime, PlainSerializer(_unix_seconds, return_type=str, when_used="json")]
UsDate = Annotated[
    dt.date, BeforeValidator(_from_us_date), PlainSerializer(_us_date, return_type=str, when_used="json")
]
Text = Annotated[str, Field(min_length=1)]
TenDigitPhone = Annotated[str, Field(pattern=r"^[0-9]{10}$")]


class AiqPayload(BaseModel):
    """Base of every payload: immutable, unknown fields refused, JSON by the guide's names."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    def to_json(self) -> dict[str, Any]:
        """The JSON object AIQ receives: guide field names, optional fields absent rather than null."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)

    @cached_property
    def encoded(self) -> bytes:
        """``to_json()`` as compact UTF-8 JSON bytes, fields in declaration order: what a bulk call sends, what the
        ledger hashes. pydantic's serializer writes them directly, three times faster than ``json.dumps`` of
        ``to_json()``. Computed once per payload: the model is frozen, so the bytes cannot go stale."""
        return self.encoded_without()

    @classmethod
    def from_encoded(cls, raw: bytes) -> Self:
        """The payload ``raw`` encodes, which keeps ``raw`` as its ``encoded``: a payload staged as bytes is sent as
        the very bytes the ledger hashed, whatever a re-encoding would give. ``raw`` goes where ``cached_property``
        keeps its value (the instance's ``__dict__``), as if ``encoded`` had been computed."""
        payload = cls.model_validate_json(raw)
        payload.__dict__["encoded"] = raw
        return payload

    def encoded_without(self, *fields: str) -> bytes:
        """The bytes of ``encoded`` with the named attributes left out (e.g. for a digest of part of a payload)."""
        return self.__pydantic_serializer__.to_json(self, exclude=set(fields), exclude_none=True, by_alias=True)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; an ``update`` makes a different payload, so its encoding is computed afresh."""
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("encoded", None)
        return copied


def payload_hash(payload: AiqPayload | EncodedPayload) -> str:
    """The digest the ledger keeps: of the very bytes a bulk call sends for ``payload``."""
    return digest(payload.encoded)


@dataclass(frozen=True, repr=False)
class EncodedPayload:
    """A payload serialized earlier (a sale's, staged at extract): only the bytes a bulk call sends."""

    encoded: bytes

    def __repr__(self) -> str:  # the bytes may name a customer: never shown
        return f"EncodedPayload({len(self.encoded)} bytes)"


class VisitLine(AiqPayload):
    """One line of a sale (an element of ``visit_details_attributes``); a negative quantity is a refund."""

    sku: Text
    price: JsonNumber
    quantity: JsonNumber
    category: str | None = None
    brand: str | None = None
    name: str | None = None
    discount: JsonNumber | None = None
    size: str | None = None
    strain: str | None = None
    grade: str | None = None
    species: str | None = None


class Visit(AiqPayload):
    """A sale; the client wraps it as ``{"visit": ...}``. ``pos_id`` is AIQ's key: re-sending it replaces the sale."""

    pos_id: Text
    pos_user: Text | None = None
    pos_type: str | None = None
    send_notification: Literal[0, 1] = Field(0, alias="sendNotification")
    transaction_date: AiqDatetime
    transaction_total: JsonNumber
    location: Text
    visit_details_attributes: tuple[VisitLine, ...] = Field(min_length=1)


class Member(AiqPayload):
    """A persona; the client wraps it as ``{"member": ...}``. ``pos_user`` is AIQ's key for create-or-update."""

    pos_user: Text
    pos_type: str | None = None
    email: str | None = Field(None, repr=False)
    first_name: str | None = None
    last_name: str | None = None
    address1: str | None = None
    address2: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    birthday: UsDate | None = None
    phone_number: TenDigitPhone | None = Field(None, repr=False)
    gender: str | None = None
    loyalty: bool = False


class PersonaOverride(AiqPayload):
    """A partial update of an existing persona: only the fields set here change at AIQ."""

    email: str | None = Field(None, repr=False)
    mobile_phone: TenDigitPhone | None = Field(None, alias="mobilePhone", repr=False)

    @model_validator(mode="after")
    def _something_to_change(self) -> PersonaOverride:
        if self.email is None and self.mobile_phone is None:
            raise ValueError("an override needs an email or a mobilePhone")
        return self


class CustomAttr(AiqPayload):
    """A free-form inventory attribute; the mapping module documents the layout the pipeline uses."""

    parent: Text
    key: Text
    value: str


class InventoryPayloadItem(AiqPayload):
    """One product of a ``createUpdateInventory`` call (at most 100 a call); ``productId`` is AIQ's key."""

    sku: Text
    product_id: Text = Field(alias="productId")
    category: str | None = None
    parent_category: str | None = Field(None, alias="parentCate")
    name: str | None = None
    brand: str | None = None
    variant: str | None = None
    barcode: str | None = None
    url: str | None = None
    image_url: str | None = Field(None, alias="imageUrl")
    description: str | None = None
    supplier_name: str | None = Field(None, alias="supplierNa")
    currency: str | None = None
    custom_attr: tuple[CustomAttr, ...] | None = Field(None, alias="customAttr")
    supplier_id: str | None = Field(None, alias="supplierId")
    total_tax: DecimalString | None = Field(None, alias="totalTax")
    date_updated: UnixSeconds | None = Field(None, alias="dateUpdated")
    msrp: DecimalString | None = Field(None, alias="MSRP")
    quantity: DecimalString | None = None
    thc: DecimalString | None = None
    cbd: DecimalString | None = None
    date_added: UnixSeconds | None = Field(None, alias="dateAdded")
    sales_price: DecimalString | None = Field(None, alias="salesPrice")
    in_stock: bool | None = Field(None, alias="inStock")
    is_saleable: bool | None = Field(None, alias="isSaleable")
    is_archived: bool | None = Field(None, alias="isArchived")
