"""POS records become AIQ payloads as the spec says, including the awkward cases a real POS produces."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal
from typing import Any

import pytest

from aiq_pipelines.pos.records import InventoryItem, Persona, StoreStock, Transaction, TransactionLine
from aiq_pipelines.sync.mapping import (
    MAX_TEXT_LENGTH,
    MemberIssue,
    inventory_payload,
    member_payload,
    override_payload,
    sale_payload,
    void_sale_payload,
)

UTC = dt.UTC
DENVER = zoneinfo.ZoneInfo("America/Denver")
T0 = dt.datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


def line(n: int = 1, **changes: Any) -> TransactionLine:
    data: dict[str, Any] = dict(
        line_number=n, product_id=f"p{n}", sku=f"SKU{n}", name=f"Product {n}", brand="Tweed", category="Flower",
        strain="Blue Dream", species="hybrid", grade="A", size="3.5g", quantity=Decimal("1"),
        unit_price=Decimal("40.00"), discount=Decimal("0"),
    )
    data.update(changes)
    return TransactionLine(**data)


def transaction(**changes: Any) -> Transaction:
    data: dict[str, Any] = dict(
        transaction_id="R-100", location_id="L1", location_name="Muffins Miami", customer_id="C-7",
        customer_type="Recreational", transaction_at=T0, subtotal=Decimal("40.00"), total=Decimal("40.00"),
        last_modified_at=T0, lines=(line(),),
    )
    data.update(changes)
    return Transaction(**data)


def persona(**changes: Any) -> Persona:
    data: dict[str, Any] = dict(
        customer_id="C-7", customer_type="Medical", first_name="Ada", last_name="Lovelace", email="Ada@Example.COM",
        phone="(303) 555-0123", birthday=dt.date(1985, 5, 16), created_at=T0, last_modified_at=T0,
    )
    data.update(changes)
    return Persona(**data)


def item(**changes: Any) -> InventoryItem:
    data: dict[str, Any] = dict(
        product_id="MU-CH-PR-100050", sku="100050", name="Chemdawg 2g", brand="Muffins", category="Muffins Pre-Rolls",
        parent_category="Pre-Rolls", size="2g", unit_price=Decimal("10.00"), unit_cost=Decimal("4.00"),
        thc_percent=Decimal("21.5"), cbd_percent=Decimal("0.1"), created_at=dt.datetime(2022, 8, 9, 19, 39, 13, tzinfo=UTC),
        last_modified_at=dt.datetime(2022, 8, 9, 19, 39, 15, tzinfo=UTC),
        stock=(
            StoreStock(location_id="L1", location_name="Muffins Miami", quantity=Decimal("3")),
            StoreStock(location_id="L2", location_name="Muffins Denver", quantity=Decimal("2.5")),
        ),
    )
    data.update(changes)
    return InventoryItem(**data)


# -- sales -----------------------------------------------------------------------------------------------------


def test_sale_maps_every_documented_field() -> None:
    body = sale_payload(transaction(lines=(line(discount=Decimal("2.50")),), total=Decimal("37.50"))).to_json()
    assert body == {
        "pos_id": "R-100",
        "pos_user": "C-7",
        "pos_type": "Recreational",
        "sendNotification": 0,
        "transaction_date": "2026-02-01 12:00:00 +0000",
        "transaction_total": 37.5,
        "location": "Muffins Miami",
        "visit_details_attributes": [
            {
                "sku": "SKU1", "price": 40.0, "quantity": 1.0, "category": "Flower", "brand": "Tweed",
                "name": "Product 1", "discount": 2.5, "size": "3.5g", "strain": "Blue Dream", "grade": "A",
                "species": "hybrid",
            }
        ],
    }


def test_refund_keeps_negative_quantities_and_total() -> None:
    refund = transaction(
        transaction_id="R-101", is_return=True, return_of_transaction_id="R-100",
        lines=(line(quantity=Decimal("-1")),), subtotal=Decimal("-40.00"), total=Decimal("-40.00"),
    )
    body = sale_payload(refund).to_json()
    assert body["visit_details_attributes"][0]["quantity"] == -1.0
    assert body["transaction_total"] == -40.0


def test_walk_in_sale_has_no_pos_user_key_at_all() -> None:
    body = sale_payload(transaction(customer_id=None, customer_type=None)).to_json()
    assert "pos_user" not in body and "pos_type" not in body


def test_fractional_grams_stay_fractional() -> None:
    body = sale_payload(
        transaction(lines=(line(quantity=Decimal("3.5"), unit_price=Decimal("10.00")),), total=Decimal("35.00"))
    ).to_json()
    assert body["visit_details_attributes"][0]["quantity"] == 3.5


def test_missing_optional_line_fields_are_absent() -> None:
    bare = line(brand=None, category=None, strain=None, species=None, grade=None, size=None)
    body = sale_payload(transaction(lines=(bare,))).to_json()
    assert set(body["visit_details_attributes"][0]) == {"sku", "price", "quantity", "discount", "name"}


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        (dt.datetime(2026, 3, 8, 1, 30, tzinfo=DENVER), "2026-03-08 08:30:00 +0000"),  # MST, before spring-forward
        (dt.datetime(2026, 3, 8, 3, 30, tzinfo=DENVER), "2026-03-08 09:30:00 +0000"),  # MDT, after
        (dt.datetime(2026, 11, 1, 1, 30, fold=0, tzinfo=DENVER), "2026-11-01 07:30:00 +0000"),  # first 1:30 (MDT)
        (dt.datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=DENVER), "2026-11-01 08:30:00 +0000"),  # second 1:30 (MST)
        (dt.datetime(2026, 12, 31, 23, 59, 59, tzinfo=DENVER), "2027-01-01 06:59:59 +0000"),  # crosses the year
    ],
)
def test_transaction_date_is_utc_across_dst(local: dt.datetime, expected: str) -> None:
    assert sale_payload(transaction(transaction_at=local)).to_json()["transaction_date"] == expected


def test_void_payload_replaces_the_sale_with_zeroes() -> None:
    tx = transaction(
        lines=(line(1, discount=Decimal("5")), line(2, quantity=Decimal("2"), unit_price=Decimal("7.25"))),
        total=Decimal("49.50"), subtotal=Decimal("54.50"), is_void=True,
    )
    sale, void = sale_payload(tx).to_json(), void_sale_payload(tx).to_json()
    assert {k: void[k] for k in ("pos_id", "pos_user", "transaction_date", "location")} == {
        k: sale[k] for k in ("pos_id", "pos_user", "transaction_date", "location")
    }
    assert void["transaction_total"] == 0.0
    assert [(x["sku"], x["price"], x["quantity"], x["discount"]) for x in void["visit_details_attributes"]] == [
        ("SKU1", 40.0, 0.0, 0.0),
        ("SKU2", 7.25, 0.0, 0.0),
    ]


# -- personas --------------------------------------------------------------------------------------------------


def test_member_maps_fields_and_normalizes_contact_data() -> None:
    mapping = member_payload(
        persona(
            address1="1 Main St", address2="Apt 2", city="Denver", state="CO", zip="80202", gender="F",
            is_loyalty_member=True,
        )
    )
    assert mapping.issues == frozenset()
    assert mapping.member.to_json() == {
        "pos_user": "C-7", "pos_type": "Medical", "email": "ada@example.com", "first_name": "Ada",
        "last_name": "Lovelace", "address1": "1 Main St", "address2": "Apt 2", "city": "Denver", "state": "CO",
        "zip": "80202", "birthday": "05/16/1985", "phone_number": "3035550123", "gender": "F", "loyalty": True,
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("303-555-0123", "3035550123"),
        ("+1 (720) 362-8300", "7203628300"),
        ("1.720.362.8300", "7203628300"),
        ("720 555 0100", "7205550100"),  # fictional 555-01xx numbers are real-looking, not placeholders
        ("7205550199", "7205550199"),
    ],
)
def test_valid_us_phones_become_ten_digits(raw: str, expected: str) -> None:
    mapping = member_payload(persona(phone=raw))
    assert mapping.member.phone_number == expected
    assert mapping.issues == frozenset()


@pytest.mark.parametrize(
    ("raw", "issue"),
    [
        ("123-456-7890", MemberIssue.PHONE_PLACEHOLDER),
        ("(000) 000-0000", MemberIssue.PHONE_PLACEHOLDER),
        ("0123456789", MemberIssue.PHONE_PLACEHOLDER),
        ("555-555-5555", MemberIssue.PHONE_PLACEHOLDER),
        ("1-999-999-9999", MemberIssue.PHONE_PLACEHOLDER),
        ("555-1234", MemberIssue.PHONE_INVALID),
        ("303-555-012", MemberIssue.PHONE_INVALID),
        ("call me", MemberIssue.PHONE_INVALID),
        ("+44 20 7946 0958", MemberIssue.PHONE_NOT_US),
        ("416-967-1111", MemberIssue.PHONE_NOT_US),  # Toronto: NANP but not US
    ],
)
def test_unsendable_phones_are_left_out_and_counted(raw: str, issue: MemberIssue) -> None:
    mapping = member_payload(persona(phone=raw))
    assert mapping.member.phone_number is None
    assert "phone_number" not in mapping.member.to_json()
    assert mapping.issues == {issue}


@pytest.mark.parametrize("raw", ["no-at-sign", "a@b", "two@@example.com", "spaces in@example.com"])
def test_invalid_emails_are_left_out_and_counted(raw: str) -> None:
    mapping = member_payload(persona(email=raw))
    assert "email" not in mapping.member.to_json()
    assert mapping.issues == {"email_invalid"}


def test_unicode_names_are_preserved() -> None:
    mapping = member_payload(persona(first_name="Zoë", last_name="Núñez-Ødegård 李"))
    body = mapping.member.to_json()
    assert (body["first_name"], body["last_name"]) == ("Zoë", "Núñez-Ødegård 李")


def test_very_long_text_is_cut_and_counted() -> None:
    mapping = member_payload(persona(address1="x" * 1000, last_name="Lovelace"))
    assert len(mapping.member.address1 or "") == MAX_TEXT_LENGTH
    assert mapping.member.last_name == "Lovelace"
    assert mapping.issues == {"text_truncated"}


def test_missing_optional_persona_fields_are_absent() -> None:
    bare = Persona(customer_id="C-9", created_at=T0, last_modified_at=T0)
    assert member_payload(bare).member.to_json() == {"pos_user": "C-9", "loyalty": False}


def test_loyalty_is_true_only_for_opted_in_shoppers() -> None:
    assert member_payload(persona(is_loyalty_member=False)).member.loyalty is False
    assert member_payload(persona(is_loyalty_member=True)).member.loyalty is True


def test_override_names_only_what_changed() -> None:
    sent = member_payload(persona()).member
    sent_phone, sent_email = sent.phone_number, sent.email

    def override(**changes: Any) -> dict[str, str] | None:
        result = override_payload(sent_phone, sent_email, member_payload(persona(**changes)).member)
        return None if result is None else result.to_json()

    assert override() is None
    assert override(first_name="Augusta") is None  # not a contact field: the upsert carries it
    assert override(phone="+1 303 555 0123", email="ADA@example.com") is None  # same values, typed differently
    assert override(phone="720-362-8300") == {"mobilePhone": "7203628300"}
    assert override(phone="720-362-8300", email="ada@new.example") == {
        "email": "ada@new.example",
        "mobilePhone": "7203628300",
    }
    assert override_payload(None, None, sent) is not None  # first values are a change too


def test_override_cannot_blank_a_removed_value() -> None:
    sent = member_payload(persona()).member
    new = member_payload(persona(email=None, phone="123-456-7890")).member
    assert override_payload(sent.phone_number, sent.email, new) is None


# -- inventory -------------------------------------------------------------------------------------------------


def test_inventory_maps_fields_and_sums_stock_across_stores() -> None:
    body = inventory_payload(
        item(msrp=Decimal("12.56"), supplier_id="77", supplier_name="Grower", barcode="0123", is_saleable=False)
    ).to_json()
    assert body["productId"] == "MU-CH-PR-100050" and body["sku"] == "100050"
    assert body["quantity"] == "5.5"
    assert body["inStock"] is True and body["isSaleable"] is False and body["isArchived"] is False
    assert (body["salesPrice"], body["MSRP"], body["thc"], body["cbd"]) == ("10.00", "12.56", "21.5", "0.1")
    assert (body["category"], body["parentCate"], body["variant"]) == ("Muffins Pre-Rolls", "Pre-Rolls", "2g")
    assert (body["supplierNa"], body["supplierId"], body["barcode"], body["currency"]) == ("Grower", "77", "0123", "USD")
    assert (body["dateAdded"], body["dateUpdated"]) == ("1660073953", "1660073955")


def test_inventory_custom_attr_layout() -> None:
    stock = (
        StoreStock(location_id="L1", location_name="Muffins Miami", quantity=Decimal("3")),
        StoreStock(location_id="L2", location_name="Muffins Denver", quantity=Decimal("2.5"), unit_cost=Decimal("4.50")),
        StoreStock(location_id="L3", location_name="Muffins Aspen", quantity=Decimal("0"), unit_cost=Decimal("4.00")),
    )
    attrs = inventory_payload(item(stock=stock)).to_json()["customAttr"]
    assert attrs == [
        {"parent": "stock", "key": "Muffins Miami", "value": "3"},
        {"parent": "stock", "key": "Muffins Denver", "value": "2.5"},
        {"parent": "stock", "key": "Muffins Aspen", "value": "0"},
        {"parent": "cost", "key": "unit_cost", "value": "4.00"},
        {"parent": "margin", "key": "unit_margin", "value": "6.00"},
        {"parent": "margin", "key": "margin_percent", "value": "60.00"},
        {"parent": "store_cost", "key": "Muffins Denver", "value": "4.50"},
    ]


def test_inventory_without_cost_has_no_margin() -> None:
    attrs = inventory_payload(item(unit_cost=None)).to_json()["customAttr"]
    assert {a["parent"] for a in attrs} == {"stock"}


def test_inventory_free_item_has_margin_but_no_percentage() -> None:
    attrs = inventory_payload(item(unit_price=Decimal("0"), unit_cost=Decimal("1.00"))).to_json()["customAttr"]
    assert {(a["key"], a["value"]) for a in attrs if a["parent"] == "margin"} == {("unit_margin", "-1.00")}


def test_inventory_out_of_stock_and_unknown_numbers() -> None:
    body = inventory_payload(
        item(stock=(), unit_cost=None, thc_percent=None, cbd_percent=None)
    ).to_json()
    assert body["quantity"] == "0" and body["inStock"] is False
    assert "customAttr" not in body and "thc" not in body and "cbd" not in body and "MSRP" not in body
