"""Commands stored as if the system had sent them, but that no part of the system sends
(security issue #12, "Already stored"): before the relationship refused internal actors from
outside, anyone who reached Temporal could propose, decline or close as `matching-engine`,
`matching-round` or `directory`.

The system's own commands are recognisable by their command ids and records: the pool's
proposals are `pool-<n>` and its withdrawals `pool-full-<n>` (workflows/mentor_pool.py), a
round's proposal is `<relationship id>-propose` for a pair the round stored
(`matching_round_pairs`), the directory's report is `directory-left-<participant>`. Anything
else stored under one of those actors came from outside. Read-only; ids only.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import asyncpg

from events.commands import DIRECTORY_ACTOR, MATCHING_ACTOR, ROUND_ACTOR

# (event type, the payload field naming the actor) for every event an internal actor causes.
ACTOR_FIELDS = {
    "MatchProposed": "proposed_by",
    "MatchDeclined": "declined_by",
    "ClosureBegun": "closed_by",
    "RelationshipClosed": "closed_by",
}


@dataclass(frozen=True)
class ForgedCommand:
    stream_id: str
    version: int
    event_type: str
    actor: str
    command_id: str | None
    why: str

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def why_forged(
    event_type: str, actor: str, command_id: str | None, stream_id: str, round_holds_pair: bool
) -> str | None:
    """Why this stored command cannot have come from the system (None: it may have)."""
    command_id = command_id or ""
    if actor == MATCHING_ACTOR:
        if event_type == "MatchProposed" and re.fullmatch(r"pool-\d+", command_id):
            return None
        if event_type == "MatchDeclined" and re.fullmatch(r"pool-full-\d+", command_id):
            return None
        return "the mentor pool issues only pool-<n> proposals and pool-full-<n> withdrawals"
    if actor == ROUND_ACTOR:
        if event_type == "MatchProposed" and command_id == f"{stream_id}-propose" and round_holds_pair:
            return None
        return "a matching round only proposes, as <relationship>-propose, a pair it stored"
    if actor == DIRECTORY_ACTOR:
        if command_id.startswith("directory-left-"):
            return None
        return "the directory reports leavers only as directory-left-<participant>"
    return None


async def forged_internal_commands(pool: asyncpg.Pool) -> list[ForgedCommand]:
    rows = await pool.fetch(
        """
        SELECT e.stream_id, e.version, e.event_type, e.command_id,
               e.payload ->> (CASE e.event_type WHEN 'MatchProposed' THEN 'proposed_by'
                                                WHEN 'MatchDeclined' THEN 'declined_by'
                                                ELSE 'closed_by' END) AS actor,
               EXISTS (SELECT 1 FROM matching_round_pairs p
                        WHERE p.relationship_id = e.stream_id
                          AND p.mentor_id = e.payload ->> 'mentor_id') AS round_holds_pair
          FROM events e
         WHERE e.event_type = ANY($1::text[])
           AND e.payload ->> (CASE e.event_type WHEN 'MatchProposed' THEN 'proposed_by'
                                                WHEN 'MatchDeclined' THEN 'declined_by'
                                                ELSE 'closed_by' END) = ANY($2::text[])
         ORDER BY e.stream_id, e.version
        """,
        sorted(ACTOR_FIELDS),
        sorted({DIRECTORY_ACTOR, MATCHING_ACTOR, ROUND_ACTOR}),
    )
    found = []
    for row in rows:
        why = why_forged(row["event_type"], row["actor"], row["command_id"], row["stream_id"], row["round_holds_pair"])
        if why is not None:
            found.append(ForgedCommand(row["stream_id"], row["version"], row["event_type"], row["actor"],
                                       row["command_id"], why))  # fmt: skip
    return found
