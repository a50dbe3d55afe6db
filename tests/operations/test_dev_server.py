"""On the real dev server: a relationship survives a server restart on its persistence file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from activities.event_store import PostgresEventStore
from events.state import Phase
from events.decider import fold
from tests.support.session import TEST_KEYRING, dev_server
from tests.support.helpers import AGREEMENT, cmd, failed_workflow_tasks, new_worker, reflect, start_relationship, state_of
from workflows.relationship import Relationship


async def test_a_relationship_survives_a_server_restart_and_finishes(
    temporal_binary: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    database_file = tmp_path / "temporal.db"
    env = await dev_server(temporal_binary, database_file)
    try:
        async with new_worker(env.client, pool) as worker:
            task_queue = worker.task_queue
            handle = await start_relationship(env.client, worker)
            await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
            await handle.execute_update("accept_match", cmd("mentee-1"))
            await handle.execute_update("accept_match", cmd("mentor-1"))
        # Accepted while no worker runs: it must survive the restart.
        await handle.signal("propose_agreement", cmd("mentor-1", terms=AGREEMENT))
    finally:
        await env.shutdown()

    env = await dev_server(temporal_binary, database_file)
    try:
        restarted = env.client.get_workflow_handle_for(Relationship.run, handle.id)
        async with new_worker(env.client, pool, task_queue=task_queue):
            await restarted.execute_update("sign_agreement", cmd("mentee-1", agreement_version=1))
            result = await restarted.execute_update("sign_agreement", cmd("mentor-1", agreement_version=1))
            assert result["phase"] == "active"
            now = (await state_of(restarted)).activated_at
            assert now is not None
            await restarted.execute_update(
                "record_meeting", cmd("mentee-1", held_at=now.isoformat(), duration_minutes=60)
            )
            await restarted.execute_update("close_relationship", cmd("mentee-1"))
            await reflect(restarted)
            summary = await restarted.result()
            assert summary.closure_reason == "closed_by_mentee" and summary.meetings_held == 1

            state = await state_of(restarted)
            assert state.phase is Phase.CLOSED
            assert fold(await PostgresEventStore(pool, TEST_KEYRING).read_stream(state.relationship_id)) == state
            assert await failed_workflow_tasks(restarted) == 0

            query = f"MentoringPhase = 'closed' AND MenteeId = 'mentee-1' AND WorkflowId = '{handle.id}'"
            listed: list[str] = []
            for _ in range(50):  # visibility is updated asynchronously
                listed = [w.id async for w in env.client.list_workflows(query)]
                if listed:
                    break
                await asyncio.sleep(0.1)
            assert listed == [handle.id]
    finally:
        await env.shutdown()
