"""The inventory snapshot as one key sees it: the items of its account's stores (of one store with ``location_id``),
paged by product, and a version of exactly that content, its ETag.

The version changes only when what the key is served changes, so another store's or account's stock moving neither
breaks a cursor (409) nor tells the key that it moved. It is computed once per staged snapshot and view, and kept.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import orjson
import sqlalchemy as sa

from aiq_pipelines.db.hashing import digest
from aiq_pipelines.pull import reads
from aiq_pipelines.pull.render import inventory_items
from aiq_pipelines.sync.accounts import StoreScope

CHUNK = 500
KEPT_VERSIONS = 256


class NoSnapshot(LookupError):
    """No inventory snapshot is staged yet: answered 503 like the other endpoints before their first extract."""

    def __init__(self) -> None:
        super().__init__("no inventory snapshot is staged yet: run an inventory extract (inventory_sync)")


class InventoryVersions:
    """The versions of the views of staged snapshots, computed on first use."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str | None, str | None], str] = {}
        self._lock = threading.Lock()

    def of(self, conn: sa.Connection, account: str | None, scope: StoreScope,
           location_id: str | None) -> tuple[str, dt.datetime | None]:
        """The version of the staged snapshot as ``account`` (``scope``) sees it, and when the snapshot was taken;
        NoSnapshot before the first inventory extract."""
        hashes, taken = reads.inventory_snapshot(conn)
        if not hashes:
            raise NoSnapshot()
        name = (digest(",".join(hashes)), account, location_id)
        with self._lock:
            found = self._kept.get(name)
        if found is None:
            served = []
            for row in reads.inventory(conn, None, len(hashes)):
                served += [{k: v for k, v in item.items() if k != "as_of"}
                           for item in inventory_items(row, scope, location_id)]
            found = digest(orjson.dumps(served).decode())[:32]
            with self._lock:
                if len(self._kept) >= KEPT_VERSIONS:
                    self._kept.clear()
                self._kept[name] = found
        return found, taken

    @staticmethod
    def page(conn: sa.Connection, scope: StoreScope, location_id: str | None, after: str | None,
             size: int) -> tuple[list[dict[str, Any]], str | None]:
        """The items of up to ``size`` products after ``after`` that this view serves, and the last of those products
        when more follow (the next cursor's position), else None."""
        items: list[dict[str, Any]] = []
        products: list[str] = []
        while True:
            rows = reads.inventory(conn, after, CHUNK)
            for row in rows:
                served = inventory_items(row, scope, location_id)
                if not served:
                    continue
                if len(products) == size:
                    return items, products[-1]
                products.append(row.product_id)
                items += served
            if len(rows) < CHUNK:
                return items, None
            after = rows[-1].product_id
