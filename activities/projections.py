"""The projection follower: keeps the read models of events/projections.py up to date.

- **In order, never skipping.** Events are read with `PostgresEventStore.read_all`, which
  only returns events below the store's frontier (migrations/0001_event_store.sql): once
  the follower has seen position p, no transaction holding a smaller position can still
  commit. So the checkpoint (the last position applied) is a safe place to resume.
- **Exactly once.** A batch's rows and the checkpoint change in one transaction: a crash
  halfway through a batch leaves neither, and the next run starts from the same place.
- **One at a time.** Each batch first takes a transaction-level advisory lock and reads the
  checkpoints under it. Every worker runs a follower (so one dying changes nothing), but
  only the one holding the lock applies a batch; the others find it taken and wait for
  their next poll. `projections rebuild` takes the same lock, batch by batch.
- **Rebuildable.** `reset` empties a projection's table and sets its checkpoint to 0; the
  next batches replay it from the first event with the same pure fold, so a rebuild
  gives the rows that following gave.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from activities.event_store import PostgresEventStore
from events.model import AnyEvent
from events.projections import PROJECTIONS, PROJECTIONS_BY_NAME, Key, Projection, project

log = logging.getLogger("mentorflow.projections")

# Held by whoever applies a batch (or resets a projection); released at commit.
_LOCK_KEY = 7120250006

DEFAULT_BATCH_SIZE = 500
DEFAULT_POLL_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0


class UnknownProjection(ValueError):
    pass


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    table: str
    position: int
    head: int

    @property
    def behind(self) -> int:
        return max(self.head - self.position, 0)


def projections_named(names: Iterable[str] | None) -> tuple[Projection[Any], ...]:
    if names is None:
        return PROJECTIONS
    chosen = []
    for name in names:
        if name not in PROJECTIONS_BY_NAME:
            raise UnknownProjection(f"unknown projection {name!r}; the projections are {', '.join(PROJECTIONS_BY_NAME)}")
        chosen.append(PROJECTIONS_BY_NAME[name])
    return tuple(chosen)


class ProjectionFollower:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        projections: Sequence[Projection[Any]] = PROJECTIONS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        store: PostgresEventStore | None = None,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        for projection in projections:
            # Rows are loaded by relationship: every table's key starts with it.
            assert projection.key_columns[0] == "relationship_id", projection.name
        self._pool = pool
        self._projections = tuple(projections)
        self._batch_size = batch_size
        # Without the keyring on purpose: projections read no confidential text, so the
        # follower neither needs nor decrypts it (it reads as "[encrypted]").
        self._store = store or PostgresEventStore(pool)

    # -- one batch -------------------------------------------------------------------------

    async def step(self, *, wait: bool = False) -> int | None:
        """Apply the next batch; returns how many events were read (0: caught up), or None
        when another follower holds the lock (only when `wait` is False)."""
        async with self._pool.acquire() as connection, connection.transaction():
            if wait:
                await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            elif not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK_KEY):
                return None
            checkpoints = await self._checkpoints(connection)
            batch = await self._store.read_all(min(checkpoints.values()), self._batch_size)
            if not batch:
                return 0
            for projection in self._projections:
                after = checkpoints[projection.name]
                events = [stored.event for stored in batch if stored.position > after]
                if events:
                    await self._apply(connection, projection, events)
            await connection.execute(
                """UPDATE projection_checkpoints SET position = greatest(position, $2), updated_at = now()
                    WHERE projection = ANY($1::text[])""",
                [projection.name for projection in self._projections],
                batch[-1].position,
            )
            return len(batch)

    async def _checkpoints(self, connection: asyncpg.Connection) -> dict[str, int]:
        names = [projection.name for projection in self._projections]
        query = "SELECT projection, position FROM projection_checkpoints WHERE projection = ANY($1::text[])"
        found = {row["projection"]: row["position"] for row in await connection.fetch(query, names)}
        missing = [name for name in names if name not in found]
        if missing:
            await connection.execute(
                "INSERT INTO projection_checkpoints (projection) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                missing,
            )
            found.update({name: 0 for name in missing})
        return found

    async def _apply(self, connection: asyncpg.Connection, projection: Projection[Any], events: list[AnyEvent]) -> None:
        touched = sorted({key[0] for event in events if (key := projection.row_key(event)) is not None})
        if not touched:
            return
        columns = projection.columns
        records = await connection.fetch(
            f"SELECT {', '.join(columns)} FROM {projection.table} WHERE relationship_id = ANY($1::text[])",
            touched,
        )
        stored: dict[Key, Any] = {}
        for record in records:
            row = projection.row_type.model_validate(dict(record))
            stored[projection.key_of(row)] = row
        changed = project(projection, stored, events)
        if not changed:
            return
        placeholders = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        updates = ", ".join(f"{column} = EXCLUDED.{column}" for column in columns if column not in projection.key_columns)
        await connection.executemany(
            f"""INSERT INTO {projection.table} ({', '.join(columns)}) VALUES ({placeholders})
                ON CONFLICT ({', '.join(projection.key_columns)}) DO UPDATE SET {updates}""",
            [tuple(row.model_dump().values()) for row in changed.values()],
        )

    # -- running -----------------------------------------------------------------------------

    async def catch_up(self, on_progress: Callable[[int], None] | None = None) -> int:
        """Apply batches until there is nothing left (waiting for the lock when another
        follower has it); returns the number of events read. `on_progress` gets the
        lowest checkpoint after each batch."""
        total = 0
        while read := await self.step(wait=True):
            total += read
            if on_progress is not None:
                on_progress(min(status.position for status in await self.status()))
        return total

    async def follow(self, poll_seconds: float = DEFAULT_POLL_SECONDS) -> None:
        """Follow the store until cancelled. Errors are logged and retried with backoff, so
        that a database restart or a bug in one event never stops the worker."""
        backoff = poll_seconds
        while True:
            try:
                read = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("projection follower failed; retrying in %.0f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = poll_seconds
            if read is None or read < self._batch_size:
                await asyncio.sleep(poll_seconds)

    # -- rebuilding and status ---------------------------------------------------------------

    async def reset(self) -> None:
        """Empty this follower's projections and set their checkpoints to 0."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            await self._checkpoints(connection)
            for projection in self._projections:
                await connection.execute(f"TRUNCATE {projection.table}")
            await connection.execute(
                "UPDATE projection_checkpoints SET position = 0, updated_at = now() WHERE projection = ANY($1::text[])",
                [projection.name for projection in self._projections],
            )

    async def rebuild(self, on_progress: Callable[[int], None] | None = None) -> int:
        await self.reset()
        return await self.catch_up(on_progress)

    async def status(self) -> list[ProjectionStatus]:
        async with self._pool.acquire() as connection:
            head = await head_position(connection)
            rows = await connection.fetch(
                "SELECT projection, position FROM projection_checkpoints WHERE projection = ANY($1::text[])",
                [projection.name for projection in self._projections],
            )
        positions = {row["projection"]: row["position"] for row in rows}
        return [
            ProjectionStatus(projection.name, projection.table, positions.get(projection.name, 0), head)
            for projection in self._projections
        ]


async def head_position(connection: asyncpg.Connection | asyncpg.Pool) -> int:
    """The highest position in the store (a follower reaches it once those writers commit)."""
    head: int = await connection.fetchval("SELECT coalesce(max(position), 0) FROM events")
    return head
