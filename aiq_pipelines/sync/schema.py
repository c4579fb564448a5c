"""The sync database's tables, in one ``MetaData``, and ``ensure_schema()``, the one way they are created.

Staging (``staged_*``) holds canonical records per business day with the payloads built from them; the quarantine holds
what could not be staged or sent, with its reason; the ledger holds what AIQ acknowledged, and ``aiq_audit`` what the
delivery audit did not find at AIQ; the lease table keeps one pusher per account at a time. The rate limiter's send
log belongs to the AIQ SDK (``aiq.ratelimit``).
"""

from __future__ import annotations

import sqlalchemy as sa

from aiq_pipelines.db.schema import create_tables

metadata = sa.MetaData()

staged_transactions = sa.Table(
    "staged_transactions",
    metadata,
    sa.Column("transaction_id", sa.String, primary_key=True),
    sa.Column("business_date", sa.Date, nullable=False),
    sa.Column("transaction_at", sa.DateTime, nullable=False),
    sa.Column("location_id", sa.String, nullable=False),
    sa.Column("location_name", sa.String, nullable=False),
    sa.Column("location_timezone", sa.String),  # None: POS_TIMEZONE's days
    sa.Column("customer_id", sa.String),
    sa.Column("is_void", sa.Boolean, nullable=False),
    sa.Column("last_modified_at", sa.DateTime, nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    # The sale as AIQ receives it (mapping.visit_payload), built once here so a push sends stored bytes; when it
    # cannot be built, payload_error says why and the push quarantines the sale at stage "payload".
    sa.Column("payload", sa.LargeBinary),
    sa.Column("payload_hash", sa.String(64)),
    sa.Column("payload_error", sa.Text),
    sa.Column("run_id", sa.String, nullable=False, index=True),
    sa.Column("staged_at", sa.DateTime, nullable=False),
    sa.Column("changed_at", sa.DateTime),  # CHANGED_AT below
    # The push reads a window's sales in this order, so the first batch leaves without the wide rows being sorted
    # first; it also covers the customers of a window's sales (staged.personas_missing) and the delivered check
    # (delivery.undelivered) without reading the wide rows (bench/RESULTS.md, "indexes"), an account's stores included.
    sa.Index("ix_staged_transactions_day_key", "business_date", "transaction_id", "customer_id", "is_void",
             "content_hash", "location_id"),
    # Which accounts' stores a customer shops in (sync.accounts.StoreScope.shoppers), and a customer's sales.
    sa.Index("ix_staged_transactions_customer_store", "customer_id", "location_id"),
    # The pull API's keyset orders: incremental pulls by change, backfills by when the sale was rung.
    sa.Index("ix_staged_transactions_changed", "changed_at", "transaction_id"),
    sa.Index("ix_staged_transactions_at", "transaction_at", "transaction_id"),
)

staged_personas = sa.Table(
    "staged_personas",
    metadata,
    sa.Column("customer_id", sa.String, primary_key=True),
    sa.Column("business_date", sa.Date, nullable=False),
    sa.Column("last_modified_at", sa.DateTime, nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    # The persona as AIQ receives it (PersonaPayload: mapping.member_payload), built once here so a push neither
    # parses the record nor normalizes phones and emails again; payload_issues names what was left out of it.
    sa.Column("payload", sa.LargeBinary),
    sa.Column("payload_hash", sa.String(64)),
    sa.Column("payload_issues", sa.Text),
    sa.Column("payload_error", sa.Text),
    sa.Column("run_id", sa.String, nullable=False, index=True),
    sa.Column("staged_at", sa.DateTime, nullable=False),
    sa.Column("changed_at", sa.DateTime),  # CHANGED_AT below
    # The push reads a window's personas in this order: no sort of the wide rows before the first batch; the delivered
    # check reads the index alone.
    sa.Index("ix_staged_personas_day_key_hash", "business_date", "customer_id", "content_hash"),
    sa.Index("ix_staged_personas_changed", "changed_at", "customer_id"),  # the pull API's keyset order
)

# ``changed_at``: when what the pull API serves of a staged record last changed. A record restaged with the same
# content and payload hashes keeps it; a new or changed one gets the moment its extract finished writing, just before
# the commit, by the extract host's clock. The pull API's watermark runs on it, so a record is never stamped earlier
# than it became visible by more than the commit takes, which the settle lag (PULL_API_SETTLE_SECONDS) covers as long
# as the hosts' clocks agree to within it.
CHANGED_AT = ("changed_at", ("content_hash", "payload_hash"))

# The customers the staged sales name, whatever day they were last modified, with their payloads: a sale's persona
# must reach AIQ before the sale, and most customers of a day's sales were modified long before it. Keyed by customer
# (not by day, which would repeat a regular's payload on every day they shop); ``pos_transactions`` refreshes the rows
# of its window's customers, so the push sends stored bytes and never reads the POS. A customer that cannot be staged
# has NULL content_hash and payload, and payload_error says why.
staged_sale_customers = sa.Table(
    "staged_sale_customers",
    metadata,
    sa.Column("customer_id", sa.String, primary_key=True),
    sa.Column("content_hash", sa.String(64)),
    sa.Column("payload", sa.LargeBinary),
    sa.Column("payload_hash", sa.String(64)),
    sa.Column("payload_issues", sa.Text),
    sa.Column("payload_error", sa.Text),
    sa.Column("run_id", sa.String, nullable=False),
    sa.Column("staged_at", sa.DateTime, nullable=False),
)

# With several AIQ accounts, the stores each staged customer bought in, read from the POS's whole history by the
# extract that stages the customer (``pos_personas`` its personas, ``pos_transactions`` the customers its sales name),
# in its transaction: an account receives a shopper of its stores (``sync.accounts.StoreScope.shoppers``). A customer
# the POS knows no sale of has one row, ``location_id`` NO_SALE, which only the default account takes; a customer with
# no row was never looked up, and no account receives them (fail closed). With one account nothing is looked up and
# the table is emptied, since rows it kept would go stale.
NO_SALE = ""
shopper_stores = sa.Table(
    "shopper_stores",
    metadata,
    sa.Column("customer_id", sa.String, primary_key=True),
    sa.Column("location_id", sa.String, primary_key=True),
    sa.Column("looked_up_at", sa.DateTime, nullable=False),
)

staged_inventory = sa.Table(
    "staged_inventory",
    metadata,
    sa.Column("product_id", sa.String, primary_key=True),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String, nullable=False, index=True),
    sa.Column("staged_at", sa.DateTime, nullable=False),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("entity", sa.String, nullable=False),
    sa.Column("record_key", sa.String),
    sa.Column("stage", sa.String, nullable=False),  # extract | payload | aiq
    # A push stage's row belongs to the AIQ account whose push held the record back (its ledger name): a persona
    # refused by one account may be in another. Extract rows, and sales no account receives, have "".
    sa.Column("account", sa.String, nullable=False, default="", server_default=""),
    sa.Column("business_date", sa.Date, index=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("source_hash", sa.String(64)),
    sa.Column("source", sa.Text),  # the POS row(s) as read, for the operator; stays in the sync database
    sa.Column("run_id", sa.String, nullable=False),
    sa.Column("quarantined_at", sa.DateTime, nullable=False),
    sa.Index("quarantine_lookup", "entity", "stage", "business_date"),
    # The push's lookups by record: refusals, clearing a batch's rows, the delivered check's "not quarantined"
    # (bench/RESULTS.md, "indexes").
    sa.Index("quarantine_key", "entity", "record_key", "stage"),
)

# When each record now in quarantine was first seen there (by ``sync.held``): the quarantine's own rows are replaced
# each time a run holds a record back again, so they only know the last time.
quarantine_seen = sa.Table(
    "quarantine_seen",
    metadata,
    sa.Column("entity", sa.String, primary_key=True),
    sa.Column("record_key", sa.String, primary_key=True),  # "" for a row without a key
    sa.Column("stage", sa.String, primary_key=True),
    sa.Column("account", sa.String, primary_key=True),
    sa.Column("first_seen", sa.DateTime, nullable=False),
)

aiq_ledger = sa.Table(
    "aiq_ledger",
    metadata,
    sa.Column("account", sa.String, primary_key=True),
    sa.Column("entity", sa.String, primary_key=True),  # pos.entity.Entity
    sa.Column("record_key", sa.String, primary_key=True),
    sa.Column("payload_hash", sa.String(64), nullable=False),
    sa.Column("source_hash", sa.String(64), nullable=False),
    sa.Column("profile_hash", sa.String(64)),  # personas: the payload without phone and email
    sa.Column("sent_phone", sa.String),
    sa.Column("sent_email", sa.String),
    sa.Column("contact_id", sa.String),
    sa.Column("src_id", sa.String),
    sa.Column("acked_at", sa.DateTime, nullable=False),
    sa.Column("run_id", sa.String, nullable=False),
)

# That a shopper's personal data was erased (``sync.erasure``): their POS key, when, by whom, and nothing else. The raw
# key is kept: it is the POS's own pseudonymous id, which the POS needs to answer "was customer X erased"; an unkeyed
# hash of a short id is reversed by trying every id, so it would hide nothing.
shopper_erasures = sa.Table(
    "shopper_erasures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String, nullable=False, index=True),
    sa.Column("erased_at", sa.DateTime, nullable=False),
    sa.Column("erased_by", sa.String, nullable=False),  # the OS user of the command, or the Dagster run
    sa.Column("rows_removed", sa.Integer, nullable=False),
    sa.Column("pos_still_holds", sa.Boolean, nullable=False),  # the POS, or a drop file, still held them then
)

# The personas the delivery audit did not find at AIQ as sent, per account, until an audit does
# (``sync.audit_outcome``): how many audits running missed them, and since when AIQ has had them.
aiq_audit = sa.Table(
    "aiq_audit",
    metadata,
    sa.Column("account", sa.String, primary_key=True),
    sa.Column("record_key", sa.String, primary_key=True),  # a persona's POS key
    sa.Column("business_date", sa.Date, nullable=False),  # the audited day that last missed it
    sa.Column("status", sa.String, nullable=False),  # missing | mismatched
    sa.Column("fields", sa.String),  # the mismatched fields' names
    sa.Column("misses", sa.Integer, nullable=False),
    sa.Column("first_accepted_at", sa.DateTime, nullable=False),  # when AIQ first acknowledged what it missed
    sa.Column("audited_at", sa.DateTime, nullable=False),
)

push_leases = sa.Table(
    "aiq_push_leases",
    metadata,
    sa.Column("account", sa.String, primary_key=True),
    sa.Column("holder", sa.String, nullable=False),  # the Dagster run id
    sa.Column("host", sa.String, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # unix seconds
)


# Staging holds nothing the next extract cannot rebuild, so a staging table of an older layout is recreated.
REBUILDABLE = (staged_transactions, staged_personas, staged_sale_customers, shopper_stores, staged_inventory)


def ensure_schema(engine: sa.Engine) -> None:
    """Create the tables this version lacks (staging of an older layout is rebuilt; see ``db.schema``)."""
    create_tables(engine, metadata, rebuildable=REBUILDABLE)
