"""Who sent each command of a relationship: the credential the HTTP API recorded for it, or
"sent directly" when the API has no record of it (docs/api.md, "Audit").

The API writes a row to `api_audit` for every command it hands to Temporal
(activities/api_audit.py). A stored event names the command that caused it (`events.command_id`),
so a command's credential is the API row of the same programme, relationship and command id
whose outcome says the API delivered it: `applied`, or `replay` (a retry after a timeout is how
the API completes a command it could not answer in time). A relationship's start is the API's
`start` row with the outcome `started`.

Without such a row a command was sent **directly**: with a Temporal client, by whoever can reach
the namespace (an operator's CLI, a script, an SDK integration). Temporal access is full trust
and nothing is signed, so this is the API's record shown beside the events, not a proof.

The system's own commands are recognised as mentorflow/audit_actors.py recognises them: the
mentor pool's `pool-<n>`, the directory's `directory-left-<person>`, a matching round's
`<relationship>-propose` for a pair the round stored (and the relationship that proposal
started). Events that no command caused (deadlines, timers) are internal too.

Unknown credential kinds (a newer API's) are shown as stored. Ids and names only, never payloads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from events.commands import INTERNAL_ACTORS
from mentorflow.audit_actors import ACTOR_FIELDS, why_forged
from pairing.rounds import round_command_id

DIRECT = "direct"
INTERNAL = "internal"
# The API's outcomes that mean it delivered the command (activities/api_audit.py).
DELIVERED = ("applied", "replay")
STARTED = "started"


class SentBy(BaseModel):
    """Who sent the command behind an event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    via: str = Field(
        description="How the command came: the API's credential kind as it recorded it (`api_key`, `token`, "
        "`link`, …); `direct` when the API has no record of it (sent with a Temporal client by anyone who "
        "can reach the namespace: full trust); `internal` when the system sent it (the mentor pool, a "
        "matching round, the directory) or no command caused the event (deadlines, timers)."
    )
    credential_id: str | None = Field(
        default=None, description="The key id, the token's subject, or the link's person; null unless via the API."
    )
    credential_name: str | None = Field(
        default=None, description="The key's name, the token's issuer, or the link's purpose; null unless via the API."
    )

    def describe(self) -> str:
        """One line for people."""
        if self.via == DIRECT:
            return "sent directly (not through the API)"
        if self.via == INTERNAL:
            return "internal (the system)"
        labels = {"api_key": ("API key", "id"), "token": ("token of", "issuer"), "link": ("link of", "for")}
        label, second = labels.get(self.via, (self.via, "name"))
        if self.via == "api_key":
            return f"{label} {self.credential_name} ({second} {self.credential_id})"
        return f"{label} {self.credential_id} ({second} {self.credential_name})"


SENT_DIRECTLY = SentBy(via=DIRECT)
BY_THE_SYSTEM = SentBy(via=INTERNAL)


@dataclass(frozen=True)
class CommandSender:
    """One command of a stream (command_id None: the relationship's start) and who sent it."""

    stream_id: str
    command_id: str | None
    sent_by: SentBy


# The streams asked about, with their programme: one stream, or every stream of a programme.
_ONE_STREAM = """
    SELECT $1::text AS stream_id,
           coalesce((SELECT programme_id FROM stream_owners WHERE stream_id = $1),
                    (SELECT payload ->> 'programme_id' FROM events WHERE stream_id = $1 AND version = 1)) AS programme_id
"""
_OF_PROGRAMME = "SELECT stream_id, programme_id FROM stream_owners WHERE programme_id = $1"

_ACTOR = "CASE e.event_type {} END".format(
    " ".join(f"WHEN '{event_type}' THEN e.payload ->> '{field}'" for event_type, field in sorted(ACTOR_FIELDS.items()))
)

_SENDERS = f"""
WITH streams AS ({{streams}}),
commands AS (
    SELECT e.stream_id, s.programme_id, e.command_id,
           (array_agg(e.event_type ORDER BY e.version))[1] AS first_type,
           (array_agg(e.event_type ORDER BY e.version) FILTER (WHERE {_ACTOR} IS NOT NULL))[1] AS actor_event,
           (array_agg({_ACTOR} ORDER BY e.version) FILTER (WHERE {_ACTOR} IS NOT NULL))[1] AS actor,
           (array_agg(e.payload ->> 'mentor_id' ORDER BY e.version))[1] AS mentor_id,
           (array_agg(e.payload -> 'caused_by' ->> 'message' ORDER BY e.version)
                FILTER (WHERE e.payload -> 'caused_by' ->> 'message' IS NOT NULL))[1] AS message,
           min(e.version) AS version
      FROM streams s JOIN events e ON e.stream_id = s.stream_id
     WHERE (e.command_id IS NOT NULL OR e.event_type = 'RelationshipStarted')
       AND ($2::text[] IS NULL OR e.command_id IS NULL OR e.command_id = ANY($2::text[]))
     GROUP BY e.stream_id, s.programme_id, e.command_id
)
SELECT c.stream_id, c.command_id, c.first_type, c.actor_event, c.actor, c.version,
       EXISTS (SELECT 1 FROM matching_round_pairs p
                WHERE p.relationship_id = c.stream_id AND p.programme_id = c.programme_id
                  AND p.mentor_id = c.mentor_id) AS round_holds_pair,
       a.credential_kind, a.credential_id, a.credential_name
  FROM commands c
  LEFT JOIN LATERAL (
      SELECT a.credential_kind, a.credential_id, a.credential_name FROM api_audit a
       WHERE a.programme_id = c.programme_id AND a.relationship_id = c.stream_id
         AND CASE WHEN c.command_id IS NULL THEN a.message = 'start' AND a.outcome = '{STARTED}'
                  ELSE a.command_id = c.command_id AND a.outcome = ANY($3::text[])
                       AND (c.message IS NULL OR a.message = c.message) END
       ORDER BY a.outcome = 'replay', a.audit_id LIMIT 1
  ) a ON true
 ORDER BY c.stream_id, c.version
"""


def _round_proposal(row: Mapping[str, Any]) -> bool:
    """A matching round's proposal, for a pair the round stored (its actor may be a coordinator)."""
    return (
        row["command_id"] == round_command_id(row["stream_id"])
        and row["first_type"] == "MatchProposed"
        and bool(row["round_holds_pair"])
    )


def _sent_by(row: Mapping[str, Any], round_started: set[str]) -> SentBy:
    if row["credential_kind"] is not None:
        return SentBy(via=row["credential_kind"], credential_id=row["credential_id"], credential_name=row["credential_name"])
    if row["command_id"] is None:
        return BY_THE_SYSTEM if row["stream_id"] in round_started else SENT_DIRECTLY
    if _round_proposal(row):
        return BY_THE_SYSTEM
    actor = row["actor"]
    if actor in INTERNAL_ACTORS:
        forged = why_forged(row["actor_event"], actor, row["command_id"], row["stream_id"], row["round_holds_pair"])
        if forged is None:
            return BY_THE_SYSTEM
    return SENT_DIRECTLY


async def command_senders(
    pool: asyncpg.Pool | asyncpg.Connection,
    *,
    stream_id: str | None = None,
    programme_id: str | None = None,
    command_ids: Iterable[str] | None = None,
) -> list[CommandSender]:
    """Who sent each command of one stream (`stream_id`) or of every stream of a programme
    (`programme_id`), in stream and version order; `command_ids`: only those (and the start)."""
    if (stream_id is None) == (programme_id is None):
        raise ValueError("ask about one stream or one programme")
    query = _SENDERS.format(streams=_ONE_STREAM if stream_id is not None else _OF_PROGRAMME)
    wanted = None
    if command_ids is not None:
        # A round's proposal tells whether the round started the relationship.
        extra = [round_command_id(stream_id)] if stream_id is not None else []
        wanted = sorted({*command_ids, *extra})
    rows = await pool.fetch(query, stream_id or programme_id, wanted, list(DELIVERED))
    # A relationship a round's proposal started: update-with-start, right after the start.
    round_started = {row["stream_id"] for row in rows if _round_proposal(row) and row["version"] == 2}
    return [CommandSender(row["stream_id"], row["command_id"], _sent_by(row, round_started)) for row in rows]


def sent_by_of_event(event_type: str, command_id: str | None, senders: Mapping[str | None, SentBy]) -> SentBy:
    """Who sent the command behind one event of a stream, from that stream's `senders`
    (command id → sender; None → the start)."""
    if command_id is not None:
        return senders.get(command_id, SENT_DIRECTLY)
    if event_type == "RelationshipStarted":
        return senders.get(None, SENT_DIRECTLY)
    return BY_THE_SYSTEM


async def stream_senders(
    pool: asyncpg.Pool | asyncpg.Connection, stream_id: str, command_ids: Iterable[str] | None = None
) -> dict[str | None, SentBy]:
    """Command id (None: the start) → who sent it, for one stream."""
    found = await command_senders(pool, stream_id=stream_id, command_ids=command_ids)
    return {sender.command_id: sender.sent_by for sender in found}


@dataclass(frozen=True)
class CredentialCount:
    """How many commands (starts included) of how many relationships one sender sent."""

    sent_by: SentBy
    commands: int
    relationships: int

    def to_json(self) -> dict[str, Any]:
        return {**self.sent_by.model_dump(), "commands": self.commands, "relationships": self.relationships}


async def commands_by_credential(pool: asyncpg.Pool | asyncpg.Connection, programme_id: str) -> list[CredentialCount]:
    """Every command of a programme's relationships, counted by who sent it: most first."""
    senders = await command_senders(pool, programme_id=programme_id)
    commands = Counter(sender.sent_by for sender in senders)
    relationships = Counter(sent_by for sent_by, _ in {(s.sent_by, s.stream_id) for s in senders})
    order = sorted(commands, key=lambda s: (-commands[s], s.via, s.credential_name or "", s.credential_id or ""))
    return [CredentialCount(sent_by, commands[sent_by], relationships[sent_by]) for sent_by in order]
