"""AIQ payload models serialize exactly as AIQ's integration guide spells fields and formats."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from decimal import Decimal

import pytest
from pydantic import ValidationError

from aiq_pipelines.aiq.payloads import (
    CustomAttr,
    InventoryPayloadItem,
    Member,
    PersonaOverride,
    Visit,
    VisitLine,
)

# Field names copied from aiq-integration-guide.txt's examples.
GUIDE_VISIT_FIELDS = {
    "pos_id", "pos_user", "sendNotification", "transaction_date", "transaction_total", "location",
    "visit_details_attributes", "pos_type",
}
GUIDE_LINE_FIELDS = {"sku", "price", "quantity", "category", "brand", "name", "discount", "size", "strain", "grade", "species"}
GUIDE_MEMBER_FIELDS = {
    "pos_user", "pos_type", "email", "first_name", "last_name", "address1", "address2", "city", "state", "zip",
    "birthday", "phone_number", "gender", "loyalty",
}
GUIDE_INVENTORY_FIELDS = {
    "sku", "productId", "category", "parentCate", "name", "brand", "variant", "barcode", "url", "imageUrl",
    "description", "supplierNa", "currency", "customAttr", "supplierId", "totalTax", "dateUpdated", "MSRP",
    "quantity", "thc", "cbd", "dateAdded", "salesPrice", "inStock", "isSaleable", "isArchived",
}
UTC = dt.UTC
DENVER = zoneinfo.ZoneInfo("America/Denver")


def full_line() -> VisitLine:
    return VisitLine(
        sku="AUR932k", price=Decimal("40.00"), quantity=Decimal("1"), category="PRE-ROLL", brand="Tweed",
        name="12g White Widow rollup", discount=Decimal("12.00"), size="12g", strain="Blueberry OG", grade="A",
        species="hybrid",
    )


def full_visit(**changes: object) -> Visit:
    data: dict[str, object] = dict(
        pos_id="120-receipt-id-120", pos_user="1239uOiejaiofje", pos_type="Recreational", send_notification=0,
        transaction_date=dt.datetime(2014, 4, 20, 4, 3, 53, tzinfo=UTC), transaction_total=Decimal("28.00"),
        location="Muffins Miami", visit_details_attributes=(full_line(),),
    )
    data.update(changes)
    return Visit(**data)


def test_visit_uses_the_guide_field_names_and_formats() -> None:
    body = full_visit().to_json()
    assert set(body) == GUIDE_VISIT_FIELDS
    assert set(body["visit_details_attributes"][0]) == GUIDE_LINE_FIELDS
    assert body["transaction_date"] == "2014-04-20 04:03:53 +0000"
    assert body["sendNotification"] == 0
    assert body["transaction_total"] == 28.0 and isinstance(body["transaction_total"], float)
    assert body["visit_details_attributes"][0]["discount"] == 12.0


def test_money_is_a_json_number_and_two_decimal_values_stay_exact() -> None:
    line = VisitLine(sku="s", price=Decimal("19.99"), quantity=Decimal("3.5"), discount=Decimal("0.10"))
    text = json.dumps(full_visit(transaction_total=Decimal("1234567.89"), visit_details_attributes=(line,)).to_json())
    assert '"transaction_total": 1234567.89' in text
    assert '"price": 19.99' in text and '"quantity": 3.5' in text and '"discount": 0.1' in text


def test_transaction_date_is_sent_in_utc_from_any_zone() -> None:
    local = dt.datetime(2026, 7, 4, 18, 30, 5, tzinfo=DENVER)  # MDT, UTC-6
    assert full_visit(transaction_date=local).to_json()["transaction_date"] == "2026-07-05 00:30:05 +0000"


def test_naive_transaction_date_is_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        full_visit(transaction_date=dt.datetime(2026, 7, 4, 18, 30))


def test_absent_optional_fields_are_left_out_not_null() -> None:
    visit = Visit(
        pos_id="r1", transaction_date=dt.datetime(2026, 1, 2, tzinfo=UTC), transaction_total=Decimal("5"),
        location="Store", visit_details_attributes=(VisitLine(sku="s", price=Decimal("5"), quantity=Decimal("1")),),
    )
    body = visit.to_json()
    assert "pos_user" not in body and "pos_type" not in body
    assert body["visit_details_attributes"] == [{"sku": "s", "price": 5.0, "quantity": 1.0}]
    assert "null" not in json.dumps(body)


@pytest.mark.parametrize(
    "changes",
    [
        {"pos_id": ""},
        {"location": ""},
        {"visit_details_attributes": ()},
        {"transaction_total": Decimal("NaN")},
        {"transaction_total": Decimal("Infinity")},
        {"send_notification": 2},
        {"loyalty": True},  # not a visit field
    ],
)
def test_invalid_visits_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        full_visit(**changes)


def test_member_uses_the_guide_field_names_and_formats() -> None:
    member = Member(
        pos_user="1239uOiejaiofje", pos_type="Online", email="drake@example.com", first_name="Drake",
        last_name="Ross", address1="4461 Prosper dr", address2="Apt 2217", city="Dallas", state="TX", zip="76008",
        birthday=dt.date(1985, 5, 16), phone_number="2145550123", gender="F", loyalty=False,
    )
    body = member.to_json()
    assert set(body) == GUIDE_MEMBER_FIELDS
    assert body["birthday"] == "05/16/1985"
    assert body["loyalty"] is False
    assert body["phone_number"] == "2145550123"


def test_a_members_bytes_validate_back_to_the_same_member() -> None:
    # Personas are staged as bytes at extract and read back at push: the round trip must be exact.
    member = Member(
        pos_user="C-1", pos_type="Medical", email="ada@example.com", first_name="Ada", last_name="Lovelace",
        address1="1 Main St", city="Denver", state="CO", zip="80202", birthday=dt.date(1985, 5, 16),
        phone_number="3035550142", gender="F", loyalty=True,
    )
    again = Member.model_validate_json(member.encoded)
    assert again == member and again.encoded == member.encoded
    with pytest.raises(ValidationError, match="birthday"):
        Member.model_validate_json(b'{"pos_user": "C-1", "birthday": "13/45/1985"}')


def test_member_loyalty_is_always_sent_and_absent_fields_are_left_out() -> None:
    assert Member(pos_user="u1").to_json() == {"pos_user": "u1", "loyalty": False}


def test_member_phone_must_be_ten_digits() -> None:
    with pytest.raises(ValidationError):
        Member(pos_user="u1", phone_number="303-555-0123")


def test_repr_never_shows_email_or_phone() -> None:
    member = Member(pos_user="u1", email="secret.person@example.com", phone_number="3035550123")
    override = PersonaOverride(email="secret.person@example.com", mobile_phone="3035550123")
    for text in (repr(member), str(member), repr(override), str(override)):
        assert "secret.person" not in text and "3035550123" not in text


def test_override_serializes_only_the_fields_set() -> None:
    assert PersonaOverride(mobile_phone="3125555555").to_json() == {"mobilePhone": "3125555555"}
    assert PersonaOverride(email="a@example.com", mobile_phone="3125555555").to_json() == {
        "email": "a@example.com",
        "mobilePhone": "3125555555",
    }
    with pytest.raises(ValidationError, match="email or a mobilePhone"):
        PersonaOverride()


def test_inventory_item_uses_the_guide_field_names_and_string_numbers() -> None:
    item = InventoryPayloadItem(
        sku="100050", product_id="MU-CH-PR-100050", category="Muffins Pre-Rolls", parent_category="Pre-Rolls",
        name="Chemdawg 2g", brand="Muffins", variant="2g", barcode="0123", url="https://example.com/p",
        image_url="https://example.com/i.png", description="d", supplier_name="Sup", currency="USD",
        custom_attr=(CustomAttr(parent="cost", key="unit_cost", value="4.50"),), supplier_id="77",
        total_tax=Decimal("15.50"), date_updated=dt.datetime(2022, 8, 9, 19, 39, 15, tzinfo=UTC),
        msrp=Decimal("12.56"), quantity=Decimal("5"), thc=Decimal("12.0"), cbd=Decimal("1.0"),
        date_added=dt.datetime(2022, 8, 9, 19, 39, 13, tzinfo=UTC), sales_price=Decimal("30.00"),
        in_stock=True, is_saleable=True, is_archived=False,
    )
    body = item.to_json()
    assert set(body) == GUIDE_INVENTORY_FIELDS
    assert body["dateAdded"] == "1660073953" and body["dateUpdated"] == "1660073955"
    assert (body["MSRP"], body["quantity"], body["thc"], body["salesPrice"], body["totalTax"]) == (
        "12.56", "5", "12.0", "30.00", "15.50",
    )
    assert body["inStock"] is True and body["isArchived"] is False
    assert body["customAttr"] == [{"parent": "cost", "key": "unit_cost", "value": "4.50"}]


def test_inventory_numbers_never_use_exponent_notation() -> None:
    item = InventoryPayloadItem(sku="s", product_id="p", quantity=Decimal("1E+2"), thc=Decimal("0.000001"))
    assert item.to_json() == {"sku": "s", "productId": "p", "quantity": "100", "thc": "0.000001"}


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        InventoryPayloadItem(sku="s", product_id="p", cost=Decimal("1"))


def test_the_bytes_a_bulk_call_sends_are_the_json_of_to_json() -> None:
    # ``encoded`` (bulk bodies, ledger hashes) and ``to_json()`` (single calls) come from two serializer calls.
    payloads = [
        full_visit(location="Café Zoë 🌿 متجر"),
        Member(pos_user="C-1", first_name="Zoë", birthday=dt.date(1990, 2, 1), phone_number="3035550100"),
        InventoryPayloadItem(sku="s", product_id="p", quantity=Decimal("1E+2"),
                             date_added=dt.datetime(2022, 8, 9, tzinfo=UTC),
                             custom_attr=(CustomAttr(parent="cost", key="unit_cost", value="4.50"),)),
    ]
    for payload in payloads:
        compact = json.dumps(payload.to_json(), separators=(",", ":"), ensure_ascii=False).encode()
        assert payload.encoded == compact
