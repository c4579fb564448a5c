"""The POS's SELECTs: one per entity for the reference schema (``reference_schema.sql``, SQLite or PostgreSQL), and a
POS with another schema's own, from a YAML file (``POS_QUERIES_FILE``) that return the same columns; docs/custom-schema.md shows
an example. Each query states the columns and bind parameters its result must meet.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

TRANSACTIONS_SQL = """
SELECT t.transaction_id, t.location_id, l.name AS location_name, l.timezone AS location_timezone,
       CASE WHEN l.location_id IS NULL THEN 0 ELSE 1 END AS location_exists,
       t.customer_id, c.customer_type,
       CASE WHEN c.customer_id IS NULL THEN 0 ELSE 1 END AS customer_exists,
       t.transaction_at, t.subtotal, t.discount_total, t.tax_total, t.total,
       t.is_return, t.return_of_transaction_id, t.is_void, t.employee_id, t.last_modified_at,
       i.line_number AS line_line_number, i.product_id AS line_product_id,
       CASE WHEN p.product_id IS NULL THEN 0 ELSE 1 END AS line_product_exists,
       p.sku AS line_sku, p.name AS line_name, p.brand AS line_brand, p.category AS line_category,
       p.parent_category AS line_parent_category, p.strain AS line_strain, p.species AS line_species,
       p.grade AS line_grade, p.size AS line_size,
       i.quantity AS line_quantity, i.unit_price AS line_unit_price, i.discount AS line_discount,
       i.unit_cost AS line_unit_cost
FROM transactions t
LEFT JOIN locations l ON l.location_id = t.location_id
LEFT JOIN customers c ON c.customer_id = t.customer_id
LEFT JOIN transaction_items i ON i.transaction_id = t.transaction_id
LEFT JOIN products p ON p.product_id = i.product_id
WHERE t.transaction_at >= :window_start AND t.transaction_at < :window_end
ORDER BY t.transaction_id, i.line_number
"""

PERSONAS_SQL = """
SELECT customer_id, customer_type, first_name, last_name, email, phone, birthday, gender,
       address1, address2, city, state, zip, is_loyalty_member, created_at, last_modified_at
FROM customers
WHERE last_modified_at >= :window_start AND last_modified_at < :window_end
ORDER BY customer_id
"""

# How many records the reference queries return for a window, for progress lines with an ETA (a custom query has none).
COUNT_SQL = {
    "transactions": "SELECT COUNT(*) FROM transactions WHERE transaction_at >= :window_start AND transaction_at < "
                    ":window_end",
    "personas": "SELECT COUNT(*) FROM customers WHERE last_modified_at >= :window_start AND last_modified_at < "
                ":window_end",
}

PERSONAS_BY_ID_SQL = """
SELECT customer_id, customer_type, first_name, last_name, email, phone, birthday, gender,
       address1, address2, city, state, zip, is_loyalty_member, created_at, last_modified_at
FROM customers
WHERE customer_id IN :customer_ids
ORDER BY customer_id
"""

# The stores each of these customers bought in, across the POS's whole history (every sale, voids and returns too):
# with several AIQ accounts, a shopper goes to the accounts of those stores. A POS needs an index on
# transactions(customer_id) for this to stay cheap (the reference schema has one; a real POS has it as its foreign key's).
SHOPPER_STORES_SQL = """
SELECT DISTINCT customer_id, location_id
FROM transactions
WHERE customer_id IN :customer_ids
ORDER BY customer_id
"""

INVENTORY_SQL = """
SELECT p.product_id, p.sku, p.name, p.brand, p.category, p.parent_category, p.strain, p.species, p.grade,
       p.size, p.barcode, p.thc_percent, p.cbd_percent, p.unit_cost, p.unit_price, p.msrp, p.tax_rate,
       p.supplier_id, p.supplier_name, p.description, p.image_url, p.url, p.is_saleable, p.is_archived,
       p.created_at, p.last_modified_at,
       s.location_id AS stock_location_id, l.name AS stock_location_name,
       s.quantity_available AS stock_quantity, COALESCE(s.unit_cost, p.unit_cost) AS stock_unit_cost
FROM products p
LEFT JOIN inventory s ON s.product_id = p.product_id
LEFT JOIN locations l ON l.location_id = s.location_id
ORDER BY p.product_id, s.location_id
"""

# Sales and customers no partition will ever read: a business timestamp that is missing, later than the last
# partition (:window_end), or, for sales, earlier than the first partition (:window_start) although the row was
# written since then (a terminal whose clock reset to 1900 or 1970). Sales dated and written before POS_START_DATE are
# history the operator chose not to sync, so they are not strays. Written for index range scans on transaction_at and
# last_modified_at: MATERIALIZED keeps SQLite from walking the primary key to skip the sort, and COALESCE keeps it
# from scanning every row modified since :window_start.
STRAY_TRANSACTIONS_SQL = """
WITH strays AS MATERIALIZED (
    SELECT transaction_id, transaction_at AS business_at FROM transactions WHERE transaction_at IS NULL
    UNION ALL
    SELECT transaction_id, transaction_at FROM transactions WHERE transaction_at >= :window_end
    UNION ALL
    SELECT transaction_id, transaction_at FROM transactions
    WHERE transaction_at < :window_start AND COALESCE(last_modified_at, transaction_at) >= :window_start
)
SELECT transaction_id, business_at FROM strays ORDER BY transaction_id
"""

STRAY_PERSONAS_SQL = """
WITH strays AS MATERIALIZED (
    SELECT customer_id, last_modified_at AS business_at FROM customers WHERE last_modified_at IS NULL
    UNION ALL
    SELECT customer_id, last_modified_at FROM customers WHERE last_modified_at >= :window_end
)
SELECT customer_id, business_at FROM strays ORDER BY customer_id
"""

# What the change sensor reads: rows modified in [:since, :until), grouped by the UTC hour of their business time
# (a sale's transaction_at, a customer's last_modified_at) and, for sales, the time zone of their store, so a burst of
# edits returns one row per hour and zone, not per record. A group spanning at most an hour touches at most two local
# days of its zone, and both only when its first and last rows do.

# The stores and the time zone of each one's business day.
LOCATIONS_SQL = """
SELECT location_id, name, timezone FROM locations ORDER BY location_id
"""
CHANGES_SQL = """
SELECT MIN(t.transaction_at) AS first_business_at, MAX(t.transaction_at) AS last_business_at,
       MAX(t.last_modified_at) AS last_modified_at, COUNT(*) AS changed_rows, l.timezone AS timezone
FROM transactions t
LEFT JOIN locations l ON l.location_id = t.location_id
WHERE t.last_modified_at >= :since AND t.last_modified_at < :until
GROUP BY l.timezone, SUBSTR(CAST(t.transaction_at AS TEXT), 1, 13)
UNION ALL
SELECT MIN(last_modified_at), MAX(last_modified_at), MAX(last_modified_at), COUNT(*), NULL
FROM customers
WHERE last_modified_at >= :since AND last_modified_at < :until
GROUP BY SUBSTR(CAST(last_modified_at AS TEXT), 1, 13)
ORDER BY first_business_at
"""


@dataclass(frozen=True)
class EntityQuery:
    """One entity's SELECT and the contract its result must meet."""

    entity: str
    sql: str
    key: str
    required_columns: frozenset[str]
    # The bind parameters a custom SELECT must use, and what it must do with them (for the error message).
    parameters: tuple[str, ...] = ()
    filter_rule: str = ""


QUERIES: dict[str, EntityQuery] = {
    "transactions": EntityQuery(
        "transactions",
        TRANSACTIONS_SQL,
        key="transaction_id",
        required_columns=frozenset(
            {"transaction_id", "location_id", "location_name", "location_exists", "customer_id", "customer_exists",
             "transaction_at", "subtotal", "total", "last_modified_at", "line_line_number", "line_product_id",
             "line_product_exists", "line_sku", "line_name", "line_quantity", "line_unit_price"}
        ),
        parameters=("window_start", "window_end"),
        filter_rule="filter on :window_start and :window_end (UTC timestamps, start inclusive, end exclusive)",
    ),
    "personas": EntityQuery(
        "personas",
        PERSONAS_SQL,
        key="customer_id",
        required_columns=frozenset({"customer_id", "created_at", "last_modified_at"}),
        parameters=("window_start", "window_end"),
        filter_rule="filter on :window_start and :window_end (UTC timestamps, start inclusive, end exclusive)",
    ),
    "personas_by_id": EntityQuery(
        "personas_by_id",
        PERSONAS_BY_ID_SQL,
        key="customer_id",
        required_columns=frozenset({"customer_id", "created_at", "last_modified_at"}),
        parameters=("customer_ids",),
        filter_rule="filter on IN :customer_ids",
    ),
    "shopper_stores": EntityQuery(
        "shopper_stores",
        SHOPPER_STORES_SQL,
        key="customer_id",
        required_columns=frozenset({"customer_id", "location_id"}),
        parameters=("customer_ids",),
        filter_rule="filter on IN :customer_ids",
    ),
    "inventory": EntityQuery(
        "inventory",
        INVENTORY_SQL,
        key="product_id",
        required_columns=frozenset({"product_id", "sku", "name", "unit_price", "created_at", "last_modified_at",
                                    "stock_location_id", "stock_location_name", "stock_quantity"}),
    ),
    "stray_transactions": EntityQuery(
        "stray_transactions",
        STRAY_TRANSACTIONS_SQL,
        key="transaction_id",
        required_columns=frozenset({"transaction_id", "business_at"}),
        parameters=("window_start", "window_end"),
        filter_rule=(
            "return the sales whose transaction_at is NULL, at or after :window_end, or before :window_start while "
            "last_modified_at is not (UTC timestamps: the first partition's start and the last partition's end)"
        ),
    ),
    "stray_personas": EntityQuery(
        "stray_personas",
        STRAY_PERSONAS_SQL,
        key="customer_id",
        required_columns=frozenset({"customer_id", "business_at"}),
        parameters=("window_end",),
        filter_rule="return the customers whose last_modified_at is NULL or at or after :window_end (a UTC timestamp)",
    ),
    "locations": EntityQuery(
        "locations",
        LOCATIONS_SQL,
        key="location_id",
        required_columns=frozenset({"location_id", "timezone"}),
    ),
    "changes": EntityQuery(
        "changes",
        CHANGES_SQL,
        key="first_business_at",
        required_columns=frozenset({"first_business_at", "last_business_at", "last_modified_at", "changed_rows"}),
        parameters=("since", "until"),
        filter_rule="filter last_modified_at on :since and :until (UTC timestamps, since inclusive, until exclusive)",
    ),
}


class PosQueryError(RuntimeError):
    """A POS query is misconfigured or the POS cannot be read: a systemic failure, not a bad record."""


NO_SHOPPER_STORES = (
    "POS_QUERIES_FILE replaces the transactions query but gives no shopper_stores query, which several AIQ accounts "
    "(AIQ_ACCOUNTS_FILE) need to decide which account receives each shopper: add a shopper_stores SELECT returning "
    "customer_id and location_id of every sale whose customer_id is IN :customer_ids (docs/custom-schema.md)"
)


def customized(queries: dict[str, EntityQuery], entity: str) -> bool:
    """Whether ``entity``'s query is the user's own rather than the reference schema's."""
    return queries[entity].sql is not QUERIES[entity].sql


def reads_shopper_stores(queries: dict[str, EntityQuery]) -> bool:
    """Whether the stores a customer bought in can be read: a custom transactions query needs its own lookup too (the
    reference one would read a table of that name that may not hold the sales: never guess)."""
    return not customized(queries, "transactions") or customized(queries, "shopper_stores")


def load_queries(path: Path | None) -> dict[str, EntityQuery]:
    """The default queries, with any entity overridden by the YAML file at ``path``."""
    queries = dict(QUERIES)
    if path is None:
        return queries
    try:
        overrides = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PosQueryError(f"POS_QUERIES_FILE {path}: cannot read it as YAML ({exc.__class__.__name__})") from None
    if not isinstance(overrides, dict):
        raise PosQueryError(f"POS_QUERIES_FILE {path}: expected a mapping of entity name to SELECT")
    unknown = set(overrides) - set(QUERIES)
    if unknown:
        raise PosQueryError(
            f"POS_QUERIES_FILE {path}: unknown entities {sorted(unknown)}; expected some of {sorted(QUERIES)}"
        )
    for entity, sql in overrides.items():
        default = QUERIES[entity]
        if not isinstance(sql, str) or not sql.strip():
            raise PosQueryError(f"POS_QUERIES_FILE {path}: {entity} must be a SELECT statement")
        if not all(f":{name}" in sql for name in default.parameters):
            raise PosQueryError(f"POS_QUERIES_FILE {path}: the {entity} query must {default.filter_rule}")
        queries[entity] = dataclasses.replace(default, sql=sql)
    return queries
