"""The kinds of record the pipeline moves, spelled one way everywhere (ledger, quarantine, metadata, queries)."""

from __future__ import annotations

import enum


class Entity(enum.StrEnum):
    """A kind of POS record. The value is what the sync database stores in its ``entity`` columns."""

    TRANSACTION = "transaction"
    PERSONA = "persona"
    INVENTORY = "inventory"

    @property
    def query(self) -> str:
        """The name of the entity's POS query (a key of ``POS_QUERIES_FILE``): ``transactions``, ``personas``,
        ``inventory``."""
        return "inventory" if self is Entity.INVENTORY else f"{self.value}s"
