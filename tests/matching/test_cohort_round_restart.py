"""A cohort launch whose worker dies (issue #16): the worker running a matching round is
killed (SIGKILL) in the middle of proposing, and another is started. Nothing may be started
twice or lost: one relationship per pair, each proposed to exactly once, the round's result
counting every pair, its `progress` query answering before and after.

Real processes (tests/support/processes.py): a Temporal dev server and `mentorflow worker`s of their
own, and a real PostgreSQL. A gate in the database (tests/support/db_gate.py) holds the relationships'
appends once some batches are proposed, so the kill lands inside a batch whatever the
machine's speed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError

from activities.directory import Directory
from activities.matching import (
    ProfileStore,
    relationship_workflow_id,
    round_workflow_id,
)
from events.people import Programme
from events.settings import ProgrammeSettings
from mentorflow.start_options import round_start_options
from tests.support.db_gate import Gate, backends_waiting_for_a_lock
from tests.support.helpers import mentee_profile, mentor_profile
from tests.support.processes import TemporalServer, WorkerProcess
from tests.support.session import DATA_CONVERTER, TEST_KEYRING
from workflows.matching_round import (
    MatchingRound,
    MatchingRoundInput,
    MatchingRoundResult,
    RoundProgress,
)

PROGRAMME = "cohort-restart"
MENTEES, MENTORS, CAPACITY, BATCH = 24, 6, 4, 4
GATE_KEY = 7_160_001


@pytest.fixture
async def temporal(temporal_binary: str, tmp_path: Path) -> AsyncIterator[TemporalServer]:
    server = TemporalServer(temporal_binary, tmp_path)
    server.start()
    yield server
    server.stop()


async def progress_of(handle: object, *, timeout: float = 120) -> RoundProgress:
    """The round's `progress` query, asked again until it answers (a query waits for the
    workflow's task in flight, and after a kill for the dead worker's sticky queue to give
    up and the new worker to replay the round)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            answer: RoundProgress = await asyncio.wait_for(handle.query(MatchingRound.progress), 10)  # type: ignore[attr-defined]
            return answer
        except (TimeoutError, RPCError):
            assert loop.time() < deadline, f"the round's progress query went unanswered for {timeout:g} s"


async def test_a_round_whose_worker_is_killed_midway_proposes_every_pair_once(
    temporal: TemporalServer, pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    settings = ProgrammeSettings(coordinator_ids=("coord-1",))
    await Directory(pool).create_or_update_programme(Programme(programme_id=PROGRAMME, name="Restart", settings=settings))
    cohort = [mentor_profile(f"m-{j}", capacity=CAPACITY) for j in range(MENTORS)]
    cohort += [mentee_profile(f"e-{i}") for i in range(MENTEES)]
    await ProfileStore(pool).save_profiles(PROGRAMME, cohort)

    client = await temporal.client(DATA_CONVERTER)
    task_queue = f"restart-{uuid.uuid4().hex[:8]}"
    worker_settings = {
        "MENTORFLOW_DATABASE_URL": database_url,
        "MENTORFLOW_TEMPORAL_ADDRESS": temporal.address,
        "MENTORFLOW_TEMPORAL_NAMESPACE": temporal.namespace,
        "MENTORFLOW_TASK_QUEUE": task_queue,
        "MENTORFLOW_ENCRYPTION_KEYS": TEST_KEYRING.format(),
    }
    first = await WorkerProcess(worker_settings, tmp_path / "worker-1.log").started()
    second = WorkerProcess(worker_settings, tmp_path / "worker-2.log")
    gate_connection = await asyncpg.connect(database_url)
    gate = await Gate.install(gate_connection, "events", GATE_KEY)
    try:
        round_input = MatchingRoundInput(programme_id=PROGRAMME, round_id="launch", coordinator_id="coord-1", batch_size=BATCH)
        # Started as `round start` does (mentorflow/cli/rounds.py).
        handle = await client.start_workflow(
            MatchingRound.run, round_input, id=round_workflow_id(PROGRAMME, "launch"), task_queue=task_queue,
            **round_start_options(round_input, started_by="the mentorflow CLI"),
        )  # fmt: skip

        # Midway: two batches proposed, then the gate holds every append (the next batch's
        # relationships wait inside their transactions), and the worker is killed.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while (before := await progress_of(handle)).proposed < 2 * BATCH:
            assert loop.time() < deadline, f"the round did not get going: {before}"
            await asyncio.sleep(0.05)
        await gate.close()
        while not await backends_waiting_for_a_lock(pool):
            assert loop.time() < deadline, "no append reached the gate"
            await asyncio.sleep(0.05)
        before = await progress_of(handle)
        first.kill()
        await gate.remove()
        assert before.stage == "proposing" and before.solution is not None
        assert 0 < before.proposed < before.solution.matched == MENTEES

        # Another worker: the batch the dead one held is tried again (after the activity's
        # heartbeat timeout) and the round goes on to the end.
        await second.started()
        assert (await progress_of(handle)).stage in ("proposing", "done")
        result: MatchingRoundResult = await asyncio.wait_for(handle.result(), 240)
        assert (result.mentees, result.mentors, result.matched) == (MENTEES, MENTORS, MENTEES)
        assert result.proposed + result.already_proposed == MENTEES and result.not_proposed == 0
        assert (await progress_of(handle)).stage == "done"

        # Nothing started twice or lost: one relationship per pair, each with one proposal.
        pairs = await pool.fetch("SELECT mentee_id, relationship_id FROM matching_round_pairs WHERE round_id = 'launch'")
        assert len(pairs) == MENTEES and len({row["mentee_id"] for row in pairs}) == MENTEES
        expected = {relationship_workflow_id(PROGRAMME, row["relationship_id"]) for row in pairs}
        started = [w async for w in client.list_workflows("WorkflowType = 'Relationship'")]
        assert sorted(w.id for w in started) == sorted(expected)  # one run each: none started twice
        proposals = await pool.fetch(
            "SELECT stream_id, count(*) AS n FROM events WHERE event_type = 'MatchProposed' GROUP BY stream_id"
        )
        assert {row["stream_id"] for row in proposals} == {row["relationship_id"] for row in pairs}
        assert {row["n"] for row in proposals} == {1}
        assert await pool.fetchval("SELECT count(*) FROM mentor_slots WHERE programme_id = $1", PROGRAMME) == MENTEES
        # The batch the dead worker held was tried again, not failed.
        history = await handle.fetch_history()
        attempts = [
            e.activity_task_started_event_attributes.attempt
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        ]
        assert max(attempts) >= 2
        assert not any(e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED for e in history.events)
        for workflow_id in expected:
            relationship = await client.get_workflow_handle(workflow_id).fetch_history()
            assert not any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in relationship.events)
    finally:
        await gate.remove()
        await gate_connection.close()
        first.kill()
        second.kill()
