"""Searching for personal data: every form a shopper's values could take, and where any of them is found."""

from __future__ import annotations

from collections.abc import Iterable


def personal_forms(fields: dict[str, str]) -> list[str]:
    """Every form a shopper's personal data could take: names, address and city as typed, the phone as typed and as
    its ten digits, the email as typed (matched in any case), the birthday as the POS (YYYY-MM-DD) and as AIQ
    (MM/DD/YYYY) write it."""
    digits = "".join(ch for ch in fields["phone"] if ch.isdigit())[-10:]
    year, month, day = fields["birthday"].split("-")
    return [fields["first_name"], fields["last_name"], fields["phone"], digits, fields["email"], fields["birthday"],
            f"{month}/{day}/{year}", fields["address1"], fields["address2"], fields["city"]]


def found(texts: Iterable[tuple[str, str]], needles: list[str]) -> list[tuple[str, str]]:
    """(where, needle) for every needle in a text, matched in any case (an email is one whatever its case)."""
    lowered = [needle.lower() for needle in needles]
    return [(where, needle) for where, text in texts for needle in lowered if needle in text.lower()]
