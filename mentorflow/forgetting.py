"""`mentorflow forget`: make a relationship's confidential text unreadable for good.

Deletes the relationship's data key (activities/data_keys.py) and keeps a tombstone row
saying when and on whose request: every note, concern, comment and reflection of that
relationship then reads as "[forgotten]", while everything else — ids, dates, scores,
counts, the phase history, the reports — stays as it was. Confidential text stored in plain
before migration 0007 is overwritten with "[forgotten]" in the same transaction: the one
case where a stored event is changed.

Only a relationship that has ended may be forgotten. A running one still holds its text in
its Temporal workflow (state, history) and would go on writing new text; close it first.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from activities.data_keys import ENCRYPTED, seal_payload
from events.model import CONFIDENTIAL_PATHS
from workflows.start_options import relationship_id_of

log = logging.getLogger("mentorflow.forget")

# Who asked: an operator or system id, like the actor ids of commands (never free text).
_REQUESTER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


class ForgetRefused(Exception):
    """The relationship cannot be forgotten (unknown, still running, bad requester id)."""


@dataclass(frozen=True)
class Forgotten:
    relationship_id: str
    programme_id: str | None
    forgotten_at: datetime
    forgotten_by: str
    # False when it had been forgotten before (nothing changed this time).
    now: bool
    events: int
    # Encrypted values that can no longer be read; events whose text had been stored in
    # plain (before migration 0007) and was overwritten.
    sealed_values: int
    scrubbed_events: int


StillRunning = Callable[[str, str], Awaitable[bool]]


async def forget_relationship(
    pool: asyncpg.Pool, reference: str, *, forgotten_by: str, still_running: StillRunning
) -> Forgotten:
    """Delete the relationship's data key. `still_running(programme_id, relationship_id)` is
    asked only when the event store does not show the relationship closed."""
    if not _REQUESTER.match(forgotten_by):
        raise ForgetRefused(f"--by must be an id (letters, digits, . _ : @ -), not {forgotten_by[:40]!r}")
    try:
        relationship_id = relationship_id_of(reference)
    except ValueError as error:
        raise ForgetRefused(str(error)) from None
    found = await pool.fetchrow(
        """SELECT count(*) AS events,
                  coalesce(bool_or(event_type = 'RelationshipClosed'), false) AS closed,
                  max(payload->>'programme_id') FILTER (WHERE event_type = 'RelationshipStarted') AS programme_id
             FROM events WHERE stream_id = $1""",
        relationship_id,
    )
    if found is None or found["events"] == 0:
        raise ForgetRefused(
            f"no relationship {relationship_id!r} in the event store "
            "(give its id, or its workflow id relationship/PROGRAMME/ID)"
        )
    programme_id: str | None = found["programme_id"]
    earlier = await pool.fetchrow("SELECT forgotten_at, forgotten_by FROM data_keys WHERE stream_id = $1", relationship_id)
    if earlier is not None and earlier["forgotten_at"] is not None:
        return Forgotten(relationship_id, programme_id, earlier["forgotten_at"], earlier["forgotten_by"], False,
                         found["events"], 0, 0)  # fmt: skip
    if not found["closed"] and await still_running(programme_id or "", relationship_id):
        raise ForgetRefused(
            f"relationship {relationship_id} is still running: its workflow holds the text too and would "
            "go on writing more; close it first (relationship send … close_relationship), then forget it"
        )
    async with pool.acquire() as connection, connection.transaction():
        forgotten_at: datetime = await connection.fetchval(
            """INSERT INTO data_keys (stream_id, forgotten_at, forgotten_by) VALUES ($1, now(), $2)
               ON CONFLICT (stream_id) DO UPDATE
                  SET wrapped_key = NULL, kek_id = NULL, forgotten_at = now(), forgotten_by = $2
               RETURNING forgotten_at""",
            relationship_id,
            forgotten_by,
        )
        sealed, scrubbed = await _scrub_plain_text(connection, relationship_id)
    log.info("relationship %s: data key deleted on request of %s", relationship_id, forgotten_by)
    return Forgotten(relationship_id, programme_id, forgotten_at, forgotten_by, True, found["events"], sealed, scrubbed)


async def _scrub_plain_text(connection: asyncpg.Connection, relationship_id: str) -> tuple[int, int]:
    """Count the encrypted values, and overwrite confidential text stored in plain."""
    rows = await connection.fetch(
        "SELECT position, version, event_type, payload FROM events WHERE stream_id = $1 AND event_type = ANY($2::text[])",
        relationship_id,
        list(CONFIDENTIAL_PATHS),
    )
    sealed = scrubbed = 0
    for row in rows:
        sealed += row["payload"].count(f'"{ENCRYPTED}"')
        payload = json.loads(row["payload"])
        before = json.dumps(payload, sort_keys=True)
        seal_payload(payload, CONFIDENTIAL_PATHS[row["event_type"]], relationship_id, row["version"], None)
        if json.dumps(payload, sort_keys=True) != before:
            scrubbed += 1
            await connection.execute("UPDATE events SET payload = $2::jsonb WHERE position = $1", row["position"], json.dumps(payload))
    return sealed, scrubbed
