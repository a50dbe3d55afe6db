"""The event store on PostgreSQL (asyncpg), and the activity the workflow appends through.

Confidential text in payloads is encrypted with the relationship's own data key
(activities/data_keys.py); reads decrypt it, or return "[forgotten]" once the key is deleted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.data_keys import ENCRYPTED, FORGOTTEN, SEALED, DataKeys, StreamCipher, has_text, open_payload, seal_payload
from events.model import CONFIDENTIAL_PATHS, AnyEvent, RelationshipStarted
from events.store import event_payload, event_payload_json, load_event
from events.store import (
    STREAM_OWNED_BY_ANOTHER,
    AppendRequest,
    ConcurrencyConflict,
    ReadStreamRequest,
    StoredEvent,
    StreamOwnedByAnother,
    StreamOwner,
)
from mentorflow.keyring import Keyring

log = logging.getLogger("mentorflow.event_store")

_CONFLICT = "MF409"
# The stream belongs to another relationship workflow (migrations/0008_stream_owners.sql).
_OWNED_BY_ANOTHER = "MF403"
# Each event with its stream's wrapped data key (NULL when it has none, or it was forgotten).
_FROM = "events e LEFT JOIN data_keys k ON k.stream_id = e.stream_id"
_COLUMNS = (
    "e.position, e.stream_id, e.version, e.event_id, e.event_type, e.schema_version, e.occurred_at, "
    "e.command_id, e.payload, k.wrapped_key, k.kek_id, k.forgotten_at"
)


class PostgresEventStore:
    """Implements `events.store.EventStore`; see migrations/0001_event_store.sql for the design."""

    def __init__(self, pool: asyncpg.Pool, keyring: Keyring | None = None):
        """Without a keyring, confidential text cannot be appended and reads as "[encrypted]"."""
        self._pool = pool
        self._keys = DataKeys(pool, keyring)

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[AnyEvent], *, owner: StreamOwner
    ) -> list[int]:
        if not events:
            return []
        for offset, event in enumerate(events, start=1):
            if event.stream_id != stream_id or event.version != expected_version + offset:
                raise ValueError(
                    f"event {event.event_id} is {event.stream_id}@{event.version}, "
                    f"expected {stream_id}@{expected_version + offset}"
                )
            # The owner's programme is the relationship's: a stream's recorded owner and its
            # RelationshipStarted always agree (what `mentorflow audit streams` checks).
            if isinstance(event, RelationshipStarted) and event.programme_id != owner.programme_id:
                raise ValueError(
                    f"event {event.event_id} starts {stream_id} in programme {event.programme_id}, "
                    f"not in the appender's {owner.programme_id}"
                )
        arguments = (
            stream_id,
            expected_version,
            [event.event_id for event in events],
            [event.type for event in events],
            [event.schema_version for event in events],
            [event.occurred_at for event in events],
            [event.command_id for event in events],
            await self._payloads(stream_id, events, owner),
            owner.programme_id,
            owner.workflow_id,
        )
        query = "SELECT append_events($1, $2, $3, $4, $5, $6, $7, $8::jsonb[], $9, $10)"
        # A unique violation means a concurrent writer got in between our version check
        # and our insert; the second call then reports either the retry or the conflict.
        for attempt in range(2):
            try:
                positions: list[int] = await self._pool.fetchval(query, *arguments)
                return positions
            except asyncpg.UniqueViolationError:
                if attempt == 1:
                    raise
            except asyncpg.PostgresError as error:
                if error.sqlstate == _CONFLICT:
                    actual = int(getattr(error, "detail", None) or -1)
                    raise ConcurrencyConflict(stream_id, expected_version, actual) from None
                _raise_if_owned_by_another(error, stream_id, owner)
                raise
        raise AssertionError("unreachable")

    async def check_owner(self, stream_id: str, owner: StreamOwner) -> None:
        """`StreamOwnedByAnother` unless `owner` may read and append to the stream."""
        try:
            await self._pool.fetchval("SELECT assert_stream_owner($1, $2, $3)", stream_id, owner.programme_id, owner.workflow_id)
        except asyncpg.PostgresError as error:
            _raise_if_owned_by_another(error, stream_id, owner)
            raise

    async def _payloads(self, stream_id: str, events: Sequence[AnyEvent], owner: StreamOwner) -> list[str]:
        """Each event's payload JSON, its confidential text encrypted (the same text at the
        same place always encrypts the same: a retried append must compare equal)."""
        payloads: list[str] = []
        cipher: StreamCipher | None = None
        have_cipher = False
        for event in events:
            paths = CONFIDENTIAL_PATHS.get(event.type)
            if not paths or not has_text(event, paths):
                payloads.append(event_payload_json(event))
                continue
            if not have_cipher:
                # A refused append must not leave a data key behind: the owner is checked
                # before one is made (the append checks again, in its own transaction).
                cipher = await self._keys.for_append(stream_id, before_creating=lambda: self.check_owner(stream_id, owner))
                have_cipher = True
            payload = event_payload(event)
            seal_payload(payload, paths, stream_id, event.version, cipher)
            payloads.append(json.dumps(payload, separators=(",", ":")))
        return payloads

    async def read_stream(
        self, stream_id: str, after_version: int = 0, *, owner: StreamOwner | None = None
    ) -> list[AnyEvent]:
        """With `owner` (a read for a workflow): refused unless the stream is that owner's.
        Without: an operator's or a test's read, unchecked."""
        query = f"SELECT {_COLUMNS} FROM {_FROM} WHERE e.stream_id = $1 AND e.version > $2 ORDER BY e.version"
        if owner is None:
            rows = await self._pool.fetch(query, stream_id, after_version)
        else:
            # Owners are never changed once recorded: the check, then the read.
            async with self._pool.acquire() as connection:
                try:
                    await connection.fetchval(
                        "SELECT assert_stream_owner($1, $2, $3)", stream_id, owner.programme_id, owner.workflow_id
                    )
                except asyncpg.PostgresError as error:
                    _raise_if_owned_by_another(error, stream_id, owner)
                    raise
                rows = await connection.fetch(query, stream_id, after_version)
        return [self.event_from_row(row) for row in rows]

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        rows = await self._pool.fetch(
            f"""SELECT {_COLUMNS} FROM {_FROM}
                 WHERE e.position > $1 AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY e.position LIMIT $2""",
            after_position,
            limit,
        )
        return [StoredEvent(position=row["position"], event=self.event_from_row(row)) for row in rows]

    def event_from_row(self, row: asyncpg.Record) -> AnyEvent:
        """An event from a row of `SELECT {_COLUMNS} FROM {_FROM}`, confidential text decrypted."""
        text: str = row["payload"]
        payload = json.loads(text)
        if f'"{ENCRYPTED}"' in text:
            forgotten = row["forgotten_at"] is not None
            cipher = None
            if not forgotten and self._keys.keyring is not None:
                cipher = self._keys.from_row(row["stream_id"], row["wrapped_key"], row["kek_id"])
            unreadable = FORGOTTEN if forgotten else SEALED
            open_payload(payload, row["stream_id"], row["version"], cipher, unreadable)
        return _event(row, payload)


def _raise_if_owned_by_another(error: asyncpg.PostgresError, stream_id: str, owner: StreamOwner) -> None:
    if error.sqlstate == _OWNED_BY_ANOTHER:
        raise StreamOwnedByAnother(stream_id, owner, getattr(error, "detail", None) or "") from None


def _event(row: asyncpg.Record, payload: dict[str, Any]) -> AnyEvent:
    occurred_at: datetime = row["occurred_at"]
    return load_event(
        {
            **payload,
            "type": row["event_type"],
            "schema_version": row["schema_version"],
            "stream_id": row["stream_id"],
            "version": row["version"],
            "event_id": str(row["event_id"]),
            "occurred_at": occurred_at,
            "command_id": row["command_id"],
        }
    )


class EventStoreActivities:
    """Activities over an injected store; registered as bound methods on the worker."""

    def __init__(self, store: PostgresEventStore):
        self._store = store

    @activity.defn(name="append_events")
    async def append_events(self, request: AppendRequest) -> list[int]:
        try:
            return await self._store.append(
                request.stream_id, request.expected_version, request.events, owner=request.owner
            )
        except ConcurrencyConflict as conflict:
            # Retrying cannot help: the workflow's view of its own stream is wrong.
            raise ApplicationError(str(conflict), type="ConcurrencyConflict", non_retryable=True) from None
        except StreamOwnedByAnother as refused:
            raise _refusal(refused, "append to") from None
        except ValueError as error:
            raise ApplicationError(str(error), type="InvalidAppend", non_retryable=True) from None

    @activity.defn(name="read_stream")
    async def read_stream(self, request: ReadStreamRequest) -> list[AnyEvent]:
        try:
            return await self._store.read_stream(request.stream_id, request.after_version, owner=request.owner)
        except StreamOwnedByAnother as refused:
            raise _refusal(refused, "read") from None


def _refusal(refused: StreamOwnedByAnother, action: str) -> ApplicationError:
    """Logged for the operator with the stream's owner; the workflow is told only that it was
    refused (the owner's programme and workflow id are not its business)."""
    log.error(
        "REFUSED: %s tried to %s stream %s, which is not its own (owner: %s); security issue #12: "
        "a workflow started under another programme or workflow id for an existing relationship",
        refused.refused,
        action,
        refused.stream_id,
        refused.owner or "another workflow",
    )
    return ApplicationError(str(refused), type=STREAM_OWNED_BY_ANOTHER, non_retryable=True)
