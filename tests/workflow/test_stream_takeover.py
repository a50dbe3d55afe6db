"""Security issue #12 end to end: a Relationship workflow started as
`relationship/OTHER-PROGRAMME/<an existing relationship's id>` must not take that
relationship's event stream over. Before the fix its first append conflicted, it adopted
the stream's events into its own history ("adopting N stored events") and went on writing
to the stream; now the store refuses it and the workflow fails at once."""

from __future__ import annotations

import logging
import uuid

import asyncpg
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.event_store import PostgresEventStore
from events.settings import ProgrammeSettings
from events.store import STREAM_OWNED_BY_ANOTHER
from tests.support.helpers import new_worker, start_relationship
from workflows.relationship import Relationship, RelationshipInput


async def test_a_relationship_started_under_another_programme_cannot_take_a_stream_over(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    env = time_skipping_env
    caplog.set_level(logging.ERROR, logger="mentorflow.event_store")
    async with new_worker(env.client, pool) as worker:
        victim = await start_relationship(env.client, worker)
        await victim.execute_update(
            "propose_match", {"command_id": f"c-{uuid.uuid4().hex[:8]}", "actor_id": "coord-1", "mentor_id": "mentor-1"}
        )
        relationship_id = victim.id.rpartition("/")[2]
        stored = await PostgresEventStore(pool).read_stream(relationship_id)
        assert len(stored) >= 2

        intruder_input = RelationshipInput(
            relationship_id=relationship_id,
            programme_id="evilprog",
            mentee_id="mentee-x",
            settings=ProgrammeSettings(coordinator_ids=("evil-coord",)),
        )
        intruder = await env.client.start_workflow(
            Relationship.run, intruder_input, id=f"relationship/evilprog/{relationship_id}", task_queue=worker.task_queue
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await intruder.result()
        cause = failed.value.cause
        while cause is not None and not (isinstance(cause, ApplicationError) and cause.type == STREAM_OWNED_BY_ANOTHER):
            cause = cause.cause
        assert cause is not None, failed.value

        # Nothing was adopted or written; the victim's relationship goes on as before.
        assert await PostgresEventStore(pool).read_stream(relationship_id) == stored
        history = await intruder.fetch_history()
        assert not any(
            e.HasField("marker_recorded_event_attributes") and b"read_stream" in e.SerializeToString() for e in history.events
        ), "the intruder ran read_stream: it adopted the stream"
        assert any("REFUSED" in r.getMessage() and f"relationship/evilprog/{relationship_id}" in r.getMessage()
                   for r in caplog.records)  # fmt: skip
        assert (await victim.describe()).status == WorkflowExecutionStatus.RUNNING
