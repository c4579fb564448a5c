"""The ``shop`` of the push tests, shared by the push and the dry run."""

import datetime as dt

import pytest

from aiq_pipelines_tests.support.days import local


@pytest.fixture
def shop(pos):
    """Three business days (June 9-11, 2026) with the cases that matter, plus sales just outside them."""
    pos.add_product("P3", sku="SKU-3", name="Bulk OG (per gram)", unit_price="10.00", unit_cost="4.00",
                    category="Flower > Bulk", brand="Muffins", strain="OG Kush", species="hybrid", size="1g")
    pos.add_customer("C1", phone="(303) 555-0142", email="Ada@Example.com", is_loyalty_member=True,
                     customer_type="Medical", birthday="1985-05-16", modified=local(2026, 6, 9, 8))
    pos.add_customer("C2", phone="1234567890", email="not-an-email", modified=local(2026, 6, 10, 8))
    pos.add_customer("C3", first_name="Zoë", last_name="Nguyễn", phone="+1 720 482 1234",
                     modified=dt.datetime(2025, 1, 1))  # modified long before the window; a sale references her
    pos.add_sale("first-second", local(2026, 6, 9, 0, 0, 0), customer_id="C1")
    pos.add_sale("walk-in", local(2026, 6, 9, 12), [("P3", "2.5", "10.00")])
    pos.add_sale("regular", local(2026, 6, 10, 15), [("P1", "1", "45.00"), ("P2", "2", "18.00")], customer_id="C2")
    pos.add_sale("old-friend", local(2026, 6, 10, 16), customer_id="C3")
    pos.add_sale("refund", local(2026, 6, 11, 10), [("P1", "-1", "45.00")], customer_id="C1", is_return=True,
                 return_of_transaction_id="first-second")
    pos.add_sale("voided-early", local(2026, 6, 11, 11), customer_id="C2", is_void=True)
    pos.add_sale("broken", local(2026, 6, 11, 12), customer_id="C1", total_adjustment="3.00")
    pos.add_sale("last-second", local(2026, 6, 11, 23, 59, 59), customer_id="C1")
    pos.add_sale("day-before", local(2026, 6, 8, 23, 59, 59), customer_id="C1")
    pos.add_sale("day-after", local(2026, 6, 12, 0, 0, 0), customer_id="C1")
    return pos
