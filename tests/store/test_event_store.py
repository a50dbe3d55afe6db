"""The PostgreSQL event store: concurrency, idempotent retries, the follower race, the fold."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from activities.event_store import PostgresEventStore
from events.commands import AcceptMatch, ProposeMatch
from events.decider import decide, fold, start_relationship
from events.model import AnyEvent
from events.store import event_payload
from events.settings import ProgrammeSettings
from events.store import ConcurrencyConflict
from migrations import apply_migrations
from tests.support.db_gate import line_up, until
from tests.support.owners import owner

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def started(stream_id: str) -> list[AnyEvent]:
    return start_relationship(stream_id, "prog-1", "mentee-1", ProgrammeSettings(), NOW)


def proposal(stream_id: str, command_id: str = "c1") -> list[AnyEvent]:
    state = fold(started(stream_id))
    assert state is not None
    events = decide(state, ProposeMatch(command_id=command_id, actor_id="coord-1", mentor_id="mentor-1"), NOW)
    assert isinstance(events, list)
    return events


async def test_append_then_read_back_folds_to_the_same_state(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool)
    history = started("rel-1") + proposal("rel-1")
    state = fold(history)
    assert state is not None
    more = decide(state, AcceptMatch(command_id="c2", actor_id="mentee-1"), NOW + timedelta(hours=1))
    assert isinstance(more, list)
    history += more

    await store.append("rel-1", 0, history[:1], owner=owner("rel-1"))
    await store.append("rel-1", 1, history[1:], owner=owner("rel-1"))

    read = await store.read_stream("rel-1")
    assert read == history
    assert fold(read) == fold(history)
    assert [e.version for e in await store.read_stream("rel-1", after_version=1)] == [2, 3]


async def test_fifty_concurrent_writers_with_the_same_expected_version_one_wins(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool)
    await store.append("rel-1", 0, started("rel-1"), owner=owner("rel-1"))

    async def write(n: int) -> str:
        try:
            await store.append("rel-1", 1, proposal("rel-1", command_id=f"writer-{n}"), owner=owner("rel-1"))
            return "won"
        except ConcurrencyConflict as conflict:
            assert conflict.actual_version == 2 and conflict.expected_version == 1
            return "conflict"

    outcomes = await asyncio.gather(*(write(n) for n in range(50)))
    assert outcomes.count("won") == 1
    assert outcomes.count("conflict") == 49
    assert [e.version for e in await store.read_stream("rel-1")] == [1, 2]


async def test_retrying_an_append_that_succeeded_writes_nothing_twice(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool)
    first = await store.append("rel-1", 0, started("rel-1"), owner=owner("rel-1"))
    events = proposal("rel-1")
    positions = await store.append("rel-1", 1, events, owner=owner("rel-1"))
    assert await store.append("rel-1", 1, events, owner=owner("rel-1")) == positions
    assert await store.append("rel-1", 0, started("rel-1"), owner=owner("rel-1")) == first
    assert len(await store.read_stream("rel-1")) == 2
    # The same versions with other event ids are a real conflict.
    with pytest.raises(ConcurrencyConflict):
        await store.append("rel-1", 1, proposal("rel-1", command_id="another"), owner=owner("rel-1"))


async def test_the_same_ids_with_other_content_are_a_conflict_not_a_repeat(pool: asyncpg.Pool) -> None:
    """A workflow task run again later decides the same event ids with another time: the
    store must say so, so that the workflow adopts what is stored instead of diverging."""
    store = PostgresEventStore(pool)
    await store.append("rel-1", 0, started("rel-1"), owner=owner("rel-1"))
    await store.append("rel-1", 1, proposal("rel-1"), owner=owner("rel-1"))
    later = [e.model_copy(update={"occurred_at": e.occurred_at + timedelta(milliseconds=30)}) for e in proposal("rel-1")]
    with pytest.raises(ConcurrencyConflict):
        await store.append("rel-1", 1, later, owner=owner("rel-1"))


async def test_an_append_that_would_leave_a_gap_is_a_conflict(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool)
    events = proposal("rel-1")
    with pytest.raises(ConcurrencyConflict) as raised:
        await store.append("rel-1", 1, events, owner=owner("rel-1"))
    assert raised.value.actual_version == 0


async def test_events_must_be_numbered_after_the_expected_version(pool: asyncpg.Pool) -> None:
    with pytest.raises(ValueError, match="expected rel-1@2"):
        await PostgresEventStore(pool).append("rel-1", 1, started("rel-1"), owner=owner("rel-1"))


async def test_a_follower_never_skips_an_event_whose_transaction_commits_late(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """Transaction A takes position 1 and stays open; B takes position 2 and commits.
    The follower must not see B until A has committed, or it would move past A for good."""
    store = PostgresEventStore(pool)
    a = await asyncpg.connect(database_url)
    b = await asyncpg.connect(database_url)
    try:
        late = a.transaction()
        await late.start()
        append = "SELECT append_events($1, 0, $2, $3, $4, $5, $6, $7::jsonb[], $8, $9)"
        for connection, stream in ((a, "rel-a"), (b, "rel-b")):
            event = started(stream)[0]
            await connection.fetchval(
                append,
                stream,
                [event.event_id],
                [event.type],
                [event.schema_version],
                [event.occurred_at],
                [None],
                [json.dumps(event_payload(event))],
                owner(stream).programme_id,
                owner(stream).workflow_id,
            )
        # A (position 1) is still open, B (position 2) has committed.
        assert await store.read_all(after_position=0) == []
        await late.commit()
        # Once no older transaction runs anywhere on the server (another test's may, on a
        # shared PostgreSQL), both appear.
        seen = await until(lambda: store.read_all(after_position=0), "both events visible to the follower")
        assert [(s.position, s.event.stream_id) for s in seen] == [(1, "rel-a"), (2, "rel-b")]
    finally:
        await a.close()
        await b.close()


# A row trigger the concurrent-writers test adds: an append of a stream whose key the test
# holds waits at its insert, inside its transaction, after it has taken its positions.
HOLD_STREAMS_SQL = """
CREATE FUNCTION test_hold_stream() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7140001, hashtext(NEW.stream_id));
    RETURN NEW;
END $$;
CREATE TRIGGER test_hold_stream BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION test_hold_stream();
"""


async def test_follower_reads_every_event_once_under_concurrent_writers(pool: asyncpg.Pool) -> None:
    """A follower polls all along while (1) twelve writers take their positions one after
    the other and then commit in the reverse order, the follower polling after each commit
    (a follower that trusted positions alone would see the last one first and skip the
    eleven others: forced, not hoped for), and (2) forty writers append twice, free-running."""
    store = PostgresEventStore(pool)
    held = [f"held-{n}" for n in range(12)]
    streams = [f"rel-{n}" for n in range(40)]
    done = asyncio.Event()
    seen: list[int] = []
    polls = 0
    deadline = float("inf")

    async def follow() -> None:
        nonlocal polls
        position, loop = 0, asyncio.get_running_loop()
        while True:
            finished = done.is_set()
            batch = await store.read_all(after_position=position, limit=7)
            polls += 1
            seen.extend(s.position for s in batch)
            if batch:
                position = batch[-1].position
                continue
            # Done once past the last position written (a follower that skipped is past it
            # too); another test's transaction on a shared server may hold events back a while.
            if finished and (position >= await pool.fetchval("SELECT max(position) FROM events") or loop.time() > deadline):
                return
            await asyncio.sleep(0.001)

    async def polled_twice() -> None:
        start = polls
        await until(lambda: _true(polls >= start + 2), "two polls of the follower")

    async with pool.acquire() as connection:
        await connection.execute(HOLD_STREAMS_SQL)
        for stream in held:
            await connection.execute("SELECT pg_advisory_lock(7140001, hashtext($1))", stream)
        follower = asyncio.create_task(follow())
        writers: list[asyncio.Future[list[int]]] = []
        try:
            for stream in held:  # positions in this order: each waits, holding its own, before the next
                writers.append(asyncio.ensure_future(store.append(stream, 0, started(stream), owner=owner(stream))))
                assert await line_up(connection, writers) == len(writers)
            for stream, writer in reversed(list(zip(held, writers, strict=True))):
                await connection.execute("SELECT pg_advisory_unlock(7140001, hashtext($1))", stream)
                await writer
                await polled_twice()
        finally:
            await connection.execute("SELECT pg_advisory_unlock_all()")
        positions = sorted(p for writer in writers for p in writer.result())
        assert positions == list(range(positions[0], positions[0] + len(held)))
        await asyncio.gather(*(store.append(s, 0, started(s), owner=owner(s)) for s in streams))
        await asyncio.gather(*(store.append(s, 1, proposal(s), owner=owner(s)) for s in streams))
        deadline = asyncio.get_running_loop().time() + 60
        done.set()
        await follower
    assert len(seen) == 92 and len(set(seen)) == 92 and seen == sorted(seen), f"the follower saw {len(seen)} of 92"


async def _true(value: bool) -> bool:
    return value


async def test_migrations_run_once_when_two_processes_start_together(database_url: str) -> None:
    first, second = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        applied = await asyncio.gather(apply_migrations(first), apply_migrations(second))
        assert sorted(len(a) for a in applied) == [0, len(applied[0]) + len(applied[1])]
        assert await first.fetchval("SELECT count(*) FROM schema_migrations") == len(applied[0]) + len(applied[1])
        assert await apply_migrations(first) == []
    finally:
        await first.close()
        await second.close()
