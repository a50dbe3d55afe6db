"""What the Web UI shows of a relationship, built by pure functions: ids, codes and numbers
only, never names or confidential text."""

from __future__ import annotations

from events.commands import RaiseConcern, RecordGoalProgress, RecordMeeting
from events.notifications import Notification
from events.operator_view import (
    SUMMARY_LIMIT,
    current_details,
    describe_notifications,
    relationship_summary,
)
from events.deadlines import next_due
from events.state import Phase, RelationshipState
from tests.support.domain_story import COORDINATOR, MENTEE, MENTOR, SECRET, Story, active, closing, matched, programme
from workflows.relationship import RelationshipInput
from mentorflow.start_options import relationship_start_options


def test_current_details_show_the_live_picture_and_no_confidential_text() -> None:
    story = active()
    story.advance(to=story.meeting.starts_at)  # reports are matched to meetings by time: hold meeting 1
    story.do(RecordMeeting, MENTOR, held_at=story.now, duration_minutes=30, notes=f"{SECRET} notes")
    story.do(RaiseConcern, MENTEE, text=f"{SECRET} a worry")
    story.do(RecordGoalProgress, MENTEE, goal_id="g1", progress_percent=40, milestones_reached=("m1",))
    state = story.state
    details = current_details(state)

    assert SECRET not in details
    assert "Run a design review" not in details  # goal titles stay in the agreement
    assert f"**Phase** {state.phase.value}" in details and f"**health** {state.health.value}" in details
    assert "concern_open" in details  # the reason the relationship is at risk
    assert f"mentee `{MENTEE}`" in details and f"mentor `{MENTOR}`" in details
    assert state.next_meeting is not None
    assert f"Next due: Meeting {state.next_meeting.meeting_number}, by" in details
    assert f"Meetings: {state.meetings_held} held" in details
    concern_id = next(iter(state.open_concerns))
    assert f"Open concerns: 1 (`{concern_id}`)" in details
    assert "- Goal `g1`: 40%, milestones 1/2\n- Goal `g2`: 0%" in details
    assert "Continued as new" not in details
    assert "Continued as new from run `run-1`" in current_details(state, continued_from_run="run-1")


def next_due_what(state: RelationshipState) -> str | None:
    due = next_due(state)
    return due.what if due is not None else None


def test_the_next_due_label_follows_the_phase() -> None:
    story = Story(programme())
    assert next_due_what(story.state) == "A mentor proposal (matching gives up then)"
    story = matched()
    assert story.state.phase is Phase.AGREEMENT
    assert next_due_what(story.state) == "An agreement proposal and both signatures"
    story = closing()
    assert next_due_what(story.state) == "Closing reflections (mentee, mentor)"
    assert "Next due: Closing reflections" in current_details(story.state)


def test_notification_summaries_name_roles_and_meetings_not_people() -> None:
    story = active()
    state = story.state
    number = state.next_meeting.meeting_number if state.next_meeting else 0
    reminders = [
        Notification(notification_id=f"n-{who}", relationship_id=state.relationship_id, recipient_id=who,
                     template="meeting_reminder", data={"meeting_number": str(number)})
        for who in (MENTOR, MENTEE)
    ]  # fmt: skip
    assert describe_notifications(reminders, state) == f"Reminder to mentee and mentor for meeting {number}"
    alert = Notification(notification_id="n-c", relationship_id=state.relationship_id, recipient_id=COORDINATOR,
                         template="health_at_risk", data={"reasons": "concern_open"})  # fmt: skip
    assert describe_notifications([reminders[0], alert], state) == (
        f"Reminder to mentor for meeting {number}; At-risk alert to coordinators"
    )
    many = [
        Notification(notification_id=f"n-{i}", relationship_id="r", recipient_id=MENTEE, template=f"template_{i}")
        for i in range(40)
    ]
    assert len(describe_notifications(many, state)) <= SUMMARY_LIMIT


def test_start_options_carry_ids_and_settings_into_summary_details_and_memo() -> None:
    relationship = RelationshipInput(relationship_id="r-1", programme_id="prog-1", mentee_id="emp-1", ask_pool_first=False)
    options = relationship_start_options(relationship, started_by="a test", round_id="r7", programme_settings=programme())
    assert options["static_summary"] == relationship_summary("prog-1", "emp-1", "r7") == "Mentee emp-1 in programme prog-1, round r7"
    details = options["static_details"]
    assert "`r-1`" in details and "`prog-1`" in details and "`emp-1`" in details
    assert f"- coordinator_ids: {COORDINATOR}" in details and "- proposal_ttl_days: 7" in details
    assert options["memo"] == {
        "programme_id": "prog-1", "relationship_id": "r-1", "mentee_id": "emp-1", "started_by": "a test",
        "start_parameters": {"settings": "programme", "ask_pool_first": False, "history_event_limit": 150, "round_id": "r7"},
    }  # fmt: skip
