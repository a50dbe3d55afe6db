"""The Relationship workflow on the time-skipping test server with a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.event_store import PostgresEventStore
from events.state import Phase
from events.decider import fold
from tests.support.helpers import (
    AGREEMENT,
    RecordingChannel,
    activate,
    close,
    cmd,
    failed_workflow_tasks,
    history_event_types,
    matched,
    reflect,
    running_relationship,
    state_of,
)
from tests.support.session import DATA_CONVERTER, TEST_KEYRING
from events.model import RelationshipSummary
from workflows.relationship import Relationship
from workflows.search_attributes import MENTEE_ID, MENTOR_ID, MENTORING_PHASE, MENTORING_PROGRAMME

async def test_a_six_month_relationship_runs_from_matching_to_closure(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    env, channel = time_skipping_env, RecordingChannel()
    async with running_relationship(env, pool, channel) as handle:
        await activate(handle)
        assert (await state_of(handle)).phase is Phase.ACTIVE

        # Six months of monthly meetings, each reported as it ends (so reminded of first);
        # both continue at the midpoint review. The term's last days have no meeting.
        held = 0
        while (state := await state_of(handle)).next_meeting is not None:
            meeting = state.next_meeting
            await env.sleep(meeting.ends_at - await env.get_current_time())
            state = await state_of(handle)
            if state.phase is Phase.REVIEW and state.review and state.review.kind == "midpoint":
                await handle.execute_update("submit_review", cmd("mentee-1", outcome="continue"))
                await handle.execute_update("submit_review", cmd("mentor-1", outcome="continue"))
            await handle.execute_update(
                "record_meeting", cmd("mentor-1", held_at=meeting.starts_at.isoformat(), duration_minutes=60)
            )
            held += 1
            if held == 2:  # the mentee reports it too: a meeting counts once
                await handle.signal(
                    "record_meeting", cmd("mentee-1", held_at=meeting.starts_at.isoformat(), duration_minutes=30)
                )
        term_ends_at = (await state_of(handle)).term_ends_at
        assert term_ends_at is not None
        await env.sleep(term_ends_at - await env.get_current_time() + timedelta(hours=1))
        state = await state_of(handle)
        assert state.phase is Phase.REVIEW and state.review is not None and state.review.kind == "final"
        await handle.execute_update("submit_review", cmd("mentee-1", outcome="close"))
        await handle.execute_update("submit_review", cmd("mentor-1", outcome="close"))
        assert (await state_of(handle)).phase is Phase.CLOSING
        await reflect(handle)
        summary: RelationshipSummary = await handle.result()

        assert summary.closure_reason == "term_completed"
        assert summary.meetings_held == held >= 6
        assert summary.reviews_completed == ("midpoint", "final")
        final = await state_of(handle)
        assert final.health == "healthy"
        stored = await PostgresEventStore(pool, TEST_KEYRING).read_stream(final.relationship_id)
        assert fold(stored) == final
        assert [e.version for e in stored] == list(range(1, final.version + 1))

        # Notifications went out once each, to the right people.
        ids = [n.notification_id for n in channel.sent]
        assert len(ids) == len(set(ids))
        mentee_templates = channel.templates_for("mentee-1")
        assert mentee_templates.count("relationship_summary") == 1
        assert mentee_templates.count("reflection_request") == 1
        assert "match_proposed" in mentee_templates and "midpoint_review_opened" in mentee_templates
        assert "meeting_reminder" in channel.templates_for("mentor-1")
        assert await failed_workflow_tasks(handle) == 0

        # The recorded history replays on the current code without non-determinism.
        replayer = Replayer(workflows=[Relationship], data_converter=DATA_CONVERTER)
        await replayer.replay_workflow(await handle.fetch_history())


async def test_search_attributes_follow_the_relationship(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with running_relationship(time_skipping_env, pool) as handle:
        await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-7"))
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(MENTORING_PHASE) == "matching"
        assert attributes.get(MENTORING_PROGRAMME) == "prog-1"
        assert attributes.get(MENTEE_ID) == "mentee-1"
        assert attributes.get(MENTOR_ID) == "mentor-7"

        await handle.execute_update("decline_match", cmd("mentor-7", reason="no capacity"))
        assert (await handle.describe()).typed_search_attributes.get(MENTOR_ID) is None

        await activate(handle, mentor="mentor-8")
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(MENTORING_PHASE) == "active"
        assert attributes.get(MENTOR_ID) == "mentor-8"
        await close(handle)


async def test_an_update_with_a_bad_payload_is_rejected_naming_the_field(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with running_relationship(time_skipping_env, pool) as handle:
        before = await history_event_types(handle)

        with pytest.raises(WorkflowUpdateFailedError) as bad_field:
            await handle.execute_update("propose_match", cmd("coord-1", mentor_id=""))
        assert "mentor_id" in str(bad_field.value.cause)

        with pytest.raises(WorkflowUpdateFailedError) as missing:
            await handle.execute_update("propose_match", {"command_id": "c-1", "actor_id": "coord-1"})
        assert "mentor_id: Field required" in str(missing.value.cause)

        with pytest.raises(WorkflowUpdateFailedError) as not_an_object:
            await handle.execute_update("accept_match", "yes please")
        assert "invalid payload" in str(not_an_object.value.cause)

        with pytest.raises(WorkflowUpdateFailedError) as out_of_phase:
            await handle.execute_update("sign_agreement", cmd("mentee-1", agreement_version=1))
        assert "only allowed in the agreement phase" in str(out_of_phase.value.cause)

        with pytest.raises(WorkflowUpdateFailedError) as stranger:
            await handle.execute_update("propose_match", cmd("coord-1", mentor_id="m-1"))
            await handle.execute_update("accept_match", cmd("someone-else"))
        assert "not a party" in str(stranger.value.cause)

        # Rejected updates leave no trace in history: only the accepted proposal does.
        after = await history_event_types(handle)
        accepted = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        assert after.count(accepted) - before.count(accepted) == 1
        assert (await state_of(handle)).rejected_commands == ()
        await close(handle)


async def test_bad_signals_are_recorded_as_rejections_and_never_fail_a_task(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with running_relationship(time_skipping_env, pool) as handle:
        await handle.signal("propose_match", {"command_id": "bad-1", "actor_id": "coord-1", "mentor_id": 42})
        await handle.signal("accept_match", ["not", "an", "object"])
        await handle.signal("sign_agreement", cmd("mentee-1", agreement_version=1))
        await handle.signal("propose_match", cmd("coord-1", mentor_id="mentor-1"))

        # Signals are decided once the relationship has read its programme.
        for _ in range(200):
            state = await state_of(handle)
            if len(state.rejected_commands) >= 3 and state.candidate is not None:
                break
            await asyncio.sleep(0.05)
        reasons = [(r.command_id, r.command_name, r.reason) for r in state.rejected_commands]
        assert reasons[0][:2] == ("bad-1", "propose_match") and "mentor_id" in reasons[0][2]
        assert reasons[1][:2] == (None, "accept_match") and "invalid payload" in reasons[1][2]
        assert reasons[2][1] == "sign_agreement" and "agreement phase" in reasons[2][2]
        assert state.candidate is not None and state.candidate.mentor_id == "mentor-1"

        await handle.execute_update("accept_match", cmd("mentee-1"))  # waits for the store
        stored = await PostgresEventStore(pool).read_stream(state.relationship_id)
        assert [e.type for e in stored].count("CommandRejected") == 3
        assert await failed_workflow_tasks(handle) == 0
        await close(handle)


async def test_a_repeated_command_id_is_applied_once_also_across_continue_as_new(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    env = time_skipping_env
    async with running_relationship(env, pool, history_event_limit=100) as handle:
        first_run = (await handle.describe()).run_id
        propose = cmd("coord-1", mentor_id="mentor-1")
        first = await handle.execute_update("propose_match", propose)
        assert first["applied"] is True
        await handle.signal("propose_match", propose)
        again = await handle.execute_update("propose_match", propose)
        assert (again["applied"], again["replay"], again["events"]) == (False, True, first["events"])
        # The same id with other content is another command: refused, nothing happens.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("propose_match", {**propose, "mentor_id": "mentor-2"})
        assert isinstance(refused.value.cause, ApplicationError)
        assert (refused.value.cause.type, refused.value.cause.non_retryable) == ("command_id_reused", True)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("accept_match", {"command_id": propose["command_id"], "actor_id": "mentee-1"})
        assert isinstance(refused.value.cause, ApplicationError) and refused.value.cause.type == "command_id_reused"

        # Grow the history past the limit with meetings until the workflow continues as new.
        await handle.execute_update("accept_match", cmd("mentee-1"))
        await handle.execute_update("accept_match", cmd("mentor-1"))
        await handle.execute_update("propose_agreement", cmd("mentee-1", terms=AGREEMENT))
        await handle.execute_update("sign_agreement", cmd("mentee-1", agreement_version=1))
        await handle.execute_update("sign_agreement", cmd("mentor-1", agreement_version=1))
        meeting = cmd("mentor-1", held_at=(await env.get_current_time()).isoformat(), duration_minutes=45)
        await handle.execute_update("record_meeting", meeting)
        state_before_switch = await state_of(handle)
        for week in range(12):
            await handle.execute_update("share_resource", cmd("mentee-1", title=f"Reading, week {week}"))
        # The switch happens when a deadline's timer next wakes the workflow up (the nudge).
        await env.sleep(timedelta(days=24))
        latest = env.client.get_workflow_handle(handle.id)
        assert (await latest.describe()).run_id != first_run, "expected a continue-as-new"

        held = (await state_of(latest)).meetings_held
        repeated = await latest.execute_update("record_meeting", meeting)
        await latest.signal("record_meeting", meeting)
        # Answered as a replay, with what the meeting did when first recorded.
        assert (repeated["applied"], repeated["replay"]) == (False, True)
        assert repeated["events"][0] == "MeetingHeld" and repeated["version"] <= state_before_switch.version
        state = await state_of(latest)
        assert state.meetings_held == held
        stored = await PostgresEventStore(pool, TEST_KEYRING).read_stream(state.relationship_id)
        assert fold(stored) == state
        assert sum(1 for e in stored if e.command_id == propose["command_id"]) == 1
        await close(latest)


async def test_an_unsigned_agreement_expires_and_closes_the_relationship(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    env, channel = time_skipping_env, RecordingChannel()
    async with running_relationship(env, pool, channel) as handle:
        await matched(handle)
        await handle.execute_update("propose_agreement", cmd("mentor-1", terms=AGREEMENT))
        await env.sleep(timedelta(days=15))
        summary = await handle.result()
        assert summary.closure_reason == "agreement_expired"
        assert "relationship_summary" in channel.templates_for("mentor-1")


async def test_unanswered_proposals_expire_until_the_relationship_closes_unmatched(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    env = time_skipping_env
    async with running_relationship(env, pool) as handle:
        for n in range(3):
            await handle.execute_update("propose_match", cmd("coord-1", mentor_id=f"mentor-{n}"))
            await env.sleep(timedelta(days=8))
        summary = await handle.result()
        assert summary.closure_reason == "unmatched"
        state = await state_of(handle)
        assert state.declined_mentor_ids == ("mentor-0", "mentor-1", "mentor-2")


async def test_either_party_can_close_early(time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool) -> None:
    env = time_skipping_env
    async with running_relationship(env, pool) as handle:
        await activate(handle)
        result = await handle.execute_update("close_relationship", cmd("mentor-1"))
        assert result["phase"] == "closing"
        await reflect(handle)
        summary = await handle.result()
        assert summary.closure_reason == "closed_by_mentor"
