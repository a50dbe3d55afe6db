"""A relationship's whole life through the pure core, and what time alone does to it."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from events.commands import (
    AcceptMatch, CancelMeeting, GoalAssessment, ProposeAgreement, ProposeMatch, RecordGoalProgress, SignAgreement,
    SubmitFeedback, SubmitReflection, SubmitReview,
)
from events.deadlines import add_months, midpoint, next_deadline
from events.cadence import MIN_SCHEDULING_LEAD
from events.decider import decide_deadline
from events.model import (
    AgendaRequested, AgreementProposed, AgreementSigned, ClosureBegun, ClosureReason, FeedbackRequested,
    FeedbackSubmitted, Health, HealthChanged, MatchAccepted, MatchConfirmed, MatchProposed, MeetingHeld, MeetingMissed,
    MeetingReminderIssued, MeetingScheduled, ReflectionSubmitted, RelationshipActivated, RelationshipClosed,
    ReviewCompleted, ReviewOpened, ReviewSubmitted,
)
from events.state import Phase
from events.decider import fold
from tests.support.domain_story import (
    COORDINATOR, MENTEE, MENTOR, PROGRAMME, SECRET, STREAM, Story, T0, active, closed, in_review, matched, programme,
    terms, types,
)

# --- the main path ------------------------------------------------------------------------


def test_a_relationship_walks_from_matching_through_cadence_and_reviews_to_a_closed_summary() -> None:
    story = Story()
    assert story.states[0].phase is Phase.MATCHING

    # Matching.
    [proposed] = story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR, explanation="shares 3 of 4 goals", score=0.8)
    assert isinstance(proposed, MatchProposed)
    assert (proposed.expires_at, proposed.explanation, proposed.score) == (T0 + timedelta(days=7), "shares 3 of 4 goals", 0.8)
    story.advance(timedelta(days=1))
    assert types(story.do(AcceptMatch, MENTEE)) == ["MatchAccepted"]
    story.advance(timedelta(days=1))
    accepted, confirmed = story.do(AcceptMatch, MENTOR)
    assert isinstance(accepted, MatchAccepted) and accepted.party == "mentor"
    assert isinstance(confirmed, MatchConfirmed) and confirmed.agreement_due_at == story.now + timedelta(days=14)
    assert (story.state.phase, story.state.mentor_id, story.state.candidate) == (Phase.AGREEMENT, MENTOR, None)

    # Agreement.
    story.advance(timedelta(days=1))
    [agreement] = story.do(ProposeAgreement, MENTEE, terms=terms())
    assert isinstance(agreement, AgreementProposed) and agreement.agreement_version == 1
    assert [goal.goal_id for goal in agreement.terms.goals] == ["g1", "g2"]
    story.advance(timedelta(days=1))
    assert types(story.do(SignAgreement, MENTEE, agreement_version=1)) == ["AgreementSigned"]
    story.advance(timedelta(days=1))
    signed, activated, scheduled = story.do(SignAgreement, MENTOR, agreement_version=1)
    assert isinstance(signed, AgreementSigned) and signed.party == "mentor"
    assert isinstance(activated, RelationshipActivated)
    activated_at = story.now
    assert activated.term_ends_at == story.state.term_ends_at == datetime(2025, 7, 11, 9, 0, tzinfo=UTC)
    # The first meeting at the first slot a day on (without availability, any moment is one).
    assert isinstance(scheduled, MeetingScheduled) and scheduled.meeting_number == 1
    assert scheduled.starts_at == activated_at + MIN_SCHEDULING_LEAD
    assert scheduled.ends_at == scheduled.starts_at + timedelta(minutes=60)
    state = story.state
    assert state.phase is Phase.ACTIVE and set(state.goals) == {"g1", "g2"}

    # Meetings in the rhythm, feedback every third, goals moving, until the midpoint review.
    story.meet()
    story.do(RecordGoalProgress, MENTEE, goal_id="g1", progress_percent=40, milestones_reached=("m1",))
    story.meet()
    held_third, feedback_request, scheduled_fourth = story.meet()
    assert isinstance(held_third, MeetingHeld) and held_third.meeting_number == 3
    assert isinstance(feedback_request, FeedbackRequested)
    assert isinstance(scheduled_fourth, MeetingScheduled) and scheduled_fourth.meeting_number == 4
    assert (feedback_request.feedback_round, feedback_request.after_meeting) == (1, 3)
    story.do(SubmitFeedback, MENTEE, feedback_round=1, score=4, comment=f"{SECRET} fine")
    story.do(SubmitFeedback, MENTOR, feedback_round=1, score=5)
    story.meet_until_a_review()
    [midpoint_opened] = story.of_type(ReviewOpened)
    assert midpoint_opened.kind == "midpoint"
    assert midpoint_opened.occurred_at == midpoint(story.state) == activated_at + (activated.term_ends_at - activated_at) / 2
    assert midpoint_opened.respond_by == midpoint_opened.occurred_at + timedelta(days=14)
    assert story.state.next_meeting is not None  # the cadence goes on during a review

    story.do(SubmitReview, MENTEE, outcome="continue", goal_assessments=(GoalAssessment(goal_id="g2", progress_percent=30),))
    submitted, completed = story.do(SubmitReview, MENTOR, outcome="continue")
    assert isinstance(submitted, ReviewSubmitted) and submitted.kind == "midpoint"
    assert isinstance(completed, ReviewCompleted)
    assert (completed.kind, completed.outcome, completed.missing_parties) == ("midpoint", "continue", ())
    after_midpoint = story.state
    assert after_midpoint.phase is Phase.ACTIVE and after_midpoint.reviews_completed == ("midpoint",)
    assert after_midpoint.goals["g2"].progress_percent == 30

    # The second half: one meeting cancelled in time, one missed, a goal achieved.
    story.do(CancelMeeting, MENTOR, meeting_number=story.meeting.meeting_number, reason=f"{SECRET} sick")
    story.meet(actor=MENTOR, minutes=45)
    story.advance(to=story.meeting.ends_at + timedelta(hours=48))
    assert story.state.meetings_missed == 1
    story.meet()
    story.do(RecordGoalProgress, MENTOR, goal_id="g1", progress_percent=100, milestones_reached=("m2",))
    story.meet_until_a_review()
    assert story.state.review is not None and story.state.review.kind == "final"
    for round_number in range(2, story.state.feedback_round + 1):
        story.do(SubmitFeedback, MENTEE, feedback_round=round_number, score=5)
        story.do(SubmitFeedback, MENTOR, feedback_round=round_number, score=4)
    assert story.of_type(ReviewOpened)[-1].occurred_at == story.state.term_ends_at

    # The final review ends the term; both reflect; the summary is the record.
    story.do(SubmitReview, MENTOR, outcome="continue")
    *_, final, closure_begun = story.do(SubmitReview, MENTEE, outcome="continue")
    assert isinstance(final, ReviewCompleted) and (final.kind, final.outcome) == ("final", "close")
    assert isinstance(closure_begun, ClosureBegun) and closure_begun.reason is ClosureReason.TERM_COMPLETED
    assert closure_begun.reflections_due_at == story.now + timedelta(days=14)
    assert story.state.phase is Phase.CLOSING and story.state.next_meeting is None
    story.advance(timedelta(days=2))
    assert types(story.do(SubmitReflection, MENTOR, text=f"{SECRET} proud of you")) == ["ReflectionSubmitted"]
    reflected, closure = story.do(SubmitReflection, MENTEE, text=f"{SECRET} thank you")
    assert isinstance(reflected, ReflectionSubmitted) and reflected.party == "mentee"
    assert isinstance(closure, RelationshipClosed) and closure.reason is ClosureReason.TERM_COMPLETED

    state, summary = story.state, closure.summary
    assert state.phase is Phase.CLOSED and state.is_closed and state.summary == summary
    assert state.closed_at == story.now
    held = story.of_type(MeetingHeld)
    feedback = story.of_type(FeedbackSubmitted)
    rounds = sorted({f.feedback_round for f in feedback})
    assert rounds == list(range(1, state.feedback_round + 1)) and len(rounds) == len(held) // 3
    expected_trend = tuple(
        round(sum(f.score for f in feedback if f.feedback_round == r) / 2, 2) for r in rounds
    )
    assert expected_trend[0] == 4.5 and all(value == 4.5 for value in expected_trend)
    assert summary.model_dump() == summary.model_dump() | {
        "relationship_id": STREAM,
        "programme_id": PROGRAMME,
        "mentee_id": MENTEE,
        "mentor_id": MENTOR,
        "closure_reason": ClosureReason.TERM_COMPLETED,
        "started_at": T0,
        "activated_at": activated_at,
        "closed_at": story.now,
        "duration_days": (story.now - T0).days,
        "meetings_held": len(held),
        "meetings_missed": 1,
        "meetings_cancelled": 1,
        "late_cancellations": 0,
        "meeting_minutes_total": sum(m.duration_minutes for m in held),
        "goals_total": 2,
        "goals_achieved": 1,
        "goal_progress": {"g1": 100, "g2": 30},
        "feedback_trend": expected_trend,
        "concerns_raised": 0,
        "reviews_completed": ("midpoint", "final"),
        "extensions": 0,
        "reflections_from": ("mentee", "mentor"),
    }
    # Closed two days after the term's end: the final review was answered as it opened.
    assert summary.duration_days == (story.state.term_ends_at - T0).days + 2 and len(held) >= 11  # type: ignore[operator]
    assert [m.meeting_number for m in held] == sorted({m.meeting_number for m in held})
    # Every meeting was scheduled in the rhythm, reminded a day and asked for an agenda two days ahead.
    scheduled_meetings = story.of_type(MeetingScheduled)
    for earlier, later in itertools.pairwise(scheduled_meetings):
        assert later.starts_at - earlier.starts_at == timedelta(days=14)
    leads = state.settings
    for reminder in story.of_type(MeetingReminderIssued):
        assert reminder.starts_at - reminder.occurred_at == timedelta(hours=leads.meeting_reminder_lead_hours)
    for agenda in story.of_type(AgendaRequested):
        assert agenda.starts_at - agenda.occurred_at == timedelta(hours=leads.agenda_request_lead_hours)
    concluded = {m.meeting_number for m in held} | {m.meeting_number for m in story.of_type(MeetingMissed)}
    assert {r.meeting_number for r in story.of_type(MeetingReminderIssued)} >= concluded
    assert {a.meeting_number for a in story.of_type(AgendaRequested)} >= concluded
    assert not story.of_type(HealthChanged) and state.health is Health.HEALTHY
    assert next_deadline(state) is None
    assert fold(story.history) == state
    assert [event.version for event in story.history] == list(range(1, len(story.history) + 1))
    assert SECRET not in state.model_dump_json()


# --- time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "months", "expected"),
    [
        (datetime(2025, 1, 31, 17, 30, tzinfo=UTC), 1, datetime(2025, 2, 28, 17, 30, tzinfo=UTC)),
        (datetime(2024, 1, 31, 17, 30, tzinfo=UTC), 1, datetime(2024, 2, 29, 17, 30, tzinfo=UTC)),
        (datetime(2025, 3, 31, tzinfo=UTC), 1, datetime(2025, 4, 30, tzinfo=UTC)),
        (datetime(2025, 8, 31, tzinfo=UTC), 6, datetime(2026, 2, 28, tzinfo=UTC)),
        (datetime(2025, 12, 15, tzinfo=UTC), 1, datetime(2026, 1, 15, tzinfo=UTC)),
        (datetime(2025, 1, 15, tzinfo=UTC), 12, datetime(2026, 1, 15, tzinfo=UTC)),
        (datetime(2025, 1, 15, tzinfo=UTC), 36, datetime(2028, 1, 15, tzinfo=UTC)),
    ],
)
def test_add_months_counts_calendar_months_and_clamps_the_day(
    moment: datetime, months: int, expected: datetime
) -> None:
    assert add_months(moment, months) == expected


def test_add_months_keeps_the_time_zone() -> None:
    paris = timezone(timedelta(hours=1))
    result = add_months(datetime(2025, 1, 31, 9, 0, tzinfo=paris), 1)
    assert result.tzinfo is paris and (result.month, result.day, result.hour) == (2, 28, 9)


def test_next_deadline_while_matching_is_the_timeout_or_the_pending_proposals_expiry() -> None:
    story = Story()
    deadline = next_deadline(story.state)
    assert deadline is not None
    assert (deadline.kind, deadline.at) == ("matching_timeout", T0 + timedelta(days=30))

    story.advance(timedelta(days=2))
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    deadline = next_deadline(story.state)
    assert deadline is not None
    assert (deadline.kind, deadline.at) == ("match_proposal_expiry", T0 + timedelta(days=9))


def test_next_deadline_while_agreeing_is_a_reminder_then_the_expiry() -> None:
    story = matched()
    due = story.state.agreement_due_at
    assert due is not None
    deadline = next_deadline(story.state)
    assert deadline is not None and (deadline.kind, deadline.at) == ("agreement_reminder", due - timedelta(days=3))
    story.advance(to=due - timedelta(days=1))
    deadline = next_deadline(story.state)
    assert deadline is not None and (deadline.kind, deadline.at) == ("agreement_expiry", due)
    assert story.state.agreement_reminders_sent == (3, 1)


def test_next_deadline_walks_a_silent_relationship_through_its_whole_life_in_time_order() -> None:
    story = active(
        programme(agenda_request_lead_hours=48, meeting_reminder_lead_hours=24),
        term_months=4,
        meeting_frequency="monthly",
    )
    activated_at = story.state.activated_at
    assert activated_at is not None
    seen: list[tuple[str, timedelta, list[str]]] = []
    while not story.state.is_closed:
        deadline = next_deadline(story.state)
        assert deadline is not None and deadline.at >= story.now
        seen.append((deadline.kind, deadline.at - activated_at, types(story.advance(to=deadline.at))))
    day = timedelta(days=1)
    # The first meeting two days on (the agenda is asked for 48 hours ahead), then every 30 days.
    assert seen == [
        ("agenda_request", 0 * day, ["AgendaRequested"]),
        ("meeting_reminder", 1 * day, ["MeetingReminderIssued"]),
        ("meeting_missed", 4 * day + timedelta(hours=1), ["MeetingMissed", "MeetingScheduled"]),
        ("nudge", 23 * day, ["NudgeIssued"]),
        # Thirty quiet days and the next agenda request coincide: one wake-up, both.
        ("agenda_request", 30 * day, ["AgendaRequested", "HealthChanged"]),
        ("meeting_reminder", 31 * day, ["MeetingReminderIssued"]),
        ("meeting_missed", 34 * day + timedelta(hours=1), ["MeetingMissed", "MeetingScheduled", "HealthChanged"]),
        # The midpoint of 120 days and sixty quiet days coincide: one wake-up, both changes.
        ("midpoint_review", 60 * day, ["ReviewOpened", "HealthChanged", "AgendaRequested"]),
        ("meeting_reminder", 61 * day, ["MeetingReminderIssued"]),
        ("meeting_missed", 64 * day + timedelta(hours=1), ["MeetingMissed", "MeetingScheduled"]),
        ("review_deadline", 74 * day, ["ReviewCompleted"]),
        ("agenda_request", 90 * day, ["AgendaRequested", "ClosureBegun"]),
        ("reflection_deadline", 104 * day, ["RelationshipClosed"]),
    ]
    assert story.state.closure_reason is ClosureReason.STALLED


def test_next_deadline_in_review_is_the_earliest_of_response_and_meeting_deadlines() -> None:
    story = in_review()
    review = story.state.review
    assert review is not None
    kinds = set()
    while story.state.phase is Phase.REVIEW:
        deadline = next_deadline(story.state)
        assert deadline is not None
        kinds.add(deadline.kind)
        story.advance(to=deadline.at)
    assert "review_deadline" in kinds and "meeting_missed" in kinds
    assert next_deadline(closed().state) is None


def test_a_deadline_not_yet_due_decides_nothing() -> None:
    story = active()
    deadline = next_deadline(story.state)
    assert deadline is not None
    assert decide_deadline(story.state, deadline.at - timedelta(microseconds=1)) == []
    assert decide_deadline(story.state, deadline.at) != []
