"""A gate inside PostgreSQL transactions, for race and fault tests: a trigger the test adds
to one table makes every insert into it wait, inside its own transaction, for an advisory
lock the test holds. While the gate is closed the test can line racers up (each one either
waiting at the gate or waiting for a lock the product takes), then let them all go at once;
or find the backend waiting there (`waiting`) and kill its process.

Only the test's own database gets the trigger; product code has no hook.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

_FUNCTION = """
CREATE OR REPLACE FUNCTION test_race_gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Shared: granted at once unless the test holds the key (the gate is closed).
    PERFORM pg_advisory_xact_lock_shared(TG_ARGV[0]::bigint);
    IF TG_LEVEL = 'ROW' THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END $$;
"""


class Gate:
    """Every insert into `table` waits at the gate while it is closed (see the module)."""

    def __init__(self, connection: asyncpg.Connection, table: str, key: int):
        self._connection, self.table, self.key = connection, table, key

    @classmethod
    async def install(cls, connection: asyncpg.Connection, table: str, key: int) -> Gate:
        """`connection` stays the test's: it holds the lock while the gate is closed."""
        await connection.execute(_FUNCTION)
        await connection.execute(
            f"CREATE TRIGGER test_race_gate_{key} BEFORE INSERT ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION test_race_gate('{key}')"
        )
        return cls(connection, table, key)

    async def close(self) -> None:
        await self._connection.execute("SELECT pg_advisory_lock($1)", self.key)

    async def open(self) -> None:
        await self._connection.execute("SELECT pg_advisory_unlock($1)", self.key)

    async def remove(self) -> None:
        await self._connection.execute("SELECT pg_advisory_unlock_all()")
        await self._connection.execute(f"DROP TRIGGER IF EXISTS test_race_gate_{self.key} ON {self.table}")

    async def waiting(self) -> list[int]:
        """The backends (process ids) waiting at the gate."""
        rows = await self._connection.fetch(
            """SELECT pid FROM pg_locks
                WHERE locktype = 'advisory' AND NOT granted
                  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND ((classid::bigint << 32) | objid::bigint) = $1""",
            self.key,
        )
        return [row["pid"] for row in rows]

    async def backend_alive(self, pid: int) -> bool:
        return bool(await self._connection.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid))


async def backends_waiting_for_a_lock(connection: asyncpg.Connection | asyncpg.Pool) -> set[int]:
    """The sessions of this database that wait for a lock (row, transaction or advisory)."""
    rows = await connection.fetch(
        """SELECT pid FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"""
    )
    return {row["pid"] for row in rows}


async def line_up(
    connection: asyncpg.Connection | asyncpg.Pool,
    racers: Sequence[asyncio.Future[Any]],
    *,
    timeout: float = 60,
) -> int:
    """Wait until every racer has either finished or is waiting for a lock in PostgreSQL
    (at a closed gate, or behind another racer); returns how many wait. A condition, not a
    time: on a slow machine it only takes longer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        running = sum(1 for racer in racers if not racer.done())
        waiting = len(await backends_waiting_for_a_lock(connection))
        if waiting >= running:
            # Checked twice, a moment apart: a racer between two statements is not waiting.
            await asyncio.sleep(0.05)
            running = sum(1 for racer in racers if not racer.done())
            if len(await backends_waiting_for_a_lock(connection)) >= running:
                return running
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {running} racers still running, {waiting} waiting for a lock")
        await asyncio.sleep(0.01)


async def until(probe: Callable[[], Awaitable[Any]], what: str, *, timeout: float = 60, poll: float = 0.02) -> Any:
    """Poll the async `probe` until it is truthy and return that; fail naming `what`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (found := await probe()):
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(poll)
    return found
