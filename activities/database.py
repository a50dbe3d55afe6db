"""The PostgreSQL connection pool shared by the activities, and the databases it opens."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from migrations import apply_migrations


async def create_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 10, session_state: bool = True
) -> asyncpg.Pool:
    """A pool of connections. `session_state=False` for a process that never sets session
    state (SET, LISTEN, session advisory locks, held cursors): a connection given back then
    skips asyncpg's reset query, a round trip on every use (a transaction left open is still
    rolled back)."""
    options: dict[str, Any] = {} if session_state else {"reset": _nothing_to_reset}
    pool = await asyncpg.create_pool(database_url, min_size=min_size, max_size=max_size, **options)
    assert pool is not None
    return pool


async def _nothing_to_reset(connection: asyncpg.Connection) -> None:
    """The reset of a pool whose connections carry no session state (see `create_pool`)."""


async def migrate(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as connection:
        return [f"{m.version:04d}_{m.name}" for m in await apply_migrations(connection)]


def with_database(url: str, database: str) -> str:
    """`url` with the database `database` (the same server, user and options)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@asynccontextmanager
async def scratch_database(admin_url: str, prefix: str) -> AsyncIterator[str]:
    """A new, empty database on the server of `admin_url` (an administrative URL), named
    PREFIX_ and random hex, and dropped afterwards (connections and all): for the tests and
    the benchmarks, each of which wants tables of its own."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(admin_url, name)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
