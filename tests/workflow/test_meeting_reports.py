"""The commands one-click email links need (issue #15), end to end on the time-skipping test
server with a real PostgreSQL: a party reports that a meeting did not take place, a report
is corrected (a later, different choice from the same email), and a coordinator nudges a
relationship. Their rules in detail: tests/domain/test_domain_meetings.py, tests/domain/test_domain_health.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.event_store import PostgresEventStore
from events.commands import CorrectMeetingReport
from events.decider import fold
from events.model import MeetingHeld, MeetingMissed, MeetingReportCorrected, MeetingReportedNotHeld
from events.projections import MEETINGS, project
from events.state import RelationshipState
from tests.support.session import DATA_CONVERTER, TEST_KEYRING
from tests.support.domain_story import MENTEE, MENTOR, active
from tests.support.helpers import (
    RecordingChannel,
    activate,
    close,
    cmd,
    failed_workflow_tasks,
    new_worker,
    start_relationship,
    state_of,
)
from workflows.relationship import Relationship


async def refused(handle: WorkflowHandle[Any, Any], name: str, payload: dict[str, Any]) -> ApplicationError:
    with pytest.raises(WorkflowUpdateFailedError) as error:
        await handle.execute_update(name, payload)
    cause = error.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


async def stored_and_replayed(handle: WorkflowHandle[Any, Any], pool: asyncpg.Pool) -> RelationshipState:
    """The event store folds to the workflow's state, no task failed, the history replays."""
    state = await state_of(handle)
    stored = await PostgresEventStore(pool, TEST_KEYRING).read_stream(state.relationship_id)
    assert fold(stored) == state
    assert await failed_workflow_tasks(handle) == 0
    await Replayer(workflows=[Relationship], data_converter=DATA_CONVERTER).replay_workflow(await handle.fetch_history())
    return state


@asynccontextmanager
async def relationship(
    env: WorkflowEnvironment, pool: asyncpg.Pool
) -> AsyncIterator[tuple[WorkflowHandle[Any, Any], RecordingChannel]]:
    """A relationship on its own worker; afterwards its store and history are checked and it is closed."""
    channel = RecordingChannel()
    async with new_worker(env.client, pool, channel) as worker:
        handle = await start_relationship(env.client, worker)
        yield handle, channel
        await stored_and_replayed(handle, pool)
        await close(handle)


async def at_the_first_meeting(env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any], later: timedelta) -> Any:
    """Activate the relationship and let time run to `later` after its first meeting's start."""
    await activate(handle)
    meeting = (await state_of(handle)).next_meeting
    assert meeting is not None
    await env.sleep(meeting.starts_at + later - await env.get_current_time())
    return meeting


async def test_we_did_not_meet_counts_the_meeting_missed_once_and_a_later_we_met_corrects_it(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with relationship(time_skipping_env, pool) as (handle, channel):
        meeting = await at_the_first_meeting(time_skipping_env, handle, timedelta(minutes=15))

        # "We didn't meet", clicked twice: the same command (its id derived from the link and
        # the choice) is applied once.
        didnt_meet = cmd("mentee-1", "link-m1-didnt-meet-mentee", meeting_number=meeting.meeting_number)
        first = await handle.execute_update("report_meeting_not_held", didnt_meet)
        assert first["applied"] and first["events"][:2] == ["MeetingMissed", "MeetingReportedNotHeld"]
        again = await handle.execute_update("report_meeting_not_held", didnt_meet)
        assert (again["applied"], again["replay"], again["events"]) == (False, True, first["events"])
        state = await state_of(handle)
        assert (state.meetings_missed, state.consecutive_missed) == (1, 1)
        assert state.next_meeting is not None and state.next_meeting.meeting_number == meeting.meeting_number + 1
        await channel.wait_for("mentor-1", "meeting_reported_not_held")
        # The mentor's own "we didn't meet" is already so.
        error = await refused(handle, "report_meeting_not_held", cmd("mentor-1", meeting_number=meeting.meeting_number))
        assert error.type == "conflict" and "already reported as not held" in str(error)
        # A plain report of the meeting does not overturn the mentee's word ...
        we_met = {"held_at": meeting.starts_at.isoformat(), "duration_minutes": 50, "meeting_number": meeting.meeting_number}
        error = await refused(handle, "record_meeting", cmd("mentee-1", **we_met))
        assert error.type == "conflict" and "correct_meeting_report" in str(error)

        # ... a later "we met" from the same email is a correction.
        corrected = await handle.execute_update(
            "correct_meeting_report",
            cmd("mentee-1", "link-m1-we-met-mentee", meeting_number=meeting.meeting_number, outcome="held"),
        )
        assert corrected["events"][:2] == ["MeetingHeld", "MeetingReportCorrected"]
        state = await state_of(handle)
        assert (state.meetings_held, state.meetings_missed, state.consecutive_missed) == (1, 0, 0)
        assert state.last_meeting_at == meeting.starts_at
        await channel.wait_for("mentor-1", "meeting_report_corrected")
        assert "meeting_missed_check" not in channel.templates_for("mentee-1"), "nobody is asked what happened"


async def test_a_meeting_recorded_held_by_mistake_is_corrected_to_not_held(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with relationship(time_skipping_env, pool) as (handle, channel):
        meeting = await at_the_first_meeting(time_skipping_env, handle, timedelta(minutes=60))
        await handle.execute_update(
            "record_meeting", cmd("mentor-1", held_at=meeting.starts_at.isoformat(), duration_minutes=60)
        )
        error = await refused(handle, "report_meeting_not_held", cmd("mentee-1", meeting_number=meeting.meeting_number))
        assert error.type == "conflict" and "correct_meeting_report" in str(error)

        result = await handle.execute_update(
            "correct_meeting_report",
            cmd("mentee-1", meeting_number=meeting.meeting_number, outcome="not_held", reason="We only chatted."),
        )
        assert result["events"][:2] == ["MeetingMissed", "MeetingReportCorrected"]
        state = await state_of(handle)
        assert (state.meetings_held, state.meetings_missed, state.meeting_minutes_total) == (0, 1, 0)
        assert state.last_meeting_at is None and state.consecutive_missed == 1
        assert state.next_meeting is not None and state.next_meeting.meeting_number == meeting.meeting_number + 1
        await channel.wait_for("mentor-1", "meeting_report_corrected")
        error = await refused(
            handle, "correct_meeting_report", cmd("mentor-1", meeting_number=meeting.meeting_number, outcome="not_held")
        )
        assert error.type == "conflict"


async def test_a_coordinator_nudge_sends_the_waiting_reminder_again_once_a_day(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    env = time_skipping_env
    async with relationship(env, pool) as (handle, channel):
        await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
        await handle.execute_update("accept_match", cmd("mentor-1"))
        error = await refused(handle, "nudge_relationship", cmd("mentee-1"))
        assert error.type == "not_allowed"

        result = await handle.execute_update("nudge_relationship", cmd("coord-1"))
        assert result["events"] == ["RelationshipNudged"]
        await channel.wait_for("mentee-1", "match_proposed")
        reminded = [n for n in channel.sent if n.data.get("nudged_by_id") == "coord-1"]
        assert [(n.recipient_id, n.template) for n in reminded] == [("mentee-1", "match_proposed")]
        error = await refused(handle, "nudge_relationship", cmd("coord-1"))
        assert error.type == "limit" and "less than a day ago" in str(error)

        # A day later, in the cadence: the next meeting's reminder, to both.
        await handle.execute_update("accept_match", cmd("mentee-1"))
        await env.sleep(timedelta(days=1))
        await handle.execute_update("propose_agreement", cmd("mentee-1", terms=AGREEMENT_TERMS))
        await handle.execute_update("sign_agreement", cmd("mentee-1", agreement_version=1))
        await handle.execute_update("sign_agreement", cmd("mentor-1", agreement_version=1))
        await handle.execute_update("nudge_relationship", cmd("coord-1"))
        await channel.wait_for("mentor-1", "meeting_reminder")
        nudged = [n.recipient_id for n in channel.sent if n.template == "meeting_reminder" and n.data.get("nudged_by_id")]
        assert sorted(nudged) == ["mentee-1", "mentor-1"]
        assert (await state_of(handle)).coordinator_nudged_at is not None


AGREEMENT_TERMS = {"objective": "Grow", "goals": [{"title": "Lead a design"}], "meeting_frequency": "monthly",
                   "meeting_minutes": 60, "term_months": 6}  # fmt: skip


def test_the_meetings_report_follows_corrections_both_ways() -> None:
    """The `meetings` projection (report_meetings): a held meeting corrected to not held is
    missed there too, and back."""
    story = active()
    story.meet(MENTOR)
    rows = project(MEETINGS, {}, story.history)
    assert [row.status for row in rows.values()] == ["held"]
    story.advance(timedelta(hours=3))
    story.do(CorrectMeetingReport, MENTEE, meeting_number=1, outcome="not_held")
    rows = project(MEETINGS, {}, story.history)
    assert [(row.status, row.duration_minutes) for row in rows.values()] == [("missed", None)]
    story.do(CorrectMeetingReport, MENTOR, meeting_number=1, outcome="held", duration_minutes=40)
    rows = project(MEETINGS, {}, story.history)
    assert [(row.status, row.duration_minutes) for row in rows.values()] == [("held", 40)]
    assert [type(e) for e in story.history if isinstance(e, MeetingHeld | MeetingMissed | MeetingReportCorrected)] == [
        MeetingHeld, MeetingMissed, MeetingReportCorrected, MeetingHeld, MeetingReportCorrected
    ]
    assert not story.of_type(MeetingReportedNotHeld)
