"""Strict checks of AIQ request bodies, written from the spec alone so the sandbox can referee the client's payloads.

Every problem is one message that starts with its JSON path (``[3].visit.transaction_date: expected ...``; ``$`` is the
whole body). Messages name fields and rules, never the values sent, so no phone number or email reaches a log.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Problems = list[str]
Check = Callable[[Any, str, Problems], None]

PLACEHOLDER_PHONES = frozenset({"1234567890", "0123456789"})
_DATE_TIME = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2}) "
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2}) \+0000"
)
_BIRTHDAY = re.compile(r"(?P<month>[0-9]{2})/(?P<day>[0-9]{2})/(?P<year>[0-9]{4})")
_DATE_FIELDS = ("year", "month", "day", "hour", "minute", "second")
_PHONE = re.compile(r"[0-9]{10}")
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_DIGITS = re.compile(r"[0-9]+")


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _refuse(problems: Problems, path: str, message: str) -> None:
    problems.append(f"{path or '$'}: {message}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_string(value: Any, path: str, problems: Problems, expected: str = "a string") -> bool:
    if isinstance(value, str):
        return True
    hint = " (omit the field instead)" if value is None else ""
    _refuse(problems, path, f"expected {expected}, got {_json_type(value)}{hint}")
    return False


def text(value: Any, path: str, problems: Problems) -> None:
    _is_string(value, path, problems)


def non_empty_text(value: Any, path: str, problems: Problems) -> None:
    if _is_string(value, path, problems) and not value.strip():
        _refuse(problems, path, "must not be empty")


def number(value: Any, path: str, problems: Problems) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _refuse(problems, path, f"expected a JSON number, got {_json_type(value)}")
    elif not math.isfinite(value):
        _refuse(problems, path, "must be a finite number")


def boolean(value: Any, path: str, problems: Problems) -> None:
    if not isinstance(value, bool):
        _refuse(problems, path, f"expected true or false, got {_json_type(value)}")


def send_notification(value: Any, path: str, problems: Problems) -> None:
    if type(value) is not int or value not in (0, 1):
        _refuse(problems, path, "expected the integer 0 or 1")


def _real_date(value: str, pattern: re.Pattern[str], expected: str, path: str, problems: Problems) -> None:
    match = pattern.fullmatch(value)
    if match is None:
        _refuse(problems, path, f'expected "{expected}"')
        return
    try:
        # The pattern's fields in datetime's order: it refuses what strptime refuses, at a fifth of the cost.
        dt.datetime(*map(int, match.group(*_DATE_FIELDS[: pattern.groups])))
    except ValueError:
        _refuse(problems, path, f'not a real date ("{expected}")')


def transaction_date(value: Any, path: str, problems: Problems) -> None:
    expected = "YYYY-MM-DD HH:MM:SS +0000"
    if _is_string(value, path, problems, f'a string "{expected}"'):
        _real_date(value, _DATE_TIME, expected, path, problems)


def birthday(value: Any, path: str, problems: Problems) -> None:
    expected = "MM/DD/YYYY"
    if _is_string(value, path, problems, f'a string "{expected}"'):
        _real_date(value, _BIRTHDAY, expected, path, problems)


def email(value: Any, path: str, problems: Problems) -> None:
    if not _is_string(value, path, problems):
        return
    local, _, domain = value.partition("@")
    labels = domain.split(".")
    if value.count("@") != 1 or not local or len(labels) < 2 or not all(labels) or any(c.isspace() for c in value):
        _refuse(problems, path, "expected an email address: one @, a name before it and a domain with a dot after it")


def phone(value: Any, path: str, problems: Problems) -> None:
    if not _is_string(value, path, problems, "a string of 10 digits"):
        return
    if not _PHONE.fullmatch(value):
        _refuse(problems, path, "expected exactly 10 digits (omit the field when the number is unknown or invalid)")
    elif value in PLACEHOLDER_PHONES or len(set(value)) == 1:
        _refuse(problems, path, "placeholder phone: a made-up number merges strangers at AIQ; omit the field instead")


def decimal_string(value: Any, path: str, problems: Problems) -> None:
    expected = 'a string holding a decimal number such as "12.50"'
    if _is_string(value, path, problems, expected) and not _DECIMAL.fullmatch(value):
        _refuse(problems, path, f"expected {expected}")


def unix_seconds_string(value: Any, path: str, problems: Problems) -> None:
    expected = 'unix seconds as a string of digits such as "1660073955"'
    if _is_string(value, path, problems, expected) and not _DIGITS.fullmatch(value):
        _refuse(problems, path, f"expected {expected}")


@dataclass(frozen=True)
class Shape:
    """A JSON object's allowed fields; any other field is refused."""

    required: Mapping[str, Check]
    optional: Mapping[str, Check] = field(default_factory=dict)

    def __call__(self, value: Any, path: str, problems: Problems) -> None:
        if not isinstance(value, dict):
            _refuse(problems, path, f"expected a JSON object, got {_json_type(value)}")
            return
        for key, item in value.items():
            check = self.required.get(key) or self.optional.get(key)
            if check is None:
                allowed = ", ".join([*self.required, *self.optional])
                _refuse(problems, _at(path, key), f"unknown field (allowed: {allowed})")
            else:
                check(item, _at(path, key), problems)
        for key in self.required:
            if key not in value:
                _refuse(problems, _at(path, key), "required")


def list_of(check: Check, *, non_empty: bool = False) -> Check:
    """A JSON array whose every element passes ``check``."""

    def check_list(value: Any, path: str, problems: Problems) -> None:
        if not isinstance(value, list):
            _refuse(problems, path, f"expected a JSON array, got {_json_type(value)}")
        elif non_empty and not value:
            _refuse(problems, path, "must hold at least one element")
        else:
            for index, item in enumerate(value):
                check(item, f"{path}[{index}]", problems)

    return check_list


def _optional_text(*names: str) -> dict[str, Check]:
    return dict.fromkeys(names, text)


LINE = Shape(
    required={"sku": non_empty_text, "price": number, "quantity": number},
    optional={"discount": number, **_optional_text("category", "brand", "name", "size", "strain", "grade", "species")},
)
VISIT = Shape(
    required={
        "pos_id": non_empty_text,
        "sendNotification": send_notification,
        "transaction_date": transaction_date,
        "transaction_total": number,
        "location": non_empty_text,
        "visit_details_attributes": list_of(LINE, non_empty=True),
    },
    optional={"pos_user": non_empty_text, "pos_type": text},
)
MEMBER = Shape(
    required={"pos_user": non_empty_text},
    optional={
        **_optional_text(
            "pos_type", "first_name", "last_name", "address1", "address2", "city", "state", "zip", "gender"
        ),
        "email": email,
        "phone_number": phone,
        "birthday": birthday,
        "loyalty": boolean,
    },
)
OVERRIDE = Shape(required={}, optional={"email": email, "mobilePhone": phone, "firstName": text, "lastName": text})
CUSTOM_ATTR = Shape(required={"parent": text, "key": text, "value": text})
INVENTORY_ITEM = Shape(
    required={"sku": non_empty_text, "productId": non_empty_text},
    optional={
        **_optional_text(
            "category", "parentCate", "name", "brand", "variant", "barcode", "url", "imageUrl", "description",
            "supplierNa", "currency", "supplierId",
        ),
        **dict.fromkeys(("totalTax", "MSRP", "quantity", "thc", "cbd", "salesPrice"), decimal_string),
        **dict.fromkeys(("dateUpdated", "dateAdded"), unix_seconds_string),
        **dict.fromkeys(("inStock", "isSaleable", "isArchived"), boolean),
        "customAttr": list_of(CUSTOM_ATTR),
    },
)
SALE_BODY = Shape(required={"visit": VISIT})
MEMBER_BODY = Shape(required={"member": MEMBER})


def check_single(body: Any, shape: Shape) -> Problems:
    """Problems of a one-record body such as ``{"visit": {...}}``."""
    problems: Problems = []
    shape(body, "", problems)
    return problems


def check_bulk(body: Any, element: Shape) -> Problems:
    """Problems of a bulk body: a non-empty JSON array whose every element passes ``element``."""
    problems: Problems = []
    if isinstance(body, list) and not body:
        _refuse(problems, "", "expected a non-empty JSON array (send nothing rather than an empty batch)")
    else:
        list_of(element)(body, "", problems)
    return problems


def check_override(body: Any) -> Problems:
    """Problems of a persona override: at least one known field, each valid."""
    problems = check_single(body, OVERRIDE)
    if not problems and not body:
        _refuse(problems, "", f"expected at least one of {', '.join(OVERRIDE.optional)}")
    return problems
