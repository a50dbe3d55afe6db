"""`mentorflow reencrypt` (one-off): encrypt text that was stored in plain under an older classification.

Security issue #12 reclassified free text as confidential: the agreement's objective,
goals (titles, measures, milestone titles), not-private list and early-exit plan, match
explanations, whom someone was introduced to, and shared resources (title, URL). Events
stored before carry that text in plain JSON, readable in the `events` table, its WAL and
backups, and not reached by `mentorflow forget`'s key deletion. This is the single
sanctioned exception to "stored events are never rewritten":

- Only values at today's confidential places (`events.model.CONFIDENTIAL_PATHS`) that are
  still plain, non-empty strings are changed; every other byte of the payload, every other
  column and every value already in `{"$enc": …}` form stays as it is.
- A value becomes exactly what an append writes today (the relationship's data key,
  associated data stream ␟ version ␟ path, the derived nonce): a workflow retrying an append
  of such an event is still recognised as a retry, and readers see the same text as before.
- A relationship that was forgotten has no key any more: its plain values are overwritten
  with "[forgotten]", as `forget` itself does for text stored before migration 0007.
- One transaction per relationship, with its `data_keys` row locked (created if it has none
  yet), so a concurrent `forget` either comes first (and the text is overwritten) or waits.
- Idempotent: a second run finds nothing to do; `dry_run` only counts.

Run it after every worker runs the new classification (a worker still on the old one
would go on appending plain text); when in doubt run it again. It does not reach copies
outside the `events` rows: PostgreSQL's dead row versions until VACUUM, its WAL and
archives, backups, Temporal's histories (encrypted with `MENTORFLOW_ENCRYPTION_KEYS`) and
the matching round's own records (docs/confidentiality.md, "Text stored in plain before
issue #12").
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from activities.data_keys import FORGOTTEN, DataKeyError, DataKeys, StreamCipher, locations, seal_payload
from events.model import CONFIDENTIAL_PATHS
from events.store import UPCASTERS
from events.sensitivity import FieldPath
from mentorflow.keyring import Keyring

log = logging.getLogger("mentorflow.reencrypt")


@dataclass(frozen=True)
class Reencrypted:
    """What a run found and did (counts only: never any text)."""

    # Relationships with plain text at a confidential place, and of those the ones rewritten.
    streams: int = 0
    # Events rewritten; values encrypted; values overwritten with "[forgotten]" (forgotten relationships).
    events: int = 0
    encrypted_values: int = 0
    forgotten_values: int = 0
    # Events stored under an older schema version that an upcaster lifts: their stored shape
    # may not be today's, so they are left alone (none exist while UPCASTERS is empty).
    older_shapes: int = 0
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plain_values(payload: dict[str, Any], paths: tuple[FieldPath, ...], *, forgotten: bool) -> int:
    """How many non-empty texts sit in plain at the confidential places of a stored payload
    (in a forgotten relationship, "[forgotten]" is what `forget` left there, not text)."""
    return sum(
        1
        for path in paths
        for container, key, _ in locations(payload, path)
        if isinstance(value := container[key], str) and value and not (forgotten and value == FORGOTTEN)
    )


async def reencrypt_plain_text(
    pool: asyncpg.Pool, keyring: Keyring | None, *, stream_id: str | None = None, dry_run: bool = False
) -> Reencrypted:
    """Encrypt every confidential value still stored in plain, one relationship (stream) per
    transaction; only `stream_id` when given. Without a keyring it refuses (`DataKeyError`
    naming MENTORFLOW_ENCRYPTION_KEYS), unless `dry_run`."""
    if keyring is None and not dry_run:
        raise DataKeyError("re-encrypting needs MENTORFLOW_ENCRYPTION_KEYS (the keys that wrap the data keys)")
    keys = DataKeys(pool, keyring)
    types = list(CONFIDENTIAL_PATHS)
    if stream_id is not None:
        streams = [stream_id]
    else:
        query = "SELECT DISTINCT stream_id FROM events WHERE event_type = ANY($1::text[]) ORDER BY 1"
        streams = [row[0] for row in await pool.fetch(query, types)]
    total = Reencrypted(dry_run=dry_run)
    for stream in streams:
        found = await _plain_in(pool, stream, types)
        if not found.streams and not found.older_shapes:
            continue
        if dry_run or not found.streams:
            total = _add(total, found, dry_run=dry_run)
            continue
        async with pool.acquire() as connection, connection.transaction():
            # The key row first (then the events), the order `forget` takes them in.
            cipher = await keys.for_rewrite(connection, stream)
            done = await _rewrite(connection, stream, types, cipher)
        log.info(
            "relationship %s: %d confidential values stored in plain %s in %d events",
            stream,
            done.encrypted_values + done.forgotten_values,
            "encrypted" if cipher is not None else f"overwritten with {FORGOTTEN} (forgotten)",
            done.events,
        )
        total = _add(total, done, dry_run=dry_run)
    return total


def _add(total: Reencrypted, more: Reencrypted, *, dry_run: bool) -> Reencrypted:
    return Reencrypted(
        streams=total.streams + more.streams,
        events=total.events + more.events,
        encrypted_values=total.encrypted_values + more.encrypted_values,
        forgotten_values=total.forgotten_values + more.forgotten_values,
        older_shapes=total.older_shapes + more.older_shapes,
        dry_run=dry_run,
    )


_ROWS = """SELECT e.position, e.version, e.event_type, e.schema_version, e.payload::text AS payload, k.forgotten_at
             FROM events e LEFT JOIN data_keys k ON k.stream_id = e.stream_id
            WHERE e.stream_id = $1 AND e.event_type = ANY($2::text[]) ORDER BY e.version"""


async def _plain_in(pool: asyncpg.Pool, stream_id: str, types: list[str]) -> Reencrypted:
    """What a rewrite of the stream would do (read only, no lock)."""
    events = values = forgotten = older = 0
    for row in await pool.fetch(_ROWS, stream_id, types):
        if (row["event_type"], row["schema_version"]) in UPCASTERS:
            older += 1
            continue
        gone = row["forgotten_at"] is not None
        count = plain_values(json.loads(row["payload"]), CONFIDENTIAL_PATHS[row["event_type"]], forgotten=gone)
        if count:
            events += 1
            if gone:
                forgotten += count
            else:
                values += count
    return Reencrypted(streams=1 if events else 0, events=events, encrypted_values=values,
                       forgotten_values=forgotten, older_shapes=older)  # fmt: skip


async def _rewrite(connection: asyncpg.Connection, stream_id: str, types: list[str], cipher: StreamCipher | None) -> Reencrypted:
    """Seal the plain values of one stream, inside the caller's transaction (key row locked)."""
    events = values = older = 0
    for row in await connection.fetch(_ROWS, stream_id, types):
        if (row["event_type"], row["schema_version"]) in UPCASTERS:
            older += 1
            continue
        paths = CONFIDENTIAL_PATHS[row["event_type"]]
        payload = json.loads(row["payload"])
        count = plain_values(payload, paths, forgotten=cipher is None)
        if not count:
            continue
        seal_payload(payload, paths, stream_id, row["version"], cipher)
        await connection.execute(
            "UPDATE events SET payload = $2::jsonb WHERE position = $1", row["position"], json.dumps(payload)
        )
        events += 1
        values += count
    forgotten = cipher is None
    return Reencrypted(streams=1 if events else 0, events=events, encrypted_values=0 if forgotten else values,
                       forgotten_values=values if forgotten else 0, older_shapes=older)  # fmt: skip
