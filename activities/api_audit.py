"""The HTTP API's audit record (migrations/0010_api_keys_and_audit.sql): which credential sent
which command to which relationship, and how it ended. Ids and codes only, never payloads.

This is the API's own record, written by the API after each command. It shows what came
through the API; it cannot show what reached Temporal another way (docs/api.md, "Audit").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

# A link: a signed action link from an email (mentorflow/pages/); its person and purpose.
CredentialKind = Literal["api_key", "token", "link"]
_COLUMNS = (
    "audit_id, recorded_at, credential_kind, credential_id, credential_name, programme_id, relationship_id, "
    "message, command_id, actor_id, outcome, http_status"
)


@dataclass(frozen=True)
class AuditEntry:
    credential_kind: CredentialKind
    # The key id, the token's subject, or the link's person.
    credential_id: str
    # The key's name, the token's issuer, or the link's purpose.
    credential_name: str
    programme_id: str
    relationship_id: str
    message: str
    command_id: str | None
    actor_id: str | None
    # applied, replay, a refusal code, unavailable, …
    outcome: str
    http_status: int


@dataclass(frozen=True)
class AuditRow(AuditEntry):
    audit_id: int = 0
    recorded_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["recorded_at"] = self.recorded_at.isoformat() if self.recorded_at else None
        return row


class ApiAuditLog:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def record(self, entry: AuditEntry) -> None:
        await self._pool.execute(
            """INSERT INTO api_audit (credential_kind, credential_id, credential_name, programme_id, relationship_id,
                                      message, command_id, actor_id, outcome, http_status)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
            entry.credential_kind, entry.credential_id, entry.credential_name, entry.programme_id,
            entry.relationship_id, entry.message, entry.command_id, entry.actor_id, entry.outcome, entry.http_status,
        )  # fmt: skip

    async def list(
        self, programme_id: str, *, relationship_id: str | None = None, before: int | None = None, limit: int = 100
    ) -> list[AuditRow]:
        """The newest first; `before`: only rows older than that audit id (the next page)."""
        rows = await self._pool.fetch(
            f"""SELECT {_COLUMNS} FROM api_audit
                 WHERE programme_id = $1 AND ($2::text IS NULL OR relationship_id = $2)
                   AND ($3::bigint IS NULL OR audit_id < $3)
                 ORDER BY audit_id DESC LIMIT $4""",
            programme_id, relationship_id, before, limit,
        )  # fmt: skip
        return [AuditRow(**dict(row)) for row in rows]
