"""Helpers shared by the sandbox tests: URLs and calls against a running sandbox, valid payloads, envelope checks."""

from __future__ import annotations

from typing import Any

import httpx

from aiq_pipelines_tests.support.sandbox import HTTP, Sandbox

PHONE = "3125550142"
EMAIL = "drake.ross@example.com"


def url(sandbox: Sandbox, call: str, *, uid: str | None = None, version: str = "v1.1") -> str:
    return f"{sandbox.base_url}/api/{version}/{call}/{uid or sandbox.uid}"


def post(sandbox: Sandbox, call: str, body: Any, *, timeout: float = 30) -> httpx.Response:
    return HTTP.post(url(sandbox, call), json=body, headers=sandbox.headers, timeout=timeout)


def override(sandbox: Sandbox, contact_id: str, body: Any) -> httpx.Response:
    target = f"{url(sandbox, 'loyaltyContact/override', version='v2')}/{contact_id}"
    return HTTP.post(target, json=body, headers=sandbox.headers)


def piis(sandbox: Sandbox, **params: Any) -> httpx.Response:
    return HTTP.get(url(sandbox, "piis"), params=params, headers=sandbox.headers)


def visit(pos_id: str = "r-1", **fields: Any) -> dict[str, Any]:
    line = {"sku": "AUR932k", "price": 40.0, "quantity": 1.0, "discount": 12.0, "category": "PRE-ROLL"}
    base = {
        "pos_id": pos_id,
        "pos_user": "u-1",
        "sendNotification": 0,
        "transaction_date": "2024-04-20 04:03:53 +0000",
        "transaction_total": 28.0,
        "location": "Muffins Miami",
        "visit_details_attributes": [line],
    }
    return {k: v for k, v in {**base, **fields}.items() if v is not ...}


def member(pos_user: str = "u-1", **fields: Any) -> dict[str, Any]:
    base = {
        "pos_user": pos_user,
        "pos_type": "Online",
        "email": EMAIL,
        "first_name": "Drake",
        "last_name": "Ross",
        "birthday": "05/16/1985",
        "phone_number": PHONE,
        "loyalty": False,
    }
    return {k: v for k, v in {**base, **fields}.items() if v is not ...}


def item(product_id: str = "p-1", **fields: Any) -> dict[str, Any]:
    base = {
        "sku": "100050",
        "productId": product_id,
        "name": "Chemdawg 2g",
        "quantity": "5",
        "salesPrice": "30.00",
        "dateAdded": "1660073953",
        "inStock": True,
        "customAttr": [{"parent": "cost", "key": "unit_cost", "value": "12.00"}],
    }
    return {**base, **fields}


def messages(response: httpx.Response) -> list[str]:
    body = response.json()
    assert body["code"] == response.status_code and body["success"] is False
    return [error["message"] for error in body["errors"]]


def ok_data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 200 and body["success"] is True
    return body["data"]
