"""Pause: no meetings or health checks meanwhile, and a term that grows by the pause."""

from __future__ import annotations

from datetime import timedelta


from events.commands import (
    CancelMeeting, PauseRelationship, RecordGoalProgress, RecordMeeting, RequestReview, RescheduleMeeting,
    ResumeRelationship, ShareResource,
)
from events.deadlines import next_deadline
from events.cadence import MIN_SCHEDULING_LEAD
from events.health import quiet_since
from events.model import Health, HealthChanged, MeetingScheduled, RelationshipPaused, RelationshipResumed
from tests.support.domain_story import COORDINATOR, MENTEE, MENTOR, SECRET, STRANGER, active, in_review, programme, types

# --- pause --------------------------------------------------------------------------------


def test_a_pause_suspends_meetings_and_health_and_ends_by_itself_extending_the_term() -> None:
    story = active(term_months=12, meeting_frequency="monthly")
    story.meet()
    story.advance(timedelta(days=10))
    term_ends_at = story.state.term_ends_at
    assert term_ends_at is not None
    until = story.now + timedelta(days=50)
    [paused] = story.do(PauseRelationship, MENTEE, until=until, reason=f"{SECRET} burnout")
    assert isinstance(paused, RelationshipPaused) and (paused.until, paused.paused_by) == (until, MENTEE)
    assert story.state.is_paused and story.state.next_meeting is None
    deadline = next_deadline(story.state)
    assert deadline is not None and (deadline.kind, deadline.at) == ("pause_ends", until)
    assert [n.data for n in story.notifications() if n.template == "relationship_paused"] == [{"until": until.isoformat()}] * 2

    # Fifty quiet days: no reminders, no misses, no nudges, no change of health while paused.
    fired = story.advance(to=until)
    assert types(fired) == ["RelationshipResumed", "MeetingScheduled", "AgendaRequested", "MeetingReminderIssued"]
    resumed, scheduled = fired[:2]
    assert isinstance(resumed, RelationshipResumed) and resumed.resumed_by is None
    assert resumed.term_ends_at == story.state.term_ends_at == term_ends_at + timedelta(days=50)
    assert isinstance(scheduled, MeetingScheduled) and scheduled.starts_at == until + MIN_SCHEDULING_LEAD
    assert not story.state.is_paused and story.state.health is Health.HEALTHY
    # The meeting dropped by the pause keeps its number; quiet is counted from the end of the pause.
    assert scheduled.meeting_number == 3
    assert quiet_since(story.state) == until
    [at_risk] = [e for e in story.advance(to=until + timedelta(days=30)) if isinstance(e, HealthChanged)]
    assert at_risk.occurred_at == until + timedelta(days=30)


def test_commands_that_need_the_cadence_wait_for_the_end_of_a_pause() -> None:
    story = active()
    number = story.meeting.meeting_number
    until = story.now + timedelta(days=20)
    story.do(PauseRelationship, COORDINATOR, until=until)
    suffix = "is not allowed while the relationship is paused; resume it first"
    assert story.refuse(RecordMeeting, MENTEE, held_at=story.now, duration_minutes=60) == f"record_meeting {suffix}"
    assert story.refuse(CancelMeeting, MENTEE, meeting_number=number) == f"cancel_meeting {suffix}"
    assert story.refuse(RescheduleMeeting, MENTEE, meeting_number=number, starts_at=until) == f"reschedule_meeting {suffix}"
    assert story.refuse(RequestReview, MENTEE) == f"request_review {suffix}"
    assert story.refuse(PauseRelationship, MENTOR, until=until) == f"pause_relationship {suffix}"
    # Goals and records need no meeting.
    story.do(RecordGoalProgress, MENTEE, goal_id="g2", progress_percent=10)
    story.do(ShareResource, MENTOR, title="A podcast")


def test_resuming_early_extends_the_term_by_the_time_actually_paused() -> None:
    story = active()
    term_ends_at = story.state.term_ends_at
    assert term_ends_at is not None
    assert story.refuse(ResumeRelationship, MENTEE) == "the relationship is not paused"
    story.do(PauseRelationship, MENTOR, until=story.now + timedelta(days=40))
    story.advance(timedelta(days=9, hours=6))
    assert "neither a party nor a coordinator" in story.refuse(ResumeRelationship, STRANGER)
    resumed, scheduled = story.do(ResumeRelationship, COORDINATOR)
    assert isinstance(resumed, RelationshipResumed) and resumed.resumed_by == COORDINATOR
    assert resumed.term_ends_at == term_ends_at + timedelta(days=9, hours=6)
    assert isinstance(scheduled, MeetingScheduled) and scheduled.meeting_number == 2
    assert story.refuse(ResumeRelationship, MENTEE) == "the relationship is not paused"
    assert [n.recipient_id for n in story.notifications() if n.template == "relationship_resumed"] == [MENTEE, MENTOR]


def test_a_pause_is_bounded_and_only_while_active() -> None:
    story = active(programme(max_pause_days=30))
    assert story.refuse(PauseRelationship, MENTEE, until=story.now) == "until is not in the future"
    assert story.refuse(PauseRelationship, MENTEE, until=story.now + timedelta(days=30, seconds=1)) == (
        "until is more than 30 days ahead (the longest pause)"
    )
    story.do(PauseRelationship, MENTEE, until=story.now + timedelta(days=30))

    review = in_review()
    assert review.refuse(PauseRelationship, MENTEE, until=review.now + timedelta(days=3)) == (
        "pause_relationship is only allowed in the active phase; the relationship is in review"
    )
