"""A relationship that continued as new is listed once, as its latest run, by the API's
and the CLI's list (`visibility_query`), closed relationships included: the runs it
continued from stay in visibility (the Web UI shows them) but are not relationships."""

from __future__ import annotations

import asyncio

import asyncpg
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from mentorflow.operations import list_relationships, visibility_query
from tests.support.helpers import activate, cmd, start_relationship
from worker import build_worker


async def test_a_relationship_that_continued_as_new_is_listed_once(dev_env: WorkflowEnvironment, pool: asyncpg.Pool) -> None:
    client = dev_env.client
    async with build_worker(client, pool, "listing-runs") as worker:
        handle = await start_relationship(client, worker, programme_id="listing-runs", history_event_limit=100)
        first_run = (await handle.describe()).run_id
        await activate(handle)
        for week in range(14):  # past the limit: a second after the last, a new run
            await handle.execute_update("share_resource", cmd("mentor-1", title=f"Reading {week}"))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:  # visibility is eventually consistent
            runs = [w async for w in client.list_workflows(f"WorkflowId = '{handle.id}'")]
            statuses = sorted(str(w.status.name) for w in runs if w.status is not None)
            if statuses == ["CONTINUED_AS_NEW", "RUNNING"]:
                break
            assert loop.time() < deadline, f"no continue-as-new in visibility: {statuses}"
            await asyncio.sleep(0.5)

        for include_closed in (False, True):
            query = visibility_query(programme="listing-runs", include_closed=include_closed)
            rows = await list_relationships(client, query, limit=100)
            assert [(row.workflow_id, row.run_id != first_run) for row in rows] == [(handle.id, True)], query
        old = [w for w in runs if w.status is WorkflowExecutionStatus.CONTINUED_AS_NEW]
        assert [w.run_id for w in old] == [first_run]
