"""The ceilings `bench.load` measures ours against: workflows that receive the same messages
and do the least work that answers them, each a step closer to what a relationship must do.

- `LoadCeiling` counts what it receives: Temporal with no work in the workflow.
- `LoadCeilingUpserting` also sets one search attribute per message, as a relationship
  keeps `MeetingsHeld` and `NextDueAt` fresh (`--with-upserting-ceiling`; issue #16's
  ceiling).
- `LoadCeilingStoring` also stores every message in PostgreSQL through a local activity
  before it counts it, so an update is answered and a signal shows in the `count` query
  only once the message is durable, as a relationship answers only once its events are in
  the event store (`--with-storing-ceiling`). Its activity writes one row per message, the
  message's JSON with a unique (workflow, number): the least a durable record is, without
  anything of the event store's own (encryption, projections, notifications).

Served by `python -m bench.load --serve-ceiling` (`serve_ceiling`), a worker process of the
same kind as ours: same SDK, settings, converter and keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RawValue, SearchAttributeKey

from bench.stage import serve_ceiling_worker

# workflows.search_attributes.MEETINGS_HELD, spelt out: this module holds workflows and
# imports as little of the project as it can.
MEETINGS_HELD = SearchAttributeKey.for_int("MeetingsHeld")
# Where `LoadCeilingStoring` keeps its messages (in the bench's scratch database).
MESSAGES_TABLE = "bench_load_ceiling_messages"


@workflow.defn(name="LoadCeiling", sandboxed=False)
class LoadCeiling:
    """Accepts every signal and update by any name and counts them; never ends by itself."""

    def __init__(self) -> None:
        self.count = 0

    @workflow.run
    async def run(self, _input: Any) -> int:
        await workflow.wait_condition(lambda: False)
        return self.count

    @workflow.signal(dynamic=True)
    def any_signal(self, _name: str, _args: Sequence[RawValue]) -> None:
        self._received()

    @workflow.update(dynamic=True)
    def any_update(self, _name: str, _args: Sequence[RawValue]) -> int:
        self._received()
        return self.count

    @workflow.query(name="count")
    def count_query(self) -> int:
        return self.count

    def _received(self) -> None:
        self.count += 1


@workflow.defn(name="LoadCeilingUpserting", sandboxed=False)
class LoadCeilingUpserting(LoadCeiling):
    """The ceiling plus one search-attribute upsert (MeetingsHeld = the count) per message:
    what that one workflow command costs on this server (`--with-upserting-ceiling`)."""

    @workflow.run
    async def run(self, _input: Any) -> int:
        return await super().run(_input)

    def _received(self) -> None:
        super()._received()
        workflow.upsert_search_attributes([MEETINGS_HELD.value_set(self.count)])


@workflow.defn(name="LoadCeilingStoring", sandboxed=False)
class LoadCeilingStoring(LoadCeilingUpserting):
    """The upserting ceiling that stores each message (`store_message`, a local activity, as
    ours' appends) before counting it: messages are stored one at a time, in the order they
    arrived, and an update returns the count once its message is stored."""

    def __init__(self) -> None:
        super().__init__()
        self.received = 0

    @workflow.run
    async def run(self, _input: Any) -> int:
        return await super().run(_input)

    @workflow.signal(dynamic=True)
    async def any_signal(self, name: str, args: Sequence[RawValue]) -> None:
        await self._store(name, args)

    @workflow.update(dynamic=True)
    async def any_update(self, name: str, args: Sequence[RawValue]) -> int:
        await self._store(name, args)
        return self.count

    async def _store(self, name: str, args: Sequence[RawValue]) -> None:
        self.received += 1
        number = self.received
        # One message at a time, in order: wait for the ones before this to be stored.
        await workflow.wait_condition(lambda: self.count == number - 1)
        message = {"name": name, "payload": [workflow.payload_converter().from_payload(a.payload) for a in args]}
        await workflow.execute_local_activity(
            "store_message",
            {"workflow_id": workflow.info().workflow_id, "number": number, "message": message},
            start_to_close_timeout=timedelta(seconds=30),
        )
        self._received()


class MessageStore:
    """`store_message`: one row per message; a message stored twice is refused by the key."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @activity.defn(name="store_message")
    async def store_message(self, stored: dict[str, Any]) -> None:
        await self._pool.execute(
            f"INSERT INTO {MESSAGES_TABLE} (workflow_id, number, message) VALUES ($1, $2, $3::jsonb)"
            " ON CONFLICT (workflow_id, number) DO NOTHING",
            stored["workflow_id"],
            stored["number"],
            json.dumps(stored["message"]),
        )


async def serve_ceiling() -> None:
    """The ceilings' worker process; the storing one writes to MENTORFLOW_DATABASE_URL."""
    import asyncpg

    async with asyncpg.create_pool(os.environ["MENTORFLOW_DATABASE_URL"], min_size=1, max_size=10) as pool:
        await pool.execute(
            f"CREATE TABLE IF NOT EXISTS {MESSAGES_TABLE}"
            " (workflow_id text NOT NULL, number integer NOT NULL, message jsonb NOT NULL, PRIMARY KEY (workflow_id, number))"
        )
        await serve_ceiling_worker(
            [LoadCeiling, LoadCeilingUpserting, LoadCeilingStoring], [MessageStore(pool).store_message]
        )
