"""Every practice from the seeds in one relationship, end to end on the time-skipping server.

A six-month biweekly agreement with a missed meeting, a late cancellation, a goal revision
acknowledged, a milestone, feedback after three sessions, a concern raised and resolved,
a pause, a midpoint review that recalibrates, an extension, and a closure with reflections.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.event_store import PostgresEventStore
from events.deadlines import next_deadline
from events.model import Health
from events.decider import fold
from events.state import Phase
from tests.support.session import TEST_KEYRING
from tests.support.helpers import (
    RecordingChannel,
    cmd,
    failed_workflow_tasks,
    new_worker,
    reflect,
    start_relationship,
    state_of,
    stored_notifications_delivered,
)
from workflows.search_attributes import MEETINGS_HELD, MENTORING_HEALTH, MENTORING_PHASE, NEXT_DUE_AT

AGREEMENT = {
    "objective": "Become confident leading technical design",
    "goals": [
        {
            "goal_id": "design",
            "title": "Lead two design reviews",
            "measure": "two reviews led, feedback collected",
            "target_date": "2027-06-30",
            "milestones": [{"milestone_id": "first-review", "title": "First review led"}],
        },
        {"goal_id": "network", "title": "Meet three staff engineers", "target_date": "2027-05-31"},
    ],
    "formats": ["video", "in_person"],
    "meeting_frequency": "biweekly",
    "meeting_minutes": 60,
    "term_months": 6,
    "cancellation_notice_hours": 24,
    "agenda_policy": "mentee_shares",
    "confidentiality": {"not_private": ["risk of harm"]},
    "early_exit_plan": "Tell each other and the coordinator, then close.",
}


async def now_of(env: WorkflowEnvironment) -> Any:
    return await env.get_current_time()


async def sleep_until(env: WorkflowEnvironment, moment: Any) -> None:
    wait = moment - await now_of(env)
    if wait > timedelta(0):
        await env.sleep(wait)


async def attend(env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any], by: str = "mentee-1") -> int:
    """Wait for the scheduled meeting, then record it as held; returns its number."""
    meeting = (await state_of(handle)).next_meeting
    assert meeting is not None
    await sleep_until(env, meeting.starts_at + timedelta(minutes=70))
    await handle.execute_update(
        "record_meeting",
        cmd(by, held_at=meeting.starts_at.isoformat(), duration_minutes=60, notes="confidential: talked about doubts"),
    )
    return meeting.meeting_number


async def test_every_seed_practice_in_one_relationship(time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool) -> None:
    env, channel = time_skipping_env, RecordingChannel()
    async with new_worker(env.client, pool, channel) as worker:
        handle = await start_relationship(env.client, worker)
        await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1", explanation="shares 2 of 2 goals"))
        await handle.execute_update("accept_match", cmd("mentee-1"))
        await handle.execute_update("accept_match", cmd("mentor-1"))
        await handle.execute_update("propose_agreement", cmd("mentee-1", terms=AGREEMENT))
        await handle.execute_update("sign_agreement", cmd("mentee-1", agreement_version=1))
        await handle.execute_update("sign_agreement", cmd("mentor-1", agreement_version=1))
        state = await state_of(handle)
        assert state.phase is Phase.ACTIVE and state.next_meeting is not None
        deadline = next_deadline(state)
        # The first meeting is a day after signing (no availability given): its agenda request
        # and reminder are due at once, and may already have gone out.
        assert deadline is not None and deadline.kind in ("agenda_request", "meeting_reminder", "meeting_missed")
        assert (await handle.describe()).typed_search_attributes.get(NEXT_DUE_AT) == state.next_meeting.starts_at

        # Three sessions, then both are asked for feedback.
        for _ in range(3):
            await attend(env, handle)
        state = await state_of(handle)
        assert state.feedback_round == 1
        await handle.execute_update("submit_feedback", cmd("mentee-1", feedback_round=1, score=4, comment="helpful"))
        await handle.execute_update("submit_feedback", cmd("mentor-1", feedback_round=1, score=5))

        # A milestone is celebrated; a goal change is written and acknowledged.
        await handle.execute_update(
            "record_goal_progress", cmd("mentee-1", goal_id="design", progress_percent=50, milestones_reached=["first-review"])
        )
        revised = cmd("mentor-1", goal={"goal_id": "network", "title": "Meet four staff engineers"}, rationale="stretch")
        await handle.execute_update("propose_goal_revision", revised)
        await handle.execute_update("acknowledge_goal_revision", cmd("mentee-1", revision_id=revised["command_id"]))
        assert (await state_of(handle)).goals["network"].goal.title == "Meet four staff engineers"

        # Nobody reports meeting 4: after the grace period both are asked what happened.
        missed = (await state_of(handle)).next_meeting
        assert missed is not None
        await sleep_until(env, missed.ends_at + timedelta(hours=49))
        state = await state_of(handle)
        assert state.meetings_missed == 1 and missed.meeting_number in state.missed_meeting_numbers

        # Meeting 5 is cancelled two hours before it starts: late against 24 h notice.
        cancelled = state.next_meeting
        assert cancelled is not None
        await sleep_until(env, cancelled.starts_at - timedelta(hours=2))
        result = await handle.execute_update("cancel_meeting", cmd("mentor-1", meeting_number=cancelled.meeting_number))
        assert result["events"][0] == "MeetingCancelled"
        assert (await state_of(handle)).late_cancellations == 1

        # A concern reaches the coordinator at once and flags the relationship until resolved.
        concern = cmd("mentee-1", text="confidential: we keep talking past each other")
        await handle.execute_update("raise_concern", concern)
        state = await state_of(handle)
        assert state.health is Health.AT_RISK and "concern_open" in state.health_reasons
        assert (await handle.describe()).typed_search_attributes.get(MENTORING_HEALTH) == "at_risk"
        await channel.wait_for("coord-1", "concern_raised")
        await handle.execute_update("resolve_concern", cmd("coord-1", concern_id=concern["command_id"]))
        assert (await state_of(handle)).health is Health.HEALTHY

        # Meet until the midpoint review opens; both ask to recalibrate the goals.
        while (await state_of(handle)).phase is Phase.ACTIVE:
            state = await state_of(handle)
            midpoint_due = state.activated_at + (state.term_ends_at - state.activated_at) / 2
            if state.next_meeting is not None and state.next_meeting.starts_at < midpoint_due:
                await attend(env, handle)
            else:
                await sleep_until(env, midpoint_due + timedelta(minutes=1))
        state = await state_of(handle)
        assert state.review is not None and state.review.kind == "midpoint"
        assessments = [{"goal_id": "design", "progress_percent": 60}]
        await handle.execute_update("submit_review", cmd("mentee-1", outcome="recalibrate", goal_assessments=assessments))
        await handle.execute_update("submit_review", cmd("mentor-1", outcome="continue"))
        state = await state_of(handle)
        assert state.phase is Phase.ACTIVE and state.needs_recalibration
        recalibrated = cmd("mentee-1", goal={"goal_id": "design", "title": "Lead three design reviews", "milestones": [
            {"milestone_id": "first-review", "title": "First review led"}]})
        await handle.execute_update("propose_goal_revision", recalibrated)
        await handle.execute_update("acknowledge_goal_revision", cmd("mentor-1", revision_id=recalibrated["command_id"]))
        assert not (await state_of(handle)).needs_recalibration

        # A two-week holiday: no reminders while paused, and the term grows by the pause.
        # Counted once every delivery the stored events call for has arrived, not while one
        # is still in flight.
        state = await state_of(handle)
        term_before = state.term_ends_at
        await stored_notifications_delivered(channel, pool, state.relationship_id)
        reminders_before = channel.templates_for("mentee-1").count("meeting_reminder")
        pause_until = await now_of(env) + timedelta(days=14)
        paused = await handle.execute_update("pause_relationship", cmd("mentee-1", until=pause_until.isoformat()))
        await env.sleep(timedelta(days=10))
        assert (await state_of(handle)).next_meeting is None
        store = PostgresEventStore(pool)
        since_pause = [e.type for e in await store.read_stream(state.relationship_id) if e.version > paused["version"]]
        assert "MeetingReminderIssued" not in since_pause, since_pause
        await stored_notifications_delivered(channel, pool, state.relationship_id)
        assert channel.templates_for("mentee-1").count("meeting_reminder") == reminders_before
        await sleep_until(env, pause_until + timedelta(minutes=1))
        state = await state_of(handle)
        assert state.paused_until is None and state.next_meeting is not None
        assert state.term_ends_at - term_before >= timedelta(days=14)

        # Meet until the final review; both extend by a month; meet again; both close.
        async def meet_until_review() -> None:
            while (await state_of(handle)).phase is Phase.ACTIVE:
                state = await state_of(handle)
                if state.next_meeting is not None and state.next_meeting.starts_at < state.term_ends_at:
                    await attend(env, handle, by="mentor-1")
                else:
                    await sleep_until(env, state.term_ends_at + timedelta(minutes=1))

        await meet_until_review()
        assert (await state_of(handle)).review.kind == "final"  # type: ignore[union-attr]
        await handle.execute_update("submit_review", cmd("mentee-1", outcome="extend", extension_months=1))
        await handle.execute_update("submit_review", cmd("mentor-1", outcome="extend", extension_months=2))
        state = await state_of(handle)
        assert state.phase is Phase.ACTIVE and state.extensions == 1
        await meet_until_review()
        await handle.execute_update("record_goal_progress", cmd("mentor-1", goal_id="design", progress_percent=100))
        await handle.execute_update("submit_review", cmd("mentee-1", outcome="close"))
        await handle.execute_update("submit_review", cmd("mentor-1", outcome="close"))
        assert (await state_of(handle)).phase is Phase.CLOSING
        await reflect(handle)
        summary = await handle.result()

        assert summary.closure_reason == "term_completed"
        assert summary.meetings_missed == 1 and summary.meetings_cancelled == 1 and summary.late_cancellations == 1
        assert summary.meetings_held >= 10
        assert summary.extensions == 1
        assert summary.reviews_completed == ("midpoint", "final", "final")
        assert summary.goals_total == 2 and summary.goals_achieved == 1
        assert summary.feedback_trend == (4.5,)  # later rounds were requested but not answered
        assert summary.concerns_raised == 1 and summary.reflections_from == ("mentee", "mentor")

        final = await state_of(handle)
        assert final.feedback_round == summary.meetings_held // 3
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(MENTORING_PHASE) == "closed"
        assert attributes.get(MEETINGS_HELD) == summary.meetings_held
        stored = await PostgresEventStore(pool, TEST_KEYRING).read_stream(final.relationship_id)
        assert fold(stored) == final
        kinds = {event.type for event in stored}
        assert {"MeetingMissed", "MeetingCancelled", "MilestoneReached", "GoalRevised", "FeedbackRequested",
                "ConcernRaised", "ConcernResolved", "RelationshipPaused", "RelationshipResumed", "TermExtended",
                "ClosureBegun", "ReflectionSubmitted", "RelationshipClosed", "AgendaRequested", "NudgeIssued"} - kinds == set()

        mentee = channel.templates_for("mentee-1")
        for template in ("milestone_celebration", "meeting_missed_check", "meeting_cancelled", "feedback_request",
                         "agenda_request", "meeting_reminder", "relationship_paused", "relationship_resumed",
                         "midpoint_review_opened", "term_extended", "reflection_request", "relationship_summary"):
            assert template in mentee, template
        assert "goal_revision_to_acknowledge" in channel.templates_for("mentee-1")
        # Confidential text never leaves the event store through a notification.
        assert not any("confidential" in value for n in channel.sent for value in n.data.values())
        assert await failed_workflow_tasks(handle) == 0
