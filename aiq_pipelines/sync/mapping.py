"""The one place where canonical POS records become AIQ payloads.

Sales: ``pos_id`` is the receipt id, ``pos_user`` the customer id (absent for an anonymous walk-in), the date is
sent in UTC and ``location`` is the store's friendly name. A sale voided after it was sent is replaced by
``void_sale_payload`` (AIQ publishes no delete; re-sending a ``pos_id`` replaces the sale); ``visit_payload`` picks
the one that applies. The extract stages each sale's payload with the receipt, so the push sends stored bytes.

Personas: phones are normalized to 10 US digits and emails validated; a value that cannot be sent safely is left
out and named in ``MemberMapping.issues`` (AIQ merges personas on phone and email, so a placeholder would merge
strangers). Free-text fields are cut to ``MAX_TEXT_LENGTH`` characters rather than letting AIQ refuse the persona.

Inventory ``customAttr`` layout (AIQ has no fields for per-store stock, cost or margin):

=============  =======================  ==============================================================
parent         key                      value
=============  =======================  ==============================================================
``stock``      store's friendly name    quantity on hand in that store (one entry per store)
``cost``       ``unit_cost``            the product's unit cost (when the POS knows it)
``margin``     ``unit_margin``          sales price minus unit cost (when the cost is known)
``margin``     ``margin_percent``       unit margin as a percentage of the sales price, 2 decimals
                                        (when the cost is known and the price is not zero)
``store_cost`` store's friendly name    that store's batch cost, only where it differs from ``unit_cost``
=============  =======================  ==============================================================

All values are decimal strings, as AIQ's guide sends every inventory number. ``dateAdded`` and ``dateUpdated`` are
unix seconds, so a date before 1970 (a POS placeholder such as 1900-01-01) cannot be expressed and is left out.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass
from decimal import Decimal

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import ValidationError

from aiq_pipelines.aiq.payloads import (
    CustomAttr,
    InventoryPayloadItem,
    Member,
    PersonaOverride,
    Visit,
)
from aiq_pipelines.pos.records import InventoryItem, Persona, Transaction, TransactionLine

MAX_TEXT_LENGTH = 255
CURRENCY = "USD"
UNIX_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
PLACEHOLDER_PHONES = frozenset({"1234567890", "0123456789"})


class MemberIssue(enum.StrEnum):
    """What ``member_payload`` left out or shortened; the values are stable names callers count."""

    PHONE_INVALID = "phone_invalid"
    PHONE_NOT_US = "phone_not_us"
    PHONE_PLACEHOLDER = "phone_placeholder"
    EMAIL_INVALID = "email_invalid"
    TEXT_TRUNCATED = "text_truncated"


@dataclass(frozen=True)
class MemberMapping:
    """A persona's payload plus the names of what was left out of it."""

    member: Member
    issues: frozenset[str]


def _line(line: TransactionLine, *, void: bool) -> dict[str, object]:
    return {
        "sku": line.sku,
        "price": line.unit_price,
        "quantity": Decimal(0) if void else line.quantity,
        "discount": Decimal(0) if void else line.discount,
        "category": line.category,
        "brand": line.brand,
        "name": line.name,
        "size": line.size,
        "strain": line.strain,
        "grade": line.grade,
        "species": line.species,
    }


def _visit(tx: Transaction, *, void: bool) -> Visit:
    # One validation of the whole sale, lines included: a third cheaper than building each VisitLine on its own.
    return Visit.model_validate({
        "pos_id": tx.transaction_id,
        "pos_user": tx.customer_id,
        "pos_type": tx.customer_type,
        "send_notification": 0,
        "transaction_date": tx.transaction_at,
        "transaction_total": Decimal(0) if void else tx.total,
        "location": tx.location_name,
        "visit_details_attributes": [_line(line, void=void) for line in tx.lines],
    })


def sale_payload(tx: Transaction) -> Visit:
    """The sale as AIQ receives it; returns keep the POS's negative quantities."""
    return _visit(tx, void=False)


def void_sale_payload(tx: Transaction) -> Visit:
    """The replacement that makes a sale voided after it was sent stop counting: same key, total 0, lines zeroed."""
    return _visit(tx, void=True)


def visit_payload(tx: Transaction) -> Visit:
    """What AIQ should hold for the receipt: the sale, or its void replacement once it is voided."""
    return _visit(tx, void=tx.is_void)


def payload_reason(exc: ValidationError) -> str:
    """Why a record has no valid payload: the payload's fields only, never their values."""
    fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors(include_input=False)})
    return "payload invalid for AIQ: " + ", ".join(fields)


def _is_placeholder(digits: str) -> bool:
    return digits in PLACEHOLDER_PHONES or len(set(digits)) == 1


def normalize_phone(raw: str) -> tuple[str | None, MemberIssue | None]:
    """A US phone as exactly 10 digits, or ``None`` and the reason it cannot be sent."""
    digits = re.sub(r"\D", "", raw)
    national = digits[1:] if len(digits) == 11 and digits.startswith("1") else digits
    if len(national) == 10 and _is_placeholder(national):
        return None, MemberIssue.PHONE_PLACEHOLDER
    try:
        number = phonenumbers.parse(raw, "US")
    except phonenumbers.NumberParseException:
        return None, MemberIssue.PHONE_INVALID
    if phonenumbers.is_valid_number_for_region(number, "US"):
        return phonenumbers.national_significant_number(number), None
    # Only for a number left out, the slower check that tells an invalid number from one valid elsewhere.
    if not phonenumbers.is_valid_number(number):
        return None, MemberIssue.PHONE_INVALID
    return None, MemberIssue.PHONE_NOT_US


def normalize_email(raw: str) -> str | None:
    """The email in lower case, or ``None`` when it is not a valid address (deliverability is not checked)."""
    try:
        return validate_email(raw, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def member_payload(p: Persona) -> MemberMapping:
    """The persona as an AIQ member, leaving out (and naming) whatever cannot be sent safely."""
    issues: set[str] = set()

    def text(value: str | None) -> str | None:
        if value is not None and len(value) > MAX_TEXT_LENGTH:
            issues.add(MemberIssue.TEXT_TRUNCATED)
            return value[:MAX_TEXT_LENGTH]
        return value

    phone = None
    if p.phone is not None:
        phone, phone_issue = normalize_phone(p.phone)
        if phone_issue is not None:
            issues.add(phone_issue)
    email = None
    if p.email is not None:
        email = normalize_email(p.email)
        if email is None:
            issues.add(MemberIssue.EMAIL_INVALID)
    member = Member(
        pos_user=p.customer_id,
        pos_type=text(p.customer_type),
        email=email,
        first_name=text(p.first_name),
        last_name=text(p.last_name),
        address1=text(p.address1),
        address2=text(p.address2),
        city=text(p.city),
        state=text(p.state),
        zip=text(p.zip),
        birthday=p.birthday,
        phone_number=phone,
        gender=text(p.gender),
        loyalty=p.is_loyalty_member,
    )
    return MemberMapping(member=member, issues=frozenset(issues))


def override_payload(sent_phone: str | None, sent_email: str | None, new_member: Member) -> PersonaOverride | None:
    """The phone and email of ``new_member`` that differ from those last sent to AIQ; ``None`` if neither does.

    AIQ's guide routes a shopper's new phone or email through the override call. The call only sets fields, so a
    value that was removed (or is now left out as invalid) cannot be blanked there and is not part of the override.
    ``sent_phone``/``sent_email`` are the values as sent (already normalized by ``member_payload``).
    """
    email = new_member.email if new_member.email is not None and new_member.email != sent_email else None
    phone = new_member.phone_number if new_member.phone_number not in (None, sent_phone) else None
    if email is None and phone is None:
        return None
    return PersonaOverride(email=email, mobile_phone=phone)


def _custom_attrs(item: InventoryItem) -> tuple[CustomAttr, ...]:
    attrs = [CustomAttr(parent="stock", key=s.location_name, value=format(s.quantity, "f")) for s in item.stock]
    cost = item.unit_cost
    if cost is not None:
        margin = item.unit_price - cost
        attrs.append(CustomAttr(parent="cost", key="unit_cost", value=format(cost, "f")))
        attrs.append(CustomAttr(parent="margin", key="unit_margin", value=format(margin, "f")))
        if item.unit_price != 0:
            percent = (margin / item.unit_price * 100).quantize(Decimal("0.01"))
            attrs.append(CustomAttr(parent="margin", key="margin_percent", value=format(percent, "f")))
    attrs.extend(
        CustomAttr(parent="store_cost", key=s.location_name, value=format(s.unit_cost, "f"))
        for s in item.stock
        if s.unit_cost is not None and s.unit_cost != cost
    )
    return tuple(attrs)


def _unix_time(moment: dt.datetime) -> dt.datetime | None:
    return moment if moment >= UNIX_EPOCH else None


def inventory_payload(item: InventoryItem) -> InventoryPayloadItem:
    """The product with its stock summed over every store of the account, cost and margin in ``customAttr``."""
    quantity = sum((s.quantity for s in item.stock), Decimal(0))
    return InventoryPayloadItem(
        sku=item.sku,
        product_id=item.product_id,
        category=item.category,
        parent_category=item.parent_category,
        name=item.name,
        brand=item.brand,
        variant=item.size,
        barcode=item.barcode,
        url=item.url,
        image_url=item.image_url,
        description=item.description,
        supplier_name=item.supplier_name,
        supplier_id=item.supplier_id,
        currency=CURRENCY,
        custom_attr=_custom_attrs(item) or None,
        quantity=quantity,
        sales_price=item.unit_price,
        msrp=item.msrp,
        thc=item.thc_percent,
        cbd=item.cbd_percent,
        date_added=_unix_time(item.created_at),
        date_updated=_unix_time(item.last_modified_at),
        in_stock=quantity > 0,
        is_saleable=item.is_saleable,
        is_archived=item.is_archived,
    )
