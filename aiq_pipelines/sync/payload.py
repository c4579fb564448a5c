"""A persona's AIQ payload as staging keeps it: the bytes a bulk call sends, their digest, and what was left out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from aiq_pipelines.aiq.payloads import Member, payload_hash
from aiq_pipelines.pos.records import Persona
from aiq_pipelines.sync import mapping


@dataclass(frozen=True, repr=False)
class PersonaPayload:
    """A persona's AIQ payload as staged beside it (``mapping.member_payload``), or the reason none could be built."""

    encoded: bytes | None
    digest: str | None
    issues: frozenset[str]
    error: str | None
    built: Member | None = None  # the model, when it was just mapped rather than read from staging

    @classmethod
    def of(cls, persona: Persona) -> PersonaPayload:
        try:
            mapped = mapping.member_payload(persona)
        except ValidationError as exc:
            return cls.failed(mapping.payload_reason(exc))
        return cls(mapped.member.encoded, payload_hash(mapped.member), mapped.issues, None, mapped.member)

    @classmethod
    def failed(cls, reason: str) -> PersonaPayload:
        """No payload, and why."""
        return cls(None, None, frozenset(), reason)

    @classmethod
    def staged(cls, encoded: bytes | None, digest: str | None, issues: str | None, error: str | None) -> PersonaPayload:
        """From the payload columns of ``staged_personas`` or ``staged_sale_customers``."""
        return cls(None if encoded is None else bytes(encoded), digest,
                   frozenset(issues.split(",")) if issues else frozenset(), error)

    def columns(self) -> dict[str, Any]:
        return {"payload": self.encoded, "payload_hash": self.digest,
                "payload_issues": ",".join(sorted(self.issues)) or None, "payload_error": self.error}

    def member(self) -> Member:
        """The payload as a model (the override call and the ledger need its phone and email), read back from the
        staged bytes, which it sends as they are (``AiqPayload.from_encoded``)."""
        if self.built is not None:
            return self.built
        if self.encoded is None:
            raise ValueError(f"no payload: {self.error}")
        return Member.from_encoded(self.encoded)

    def __repr__(self) -> str:  # the bytes hold a phone and an email: never shown
        return f"PersonaPayload({len(self.encoded or b'')} bytes, issues={sorted(self.issues)}, error={self.error!r})"
