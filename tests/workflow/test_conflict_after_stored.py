"""A conflict with the store is resolved from the state the store holds.

Once everything a run decided is stored, the run keeps one state object as both its own and
the store's (`Outbox._flush`, issue #16: a second, equal copy per cached run cost memory).
These tests put events in the store behind the run's back, as the local activity of a
workflow task that was never completed does, and check that the run's next append
conflicts, adopts exactly those events on top of the state it had stored, and decides the
pending command again: had the shared object been the run's newer state, folding the
adopted events onto it would fail the workflow task (their versions would not follow).

An update whose command is decided again answers from what the store then holds: the
version its events landed at (those of the lost task, if it had applied the command), or the
refusal if the adopted events made it impossible — and only once that is stored. A matching
round's proposal, whose claim was checked when its update came, is decided again as checked:
never refused for its actor as a signal naming the round would be."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.event_store import PostgresEventStore
from events.commands import (
    ROUND_ACTOR,
    CloseRelationship,
    Command,
    ProposeAgreement,
    ProposeMatch,
    RaiseConcern,
    RecordIntroduction,
    read_command,
)
from events.decider import decide, fold
from events.model import AnyEvent
from events.refusals import Rejection
from events.state import Phase
from events.store import StreamOwner
from mentorflow.replay import replay_histories
from pairing.rounds import round_command_id
from tests.support.helpers import (
    AGREEMENT,
    activate,
    close,
    cmd,
    failed_workflow_tasks,
    matched,
    reflect,
    running_relationship,
    state_of,
)
from tests.support.session import TEST_KEYRING
from workflows.patches import ANSWER_FROM_THE_STORE
from workflows.relationship import Relationship


async def _store_behind_the_runs_back(
    env: WorkflowEnvironment, pool: asyncpg.Pool, workflow_id: str, model: type[Command], payload: dict[str, Any]
) -> int:
    """Decide the command `payload` on the stored state and append its events as the run's
    stream owner would; the store's version afterwards."""
    command = read_command(model, payload)
    assert not isinstance(command, Rejection), command
    stored = await _stored(pool, workflow_id)
    state = fold(stored)
    assert state is not None
    events = decide(state, command, await env.get_current_time())
    assert not isinstance(events, Rejection) and events, events
    owner = StreamOwner(programme_id=state.programme_id, workflow_id=workflow_id)
    await PostgresEventStore(pool, TEST_KEYRING).append(state.relationship_id, len(stored), events, owner=owner)
    return len(stored) + len(events)


async def _introductions_behind_the_runs_back(
    env: WorkflowEnvironment, pool: asyncpg.Pool, workflow_id: str, *by: str
) -> tuple[list[str], int]:
    """An introduction recorded by each of `by`, stored behind the run's back: their command
    ids, and the store's version afterwards."""
    command_ids, version = [], 0
    for person in by:
        payload = cmd(person, introduced_to=f"a colleague of {person}")
        version = await _store_behind_the_runs_back(env, pool, workflow_id, RecordIntroduction, payload)
        command_ids.append(payload["command_id"])
    return command_ids, version


async def _stored(pool: asyncpg.Pool, workflow_id: str) -> list[AnyEvent]:
    return await PostgresEventStore(pool, TEST_KEYRING).read_stream(workflow_id.rpartition("/")[2])


@asynccontextmanager
async def _active(env: WorkflowEnvironment, pool: asyncpg.Pool) -> AsyncIterator[tuple[WorkflowHandle[Any, Any], int]]:
    """An active relationship (`activate`), and how many events its stream holds."""
    async with running_relationship(env, pool) as handle:
        await activate(handle)
        yield handle, len(await _stored(pool, handle.id))


async def _answered_after_its_append(handle: WorkflowHandle[Any, Any], update_id: str) -> bool:
    """Whether the update's answer is recorded after the first append since its acceptance
    that went through (the one that stored what the command did): history keeps the order
    in which the workflow answered and ran its local activities."""
    events = list((await handle.fetch_history()).events)

    def update_event(kind: EventType.ValueType) -> int:
        for index, event in enumerate(events):
            if event.event_type == kind:
                attributes = (
                    event.workflow_execution_update_accepted_event_attributes.accepted_request.meta
                    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
                    else event.workflow_execution_update_completed_event_attributes.meta
                )
                if attributes.update_id == update_id:
                    return index
        raise AssertionError(f"no {EventType.Name(kind)} for update {update_id}")

    def stored_events(event: Any) -> bool:
        marker = event.marker_recorded_event_attributes
        if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED or marker.HasField("failure"):
            return False
        return bool(marker.details["data"].payloads) and json.loads(
            marker.details["data"].payloads[0].data
        )["activity_type"].startswith("append_events")

    accepted = update_event(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
    completed = update_event(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED)
    appended = [index for index, event in enumerate(events) if index > accepted and stored_events(event)]
    return bool(appended) and appended[0] < completed


async def _replays_on_the_answering_path(env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any]) -> None:
    """The run took the path of ANSWER_FROM_THE_STORE (its marker is in history) and its
    history replays on it."""
    history = await handle.fetch_history()
    assert any(
        event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and event.marker_recorded_event_attributes.marker_name == "core_patch"
        and ANSWER_FROM_THE_STORE.encode() in event.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
        for event in history.events
    ), "no marker of the patch: the run answered on the old path"
    [outcome] = await replay_histories([history], env.client.data_converter, workflows=[Relationship])
    assert outcome.verdict == "ok", outcome.summary()


async def _closes_on_the_answering_path(env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any]) -> None:
    """No workflow task failed; the relationship closes; its history replays on the path of
    ANSWER_FROM_THE_STORE."""
    assert await failed_workflow_tasks(handle) == 0
    await close(handle)
    await _replays_on_the_answering_path(env, handle)


async def test_a_command_already_stored_by_a_lost_task_is_adopted_not_repeated(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with running_relationship(time_skipping_env, pool) as handle:
        await matched(handle)
        # The lost task decided a concern first, then the agreement.
        concern = cmd("mentor-1", text="We have not agreed on goals yet")
        await _store_behind_the_runs_back(time_skipping_env, pool, handle.id, RaiseConcern, concern)
        payload = cmd("mentee-1", terms=AGREEMENT)
        version = await _store_behind_the_runs_back(time_skipping_env, pool, handle.id, ProposeAgreement, payload)

        # The run does not know those events: it decides the command itself, its append
        # conflicts, and it adopts the stored decision instead of storing a second one. The
        # answer is the stored one's (the lost task was this update's first attempt): where
        # the lost task put it, after the concern, not where the run had first decided it.
        result = await handle.execute_update("propose_agreement", payload)
        assert result["applied"] and not result["replay"] and result["phase"] == "agreement", result

        stored = await _stored(pool, handle.id)
        assert len(stored) == version, "the run stored the command a second time"
        assert sum(1 for event in stored if event.command_id == payload["command_id"]) == 1
        assert stored[-1].command_id == payload["command_id"]
        assert result["version"] == version and result["events"] == [stored[-1].type], result
        assert await state_of(handle) == fold(stored)

        # And it goes on from there.
        await handle.execute_update("sign_agreement", cmd("mentee-1", agreement_version=1))
        await handle.execute_update("sign_agreement", cmd("mentor-1", agreement_version=1))
        state = await state_of(handle)
        assert state.phase is Phase.ACTIVE and state == fold(await _stored(pool, handle.id))
        await _closes_on_the_answering_path(time_skipping_env, handle)


async def test_another_command_is_decided_again_on_the_adopted_events(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with _active(time_skipping_env, pool) as (handle, before):
        adopted, version = await _introductions_behind_the_runs_back(
            time_skipping_env, pool, handle.id, "mentor-1", "mentee-1"
        )

        # A third introduction: decided on a state without the other two, refused by the
        # store, decided again after they are adopted. Its answer says where it landed, and
        # comes only once it is stored there.
        second = cmd("mentor-1", introduced_to="the platform lead")
        update_id = f"update-{uuid.uuid4()}"
        result = await handle.execute_update("record_introduction", second, id=update_id)
        assert result["applied"] and result["events"] == ["IntroductionRecorded"], result

        stored = await _stored(pool, handle.id)
        assert [(event.type, event.command_id) for event in stored[before:]] == [
            ("IntroductionRecorded", adopted[0]),
            ("IntroductionRecorded", adopted[1]),
            ("IntroductionRecorded", second["command_id"]),
        ]
        assert result["version"] == version + 1 == len(stored), f"answered {result['version']}, stored at {len(stored)}"
        assert await _answered_after_its_append(handle, update_id), "the update answered before its events were stored"
        state = await state_of(handle)
        assert state == fold(stored) and state.introductions == 3
        await _closes_on_the_answering_path(time_skipping_env, handle)


async def test_one_command_sent_twice_across_a_conflict_is_applied_once_and_answered_so(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with _active(time_skipping_env, pool) as (handle, _):
        _, version = await _introductions_behind_the_runs_back(time_skipping_env, pool, handle.id, "mentor-1")

        # The same command by two updates at once (a caller's retry): whether the second
        # comes before the conflict is resolved or after, one answer says applied and the
        # other is a retry's, both with where the command is stored.
        again = cmd("mentor-1", introduced_to="the platform lead")
        results = await asyncio.gather(*(handle.execute_update("record_introduction", again) for _ in range(2)))
        stored = await _stored(pool, handle.id)
        assert [(event.type, event.command_id) for event in stored[version:]] == [
            ("IntroductionRecorded", again["command_id"])
        ]
        assert sorted((result["applied"], result["replay"]) for result in results) == [(False, True), (True, False)], results
        assert {result["version"] for result in results} == {version + 1}, results
        assert await failed_workflow_tasks(handle) == 0
        await close(handle)


async def test_a_command_the_adopted_events_made_impossible_is_refused_to_the_caller(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with _active(time_skipping_env, pool) as (handle, before):
        # The lost task closed the relationship: it is closing, where only reflections count.
        await _store_behind_the_runs_back(time_skipping_env, pool, handle.id, CloseRelationship, cmd("mentee-1"))

        # Allowed on the run's state, refused once the close is adopted: the run records the
        # refusal (as for a signal) and the caller gets it, not an answer that it was applied.
        late = cmd("mentor-1", introduced_to="the platform lead")
        update_id = f"update-{uuid.uuid4()}"
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("record_introduction", late, id=update_id)
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "wrong_phase", cause

        stored = await _stored(pool, handle.id)
        mine = [event.type for event in stored[before:] if event.command_id == late["command_id"]]
        assert mine == ["CommandRejected"], [(event.type, event.command_id) for event in stored[before:]]
        assert await _answered_after_its_append(handle, update_id), "the update answered before its refusal was stored"
        state = await state_of(handle)
        assert state == fold(stored) and state.introductions == 0 and state.phase is Phase.CLOSING
        assert await failed_workflow_tasks(handle) == 0
        await reflect(handle)
        await handle.result()
        await _replays_on_the_answering_path(time_skipping_env, handle)


async def _a_round_settled_on(pool: asyncpg.Pool, handle: WorkflowHandle[Any, Any], mentor: str) -> dict[str, Any]:
    """A matching round of the relationship's programme settled on `mentor` for it: its stored
    pair, which `_round_holds` confirms. Returned: the round's proposal, as the round sends it
    (activities/matching_round.py, `_propose`)."""
    state = await state_of(handle)
    round_id = f"round-{uuid.uuid4().hex[:6]}"
    await pool.execute(
        "INSERT INTO matching_rounds (programme_id, round_id, objective, week_of) VALUES ($1, $2, 'max_total', $3)",
        state.programme_id, round_id, date(2027, 1, 4),
    )  # fmt: skip
    await pool.execute(
        """INSERT INTO matching_round_pairs (programme_id, round_id, mentee_id, mentor_id, relationship_id, points,
                                             score, explanation) VALUES ($1, $2, $3, $4, $5, 5, 0.9, 'both speak Go')""",
        state.programme_id, round_id, state.mentee_id, mentor, state.relationship_id,
    )  # fmt: skip
    command_id = round_command_id(state.relationship_id)
    return cmd(ROUND_ACTOR, command_id, mentor_id=mentor, explanation="both speak Go", score=0.9)


async def _a_rounds_proposal_across_a_conflict(
    env: WorkflowEnvironment, pool: asyncpg.Pool, *, lost_task_proposed: bool
) -> None:
    """A round proposes by update while the store holds events the run does not know (a
    concern raised, and, if `lost_task_proposed`, the round's proposal itself: the lost task
    was this update's first attempt). The run decides the round's proposal again on them: it
    was checked when the update came (`_round_holds`), so it is decided, not refused for its
    actor, and the round is told it was applied, where the store holds it."""
    async with running_relationship(env, pool) as handle:
        # Answered once stored: the stream holds the start and this concern.
        await handle.execute_update("raise_concern", cmd("coord-1", text="The mentee waits for a mentor"))
        proposal = await _a_round_settled_on(pool, handle, "mentor-1")
        await _store_behind_the_runs_back(env, pool, handle.id, RaiseConcern, cmd("mentee-1", text="Still waiting"))
        version = None
        if lost_task_proposed:
            version = await _store_behind_the_runs_back(env, pool, handle.id, ProposeMatch, proposal)

        update_id = f"update-{uuid.uuid4()}"
        result = await handle.execute_update("propose_match", proposal, id=update_id)

        stored = await _stored(pool, handle.id)
        mine = [event for event in stored if event.command_id == proposal["command_id"]]
        assert [event.type for event in mine] == ["MatchProposed"], [(event.type, event.command_id) for event in stored]
        if version is None:
            version = len(stored)
        assert (mine[0].version, mine[0].proposed_by, mine[0].mentor_id) == (version, ROUND_ACTOR, "mentor-1"), mine
        assert result["applied"] and not result["replay"], result
        assert (result["version"], result["events"], result["phase"]) == (version, ["MatchProposed"], "matching"), result
        if not lost_task_proposed:  # else stored before the update came: nothing left to append
            assert await _answered_after_its_append(handle, update_id), "the update answered before its events were stored"
        state = await state_of(handle)
        assert state == fold(stored) and state.candidate is not None and state.candidate.mentor_id == "mentor-1"
        assert state.rejected_commands == (), state.rejected_commands
        await handle.execute_update("accept_match", cmd("mentee-1"))
        await handle.execute_update("accept_match", cmd("mentor-1"))
        await _closes_on_the_answering_path(env, handle)


async def test_a_rounds_proposal_decided_again_after_a_conflict_is_applied_not_refused_for_its_actor(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    await _a_rounds_proposal_across_a_conflict(time_skipping_env, pool, lost_task_proposed=False)


async def test_a_rounds_proposal_the_lost_task_stored_is_answered_as_applied_where_it_is_stored(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    await _a_rounds_proposal_across_a_conflict(time_skipping_env, pool, lost_task_proposed=True)
