"""Where the time of an append goes: the ceiling, our store, and variants of `append_events`.

    python -m bench.append_variants --mode sequential   # CPU per append, one connection
    python -m bench.append_variants --mode concurrent   # wall time with --writers, + CPU totals

This is the investigation behind bench/README.md, not the benchmark (`bench.event_store`).
Every variant writes that benchmark's workload into a fresh database. "sequential" appends
over one connection and reads the CPU time of that connection's server process, which is
steady even on a busy machine; "concurrent" runs the writers as the benchmark does and
reports wall time plus the CPU seconds of this process and of all server processes (psutil:
the server must run on this machine). The `fn:` variants are prototypes of the SQL
function written here as templates; the `unsafe` ones break the follower guarantee and
are measured only to price what they leave out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]
from pydantic import TypeAdapter

from activities.database import create_pool, migrate
from activities.event_store import PostgresEventStore
from bench.event_store import (
    CEILING_INSERT,
    CEILING_SCHEMA,
    FOLLOWER_BATCH,
    FOLLOWER_POLL_SECONDS,
    Append,
    CpuMeter,
    FollowerReport,
    bench_owner,
    ceiling_arguments,
    count_appends,
    event_count,
    fresh_database,
    generate_workload,
    postgres_server,
    prepare_measurement,
    timed_writers,
)
from events.model import AnyEvent
from events.store import StoredEvent
from mentorflow.keyring import Keyring
from migrations import apply_migrations, available_migrations

EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)

# --------------------------------------------------------------------------- function variants

_FUNCTION = """
CREATE FUNCTION append_variant(
    p_stream_id text, p_expected_version bigint, p_event_ids uuid[], p_event_types text[],
    p_schema_versions integer[], p_occurred_at timestamptz[], p_command_ids text[], p_payloads jsonb[]
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    n               integer := cardinality(p_event_ids);
    current_version bigint;
    positions       bigint[];
BEGIN
{check}
{allocate}
{insert}
    RETURN positions;
END;
$$;
"""

_CHECK = """
    SELECT coalesce(max(version), 0) INTO current_version FROM events WHERE stream_id = p_stream_id;
    IF current_version <> p_expected_version THEN
        RAISE EXCEPTION 'conflict' USING ERRCODE = 'MF409', DETAIL = current_version::text;
    END IF;
"""

# How the positions are taken: as in migrations/0001 (one SQL statement) or by a plpgsql
# loop whose `nextval` assignments are simple expressions (no executor start-up).
_POSITIONS = {
    "select": """SELECT array_agg(nextval('event_position') ORDER BY i) INTO positions
          FROM generate_series(1, n) AS i;""",
    "loop": """FOR i IN 1..n LOOP
            positions[i] := nextval('event_position');
        END LOOP;""",
}

# Around them: as in migrations/0001 (session lock, and a subtransaction to release it on
# error); the lock without the subtransaction; or no lock (followers may then skip events).
_LOCKING = {
    "lock+subxact": """
    PERFORM pg_advisory_lock(7120250001);
    BEGIN
        PERFORM pg_current_xact_id();
        {positions}
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        PERFORM pg_advisory_unlock(7120250001);
        RAISE;
    END;
    PERFORM pg_advisory_unlock(7120250001);
""",
    "lock": """
    PERFORM pg_advisory_lock(7120250001);
    PERFORM pg_current_xact_id();
    {positions}
    PERFORM pg_advisory_unlock(7120250001);
""",
    "nolock": """
    PERFORM pg_current_xact_id();
    {positions}
""",
}

_INSERT = {
    # As in migrations/0001: generate_series and one array subscript per column and row.
    "subscripts": """
    INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                        occurred_at, command_id, payload)
    SELECT positions[i], p_stream_id, p_expected_version + i, p_event_ids[i], p_event_types[i],
           p_schema_versions[i], p_occurred_at[i], p_command_ids[i], p_payloads[i]
      FROM generate_series(1, n) AS i;
""",
    # The arrays zipped by one multi-argument unnest.
    "unnest": """
    INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                        occurred_at, command_id, payload)
    SELECT u.position, p_stream_id, p_expected_version + u.i, u.event_id, u.event_type,
           u.schema_version, u.occurred_at, u.command_id, u.payload
      FROM unnest(positions, p_event_ids, p_event_types, p_schema_versions, p_occurred_at,
                  p_command_ids, p_payloads)
           WITH ORDINALITY AS u(position, event_id, event_type, schema_version, occurred_at,
                                command_id, payload, i);
""",
}


def variant_function(*, check: bool = True, locking: str = "lock+subxact", positions: str = "select", insert: str = "subscripts") -> str:
    """`append_variant`: the happy path of `append_events` with the named parts swapped."""
    allocate = _LOCKING[locking].format(positions=_POSITIONS[positions])
    return _FUNCTION.format(check=_CHECK if check else "", allocate=allocate, insert=_INSERT[insert])


# --------------------------------------------------------------------------- writers

Write = Callable[[Append], Awaitable[Any]]
Setup = Callable[[asyncpg.Pool | asyncpg.Connection], Awaitable[Write]]


async def ceiling_setup(executor: asyncpg.Pool | asyncpg.Connection) -> Write:
    await executor.execute(CEILING_SCHEMA)

    async def write(append: Append) -> None:
        await executor.execute(CEILING_INSERT, *ceiling_arguments(append))

    return write


async def _migrate(executor: asyncpg.Pool | asyncpg.Connection) -> None:
    if isinstance(executor, asyncpg.Pool):
        await migrate(executor)
    else:
        await apply_migrations(executor)


async def adapter_setup(executor: asyncpg.Pool | asyncpg.Connection) -> Write:
    """`PostgresEventStore.append` itself, pydantic serialization included."""
    await _migrate(executor)
    # A Connection has fetchval too; meeting notes are encrypted, as in production.
    store = PostgresEventStore(executor, Keyring.generate("bench"))

    async def write(append: Append) -> None:
        await store.append(append.stream_id, append.expected_version, append.events, owner=bench_owner(append.stream_id))

    return write


def function_arguments(append: Append) -> tuple[Any, ...]:
    rows = append.rows
    return (
        append.stream_id,
        append.expected_version,
        [row.event_id for row in rows],
        [row.event_type for row in rows],
        [row.schema_version for row in rows],
        [row.occurred_at for row in rows],
        [row.command_id for row in rows],
        [row.payload for row in rows],
    )


def function_setup(function_sql: str | None) -> Setup:
    """Calls `append_events` (or `append_variant`) with the pre-serialized rows: no pydantic.
    The production `append_events` takes the stream's owner too (migration 0008)."""
    if function_sql:
        query = "SELECT append_variant($1, $2, $3, $4, $5, $6, $7, $8::jsonb[])"
    else:
        query = "SELECT append_events($1, $2, $3, $4, $5, $6, $7, $8::jsonb[], $9, $10)"

    def arguments(append: Append) -> tuple[Any, ...]:
        if function_sql:
            return function_arguments(append)
        owner = bench_owner(append.stream_id)
        return (*function_arguments(append), owner.programme_id, owner.workflow_id)

    async def setup(executor: asyncpg.Pool | asyncpg.Connection) -> Write:
        await _migrate(executor)
        if function_sql:
            await executor.execute(function_sql)

        async def write(append: Append) -> None:
            await executor.fetchval(query, *arguments(append))

        return write

    return setup


# --------------------------------------------------------------------------- followers

Follower = Callable[[asyncpg.Pool, int, asyncio.Event], Coroutine[Any, Any, FollowerReport]]


async def adapter_follower(pool: asyncpg.Pool, after: int, done: asyncio.Event) -> FollowerReport:
    return await _follow(PostgresEventStore(pool).read_all, after, done, lambda stored: stored.position)


async def raw_follower(pool: asyncpg.Pool, after: int, done: asyncio.Event) -> FollowerReport:
    """The query of `read_all`, without building pydantic events from the rows."""

    async def read(after_position: int, limit: int) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await pool.fetch(
            """SELECT position, stream_id, version, event_id, event_type, schema_version, occurred_at,
                      command_id, payload FROM events
                WHERE position > $1 AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
                ORDER BY position LIMIT $2""",
            after_position,
            limit,
        )
        return rows

    return await _follow(read, after, done, lambda row: row["position"])


async def json_follower(pool: asyncpg.Pool, after: int, done: asyncio.Event) -> FollowerReport:
    """Prototype of a cheaper `read_all`: the server joins envelope and payload into one JSON
    document and pydantic validates that text directly (no json.loads, no dict building).
    Events with an upcaster would still need the dict path; this workload has none."""

    async def read(after_position: int, limit: int) -> list[StoredEvent]:
        rows = await pool.fetch(
            """SELECT position,
                      (payload || jsonb_build_object('type', event_type, 'schema_version', schema_version,
                                 'stream_id', stream_id, 'version', version, 'event_id', event_id,
                                 'occurred_at', occurred_at, 'command_id', command_id))::text AS document
                 FROM events
                WHERE position > $1 AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
                ORDER BY position LIMIT $2""",
            after_position,
            limit,
        )
        return [
            StoredEvent.model_construct(position=row["position"], event=EVENT_ADAPTER.validate_json(row["document"]))
            for row in rows
        ]

    return await _follow(read, after, done, lambda stored: stored.position)


async def _follow(
    read: Callable[[int, int], Awaitable[Sequence[Any]]], after: int, done: asyncio.Event, position: Callable[[Any], int]
) -> FollowerReport:
    report = FollowerReport(last=after)
    while True:
        finished = done.is_set()
        batch = await read(report.last, FOLLOWER_BATCH)
        report.reads += 1
        for item in batch:
            report.saw(position(item))
        if finished and not batch:
            return report
        if len(batch) < FOLLOWER_BATCH:
            await asyncio.sleep(FOLLOWER_POLL_SECONDS)


# --------------------------------------------------------------------------- the proposal


def proposed_append_events() -> str:
    """migrations/0001's `append_events` (conflict and retry paths included) with two changes:
    positions taken by a plpgsql loop, and the INSERT zipping the arrays with unnest."""
    migration = next(m for m in available_migrations() if m.version == 1).sql
    function = migration[migration.index("CREATE FUNCTION append_events") :]
    for old, new in [(_POSITIONS["select"], _POSITIONS["loop"]), (_INSERT["subscripts"].strip(), _INSERT["unnest"].strip())]:
        if old not in function:
            raise RuntimeError(f"migrations/0001 no longer contains the statement this prototype replaces: {old}")
        function = function.replace(old, new)
    return function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


_ENVELOPE = {"stream_id", "version", "event_id", "occurred_at", "command_id", "schema_version", "type"}


class ProposedEventStore(PostgresEventStore):
    """Prototype of the adapter change: payload JSON from pydantic's encoder (`model_dump_json`)
    instead of `json.dumps(model_dump(mode="json"))`. The happy path only: no retry, no conflict."""

    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection):
        super().__init__(pool)
        self._executor = pool

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[AnyEvent], *, owner: object = None
    ) -> list[int]:
        # The prototype predates stream owners (0008): it replaces the 8-argument function,
        # which refuses since 0008, with 0001's body, and checks no owner.
        positions: list[int] = await self._executor.fetchval(
            "SELECT append_events($1, $2, $3, $4, $5, $6, $7, $8::jsonb[])",
            stream_id,
            expected_version,
            [event.event_id for event in events],
            [event.type for event in events],
            [event.schema_version for event in events],
            [event.occurred_at for event in events],
            [event.command_id for event in events],
            [event.model_dump_json(exclude=_ENVELOPE) for event in events],
        )
        return positions


async def proposed_setup(executor: asyncpg.Pool | asyncpg.Connection) -> Write:
    await _migrate(executor)
    await executor.execute(proposed_append_events())
    store = ProposedEventStore(executor)

    async def write(append: Append) -> None:
        await store.append(append.stream_id, append.expected_version, append.events)

    return write


async def proposed_sql_setup(executor: asyncpg.Pool | asyncpg.Connection) -> Write:
    """The proposed function called with the pre-serialized rows, like "ours: SQL call"."""
    await _migrate(executor)
    await executor.execute(proposed_append_events())
    query = "SELECT append_events($1, $2, $3, $4, $5, $6, $7, $8::jsonb[])"

    async def write(append: Append) -> None:
        await executor.fetchval(query, *function_arguments(append))

    return write


# --------------------------------------------------------------------------- variants

VARIANTS: dict[str, tuple[Setup, Follower | None]] = {
    "ceiling": (ceiling_setup, None),
    "ours: adapter + follower": (adapter_setup, adapter_follower),
    "ours: adapter + raw follower": (adapter_setup, raw_follower),
    "ours: adapter": (adapter_setup, None),
    "ours: SQL call": (function_setup(None), None),
    "fn: as 0001": (function_setup(variant_function()), None),
    "fn: INSERT via unnest": (function_setup(variant_function(insert="unnest")), None),
    "fn: positions by loop": (function_setup(variant_function(positions="loop")), None),
    "fn: loop + unnest": (function_setup(variant_function(positions="loop", insert="unnest")), None),
    "fn: loop + unnest, no subxact": (function_setup(variant_function(positions="loop", insert="unnest", locking="lock")), None),
    "fn: loop + unnest, no lock (unsafe)": (function_setup(variant_function(positions="loop", insert="unnest", locking="nolock")), None),
    "fn: loop + unnest, no check (unsafe)": (function_setup(variant_function(positions="loop", insert="unnest", check=False)), None),
    "proposed: SQL call": (proposed_sql_setup, None),
    "proposed: adapter": (proposed_setup, None),
    "proposed: adapter + follower": (proposed_setup, adapter_follower),
    "proposed: adapter + JSON follower": (proposed_setup, json_follower),
}


# --------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    name: str
    appends: int
    seconds: float
    client_cpu: float
    server_cpu: float
    skipped: int | None = None

    def per_append_us(self, seconds: float) -> float:
        return seconds / self.appends * 1e6

    def as_json(self) -> dict[str, Any]:
        return {
            "appends_per_s": round(self.appends / self.seconds, 1),
            "client_cpu_us_per_append": round(self.per_append_us(self.client_cpu)),
            "server_cpu_us_per_append": round(self.per_append_us(self.server_cpu)),
            "skipped_by_follower": self.skipped,
        }

    def describe(self) -> str:
        line = (
            f"{self.name:>38}: {self.appends / self.seconds:6,.0f} appends/s | CPU per append: "
            f"client {self.per_append_us(self.client_cpu):4.0f} µs, server {self.per_append_us(self.server_cpu):4.0f} µs"
        )
        return line + ("" if self.skipped is None else f" | skipped {self.skipped}")


async def concurrent(name: str, url: str, workload: list[list[Append]], warmup: list[list[Append]]) -> Measurement:
    setup, follower = VARIANTS[name]
    pool = await create_pool(url, min_size=len(workload) + 1, max_size=len(workload) + 1)
    try:
        write = await setup(pool)
        await timed_writers(warmup, write)
        meter = await prepare_measurement(url, local=True)
        start: int = await pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
        done = asyncio.Event()
        meter.start()
        task = asyncio.create_task(follower(pool, start, done)) if follower else None
        try:
            seconds = await timed_writers(workload, write)
        finally:
            done.set()
        skipped = (await task).skipped(event_count(workload)) if task else None
        cpu = meter.elapsed()
    finally:
        await pool.close()
    return Measurement(name, count_appends(workload), seconds, cpu.client, cpu.server or 0.0, skipped)


async def sequential(name: str, url: str, workload: list[list[Append]], warmup: list[list[Append]]) -> Measurement:
    setup, _ = VARIANTS[name]
    connection = await asyncpg.connect(url)
    try:
        write = await setup(connection)
        for append in [append for appends in warmup for append in appends]:
            await write(append)
        meter = CpuMeter([psutil.Process(await connection.fetchval("SELECT pg_backend_pid()"))])
        appends = [append for appends in workload for append in appends]
        meter.start()
        started = time.perf_counter()
        for append in appends:
            await write(append)
        seconds = time.perf_counter() - started
        cpu = meter.elapsed()
    finally:
        await connection.close()
    return Measurement(name, len(appends), seconds, cpu.client, cpu.server or 0.0)


async def main() -> None:
    parser = argparse.ArgumentParser(description="Variants of the append path, with CPU accounting.")
    parser.add_argument("--mode", choices=["sequential", "concurrent"], default="sequential")
    parser.add_argument("--appends", type=int, default=4000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), help="variants to run (default: all)")
    options = parser.parse_args()
    workload = generate_workload(options.appends, options.writers, options.seed, "bench")
    warmup = generate_workload(options.warmup, options.writers, options.seed + 1, "warmup")
    names = options.only or [name for name, (_, follower) in VARIANTS.items() if options.mode == "concurrent" or not follower]
    measure = concurrent if options.mode == "concurrent" else sequential
    runs: dict[str, list[Measurement]] = {name: [] for name in names}
    async with postgres_server() as server:
        if not server.local:
            raise SystemExit("append_variants reads the server's CPU time: run it against the embedded server")
        for _ in range(options.rounds):
            for name in names:
                async with fresh_database(server.admin_url, "variant") as url:
                    runs[name].append(await measure(name, url, workload, warmup))
                print(runs[name][-1].describe(), flush=True)
    summaries = {name: summarise(found) for name, found in runs.items()}
    print(f"over {options.rounds} rounds ({options.mode}): median wall time, least CPU time")
    for measurement in summaries.values():
        print(measurement.describe())
    print(json.dumps({"mode": options.mode, "rounds": options.rounds} | {name: m.as_json() for name, m in summaries.items()}))


def summarise(found: list[Measurement]) -> Measurement:
    """The median wall time, and the least CPU time: other load on the machine only ever adds CPU
    time to a run (cache misses, preemption), so the minimum is the steadiest estimate of the cost."""
    skipped = [m.skipped for m in found if m.skipped is not None]
    return Measurement(
        found[0].name,
        found[0].appends,
        sorted(m.seconds for m in found)[len(found) // 2],
        min(m.client_cpu for m in found),
        min(m.server_cpu for m in found),
        max(skipped) if skipped else None,
    )


if __name__ == "__main__":
    asyncio.run(main())
