"""What callers are told, on a real Temporal server: refusal codes, honest idempotency,
strict payloads and starts that cannot wedge a workflow (contract version 2)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.directory import Directory
from activities.event_store import PostgresEventStore
from events.people import Programme
from mentorflow.config import Settings
from worker import build_worker
from workflows.relationship import RelationshipInput
from events.refusals import RefusalCode
from events.settings import ProgrammeRequest, ProgrammeSettings
from events.state import Phase, RelationshipState
from tests.support.helpers import cmd, failed_workflow_tasks, matched, new_worker, running_relationship, start_relationship
from workflows.relationship import Relationship


def refusal_of(error: WorkflowUpdateFailedError) -> ApplicationError:
    cause = error.cause
    assert isinstance(cause, ApplicationError), cause
    assert cause.non_retryable
    return cause


async def test_every_refusal_reaches_an_update_caller_as_a_non_retryable_code_with_details(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with running_relationship(time_skipping_env, pool) as handle:
        cases: list[tuple[str, dict[str, Any], RefusalCode]] = [
            ("sign_agreement", cmd("mentee-1", agreement_version=1), RefusalCode.WRONG_PHASE),
            ("propose_match", cmd("stranger-9", mentor_id="mentor-1"), RefusalCode.NOT_ALLOWED),
            ("accept_match", cmd("mentee-1"), RefusalCode.NOT_FOUND),
            ("propose_match", cmd("coord-1", mentor_id=5), RefusalCode.INVALID_PAYLOAD),
        ]
        for message, payload, code in cases:
            with pytest.raises(WorkflowUpdateFailedError) as failed:
                await handle.execute_update(message, payload)
            refusal = refusal_of(failed.value)
            assert refusal.type == code.value, (message, refusal.message)
            [details] = refusal.details
            assert details["code"] == code.value and details["reason"] == refusal.message
        assert details["problems"] == [{"field": "mentor_id", "message": "should be a valid string"}]
        assert await failed_workflow_tasks(handle) == 0


async def test_payloads_are_validated_exactly_as_their_schema_reads(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    env = time_skipping_env
    async with running_relationship(env, pool) as handle:
        await matched(handle)
        terms = {"objective": "Grow", "goals": [{"title": "Lead"}], "meeting_frequency": "monthly",
                 "meeting_minutes": 60, "term_months": 6}  # fmt: skip
        await handle.execute_update("propose_agreement", cmd("mentee-1", terms=terms))
        await handle.execute_update("sign_agreement", cmd("mentee-1", agreement_version=1))
        await handle.execute_update("sign_agreement", cmd("mentor-1", agreement_version=1))
        now = await env.get_current_time()
        loose = [
            ({"held_at": now.isoformat(), "duration_minutes": "60"}, "duration_minutes"),
            ({"held_at": int(now.timestamp() * 1000), "duration_minutes": 60}, "held_at"),
            ({"held_at": now.replace(tzinfo=None).isoformat(), "duration_minutes": 60}, "held_at"),
        ]
        for fields, field in loose:
            with pytest.raises(WorkflowUpdateFailedError) as failed:
                await handle.execute_update("record_meeting", cmd("mentee-1", **fields))
            refusal = refusal_of(failed.value)
            assert refusal.type == "invalid_payload" and [p["field"] for p in refusal.details[0]["problems"]] == [field]
        result = await handle.execute_update("record_meeting", cmd("mentee-1", held_at=now.isoformat(), duration_minutes=60))
        assert result["events"][0] == "MeetingHeld"


async def test_a_signal_is_refused_once_per_payload_and_a_corrected_resend_is_decided(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with running_relationship(time_skipping_env, pool) as handle:
        malformed = cmd("coord-1", command_id="hr-1", mentor_id=["not", "an", "id"])
        await handle.signal("propose_match", malformed)
        await handle.signal("propose_match", malformed)  # the same refused payload again
        await handle.signal("propose_match", {**malformed, "mentor_id": "mentor-1"})  # corrected, same id
        await handle.signal("accept_match", cmd("mentee-1", command_id="hr-1"))  # the id is now used up
        for _ in range(200):  # signals are decided once the relationship has read its programme
            state: RelationshipState = await handle.query(Relationship.state)
            if len(state.rejected_commands) >= 2:
                break
            await asyncio.sleep(0.05)
        rejected = [(r.command_id, r.command_name, r.code) for r in state.rejected_commands]
        assert rejected == [
            ("hr-1", "propose_match", RefusalCode.INVALID_PAYLOAD),
            ("hr-1", "accept_match", RefusalCode.COMMAND_ID_REUSED),
        ]
        assert state.candidate is not None and state.candidate.mentor_id == "mentor-1"
        assert state.applied_commands["hr-1"].message == "propose_match"
        store = PostgresEventStore(pool)
        for _ in range(100):  # signals are stored after the state shows them
            stored = await store.read_stream(state.relationship_id)
            if len(stored) >= state.version:
                break
            await asyncio.sleep(0.1)
        assert [e.type for e in stored].count("CommandRejected") == 2
        assert [e.code for e in stored if e.type == "CommandRejected"] == ["invalid_payload", "command_id_reused"]  # type: ignore[union-attr]


class ProgrammeGate:
    """A load_programme activity that answers when told, or fails as an unknown programme."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    @activity.defn(name="load_programme")
    async def load_programme(self, request: ProgrammeRequest) -> ProgrammeSettings:
        programme_id = request.programme_id
        if programme_id == "nope":
            raise ApplicationError(f"programme {programme_id!r} does not exist", type="UnknownProgramme", non_retryable=True)
        await self.release.wait()
        return ProgrammeSettings(coordinator_ids=("coord-1",))


async def test_the_state_query_answers_from_the_first_moment_and_bad_starts_fail_at_once(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env, gate = time_skipping_env, ProgrammeGate()
    task_queue = f"tq-{uuid.uuid4()}"
    async with Worker(env.client, task_queue=task_queue, workflows=[Relationship], activities=[gate.load_programme]):
        start = {"relationship_id": "r-1", "programme_id": "prog-1", "mentee_id": "emp-1"}
        handle = await env.client.start_workflow("Relationship", start, id="relationship/prog-1/r-1", task_queue=task_queue)
        state: RelationshipState = await handle.query(Relationship.state)
        assert (state.version, state.phase, state.mentee_id) == (0, Phase.MATCHING, "emp-1")
        await handle.terminate("the programme never answers in this test")

        bad_starts = [
            ({"relationship_id": "r-2", "programme": "prog-1", "mentee_id": "emp-1"}, "relationship/prog-1/r-2",
             "invalid_payload", "programme_id"),
            ({"relationship_id": "r-3", "programme_id": "prog-1", "mentee_id": "emp-1"}, "relationship/evil/r-3",
             "invalid_payload", "workflow_id"),
            ({"relationship_id": "r-4", "programme_id": "prog-1", "mentee_id": "emp-1"}, "r-4",
             "invalid_payload", "workflow_id"),
            ({"relationship_id": "r-5", "programme_id": "nope", "mentee_id": "emp-1"}, "relationship/nope/r-5",
             "not_found", "'nope' does not exist"),
        ]  # fmt: skip
        for start, workflow_id, code, named in bad_starts:
            bad = await env.client.start_workflow("Relationship", start, id=workflow_id, task_queue=task_queue)
            with pytest.raises(WorkflowFailureError) as failed:
                await asyncio.wait_for(bad.result(), timeout=30)
            cause = failed.value.cause
            assert isinstance(cause, ApplicationError) and cause.type == code, cause
            assert named in cause.message
            assert await failed_workflow_tasks(bad) == 0


async def test_a_replay_reports_the_first_application_after_the_relationship_moved_on(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with running_relationship(time_skipping_env, pool) as handle:
        propose = cmd("coord-1", mentor_id="mentor-1")
        first = await handle.execute_update("propose_match", propose, id="send-1")
        await handle.execute_update("accept_match", cmd("mentee-1"))
        await handle.execute_update("accept_match", cmd("mentor-1"))
        again = await handle.execute_update("propose_match", propose, id="send-2")
        assert (again["applied"], again["replay"]) == (False, True)
        assert (again["events"], again["version"], again["phase"]) == (first["events"], first["version"], "matching")


async def test_nobody_outside_can_act_as_the_system(time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool) -> None:
    """Issue #12: a stranger sent as matching-engine / matching-round proposed and declined on
    a mentor's behalf, and as directory closed a relationship of someone still employed."""
    env = time_skipping_env
    async with new_worker(env.client, pool) as worker:
        handle = await start_relationship(env.client, worker)
        await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
        forged = [
            ("propose_match", cmd("matching-engine", mentor_id="mentor-2")),
            ("decline_match", cmd("matching-round")),
            ("decline_match", cmd("matching-engine")),
            ("participant_left", cmd("directory", participant_id="mentee-1")),
            ("close_relationship", cmd("directory")),
        ]
        for message, payload in forged:
            with pytest.raises(WorkflowUpdateFailedError) as failed:
                await handle.execute_update(message, payload)
            assert refusal_of(failed.value).type == "not_allowed", message
            await handle.signal(message, payload)
        # A proposal as the round that no round of the programme made.
        fresh = await start_relationship(env.client, worker)
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await fresh.execute_update("propose_match", cmd("matching-round", mentor_id="mentor-9", score=0.9))
        assert refusal_of(failed.value).type == "not_allowed"

        for _ in range(200):  # the last signal may still be on its way
            state: RelationshipState = await handle.query(Relationship.state)
            if len(state.rejected_commands) >= len(forged):
                break
            await asyncio.sleep(0.05)
        assert state.phase is Phase.MATCHING and state.candidate is not None
        assert state.candidate.mentor_id == "mentor-1" and state.declined_mentor_ids == ()
        assert [r.code for r in state.rejected_commands] == [RefusalCode.NOT_ALLOWED] * len(forged)
        assert (await fresh.query(Relationship.state)).candidate is None


async def test_a_start_from_outside_cannot_choose_its_own_rules_or_state(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    """Issue #12: started with coordinator_ids ["evil-1"], evil-1 could act as coordinator."""
    env = time_skipping_env
    programme = f"prog-{uuid.uuid4().hex[:6]}"
    real = ProgrammeSettings(coordinator_ids=("coord-7",))
    await Directory(pool).create_or_update_programme(Programme(programme_id=programme, name="Real", settings=real))
    strict = Settings.from_env().model_copy(update={"trust_start_settings": False})
    async with build_worker(env.client, pool, f"tq-{uuid.uuid4()}", settings=strict) as worker:

        async def start(relationship_id: str, **fields: Any) -> WorkflowHandle[Any, Any]:
            relationship = RelationshipInput(relationship_id=relationship_id, programme_id=programme,
                                             mentee_id="emp-1", **fields)  # fmt: skip
            return await env.client.start_workflow(
                Relationship.run, relationship, id=f"relationship/{programme}/{relationship_id}", task_queue=worker.task_queue
            )

        forged = await start("r-forged", settings=ProgrammeSettings(coordinator_ids=("evil-1",)))
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(forged.result(), timeout=30)
        assert isinstance(failed.value.cause, ApplicationError) and failed.value.cause.type == "not_allowed"

        carried = await start("r-carried", pool_asked_for_attempt=3)
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(carried.result(), timeout=30)
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "invalid_payload"
        assert "pool_asked_for_attempt" in cause.message

        # The programme's own settings, given or not, start normally.
        for relationship_id, fields in (("r-given", {"settings": real}), ("r-plain", {})):
            handle = await start(relationship_id, **fields)
            result = await handle.execute_update("propose_match", cmd("coord-7", mentor_id="mentor-1"))
            assert result["applied"] is True
            with pytest.raises(WorkflowUpdateFailedError):
                await handle.execute_update("close_relationship", cmd("evil-1"))
            await handle.terminate("done")
