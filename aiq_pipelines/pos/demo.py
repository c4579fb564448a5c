"""A deterministic, realistic demo dispensary written into the reference POS schema.

Same seed, same end date, same options: the same database. It models what a real dispensary POS holds: a catalogue
with categories, brands, strains, species, sizes, THC/CBD, cost and price; customers whose phones are typed every way
people type them (invalid and placeholder numbers included); 300-1500 sales a day per store following weekly and
hourly curves, 1-6 lines each, with discounts, taxes, anonymous walk-ins, returns linked to their original, voids and
late edits that bump ``last_modified_at``; stock per store. All timestamps are written in UTC.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import random
import zoneinfo
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.pos.reference import TABLES, create_reference_schema

FIRST_NAMES = [
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth", "William",
    "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Carlos", "Karen", "Daniel", "Lisa",
    "Matthew", "Nancy", "Anthony", "Betty", "Mark", "Sandra", "Luis", "Ashley", "José", "Zoë", "Renée", "Mateo",
    "Sofía", "Nguyễn", "Aaliyah", "Chloé", "Dmitri", "Siobhán", "Björn", "Amélie", "Jamal", "Priya", "Kenji",
    "Fatima", "Noah", "Emma", "Liam", "Olivia", "Ava", "Ethan", "Mia", "Lucas", "Harper", "Elijah", "Aria",
]
LAST_NAMES = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee",
    "Pérez", "Thompson", "White", "Harris", "Sánchez", "Clark", "Ramirez", "Lewis", "Robinson", "O'Brien",
    "Nguyen", "Müller", "Kowalski", "Van der Berg", "MacDonald", "Yamamoto", "Kim", "Patel", "Dubois", "Rossi",
]
EMAIL_DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "hotmail.com", "aol.com", "comcast.net"]
AREA_CODES = ["303", "720", "970", "719", "505", "602"]
CITIES = [("Denver", "CO", "802"), ("Boulder", "CO", "803"), ("Aurora", "CO", "800"), ("Lakewood", "CO", "802"),
          ("Fort Collins", "CO", "805"), ("Colorado Springs", "CO", "809")]
STREETS = ["Colfax Ave", "Broadway", "Federal Blvd", "Pearl St", "Alameda Ave", "Evans Ave", "Speer Blvd", "Main St"]
BRANDS = ["Muffins", "Tweed", "Green Dot Labs", "Malts", "Wana", "Dixie", "Lazercat", "Cookies", "Stiiizy", "Good Day"]
STRAINS = [
    ("Blue Dream", "hybrid"), ("OG Kush", "hybrid"), ("Sour Diesel", "sativa"), ("Granddaddy Purple", "indica"),
    ("Girl Scout Cookies", "hybrid"), ("Jack Herer", "sativa"), ("Northern Lights", "indica"), ("White Widow", "hybrid"),
    ("Durban Poison", "sativa"), ("Bubba Kush", "indica"), ("Gelato", "hybrid"), ("Wedding Cake", "indica"),
    ("Green Crack", "sativa"), ("Blueberry OG", "hybrid"), ("ACDC", "cbd"), ("Harlequin", "cbd"),
]
GRADES = ["A", "AA", "AAA", "B"]

# (parent category, subcategory, sizes with shelf prices in cents, thc range, sold by the gram)
CATALOGUE: list[tuple[str, str, list[tuple[str, int]], tuple[float, float], bool]] = [
    ("Flower", "Premium Flower", [("1g", 1500), ("3.5g", 4500), ("7g", 8000), ("14g", 15000), ("28g", 26000)], (18, 31), False),
    ("Flower", "Value Flower", [("3.5g", 2500), ("28g", 12000)], (14, 22), False),
    ("Flower", "Bulk Flower", [("1g", 1000), ("1g", 1200)], (15, 26), True),
    ("Pre-Rolls", "Single Pre-Rolls", [("1g", 1200), ("0.5g", 700)], (18, 28), False),
    ("Pre-Rolls", "Infused Pre-Rolls", [("1g", 2000), ("2g", 3500)], (30, 45), False),
    ("Vapes", "Cartridges", [("0.5g", 3000), ("1g", 5000)], (70, 92), False),
    ("Vapes", "Disposables", [("0.3g", 2500), ("1g", 4500)], (75, 90), False),
    ("Edibles", "Gummies", [("100mg", 1800), ("200mg", 3000)], (0, 0), False),
    ("Edibles", "Chocolates", [("100mg", 2000)], (0, 0), False),
    ("Concentrates", "Live Resin", [("1g", 4000), ("0.5g", 2500)], (65, 85), False),
    ("Concentrates", "Shatter", [("1g", 2500)], (70, 88), False),
    ("Tinctures", "Tinctures", [("30ml", 4500)], (0, 10), False),
    ("Topicals", "Balms", [("2oz", 3500)], (0, 2), False),
]
TAX_RATE = 0.15
WEEKDAY_FACTOR = [0.80, 0.78, 0.85, 0.95, 1.20, 1.30, 1.05]  # Monday .. Sunday
# Sales by local hour for a store open 8:00-22:00 and one open 9:00-24:00 (relative weights).
HOURLY_CURVES = [
    {h: w for h, w in zip(range(8, 22), [2, 3, 4, 5, 6, 6, 7, 8, 10, 11, 10, 8, 5, 3], strict=True)},
    {h: w for h, w in zip(range(9, 24), [2, 3, 4, 5, 5, 6, 7, 9, 11, 11, 10, 8, 6, 4, 3], strict=True)},
]
STORE_NAMES = ["Muffins Denver", "Muffins Boulder", "Muffins Aurora", "Muffins Fort Collins", "Muffins Lakewood",
               "Muffins Colorado Springs", "Muffins Pueblo", "Muffins Golden"]


@dataclass(frozen=True)
class DemoOptions:
    days: int = 90
    stores: int = 2
    seed: int = 7
    end_date: dt.date | None = None  # last business day (local); default today
    min_sales: int = 300
    max_sales: int = 1500
    timezone: str = "America/Denver"
    timezones: tuple[str, ...] = ()  # each store's zone in turn (a multi-state chain); empty: every store in timezone
    walk_in_share: float = 0.15
    return_share: float = 0.02
    void_share: float = 0.01
    late_edit_share: float = 0.01
    products: int = 240


def _store_name(index: int, timezones: tuple[str, ...]) -> str:
    """The demo's store names; in a chain across zones, named after each store's zone (Muffins Phoenix 1)."""
    if not timezones:
        return STORE_NAMES[index]
    return f"Muffins {timezones[index % len(timezones)].rsplit('/', 1)[-1].replace('_', ' ')} {index + 1}"


@dataclass(frozen=True)
class DemoSummary:
    locations: int
    products: int
    customers: int
    transactions: int
    transaction_items: int
    first_day: dt.date
    last_day: dt.date


class DemoDataExists(RuntimeError):
    pass


BAD_PHONES = ["1234567890", "0000000000", "555-1234", "5555555555", "n/a", "", "303-555-01", "+44 20 7946 0958",
              "9999999999", "111-111-1111"]


def _phone_as_typed(rng: random.Random, bad_phones: Iterator[str]) -> str | None:
    """A phone number the way people type it at the counter, sometimes wrong on purpose."""
    roll = rng.random()
    if roll < 0.05:
        return None
    if roll < 0.09:
        return next(bad_phones)  # in turn, so even a small demo has each kind of bad number
    area = rng.choice(AREA_CODES)
    exchange = str(rng.randint(201, 989))
    if exchange[1:] == "11" or exchange == "555":
        exchange = "482"
    line = f"{rng.randint(0, 9999):04d}"
    return rng.choice([
        f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}", f"{area}.{exchange}.{line}", f"{area}{exchange}{line}",
        f"+1 {area} {exchange} {line}", f"1-{area}-{exchange}-{line}", f"+1{area}{exchange}{line}",
        f" {area} {exchange} {line} ", f"({area}){exchange}{line}",
    ])


def _email(rng: random.Random, first: str, last: str, n: int) -> str | None:
    roll = rng.random()
    if roll < 0.2:
        return None
    local = f"{first}.{last}".lower().replace(" ", "").replace("'", "")
    if roll < 0.22:
        return rng.choice([f"{local}.gmail.com", f"{local}@", "none", f"{local} at yahoo.com"])
    address = f"{local}{n % 997}@{rng.choice(EMAIL_DOMAINS)}"
    return address.title() if roll > 0.95 else address


class _Writer:
    """Buffers rows per table and flushes them with executemany."""

    def __init__(self, conn: sa.Connection, tables: dict[str, sa.Table], size: int = 20_000):
        self.conn, self.tables, self.size = conn, tables, size
        self.buffers: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
        self.counts: dict[str, int] = dict.fromkeys(tables, 0)

    def add(self, table: str, row: dict[str, Any]) -> None:
        buffer = self.buffers[table]
        buffer.append(row)
        if len(buffer) >= self.size:
            self.flush(table)

    def flush(self, table: str | None = None) -> None:
        for name in [table] if table else list(self.tables):
            if self.buffers[name]:
                self.conn.execute(self.tables[name].insert(), self.buffers[name])
                self.counts[name] += len(self.buffers[name])
                self.buffers[name] = []


def generate(
    database_url: str,
    options: DemoOptions = DemoOptions(),
    *,
    replace: bool = False,
    now: dt.datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> DemoSummary:
    """Write the demo dispensary into ``database_url``. Refuses a POS that already has transactions unless ``replace``."""
    if options.min_sales < 1 or options.max_sales < options.min_sales:
        raise ValueError("min_sales must be at least 1 and max_sales at least min_sales")
    if options.days < 1 or not 1 <= options.stores <= len(STORE_NAMES):
        raise ValueError(f"days must be at least 1 and stores between 1 and {len(STORE_NAMES)}")
    tz = zoneinfo.ZoneInfo(options.timezone)
    now_utc = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(tzinfo=None, microsecond=0)
    last_day = options.end_date or now_utc.replace(tzinfo=dt.UTC).astimezone(tz).date()
    first_day = last_day - dt.timedelta(days=options.days - 1)
    rng = random.Random(options.seed)
    engine = engine_for(database_url)

    inspector = sa.inspect(engine)
    if inspector.has_table("transactions") and not replace:
        with engine.connect() as conn:
            if conn.exec_driver_sql("SELECT 1 FROM transactions LIMIT 1").first():
                raise DemoDataExists("the POS database already has transactions; pass --replace to overwrite it")
    create_reference_schema(engine, replace=replace)
    reflected = sa.MetaData()
    reflected.reflect(engine, only=list(TABLES))

    zones = [zoneinfo.ZoneInfo(name) for name in options.timezones] or [tz]

    def utc(local_day: dt.date, seconds: int, zone: zoneinfo.ZoneInfo = tz) -> dt.datetime:
        local = dt.datetime.combine(local_day, dt.time()) + dt.timedelta(seconds=seconds)
        return local.replace(tzinfo=zone).astimezone(dt.UTC).replace(tzinfo=None)

    period_start = utc(first_day, 0)
    with engine.begin() as conn:
        writer = _Writer(conn, dict(reflected.tables))
        stores = [(f"STORE-{i + 1:02d}", _store_name(i, options.timezones)) for i in range(options.stores)]
        for i, (location_id, name) in enumerate(stores):
            writer.add("locations", {"location_id": location_id, "name": name, "timezone": zones[i % len(zones)].key})

        products = _products(rng, options.products, period_start)
        for product in products:
            writer.add("products", product)
        for product in products:
            for location_id, _ in stores:
                stocked = rng.random()
                if stocked < 0.08:
                    continue  # not carried in this store
                qty: float = 0 if stocked < 0.15 else rng.randint(1, 250)
                if product["_by_gram"]:
                    qty = round(qty * 4.5, 2)
                batch_cost = (
                    round(product["unit_cost"] * rng.uniform(0.9, 1.1), 2) if rng.random() < 0.3 else None
                )
                writer.add("inventory", {"product_id": product["product_id"], "location_id": location_id,
                                         "quantity_available": qty, "unit_cost": batch_cost,
                                         "last_modified_at": now_utc - dt.timedelta(minutes=rng.randint(1, 600))})

        expected_sales = options.days * options.stores * (options.min_sales + options.max_sales) // 2
        customers = _customers(rng, max(100, expected_sales // 12), period_start, now_utc)
        for customer in customers:
            writer.add("customers", customer)
        created = [c["created_at"] for c in customers]
        writer.flush()

        for product in products:
            product.pop("_by_gram")
        tx_count = 0
        recent: dict[str, deque[tuple[str, dt.datetime, str | None, list[dict[str, Any]]]]] = {
            loc: deque(maxlen=400) for loc, _ in stores
        }
        for day_index in range(options.days):
            day = first_day + dt.timedelta(days=day_index)
            for store_index, (location_id, _) in enumerate(stores):
                curve = HOURLY_CURVES[store_index % 2]
                target = rng.uniform(options.min_sales, options.max_sales) * WEEKDAY_FACTOR[day.weekday()]
                count = int(min(options.max_sales, max(options.min_sales, target)))
                hours = rng.choices(list(curve), weights=list(curve.values()), k=count)
                seconds = sorted(h * 3600 + rng.randint(0, 3599) for h in hours)
                for seq, second in enumerate(seconds, start=1):
                    at = utc(day, second, zones[store_index % len(zones)])
                    if at > now_utc:
                        break
                    tx_id = f"{location_id[-2:]}-{day:%Y%m%d}-{seq:05d}"
                    _sale(rng, writer, options, tx_id, location_id, at, now_utc, products, customers,
                          bisect.bisect_right(created, at), recent[location_id])
                    tx_count += 1
            if progress and (day_index + 1) % 30 == 0:
                progress(f"{day_index + 1}/{options.days} days, {tx_count} transactions")
        writer.flush()
    return DemoSummary(
        locations=len(stores), products=len(products), customers=len(customers), transactions=writer.counts["transactions"],
        transaction_items=writer.counts["transaction_items"], first_day=first_day, last_day=last_day,
    )


def _products(rng: random.Random, count: int, period_start: dt.datetime) -> list[dict[str, Any]]:
    products = []
    for n in range(count):
        parent, sub, sizes, (thc_lo, thc_hi), by_gram = CATALOGUE[n % len(CATALOGUE)]
        size, price_cents = rng.choice(sizes)
        brand = rng.choice(BRANDS)
        strain, species = rng.choice(STRAINS)
        price = price_cents / 100
        cost = round(price * rng.uniform(0.35, 0.6), 2)
        label = f"{strain} {size}" if parent not in ("Edibles", "Tinctures", "Topicals") else f"{brand} {sub} {size}"
        if by_gram:
            label = f"{strain} Bulk (per gram)"
        created = period_start - dt.timedelta(days=rng.randint(30, 400))
        products.append({
            "product_id": f"P{n + 1:05d}", "sku": f"SKU-{100000 + n}", "name": label, "brand": brand,
            "category": f"{parent} > {brand} {sub}", "parent_category": parent, "strain": strain,
            "species": species, "grade": rng.choice(GRADES) if parent == "Flower" else None, "size": size,
            "barcode": f"0{rng.randint(10**10, 10**11 - 1)}",
            "thc_percent": round(rng.uniform(thc_lo, thc_hi), 1) if thc_hi else None,
            "cbd_percent": round(rng.uniform(0, 20 if species == "cbd" else 1), 1),
            "unit_cost": cost, "unit_price": price, "msrp": round(price * 1.1, 2), "tax_rate": TAX_RATE,
            "supplier_id": f"SUP-{rng.randint(1, 25):03d}", "supplier_name": f"{brand} Wholesale",
            "description": f"{sub} by {brand}.", "image_url": None, "url": None,
            "is_saleable": rng.random() > 0.03, "is_archived": rng.random() < 0.02,
            "created_at": created, "last_modified_at": created + dt.timedelta(days=rng.randint(0, 30)),
            "_by_gram": by_gram,
        })
    return products


def _customers(rng: random.Random, count: int, period_start: dt.datetime, now: dt.datetime) -> list[dict[str, Any]]:
    """Customers sorted by creation; most existed before the period, the rest sign up during it."""
    span = max(1, int((now - period_start).total_seconds()))
    created_times = sorted(
        period_start - dt.timedelta(seconds=rng.randint(1, 3 * 365 * 86400))
        if rng.random() < 0.7
        else period_start + dt.timedelta(seconds=rng.randint(0, span))
        for _ in range(count)
    )
    customers = []
    bad_phones = itertools.cycle(BAD_PHONES)
    for n, created in enumerate(created_times, start=1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        modified = created
        if rng.random() < 0.3:
            modified = min(now, created + dt.timedelta(seconds=rng.randint(3600, 200 * 86400)))
        city, state, zip_prefix = rng.choice(CITIES)
        age_days = rng.randint(21 * 365 + 6, 80 * 365)
        customers.append({
            "customer_id": f"C{n:07d}",
            "customer_type": rng.choices(["Recreational", "Medical", "Online"], weights=[80, 15, 5])[0],
            "first_name": first, "last_name": last, "email": _email(rng, first, last, n),
            "phone": _phone_as_typed(rng, bad_phones),
            "birthday": None if rng.random() < 0.1 else (now - dt.timedelta(days=age_days)).date(),
            "gender": rng.choice(["F", "M", "X", None]),
            "address1": f"{rng.randint(100, 9999)} {rng.choice(STREETS)}" if rng.random() < 0.7 else None,
            "address2": f"Apt {rng.randint(1, 400)}" if rng.random() < 0.15 else None,
            "city": city, "state": state, "zip": f"{zip_prefix}{rng.randint(0, 99):02d}",
            "is_loyalty_member": rng.random() < 0.55,
            "created_at": created, "last_modified_at": modified,
        })
    return customers


def _sale(
    rng: random.Random,
    writer: _Writer,
    options: DemoOptions,
    tx_id: str,
    location_id: str,
    at: dt.datetime,
    now: dt.datetime,
    products: list[dict[str, Any]],
    customers: list[dict[str, Any]],
    known_customers: int,
    recent: deque[tuple[str, dt.datetime, str | None, list[dict[str, Any]]]],
) -> None:
    roll = rng.random()
    if roll < options.return_share and recent:
        original_id, _, customer_id, original_lines = rng.choice(recent)
        returned = original_lines[: rng.randint(1, len(original_lines))]
        lines = [{**line, "quantity": -line["quantity"], "discount": -line["discount"]} for line in returned]
        _write_sale(writer, tx_id, location_id, customer_id, at, lines, is_return=True,
                    return_of=original_id, is_void=False, modified=at)
        return
    walk_in = known_customers == 0 or rng.random() < options.walk_in_share
    customer_id = None if walk_in else customers[rng.randrange(known_customers)]["customer_id"]
    lines = []
    for product in rng.sample(products, rng.choices([1, 2, 3, 4, 5, 6], weights=[30, 28, 18, 12, 7, 5])[0]):
        price_cents = round(product["unit_price"] * 100)
        if product["name"].endswith("(per gram)"):
            quantity: float = rng.choice([1.0, 1.75, 2.5, 3.5, 7.0])
        else:
            quantity = float(rng.choices([1, 2, 3], weights=[80, 15, 5])[0])
        gross_cents = round(price_cents * quantity)
        discount_cents = round(gross_cents * rng.choice([0.1, 0.15, 0.2])) if rng.random() < 0.2 else 0
        lines.append({"product_id": product["product_id"], "quantity": quantity, "unit_price": price_cents / 100,
                      "discount": discount_cents / 100, "unit_cost": product["unit_cost"]})
    modified = at + dt.timedelta(seconds=rng.randint(0, 30))
    is_void = rng.random() < options.void_share
    if is_void:
        modified = at + dt.timedelta(minutes=rng.randint(1, 20))
    elif walk_in and known_customers and rng.random() < options.late_edit_share * 5:
        # A walk-in who signs the loyalty sheet later: the receipt is re-attributed hours or days after the sale.
        customer_id = customers[rng.randrange(known_customers)]["customer_id"]
        modified = at + dt.timedelta(hours=rng.randint(2, 72))
    modified = min(modified, now)
    _write_sale(writer, tx_id, location_id, customer_id, at, lines, is_return=False, return_of=None,
                is_void=is_void, modified=modified)
    if not is_void:
        recent.append((tx_id, at, customer_id, lines))


def _write_sale(
    writer: _Writer,
    tx_id: str,
    location_id: str,
    customer_id: str | None,
    at: dt.datetime,
    lines: list[dict[str, Any]],
    *,
    is_return: bool,
    return_of: str | None,
    is_void: bool,
    modified: dt.datetime,
) -> None:
    # Money is summed in integer cents so receipts reconcile exactly with their lines.
    gross = sum(round(line["unit_price"] * 100 * line["quantity"]) for line in lines)
    discount = sum(round(line["discount"] * 100) for line in lines)
    tax = round((gross - discount) * TAX_RATE)
    writer.add("transactions", {
        "transaction_id": tx_id, "location_id": location_id, "customer_id": customer_id, "transaction_at": at,
        "subtotal": gross / 100, "discount_total": discount / 100, "tax_total": tax / 100,
        "total": (gross - discount + tax) / 100, "is_return": is_return, "return_of_transaction_id": return_of,
        "is_void": is_void, "employee_id": f"E{int(tx_id[-5:]) % 12:02d}", "last_modified_at": modified,
    })
    for number, line in enumerate(lines, start=1):
        writer.add("transaction_items", {"transaction_id": tx_id, "line_number": number, **line})

