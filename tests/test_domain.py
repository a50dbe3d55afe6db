"""The relationship's rules, tested as pure code: no Temporal, no database, no event loop.

A `Story` drives one relationship the way the workflow shell does — `decide`, then `evolve`
each event; sleep until `next_deadline`, then `decide_deadline` — and keeps the history so
every test can also check the fold. The hypothesis state machine at the end throws plausible
command and time sequences at the same core and checks the invariants the shell relies on.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pydantic import ValidationError

from events.commands import (
    COMMAND_TYPES,
    DIRECTORY_ACTOR,
    AcceptMatch,
    AcknowledgeGoalRevision,
    AgreementTerms,
    AvailabilityWindow,
    CancelMeeting,
    CloseRelationship,
    Command,
    DeclineMatch,
    Goal,
    GoalAssessment,
    Milestone,
    Party,
    PartyAvailability,
    PauseRelationship,
    ProposeAgreement,
    ProposeGoalRevision,
    ProposeMatch,
    RaiseConcern,
    RecordGoalProgress,
    RecordIntroduction,
    RecordMeeting,
    ReportParticipantLeft,
    RequestReview,
    RescheduleMeeting,
    ResolveConcern,
    ResumeRelationship,
    ShareResource,
    SignAgreement,
    SubmitFeedback,
    SubmitReflection,
    SubmitReview,
)
from events.deadlines import add_months, midpoint, next_deadline
from events.decider import (
    FIRST_MEETING_WITHIN,
    MIN_SCHEDULING_LEAD,
    Rejection,
    catch_up,
    decide,
    decide_deadline,
    reject,
    start_relationship,
)
from events.health import assess_health, quiet_since
from events.meetings import plan_next_meeting
from events.model import (
    UPCASTERS,
    AgendaRequested,
    AgreementExpired,
    AgreementProposed,
    AgreementSigned,
    AnyEvent,
    ClosureBegun,
    ClosureReason,
    CommandRejected,
    ConcernRaised,
    ConcernResolved,
    FeedbackRequested,
    FeedbackSubmitted,
    GoalAchieved,
    GoalProgressRecorded,
    GoalRevised,
    GoalRevisionProposed,
    Health,
    HealthChanged,
    IntroductionRecorded,
    MatchAccepted,
    MatchConfirmed,
    MatchDeclined,
    MatchProposalExpired,
    MatchProposed,
    MeetingCancelled,
    MeetingHeld,
    MeetingMissed,
    MeetingReminderIssued,
    MeetingRescheduled,
    MeetingScheduled,
    MilestoneReached,
    NudgeIssued,
    ReflectionSubmitted,
    RelationshipActivated,
    RelationshipClosed,
    RelationshipPaused,
    RelationshipResumed,
    ResourceShared,
    ReviewCompleted,
    ReviewOpened,
    ReviewSubmitted,
    TermExtended,
    load_event,
)
from events.notifications import Notification, notifications_for
from events.commands import command_digest
from events.refusals import RefusalCode, refuse
from events.scheduling import SEARCH_DAYS, next_slot
from events.settings import FREQUENCY_DAYS, FREQUENCY_ORDER, ProgrammeSettings
from events.state import REJECTIONS_KEPT, Phase, RelationshipState, evolve, fold

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)  # a Monday
STREAM = "rel-1"
PROGRAMME = "prog-1"
MENTEE = "mentee-1"
MENTOR = "mentor-1"
OTHER_MENTOR = "mentor-2"
THIRD_MENTOR = "mentor-3"
COORDINATOR = "coord-1"
STRANGER = "stranger-1"
PROGRAMME_SETTINGS = ProgrammeSettings(coordinator_ids=(COORDINATOR,))
# Planted in every confidential field; it must never leave the events that carry it.
SECRET = "SECRET-7f3a"

E = TypeVar("E")


def programme(**changes: Any) -> ProgrammeSettings:
    return ProgrammeSettings(**({"coordinator_ids": (COORDINATOR,)} | changes))


def terms(**changes: Any) -> AgreementTerms:
    fields: dict[str, Any] = {
        "objective": "Grow into a tech lead",
        # Goals given without ids are numbered g1, g2, …
        "goals": (
            {
                "title": "Run a design review",
                "measure": "two reviews run, feedback from the team",
                "milestones": (
                    {"milestone_id": "m1", "title": "First draft"},
                    {"milestone_id": "m2", "title": "Review held"},
                ),
            },
            {"title": "Mentor a junior engineer"},
        ),
        "meeting_frequency": "biweekly",
        "meeting_minutes": 60,
        "term_months": 6,
    }
    return AgreementTerms(**(fields | changes))


def window(weekday: int, start: str, end: str) -> AvailabilityWindow:
    return AvailabilityWindow(weekday=weekday, start=time.fromisoformat(start), end=time.fromisoformat(end))


def available(party: Party, zone: str, *windows: AvailabilityWindow) -> PartyAvailability:
    return PartyAvailability(party=party, timezone=zone, windows=windows)


class Story:
    """One relationship under test, driven like the workflow drives it."""

    def __init__(self, programme: ProgrammeSettings = PROGRAMME_SETTINGS, now: datetime = T0):
        self.now = now
        self.history: list[AnyEvent] = start_relationship(STREAM, PROGRAMME, MENTEE, programme, now)
        state = fold(self.history)
        assert state is not None
        self.state: RelationshipState = state
        self.states: list[RelationshipState] = [state]
        self._command_ids = itertools.count(1)

    def command(self, command_type: type[Command], actor: str, **fields: Any) -> Command:
        command_id = fields.pop("command_id", None) or f"cmd-{next(self._command_ids)}"
        return command_type(command_id=command_id, actor_id=actor, **fields)

    def do(self, command_type: type[Command], actor: str, **fields: Any) -> list[AnyEvent]:
        """Send a command that must be accepted; returns (and applies) its events."""
        command = self.command(command_type, actor, **fields)
        decision = decide(self.state, command, self.now)
        assert not isinstance(decision, Rejection), decision.reason
        assert decision, f"{command.message_name} decided nothing"
        assert all(event.command_id == command.command_id and event.occurred_at == self.now for event in decision)
        return self.apply(decision)

    def refuse(self, command_type: type[Command], actor: str, **fields: Any) -> str:
        """Send a command that must be rejected; returns the reason and checks nothing changed."""
        before = self.state.model_dump_json()
        decision = decide(self.state, self.command(command_type, actor, **fields), self.now)
        assert isinstance(decision, Rejection), f"expected a rejection, got {decision}"
        assert self.state.model_dump_json() == before
        assert decision.reason and SECRET not in decision.reason
        return decision.reason

    def apply(self, events: list[AnyEvent]) -> list[AnyEvent]:
        for event in events:
            self.state = evolve(self.state, event)
            self.states.append(self.state)
        self.history.extend(events)
        return events

    def advance(self, by: timedelta | None = None, *, to: datetime | None = None) -> list[AnyEvent]:
        """Let time pass, firing every deadline that falls due on the way, at its own moment."""
        target = to if to is not None else self.now + (by or timedelta())
        fired: list[AnyEvent] = []
        while (deadline := next_deadline(self.state)) is not None and deadline.at <= target:
            self.now = max(self.now, deadline.at)
            events = decide_deadline(self.state, self.now)
            assert events, f"the due deadline {deadline.kind} decided nothing"
            fired += self.apply(events)
        self.now = max(self.now, target)
        return fired

    @property
    def meeting(self) -> Any:
        meeting = self.state.next_meeting
        assert meeting is not None, f"no meeting scheduled in phase {self.state.phase}"
        return meeting

    def meet(self, actor: str = MENTEE, minutes: int = 60) -> list[AnyEvent]:
        """Wait for the scheduled meeting (firing what falls due first) and report it held."""
        starts_at = self.meeting.starts_at
        self.advance(to=starts_at)
        return self.do(RecordMeeting, actor, held_at=starts_at, duration_minutes=minutes)

    def meet_or_wait(self, actor: str = MENTEE, minutes: int = 60) -> None:
        """Hold the scheduled meeting; if the term has no room left for one, wait for the next deadline."""
        if self.state.next_meeting is not None:
            self.meet(actor, minutes)
            return
        deadline = next_deadline(self.state)
        assert deadline is not None
        self.advance(to=deadline.at)

    def meet_until_a_review(self, actor: str = MENTEE, minutes: int = 60) -> None:
        """Keep the rhythm, every meeting held as planned, until time opens a review."""
        while self.state.phase is Phase.ACTIVE:
            self.meet_or_wait(actor, minutes)

    def of_type(self, event_type: type[E]) -> list[E]:
        return [event for event in self.history if isinstance(event, event_type)]

    def notifications(self) -> list[Notification]:
        """Everything the history sent, computed the way the workflow does (with the state before)."""
        sent: list[Notification] = []
        for before, event, after in zip(self.states[:-1], self.history[1:], self.states[1:], strict=True):
            sent += notifications_for(event, after, before)
        return sent


def matched(programme: ProgrammeSettings = PROGRAMME_SETTINGS, now: datetime = T0) -> Story:
    story = Story(programme, now)
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR, explanation="shares 3 of 4 goals", score=0.8)
    story.do(AcceptMatch, MENTEE)
    story.do(AcceptMatch, MENTOR)
    return story


def active(programme: ProgrammeSettings = PROGRAMME_SETTINGS, *, now: datetime = T0, **changes: Any) -> Story:
    story = matched(programme, now)
    story.do(ProposeAgreement, MENTEE, terms=terms(**changes))
    story.do(SignAgreement, MENTEE, agreement_version=1)
    story.do(SignAgreement, MENTOR, agreement_version=1)
    assert story.state.phase is Phase.ACTIVE
    return story


def in_review(programme: ProgrammeSettings = PROGRAMME_SETTINGS, **changes: Any) -> Story:
    """Active, meeting every week, until time opens the midpoint review."""
    story = active(programme, **({"meeting_frequency": "weekly"} | changes))
    story.meet_until_a_review()
    assert story.state.review is not None and story.state.review.kind == "midpoint"
    return story


def closing(actor: str = MENTEE) -> Story:
    story = active()
    story.meet()
    story.do(CloseRelationship, actor)
    assert story.state.phase is Phase.CLOSING
    return story


def closed(actor: str = MENTEE) -> Story:
    story = closing(actor)
    story.do(SubmitReflection, MENTEE, text=f"{SECRET} what I learnt")
    story.do(SubmitReflection, MENTOR, text=f"{SECRET} what I saw")
    assert story.state.is_closed
    return story


def types(events: list[AnyEvent]) -> list[str]:
    return [event.type for event in events]


def without_bookkeeping(events: list[AnyEvent]) -> list[str]:
    """Event types without the agenda/reminder/scheduling traffic of the cadence."""
    noise = {"AgendaRequested", "MeetingReminderIssued", "MeetingScheduled", "NudgeIssued"}
    return [event.type for event in events if event.type not in noise]


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


# --- matching -----------------------------------------------------------------------------


def test_a_decline_clears_the_candidate_and_that_mentor_cannot_be_proposed_again() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    story.do(AcceptMatch, MENTEE)

    [declined] = story.do(DeclineMatch, MENTOR, reason=f"{SECRET} no capacity this quarter")
    assert isinstance(declined, MatchDeclined)
    assert (declined.mentor_id, declined.party, declined.declined_by) == (MENTOR, "mentor", MENTOR)
    assert story.state.candidate is None
    assert story.state.match_attempts == 1
    assert story.state.declined_mentor_ids == (MENTOR,)
    assert story.state.phase is Phase.MATCHING

    assert "already proposed and declined" in story.refuse(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    story.do(ProposeMatch, COORDINATOR, mentor_id=OTHER_MENTOR)
    assert story.state.candidate is not None and story.state.candidate.mentor_id == OTHER_MENTOR


def test_the_mentee_may_decline_a_proposal_too() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    [declined] = story.do(DeclineMatch, MENTEE)
    assert isinstance(declined, MatchDeclined) and declined.party == "mentee"
    assert story.state.candidate is None


def test_an_unanswered_proposal_expires_at_its_deadline_and_not_before() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    expires_at = T0 + timedelta(days=7)

    assert decide_deadline(story.state, expires_at - timedelta(microseconds=1)) == []
    [expired] = story.apply(decide_deadline(story.state, expires_at))
    assert isinstance(expired, MatchProposalExpired) and expired.mentor_id == MENTOR
    assert expired.command_id is None
    assert story.state.candidate is None
    assert story.state.match_attempts == 1
    assert "already proposed" in story.refuse(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    deadline = next_deadline(story.state)
    assert deadline is not None and deadline.kind == "matching_timeout"


def test_an_expired_proposal_cannot_be_accepted_any_more() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    story.advance(timedelta(days=8))
    assert "no match proposal" in story.refuse(AcceptMatch, MENTEE)


def test_a_command_arriving_after_an_unfired_deadline_is_judged_after_that_deadline() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    late = T0 + timedelta(days=7, minutes=1)
    # The timer has not fired yet; catching up applies the expiry first.
    present, overdue = catch_up(story.state, late)
    assert types(overdue) == ["MatchProposalExpired"]
    assert present.candidate is None
    decision = decide(present, story.command(AcceptMatch, MENTEE), late)
    assert isinstance(decision, Rejection) and "no match proposal" in decision.reason


def test_catching_up_applies_every_overdue_deadline_in_order_and_judges_them_at_the_present() -> None:
    story = active(term_months=12, meeting_frequency="monthly")
    later = story.now + timedelta(days=61)
    present, overdue = catch_up(story.state, later)
    # Each overdue deadline is decided at the present, so the next meeting is placed after it.
    assert types(overdue) == [
        "AgendaRequested",
        "HealthChanged",
        "MeetingReminderIssued",
        "MeetingMissed",
        "MeetingScheduled",
        "AgendaRequested",
        "MeetingReminderIssued",
    ]
    assert all(event.occurred_at == later for event in overdue)
    assert present.health is Health.STALLED and present.health_reasons == ("quiet",)
    assert present.next_meeting is not None and present.next_meeting.starts_at == later + MIN_SCHEDULING_LEAD
    assert catch_up(present, later) == (present, [])
    assert fold(overdue, story.state) == present


def test_matching_closes_unmatched_after_max_match_attempts() -> None:
    story = Story(programme(max_match_attempts=3))
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    story.do(DeclineMatch, MENTOR)
    story.do(ProposeMatch, COORDINATOR, mentor_id=OTHER_MENTOR)
    story.advance(timedelta(days=7))
    assert story.state.match_attempts == 2 and not story.state.is_closed

    story.do(ProposeMatch, COORDINATOR, mentor_id=THIRD_MENTOR)
    declined, closure = story.do(DeclineMatch, MENTEE)
    assert isinstance(declined, MatchDeclined)
    # Never activated: no reflections to ask for, it closes at once with its summary.
    assert isinstance(closure, RelationshipClosed) and closure.reason is ClosureReason.UNMATCHED
    assert (closure.summary.activated_at, closure.summary.mentor_id, closure.summary.meetings_held) == (None, None, 0)
    assert closure.summary.reflections_from == () and closure.summary.goals_total == 0
    assert story.state.phase is Phase.CLOSED
    assert story.state.declined_mentor_ids == (MENTOR, OTHER_MENTOR, THIRD_MENTOR)


def test_the_last_allowed_proposal_expiring_closes_the_relationship_unmatched() -> None:
    story = Story(programme(max_match_attempts=1))
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    fired = story.advance(timedelta(days=7))
    assert types(fired) == ["MatchProposalExpired", "RelationshipClosed"]
    assert story.state.closure_reason is ClosureReason.UNMATCHED


def test_matching_times_out_unmatched_when_nobody_is_proposed() -> None:
    story = Story()
    timeout = T0 + timedelta(days=30)
    deadline = next_deadline(story.state)
    assert deadline is not None and (deadline.kind, deadline.at) == ("matching_timeout", timeout)
    assert decide_deadline(story.state, timeout - timedelta(seconds=1)) == []

    [closure] = story.advance(to=timeout)
    assert isinstance(closure, RelationshipClosed)
    assert closure.reason is ClosureReason.UNMATCHED and closure.closed_by is None
    assert closure.occurred_at == timeout
    assert closure.summary.duration_days == 30
    assert story.state.closure_reason is ClosureReason.UNMATCHED


# --- agreement ----------------------------------------------------------------------------


def test_goals_without_ids_are_numbered_and_ids_must_be_unique() -> None:
    agreed = terms(goals=({"title": "A"}, {"goal_id": "custom", "title": "B"}, {"title": "C"}))
    assert [goal.goal_id for goal in agreed.goals] == ["g1", "custom", "g3"]
    with pytest.raises(ValidationError, match="goal ids must be unique"):
        terms(goals=({"goal_id": "g1", "title": "A"}, {"goal_id": "g1", "title": "B"}))
    with pytest.raises(ValidationError, match="milestone ids must be unique"):
        Goal(goal_id="g1", title="A", milestones=(Milestone(milestone_id="m", title="x"),) * 2)
    with pytest.raises(ValidationError, match="at most once per party"):
        terms(availability=(available("mentee", "UTC", window(0, "09:00", "10:00")),) * 2)
    with pytest.raises(ValidationError, match="unknown time zone"):
        available("mentee", "Mars/Olympus_Mons", window(0, "09:00", "10:00"))
    with pytest.raises(ValidationError, match="end after it starts"):
        window(0, "10:00", "09:00")
    # The agreement states its defaults: what is not private, the exit plan, the notice.
    defaults = terms()
    assert defaults.formats == ("video",) and defaults.cancellation_notice_hours == 24
    assert defaults.agenda_policy == "mentee_shares" and defaults.confidentiality.private_by_default
    assert defaults.confidentiality.not_private and defaults.early_exit_plan


def test_an_agreement_never_signed_gets_reminders_then_expires_and_closes_at_once() -> None:
    story = matched()
    story.do(ProposeAgreement, MENTOR, terms=terms())
    story.do(SignAgreement, MENTOR, agreement_version=1)
    due = story.state.agreement_due_at
    assert due == T0 + timedelta(days=14)

    fired = story.advance(timedelta(days=30))
    assert types(fired) == ["AgreementReminderIssued", "AgreementReminderIssued", "AgreementExpired", "RelationshipClosed"]
    first, second, expired, closure = fired
    assert [first.occurred_at, second.occurred_at] == [due - timedelta(days=3), due - timedelta(days=1)]
    assert isinstance(expired, AgreementExpired) and expired.occurred_at == due
    assert isinstance(closure, RelationshipClosed) and closure.reason is ClosureReason.AGREEMENT_EXPIRED
    assert closure.summary.mentor_id == MENTOR and closure.summary.activated_at is None
    assert story.state.phase is Phase.CLOSED
    # The reminder only goes to whoever has not signed yet.
    reminded = [n.recipient_id for n in story.notifications() if n.template == "agreement_reminder"]
    assert reminded == [MENTEE, MENTEE]


def test_an_amendment_voids_signatures_so_a_stale_version_cannot_be_signed() -> None:
    story = matched()
    story.do(ProposeAgreement, MENTEE, terms=terms())
    story.do(SignAgreement, MENTEE, agreement_version=1)
    assert story.state.agreement is not None and story.state.agreement.signed_by == ("mentee",)

    [amended] = story.do(ProposeAgreement, MENTOR, terms=terms(meeting_frequency="weekly"))
    assert isinstance(amended, AgreementProposed) and amended.agreement_version == 2
    amendment = story.state.agreement
    assert amendment is not None and (amendment.signed_by, amendment.proposed_by) == ((), MENTOR)

    assert story.refuse(SignAgreement, MENTOR, agreement_version=1) == (
        "agreement_version is not the current version (2); read it and sign that one"
    )
    assert "not the current version" in story.refuse(SignAgreement, MENTOR, agreement_version=3)
    assert types(story.do(SignAgreement, MENTOR, agreement_version=2)) == ["AgreementSigned"]
    assert story.state.phase is Phase.AGREEMENT  # the mentee's signature of version 1 does not count
    _, activated, scheduled = story.do(SignAgreement, MENTEE, agreement_version=2)
    assert isinstance(activated, RelationshipActivated)
    assert (activated.agreement_version, activated.meeting_frequency) == (2, "weekly")
    assert isinstance(scheduled, MeetingScheduled)


def test_nothing_can_be_signed_before_an_agreement_is_proposed() -> None:
    assert matched().refuse(SignAgreement, MENTEE, agreement_version=1) == "no agreement has been proposed yet"


def test_every_broken_bound_of_an_agreement_is_named_at_once() -> None:
    story = matched()
    reason = story.refuse(ProposeAgreement, MENTEE, terms=terms(meeting_minutes=5, term_months=24))
    assert reason == "terms.meeting_minutes must be between 15 and 120; terms.term_months must be between 1 and 12"
    decision = decide(story.state, story.command(ProposeAgreement, MENTEE, terms=terms(meeting_minutes=5, term_months=24)), story.now)
    assert isinstance(decision, Rejection) and decision.code is RefusalCode.LIMIT
    assert [problem.field for problem in decision.problems] == ["terms.meeting_minutes", "terms.term_months"]


def test_meetings_may_not_be_agreed_less_often_than_the_programme_minimum() -> None:
    story = matched(programme(minimum_meeting_frequency="biweekly"))
    assert story.refuse(ProposeAgreement, MENTEE, terms=terms(meeting_frequency="monthly")) == (
        "terms.meeting_frequency is less often than the programme minimum (biweekly)"
    )
    story.do(ProposeAgreement, MENTEE, terms=terms(meeting_frequency="weekly"))
    story.do(ProposeAgreement, MENTEE, terms=terms(meeting_frequency="biweekly"))


@pytest.mark.parametrize(("minutes", "allowed"), [(14, False), (15, True), (120, True), (121, False)])
def test_meeting_length_must_be_within_programme_bounds(minutes: int, allowed: bool) -> None:
    story = matched()
    if allowed:
        story.do(ProposeAgreement, MENTEE, terms=terms(meeting_minutes=minutes))
    else:
        assert story.refuse(ProposeAgreement, MENTEE, terms=terms(meeting_minutes=minutes)) == (
            "terms.meeting_minutes must be between 15 and 120"
        )


@pytest.mark.parametrize(("months", "allowed"), [(2, False), (3, True), (9, True), (10, False)])
def test_the_term_must_be_within_programme_bounds(months: int, allowed: bool) -> None:
    story = matched(programme(min_term_months=3, max_term_months=9))
    if allowed:
        story.do(ProposeAgreement, MENTOR, terms=terms(term_months=months))
    else:
        assert story.refuse(ProposeAgreement, MENTOR, terms=terms(term_months=months)) == (
            "terms.term_months must be between 3 and 9"
        )


def test_a_party_cannot_accept_or_sign_twice() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    story.do(AcceptMatch, MENTEE)
    assert story.refuse(AcceptMatch, MENTEE) == "the mentee has already accepted this proposal"

    story = matched()
    story.do(ProposeAgreement, MENTEE, terms=terms())
    story.do(SignAgreement, MENTOR, agreement_version=1)
    assert story.refuse(SignAgreement, MENTOR, agreement_version=1) == "the mentor has already signed version 1"


# --- early exits --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "reason"),
    [
        (MENTEE, ClosureReason.CLOSED_BY_MENTEE),
        (MENTOR, ClosureReason.CLOSED_BY_MENTOR),
        (COORDINATOR, ClosureReason.CLOSED_BY_COORDINATOR),
    ],
)
def test_mentee_mentor_or_coordinator_may_close_early_and_both_are_asked_to_reflect(
    actor: str, reason: ClosureReason
) -> None:
    story = active()
    story.meet()
    story.advance(timedelta(days=3))
    [begun] = story.do(CloseRelationship, actor, note=f"{SECRET} it is not working")
    assert isinstance(begun, ClosureBegun)
    assert (begun.reason, begun.closed_by) == (reason, actor)
    assert begun.reflections_due_at == story.now + timedelta(days=14)
    assert story.state.phase is Phase.CLOSING
    assert story.state.next_meeting is None and story.state.closure_reason is reason
    deadline = next_deadline(story.state)
    assert deadline is not None and (deadline.kind, deadline.at) == ("reflection_deadline", begun.reflections_due_at)
    assert {n.recipient_id for n in story.notifications() if n.template == "reflection_request"} == {MENTEE, MENTOR}


def test_a_coordinator_may_close_during_matching_and_a_pending_proposal_goes_with_it() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    [closure] = story.do(CloseRelationship, COORDINATOR)
    assert isinstance(closure, RelationshipClosed) and closure.reason is ClosureReason.CLOSED_BY_COORDINATOR
    assert story.state.is_closed and story.state.candidate is None
    # The proposed mentor hears about it although the candidate is gone from the state after.
    assert [n.recipient_id for n in story.notifications()[-3:]] == [MENTEE, MENTOR, COORDINATOR]


@pytest.mark.parametrize("stranger", [STRANGER, OTHER_MENTOR])
def test_someone_outside_the_relationship_cannot_close_it(stranger: str) -> None:
    story = active()
    assert story.refuse(CloseRelationship, stranger) == f"actor {stranger} may not close this relationship"


def test_a_merely_proposed_mentor_cannot_close_the_relationship_only_decline() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    assert "may not close" in story.refuse(CloseRelationship, MENTOR)


# --- rejections ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command_type", "fields", "phase"),
    [
        (ProposeAgreement, {"terms": terms()}, "agreement"),
        (SignAgreement, {"agreement_version": 1}, "agreement"),
        (RecordMeeting, {"held_at": T0, "duration_minutes": 60}, "active or review"),
        (CancelMeeting, {"meeting_number": 1}, "active or review"),
        (RescheduleMeeting, {"meeting_number": 1, "starts_at": T0 + timedelta(days=1)}, "active or review"),
        (RecordGoalProgress, {"goal_id": "g1", "progress_percent": 10}, "active or review"),
        (ProposeGoalRevision, {"goal": Goal(goal_id="g1", title="x")}, "active or review"),
        (AcknowledgeGoalRevision, {"revision_id": "r1"}, "active or review"),
        (SubmitFeedback, {"feedback_round": 1, "score": 3}, "active or review"),
        (RecordIntroduction, {"introduced_to": "a staff engineer"}, "active or review"),
        (ShareResource, {"title": "Staff Engineer's Path"}, "active or review"),
        (PauseRelationship, {"until": T0 + timedelta(days=10)}, "active"),
        (RequestReview, {}, "active"),
        (SubmitReview, {"outcome": "continue"}, "review"),
        (SubmitReflection, {"text": "x"}, "closing"),
    ],
)
def test_commands_of_later_phases_are_rejected_while_matching(
    command_type: type[Command], fields: dict[str, Any], phase: str
) -> None:
    story = Story()
    reason = story.refuse(command_type, MENTEE, **fields)
    assert reason == (
        f"{command_type.message_name} is only allowed in the {phase} phase; the relationship is in matching"
    )


def test_matching_commands_are_rejected_once_matched() -> None:
    story = matched()
    assert "only allowed in the matching phase" in story.refuse(ProposeMatch, COORDINATOR, mentor_id=OTHER_MENTOR)
    assert "only allowed in the matching phase" in story.refuse(AcceptMatch, MENTEE)
    assert "only allowed in the matching phase" in story.refuse(DeclineMatch, MENTOR)


def test_agreement_commands_are_rejected_once_active() -> None:
    story = active()
    assert "in active" in story.refuse(ProposeAgreement, MENTEE, terms=terms())
    assert "in active" in story.refuse(SignAgreement, MENTOR, agreement_version=1)
    assert "only allowed in the review phase" in story.refuse(SubmitReview, MENTEE, outcome="continue")
    assert "only allowed in the closing phase" in story.refuse(SubmitReflection, MENTEE, text="too early")


def test_people_outside_the_relationship_cannot_act_for_it() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    not_a_party = f"actor {STRANGER} is not a party to this relationship"
    assert story.refuse(AcceptMatch, STRANGER) == not_a_party
    assert story.refuse(DeclineMatch, STRANGER) == not_a_party

    story = matched()
    assert story.refuse(ProposeAgreement, STRANGER, terms=terms()) == not_a_party
    story.do(ProposeAgreement, MENTEE, terms=terms())
    assert story.refuse(SignAgreement, STRANGER, agreement_version=1) == not_a_party
    # Coordinating the programme does not make someone a party to the agreement.
    assert "is not a party" in story.refuse(SignAgreement, COORDINATOR, agreement_version=1)

    story = in_review()
    number = story.meeting.meeting_number
    party_commands: list[tuple[type[Command], dict[str, Any]]] = [
        (RecordMeeting, {"held_at": story.now, "duration_minutes": 60}),
        (CancelMeeting, {"meeting_number": number}),
        (RescheduleMeeting, {"meeting_number": number, "starts_at": story.now + timedelta(days=2)}),
        (RecordGoalProgress, {"goal_id": "g1", "progress_percent": 10}),
        (ProposeGoalRevision, {"goal": Goal(goal_id="g1", title="x")}),
        (AcknowledgeGoalRevision, {"revision_id": "r1"}),
        (SubmitFeedback, {"feedback_round": 1, "score": 3}),
        (RecordIntroduction, {"introduced_to": "a staff engineer"}),
        (ShareResource, {"title": "a book"}),
        (SubmitReview, {"outcome": "close"}),
    ]
    for command_type, fields in party_commands:
        assert story.refuse(command_type, STRANGER, **fields) == not_a_party
        # Nor may a coordinator speak for the parties.
        assert story.refuse(command_type, COORDINATOR, **fields) == f"actor {COORDINATOR} is not a party to this relationship"

    neither = f"actor {STRANGER} is neither a party nor a coordinator of this relationship"
    story = active()
    assert story.refuse(RaiseConcern, STRANGER, text=f"{SECRET} worry") == neither
    assert story.refuse(PauseRelationship, STRANGER, until=story.now + timedelta(days=3)) == neither
    assert story.refuse(RequestReview, STRANGER) == neither
    assert story.refuse(SubmitReflection, MENTEE, text="x").startswith("submit_reflection is only allowed")


def test_only_coordinators_propose_matches_and_never_the_mentee_or_to_themselves() -> None:
    story = Story()
    assert "not a coordinator" in story.refuse(ProposeMatch, STRANGER, mentor_id=MENTOR)
    assert "not a coordinator" in story.refuse(ProposeMatch, MENTEE, mentor_id=MENTOR)
    assert "must differ from the mentee" in story.refuse(ProposeMatch, COORDINATOR, mentor_id=MENTEE)

    without_coordinators = Story(ProgrammeSettings())
    assert "cannot propose their own mentor" in without_coordinators.refuse(ProposeMatch, MENTEE, mentor_id=MENTOR)
    without_coordinators.do(ProposeMatch, "matching-engine", mentor_id=MENTOR)


def test_a_second_proposal_waits_for_the_first_to_be_answered() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    assert "already proposed; wait" in story.refuse(ProposeMatch, COORDINATOR, mentor_id=OTHER_MENTOR)
    assert "no match proposal to accept" in Story().refuse(AcceptMatch, MENTEE)
    assert "no match proposal to decline" in Story().refuse(DeclineMatch, MENTEE)


ALL_COMMANDS: list[tuple[type[Command], dict[str, Any]]] = [
    (ProposeMatch, {"mentor_id": OTHER_MENTOR}),
    (AcceptMatch, {}),
    (DeclineMatch, {}),
    (ProposeAgreement, {"terms": terms()}),
    (SignAgreement, {"agreement_version": 1}),
    (RecordMeeting, {"held_at": T0 + timedelta(days=6), "duration_minutes": 60}),
    (CancelMeeting, {"meeting_number": 2}),
    (RescheduleMeeting, {"meeting_number": 2, "starts_at": T0 + timedelta(days=400)}),
    (RecordGoalProgress, {"goal_id": "g1", "progress_percent": 10}),
    (ProposeGoalRevision, {"goal": Goal(goal_id="g1", title="x")}),
    (AcknowledgeGoalRevision, {"revision_id": "r1"}),
    (SubmitFeedback, {"feedback_round": 1, "score": 3}),
    (RaiseConcern, {"text": f"{SECRET} worry"}),
    (ResolveConcern, {"concern_id": "c1"}),
    (RecordIntroduction, {"introduced_to": "a staff engineer"}),
    (ShareResource, {"title": "a book"}),
    (PauseRelationship, {"until": T0 + timedelta(days=400)}),
    (ResumeRelationship, {}),
    (RequestReview, {}),
    (SubmitReview, {"outcome": "continue"}),
    (CloseRelationship, {}),
    (ReportParticipantLeft, {"participant_id": MENTOR}),
    (SubmitReflection, {"text": f"{SECRET} more"}),
]


@pytest.mark.parametrize(("command_type", "fields"), ALL_COMMANDS, ids=[c.message_name for c, _ in ALL_COMMANDS])
def test_nothing_is_allowed_on_a_closed_relationship(command_type: type[Command], fields: dict[str, Any]) -> None:
    story = closed(MENTEE)
    for actor in (MENTEE, MENTOR, COORDINATOR, DIRECTORY_ACTOR):
        assert story.refuse(command_type, actor, **fields) == "the relationship is closed (closed_by_mentee)"
    assert decide_deadline(story.state, story.now + timedelta(days=3650)) == []


@pytest.mark.parametrize(
    ("command_type", "fields"),
    [(c, f) for c, f in ALL_COMMANDS if c is not SubmitReflection],
    ids=[c.message_name for c, _ in ALL_COMMANDS if c is not SubmitReflection],
)
def test_only_reflections_are_accepted_while_closing(command_type: type[Command], fields: dict[str, Any]) -> None:
    story = closing(MENTOR)
    for actor in (MENTEE, MENTOR, COORDINATOR, DIRECTORY_ACTOR):
        assert story.refuse(command_type, actor, **fields) == (
            "the relationship is closing; only submit_reflection is accepted"
        )


def test_every_command_type_is_covered_here() -> None:
    # A new command needs its own rules tested; this fails until the tests above know it.
    assert set(COMMAND_TYPES) == {command_type.message_name for command_type, _ in ALL_COMMANDS}
    assert {command_type.message_name for command_type in COMMAND_KINDS} == set(COMMAND_TYPES)


# --- scheduling in both parties' availability ---------------------------------------------

KOLKATA, NEW_YORK = ZoneInfo("Asia/Kolkata"), ZoneInfo("America/New_York")
MONDAY = 0


def in_window(moment: datetime, minutes: int, availability: PartyAvailability) -> bool:
    """Whether the meeting from `moment` lies wholly inside one of the party's local windows."""
    local = moment.astimezone(ZoneInfo(availability.timezone))
    end = local + timedelta(minutes=minutes)
    return local.date() == end.date() and any(
        w.weekday == local.weekday() and w.start <= local.time() and end.time() <= w.end for w in availability.windows
    )


MENTEE_IN_KOLKATA = available("mentee", "Asia/Kolkata", window(MONDAY, "18:00", "23:30"))
MENTOR_IN_NEW_YORK = available("mentor", "America/New_York", window(MONDAY, "09:00", "10:30"))


def test_without_availability_the_slot_is_the_due_time_itself() -> None:
    due = datetime(2025, 3, 5, 7, 7, tzinfo=UTC)
    assert next_slot(due, (), 60) == due


@pytest.mark.parametrize(
    ("not_before", "expected_utc", "new_york", "kolkata"),
    [
        # New York on EST (UTC-5): 09:00 there is 14:00 UTC, 19:30 in Kolkata.
        (datetime(2025, 3, 3, 0, 0, tzinfo=UTC), datetime(2025, 3, 3, 14, 0, tzinfo=UTC), time(9, 0), time(19, 30)),
        # After the switch to EDT on 9 March the same local hour is 13:00 UTC, 18:30 in Kolkata
        # (India keeps no daylight saving time).
        (datetime(2025, 3, 10, 0, 0, tzinfo=UTC), datetime(2025, 3, 10, 13, 0, tzinfo=UTC), time(9, 0), time(18, 30)),
        # Asked for mid-week: the next Monday.
        (datetime(2025, 3, 12, 0, 0, tzinfo=UTC), datetime(2025, 3, 17, 13, 0, tzinfo=UTC), time(9, 0), time(18, 30)),
        # Already inside the window: the next quarter hour that still leaves 60 minutes.
        (datetime(2025, 3, 10, 13, 7, tzinfo=UTC), datetime(2025, 3, 10, 13, 15, tzinfo=UTC), time(9, 15), time(18, 45)),
        # Too late in the window for a whole meeting: a week later.
        (datetime(2025, 3, 10, 13, 31, tzinfo=UTC), datetime(2025, 3, 17, 13, 0, tzinfo=UTC), time(9, 0), time(18, 30)),
    ],
)
def test_a_slot_lies_in_both_windows_across_time_zones_and_daylight_saving_time(
    not_before: datetime, expected_utc: datetime, new_york: time, kolkata: time
) -> None:
    slot = next_slot(not_before, (MENTEE_IN_KOLKATA, MENTOR_IN_NEW_YORK), 60)
    assert slot == expected_utc
    assert slot.astimezone(NEW_YORK).time() == new_york and slot.astimezone(KOLKATA).time() == kolkata
    assert in_window(slot, 60, MENTEE_IN_KOLKATA) and in_window(slot, 60, MENTOR_IN_NEW_YORK)


def test_a_slot_can_fall_on_different_weekdays_for_each_party() -> None:
    # Tuesday 07:00 in Tokyo is Monday 14:00 in Los Angeles (PST).
    tokyo = available("mentee", "Asia/Tokyo", window(1, "07:00", "08:00"))
    los_angeles = available("mentor", "America/Los_Angeles", window(MONDAY, "14:00", "16:00"))
    slot = next_slot(datetime(2025, 1, 6, tzinfo=UTC), (tokyo, los_angeles), 60)
    assert slot == datetime(2025, 1, 6, 22, 0, tzinfo=UTC)
    assert slot.astimezone(ZoneInfo("Asia/Tokyo")).weekday() == 1
    assert slot.astimezone(ZoneInfo("America/Los_Angeles")).weekday() == MONDAY


@pytest.mark.parametrize(
    "mentor",
    [
        # 17:00–18:00 in New York never meets 19:00–20:00 in Kolkata.
        available("mentor", "America/New_York", window(MONDAY, "17:00", "18:00")),
        # They overlap for only 30 minutes: too short for a 60-minute meeting.
        available("mentor", "America/New_York", window(MONDAY, "08:00", "09:00")),
    ],
)
def test_without_a_common_slot_the_meeting_falls_back_to_the_due_time(mentor: PartyAvailability) -> None:
    mentee = available("mentee", "Asia/Kolkata", window(MONDAY, "19:00", "20:00"))
    due = datetime(2025, 3, 12, 9, 0, tzinfo=UTC)
    assert next_slot(due, (mentee, mentor), 60) == due


def test_daylight_saving_time_can_part_two_windows_for_months_and_the_search_stops_at_its_horizon() -> None:
    # Monday 17:00 in New York is Tuesday 09:00 in Sydney only while they are 16 hours apart:
    # from 9 March (New York on EDT) until 2 November (New York back on EST) they never meet.
    new_york = available("mentor", "America/New_York", window(MONDAY, "17:00", "18:00"))
    sydney = available("mentee", "Australia/Sydney", window(1, "09:00", "10:00"))
    both = (sydney, new_york)
    assert next_slot(datetime(2025, 2, 24, tzinfo=UTC), both, 60) == datetime(2025, 2, 24, 22, 0, tzinfo=UTC)
    assert next_slot(datetime(2025, 3, 10, tzinfo=UTC), both, 60) == datetime(2025, 3, 10, tzinfo=UTC)
    # 3 November is 26 days after 8 October: found; from 6 October it lies beyond SEARCH_DAYS.
    assert SEARCH_DAYS == 28
    assert next_slot(datetime(2025, 10, 8, tzinfo=UTC), both, 60) == datetime(2025, 11, 3, 22, 0, tzinfo=UTC)
    assert next_slot(datetime(2025, 10, 6, tzinfo=UTC), both, 60) == datetime(2025, 10, 6, tzinfo=UTC)


def test_the_cadence_places_every_meeting_in_both_windows_through_a_dst_change() -> None:
    availability = (
        available("mentee", "Asia/Kolkata", window(MONDAY, "18:00", "23:30"), window(3, "18:00", "23:30")),
        available("mentor", "America/New_York", window(MONDAY, "08:00", "12:00")),
    )
    start = datetime(2025, 2, 24, 12, 0, tzinfo=UTC)  # two weeks before New York moves its clocks
    story = active(now=start, meeting_frequency="weekly", availability=availability)
    for _ in range(4):
        story.meet()
    scheduled = story.of_type(MeetingScheduled)
    assert len(scheduled) == 5
    for earlier, later in itertools.pairwise(scheduled):
        # One meeting a week, on the same local day: the clock change neither skips nor doubles one.
        assert (later.starts_at.astimezone(KOLKATA).date() - earlier.starts_at.astimezone(KOLKATA).date()).days == 7
    for meeting in scheduled:
        assert all(in_window(meeting.starts_at, 60, party) for party in availability)
        assert meeting.ends_at - meeting.starts_at == timedelta(minutes=60)
    # Each at the first slot both share that day. On EST that opens the mentor's window
    # (08:00, 18:30 in Kolkata); on EDT New York's 08:00 is 17:30 in Kolkata, before the
    # mentee's window: 08:30 then, when the mentee's opens.
    assert [m.starts_at.astimezone(NEW_YORK).time() for m in scheduled] == [time(8, 0)] + [time(8, 30)] * 4
    assert scheduled[0].starts_at == datetime(2025, 3, 3, 13, 0, tzinfo=UTC)
    assert scheduled[1].starts_at == datetime(2025, 3, 10, 12, 30, tzinfo=UTC)


def test_the_cadence_falls_back_to_the_due_time_when_the_parties_never_overlap() -> None:
    availability = (
        available("mentee", "Asia/Kolkata", window(MONDAY, "19:00", "20:00")),
        available("mentor", "America/New_York", window(MONDAY, "17:00", "18:00")),
    )
    story = active(availability=availability)
    assert story.meeting.starts_at == story.state.activated_at + MIN_SCHEDULING_LEAD  # type: ignore[operator]


def test_one_partys_availability_is_enough_to_place_the_meeting() -> None:
    mentor = available("mentor", "Europe/Berlin", window(2, "16:00", "18:00"))  # Wednesdays
    story = active(availability=(mentor,))
    starts_at = story.meeting.starts_at
    assert starts_at >= story.state.activated_at + MIN_SCHEDULING_LEAD  # type: ignore[operator]
    assert in_window(starts_at, 60, mentor)
    assert starts_at == datetime(2025, 1, 8, 15, 0, tzinfo=UTC)  # 16:00 in Berlin (CET), two days on


# --- meetings -----------------------------------------------------------------------------

CALENDAR_FIELDS = ("meeting_number", "meeting_start", "meeting_end", "meeting_uid", "meeting_sequence")


def calendar_fields(notification: Notification) -> dict[str, str]:
    """What the email channel builds the .ics invite from."""
    return {key: notification.data[key] for key in CALENDAR_FIELDS}


def test_the_first_meeting_is_within_a_week_whatever_the_rhythm_and_then_in_the_rhythm() -> None:
    for frequency in FREQUENCY_ORDER:
        story = active(meeting_frequency=frequency, term_months=12)
        first = story.meeting
        assert (first.meeting_number, first.starts_at) == (1, T0 + MIN_SCHEDULING_LEAD)
        assert first.starts_at <= T0 + FIRST_MEETING_WITHIN
        story.meet()
        second = story.meeting
        assert second.meeting_number == 2
        assert second.starts_at == first.starts_at + timedelta(days=FREQUENCY_DAYS[frequency])


def test_an_early_meeting_completes_the_scheduled_one_and_the_rhythm_continues_from_it() -> None:
    story = active()
    scheduled = story.meeting
    story.advance(timedelta(days=2))
    held, next_scheduled = story.do(RecordMeeting, MENTOR, held_at=story.now, duration_minutes=50, notes=f"{SECRET} x")
    assert isinstance(held, MeetingHeld) and (held.meeting_number, held.correction) == (1, False)
    assert isinstance(next_scheduled, MeetingScheduled) and next_scheduled.meeting_number == 2
    # Due two weeks after the later of the meeting held and the meeting planned.
    assert next_scheduled.starts_at == scheduled.starts_at + timedelta(days=14)
    assert (story.state.meetings_held, story.state.meeting_minutes_total, story.state.last_meeting_at) == (1, 50, story.now)


def test_agenda_request_and_reminder_go_out_lead_hours_before_the_meeting() -> None:
    story = active(programme(agenda_request_lead_hours=72, meeting_reminder_lead_hours=12))
    starts_at = story.meeting.starts_at
    deadline = next_deadline(story.state)
    assert deadline is not None and (deadline.kind, deadline.at) == ("agenda_request", starts_at - timedelta(hours=72))
    [agenda] = story.advance(to=deadline.at)
    assert isinstance(agenda, AgendaRequested) and (agenda.meeting_number, agenda.starts_at) == (1, starts_at)
    assert story.state.next_meeting is not None and story.state.next_meeting.agenda_requested
    deadline = next_deadline(story.state)
    assert deadline is not None and (deadline.kind, deadline.at) == ("meeting_reminder", starts_at - timedelta(hours=12))
    [reminder] = story.advance(to=deadline.at)
    assert isinstance(reminder, MeetingReminderIssued) and reminder.meeting_number == 1
    # One of each per meeting: next comes the check whether it took place.
    deadline = next_deadline(story.state)
    assert deadline is not None and deadline.kind == "meeting_missed"
    agenda_to, reminder_to = (
        [n.recipient_id for n in story.notifications() if n.template == template]
        for template in ("agenda_request", "meeting_reminder")
    )
    assert (agenda_to, reminder_to) == ([MENTEE], [MENTEE, MENTOR])


@pytest.mark.parametrize(("policy", "recipients"), [("both_share", [MENTEE, MENTOR]), ("no_agenda", [])])
def test_the_agenda_policy_decides_who_is_asked_for_an_agenda(policy: str, recipients: list[str]) -> None:
    story = active(agenda_policy=policy)
    story.meet()
    assert [n.recipient_id for n in story.notifications() if n.template == "agenda_request"] == recipients
    assert bool(story.of_type(AgendaRequested)) == bool(recipients)


def test_a_meeting_nobody_reports_is_missed_after_the_grace_period_and_can_be_corrected() -> None:
    story = active(programme(missed_meeting_grace_hours=12, missed_meetings_at_risk=1))
    meeting = story.meeting
    grace_ends = meeting.ends_at + timedelta(hours=12)
    assert story.advance(to=grace_ends - timedelta(seconds=1))[-1].type == "MeetingReminderIssued"
    missed, scheduled, at_risk = story.advance(to=grace_ends)
    assert isinstance(missed, MeetingMissed) and (missed.meeting_number, missed.starts_at) == (1, meeting.starts_at)
    assert isinstance(scheduled, MeetingScheduled) and scheduled.meeting_number == 2
    assert scheduled.starts_at == meeting.starts_at + timedelta(days=14)
    assert isinstance(at_risk, HealthChanged) and (at_risk.health, at_risk.reasons) == (Health.AT_RISK, ("missed_meetings",))
    assert (story.state.meetings_missed, story.state.missed_meeting_numbers, story.state.consecutive_missed) == (1, (1,), 1)
    check = [n for n in story.notifications() if n.template == "meeting_missed_check"]
    assert [n.recipient_id for n in check] == [MENTEE, MENTOR] and check[0].data["meeting_number"] == "1"

    # It did take place after all: the record is corrected, the scheduled meeting 2 stays.
    story.advance(timedelta(days=1))
    assert story.refuse(RecordMeeting, MENTEE, held_at=meeting.starts_at, duration_minutes=60, meeting_number=7) == (
        "meeting 7 is neither the next meeting nor one marked missed"
    )
    corrected, restored = story.do(RecordMeeting, MENTEE, held_at=meeting.starts_at, duration_minutes=55, meeting_number=1)
    assert isinstance(corrected, MeetingHeld) and (corrected.meeting_number, corrected.correction) == (1, True)
    assert isinstance(restored, HealthChanged) and restored.health is Health.HEALTHY
    state = story.state
    assert (state.meetings_held, state.meetings_missed, state.missed_meeting_numbers, state.consecutive_missed) == (1, 0, (), 0)
    assert state.next_meeting is not None and state.next_meeting.meeting_number == 2
    assert state.last_meeting_at == meeting.starts_at
    # Reported again: the same meeting never counts twice.
    assert "meeting 1 (planned for 2025-01-07T09:00:00+00:00) was already recorded as held" == story.refuse(
        RecordMeeting, MENTEE, held_at=meeting.starts_at, duration_minutes=60, meeting_number=1
    )


def test_correcting_an_older_miss_keeps_the_run_of_later_misses() -> None:
    story = active(programme(missed_meetings_at_risk=2), term_months=12, meeting_frequency="weekly")
    for _ in range(2):
        story.advance(to=story.meeting.ends_at + timedelta(hours=48))
    assert story.state.consecutive_missed == 2 and "missed_meetings" in story.state.health_reasons
    story.do(RecordMeeting, MENTOR, held_at=story.now - timedelta(days=8), duration_minutes=60, meeting_number=1)
    # Meeting 2 was still missed, right after it: one miss in a row.
    assert story.state.consecutive_missed == 1 and "missed_meetings" not in story.state.health_reasons
    story.advance(to=story.meeting.ends_at + timedelta(hours=48))
    assert story.state.consecutive_missed == 2 and "missed_meetings" in story.state.health_reasons
    story.do(RecordMeeting, MENTOR, held_at=story.now - timedelta(days=2), duration_minutes=60, meeting_number=3)
    assert story.state.consecutive_missed == 0


FRIDAYS = available("mentor", "UTC", window(4, "09:00", "17:00"))


def test_a_meeting_cancelled_with_the_agreed_notice_is_not_late_and_the_next_one_follows_in_the_rhythm() -> None:
    # Available on Fridays only: the first meeting, that Friday, is more than 48 hours ahead.
    story = active(cancellation_notice_hours=48, availability=(FRIDAYS,))
    meeting = story.meeting
    story.advance(to=meeting.starts_at - timedelta(hours=48))
    assert story.refuse(CancelMeeting, MENTEE, meeting_number=2) == (
        "meeting 2 is not the scheduled meeting (that is meeting 1)"
    )
    cancelled, scheduled = story.do(CancelMeeting, MENTEE, meeting_number=1, reason=f"{SECRET} family")
    assert isinstance(cancelled, MeetingCancelled) and (cancelled.party, cancelled.late) == ("mentee", False)
    assert isinstance(scheduled, MeetingScheduled) and scheduled.meeting_number == 2
    assert scheduled.starts_at == meeting.starts_at + timedelta(days=14)
    assert (story.state.meetings_cancelled, story.state.late_cancellations) == (1, 0)
    [note, *_] = [n for n in story.notifications() if n.template == "meeting_cancelled"]
    assert note.data["late"] == "false" and note.data["cancelled_by"] == "mentee"
    assert note.data["meeting_start"] == meeting.starts_at.isoformat()
    assert note.data["meeting_uid"] == f"{STREAM}-meeting-1@mentorflow"


def test_a_late_cancellation_is_recorded_as_late() -> None:
    story = active(cancellation_notice_hours=48)
    meeting = story.meeting
    story.advance(to=meeting.starts_at - timedelta(hours=47))
    cancelled, _ = story.do(CancelMeeting, MENTOR, meeting_number=1)
    assert isinstance(cancelled, MeetingCancelled) and (cancelled.party, cancelled.late) == ("mentor", True)
    assert (story.state.meetings_cancelled, story.state.late_cancellations) == (1, 1)


def test_rescheduling_bumps_the_revision_and_rearms_agenda_and_reminder() -> None:
    story = active()
    meeting = story.meeting
    story.advance(to=meeting.starts_at - timedelta(hours=20))
    assert story.state.next_meeting is not None and story.state.next_meeting.reminded
    assert "is not in the future" in story.refuse(RescheduleMeeting, MENTEE, meeting_number=1, starts_at=story.now)
    assert "not the scheduled meeting" in story.refuse(
        RescheduleMeeting, MENTEE, meeting_number=2, starts_at=story.now + timedelta(days=3)
    )

    new_start = meeting.starts_at + timedelta(days=3, hours=2)
    [moved] = story.do(RescheduleMeeting, MENTOR, meeting_number=1, starts_at=new_start)
    assert isinstance(moved, MeetingRescheduled)
    assert (moved.starts_at, moved.ends_at, moved.party, moved.late) == (new_start, new_start + timedelta(hours=1), "mentor", True)
    rescheduled = story.state.next_meeting
    assert rescheduled is not None
    assert (rescheduled.meeting_number, rescheduled.starts_at, rescheduled.revision) == (1, new_start, 1)
    assert not rescheduled.agenda_requested and not rescheduled.reminded
    assert story.state.late_cancellations == 1
    deadline = next_deadline(story.state)
    agenda_lead = timedelta(hours=story.state.settings.agenda_request_lead_hours)
    assert deadline is not None and (deadline.kind, deadline.at) == ("agenda_request", new_start - agenda_lead)
    [invite] = [n for n in story.notifications() if n.template == "meeting_rescheduled" and n.recipient_id == MENTEE]
    assert calendar_fields(invite) == {
        "meeting_number": "1",
        "meeting_start": new_start.isoformat(),
        "meeting_end": (new_start + timedelta(hours=1)).isoformat(),
        "meeting_uid": f"{STREAM}-meeting-1@mentorflow",
        "meeting_sequence": "1",
    }

    # Moved again, well ahead: not late, revision 2. The rhythm stays where it was planned:
    # the next meeting is two weeks after meeting 1's planned start, not after where it moved.
    story.do(RescheduleMeeting, MENTEE, meeting_number=1, starts_at=new_start + timedelta(days=1))
    assert story.state.next_meeting is not None and story.state.next_meeting.revision == 2
    assert story.state.late_cancellations == 1
    fired = story.advance(to=new_start + timedelta(days=1) - timedelta(hours=1))
    assert types(fired) == ["AgendaRequested", "MeetingReminderIssued"]
    story.meet()
    assert story.meeting.starts_at == meeting.starts_at + timedelta(days=14)


def test_the_first_scheduled_invite_carries_the_calendar_fields() -> None:
    story = active()
    meeting = story.meeting
    invites = [n for n in story.notifications() if n.template == "meeting_scheduled"]
    assert [n.recipient_id for n in invites] == [MENTEE, MENTOR]
    assert calendar_fields(invites[0]) == {
        "meeting_number": "1",
        "meeting_start": meeting.starts_at.isoformat(),
        "meeting_end": meeting.ends_at.isoformat(),
        "meeting_uid": f"{STREAM}-meeting-1@mentorflow",
        "meeting_sequence": "0",
    }


def test_a_meeting_cannot_be_held_in_the_future_beyond_clock_skew() -> None:
    story = active()
    story.advance(timedelta(days=3))
    assert "is in the future" in story.refuse(
        RecordMeeting, MENTEE, held_at=story.now + timedelta(hours=2), duration_minutes=60
    )
    story.do(RecordMeeting, MENTEE, held_at=story.now + timedelta(minutes=30), duration_minutes=60)


def test_a_meeting_cannot_be_held_before_the_agreement_took_effect() -> None:
    story = active()
    activated_at = story.state.activated_at
    assert activated_at is not None
    story.advance(timedelta(days=3))
    assert "before the agreement took effect" in story.refuse(
        RecordMeeting, MENTOR, held_at=activated_at - timedelta(minutes=1), duration_minutes=60
    )
    story.do(RecordMeeting, MENTOR, held_at=activated_at, duration_minutes=60)


def test_meetings_may_still_be_recorded_during_a_review() -> None:
    story = in_review()
    before = story.state.meetings_held
    story.meet(actor=MENTOR)
    assert story.state.meetings_held == before + 1
    assert story.state.phase is Phase.REVIEW and story.state.next_meeting is not None


# --- goals --------------------------------------------------------------------------------


def test_goal_progress_celebrates_each_milestone_once_and_a_goal_achieved_once() -> None:
    story = active()
    story.advance(timedelta(days=2))
    recorded, reached = story.do(RecordGoalProgress, MENTEE, goal_id="g1", progress_percent=40, milestones_reached=("m1",))
    assert isinstance(recorded, GoalProgressRecorded) and (recorded.goal_id, recorded.progress_percent) == ("g1", 40)
    assert isinstance(reached, MilestoneReached) and (reached.goal_id, reached.milestone_id) == ("g1", "m1")
    assert story.state.goals["g1"].milestones_reached == ("m1",)

    # Reporting a milestone again, or twice in one report, celebrates nothing new.
    assert types(story.do(RecordGoalProgress, MENTOR, goal_id="g1", progress_percent=60, milestones_reached=("m1",))) == [
        "GoalProgressRecorded"
    ]
    recorded, reached, achieved = story.do(
        RecordGoalProgress, MENTOR, goal_id="g1", progress_percent=100, milestones_reached=("m2", "m1", "m2")
    )
    assert isinstance(reached, MilestoneReached) and reached.milestone_id == "m2"
    assert isinstance(achieved, GoalAchieved) and achieved.goal_id == "g1"
    goal = story.state.goals["g1"]
    assert (goal.progress_percent, goal.milestones_reached, goal.achieved_at) == (100, ("m1", "m2"), story.now)
    assert types(story.do(RecordGoalProgress, MENTEE, goal_id="g1", progress_percent=100)) == ["GoalProgressRecorded"]
    assert story.state.goals["g1"].achieved_at == goal.achieved_at

    celebrations = [n for n in story.notifications() if n.template in ("milestone_celebration", "goal_achieved")]
    assert [(n.template, n.recipient_id) for n in celebrations] == [
        ("milestone_celebration", MENTEE),
        ("milestone_celebration", MENTOR),
        ("milestone_celebration", MENTEE),
        ("milestone_celebration", MENTOR),
        ("goal_achieved", MENTEE),
        ("goal_achieved", MENTOR),
    ]
    assert celebrations[-1].data == {"goal_id": "g1", "goal_title": "Run a design review"}


def test_goal_progress_rejections() -> None:
    story = active()
    assert story.refuse(RecordGoalProgress, MENTEE, goal_id="g9", progress_percent=10) == (
        "there is no goal g9; goals are g1, g2"
    )
    assert story.refuse(RecordGoalProgress, MENTEE, goal_id="g1", progress_percent=10, milestones_reached=("m1", "m9")) == (
        "goal g1 has no milestone m9"
    )
    assert "has no milestone m1" in story.refuse(RecordGoalProgress, MENTEE, goal_id="g2", progress_percent=10, milestones_reached=("m1",))
    with pytest.raises(ValidationError):
        story.command(RecordGoalProgress, MENTEE, goal_id="g1", progress_percent=101)


def test_a_goal_change_takes_effect_only_once_the_other_side_acknowledges_it() -> None:
    story = active()
    story.do(RecordGoalProgress, MENTEE, goal_id="g1", progress_percent=50, milestones_reached=("m1", "m2"))
    revised_goal = Goal(
        goal_id="g1",
        title="Run two design reviews",
        milestones=(Milestone(milestone_id="m2", title="Review held"), Milestone(milestone_id="m3", title="Second review")),
    )
    [proposed] = story.do(ProposeGoalRevision, MENTEE, goal=revised_goal, rationale=f"{SECRET} I was too timid")
    assert isinstance(proposed, GoalRevisionProposed)
    revision_id = proposed.revision_id
    assert (proposed.party, proposed.proposed_by, proposed.goal) == ("mentee", MENTEE, revised_goal)
    assert set(story.state.pending_goal_revisions) == {revision_id}
    assert story.state.goals["g1"].goal.title == "Run a design review"  # not yet

    assert story.refuse(AcknowledgeGoalRevision, MENTEE, revision_id=revision_id) == (
        f"the mentee proposed revision {revision_id}; the other side must acknowledge it"
    )
    assert story.refuse(ProposeGoalRevision, MENTOR, goal=revised_goal) == (
        "a revision of goal g1 is already waiting for acknowledgement"
    )
    assert story.refuse(AcknowledgeGoalRevision, MENTOR, revision_id="nope") == (
        "there is no goal revision nope waiting for acknowledgement"
    )

    [revised] = story.do(AcknowledgeGoalRevision, MENTOR, revision_id=revision_id)
    assert isinstance(revised, GoalRevised) and (revised.goal, revised.acknowledged_by) == (revised_goal, MENTOR)
    goal = story.state.goals["g1"]
    # Progress stays; reached milestones the goal no longer has are dropped.
    assert (goal.goal, goal.progress_percent, goal.milestones_reached) == (revised_goal, 50, ("m2",))
    assert story.state.pending_goal_revisions == {}
    assert "no goal revision" in story.refuse(AcknowledgeGoalRevision, MENTOR, revision_id=revision_id)

    # A new goal is added the same way, by either side.
    [added] = story.do(ProposeGoalRevision, MENTOR, goal=Goal(goal_id="g3", title="Speak at a meetup"))
    story.do(AcknowledgeGoalRevision, MENTEE, revision_id=added.revision_id)  # type: ignore[union-attr]
    assert set(story.state.goals) == {"g1", "g2", "g3"} and story.state.goals["g3"].progress_percent == 0

    notes = [n for n in story.notifications() if n.template.startswith("goal_revis")]
    assert [(n.template, n.recipient_id) for n in notes[:3]] == [
        ("goal_revision_to_acknowledge", MENTOR),
        ("goal_revised", MENTEE),
        ("goal_revised", MENTOR),
    ]
    assert notes[0].data == {"goal_id": "g1", "revision_id": revision_id}


def test_a_relationship_has_at_most_twenty_goals() -> None:
    story = active(goals=tuple({"title": f"Goal {n}"} for n in range(1, 21)))
    assert story.refuse(ProposeGoalRevision, MENTEE, goal=Goal(goal_id="g21", title="One more")) == (
        "a relationship can have at most 20 goals"
    )
    story.do(ProposeGoalRevision, MENTEE, goal=Goal(goal_id="g20", title="Changed, not added"))


# --- feedback -----------------------------------------------------------------------------


def test_feedback_is_requested_every_few_sessions_from_both_sides() -> None:
    story = active(programme(feedback_every_sessions=2), meeting_frequency="weekly")
    assert story.refuse(SubmitFeedback, MENTEE, feedback_round=1, score=4) == (
        "feedback round 1 has not been requested (no round yet)"
    )
    assert types(story.meet()) == ["MeetingHeld", "MeetingScheduled"]
    held, requested, _ = story.meet()
    assert isinstance(requested, FeedbackRequested) and (requested.feedback_round, requested.after_meeting) == (1, 2)
    story.meet()
    *_, second = story.meet()[:2]
    assert isinstance(second, FeedbackRequested) and (second.feedback_round, second.after_meeting) == (2, 4)
    assert story.state.feedback_round == 2
    assert [n.recipient_id for n in story.notifications() if n.template == "feedback_request"] == [MENTEE, MENTOR] * 2

    [given] = story.do(SubmitFeedback, MENTEE, feedback_round=1, score=4, comment=f"{SECRET} helpful")
    assert isinstance(given, FeedbackSubmitted) and (given.party, given.score, given.low) == ("mentee", 4, False)
    assert story.refuse(SubmitFeedback, MENTEE, feedback_round=1, score=5) == (
        "the mentee has already given feedback for round 1"
    )
    assert story.refuse(SubmitFeedback, MENTEE, feedback_round=3, score=5) == (
        "feedback round 3 has not been requested (rounds 1 to 2)"
    )
    story.do(SubmitFeedback, MENTOR, feedback_round=2, score=5)
    story.do(SubmitFeedback, MENTOR, feedback_round=1, score=3)  # late for an earlier round is fine
    assert [(s.feedback_round, s.party, s.score) for s in story.state.feedback_scores] == [
        (1, "mentee", 4), (2, "mentor", 5), (1, "mentor", 3)
    ]
    # Good feedback tells nobody anything.
    assert not [n for n in story.notifications() if n.template in ("feedback_received", "low_feedback")]


def test_a_corrected_meeting_counts_towards_the_next_feedback_round() -> None:
    story = active(programme(feedback_every_sessions=2), meeting_frequency="weekly")
    story.meet()
    missed = story.meeting
    story.advance(to=missed.ends_at + timedelta(hours=48))
    corrected = story.do(RecordMeeting, MENTOR, held_at=missed.starts_at, duration_minutes=60, meeting_number=missed.meeting_number)
    assert story.state.meetings_held == 2
    [requested] = [e for e in corrected if isinstance(e, FeedbackRequested)]
    assert (requested.feedback_round, requested.after_meeting) == (1, 2)
    story.meet()
    story.meet()
    assert story.state.feedback_round == 2 and story.state.meetings_held == 4


def test_low_feedback_flags_the_relationship_at_risk_until_that_side_scores_it_well_again() -> None:
    story = active(programme(feedback_every_sessions=1, low_feedback_score=2), meeting_frequency="weekly")
    story.meet()
    low, at_risk = story.do(SubmitFeedback, MENTOR, feedback_round=1, score=2, comment=f"{SECRET} mentee never prepares")
    assert isinstance(low, FeedbackSubmitted) and low.low
    assert isinstance(at_risk, HealthChanged)
    assert (at_risk.health, at_risk.previous, at_risk.reasons) == (Health.AT_RISK, Health.HEALTHY, ("low_feedback",))
    assert story.state.low_feedback_parties == ("mentor",)
    [alert] = [n for n in story.notifications() if n.template == "low_feedback"]
    assert (alert.recipient_id, alert.data) == (COORDINATOR, {"feedback_round": "1", "party": "mentor"})

    # A good score from the other side does not speak for the mentor.
    assert types(story.do(SubmitFeedback, MENTEE, feedback_round=1, score=5)) == ["FeedbackSubmitted"]
    assert story.state.health is Health.AT_RISK
    story.meet()
    good, healthy = story.do(SubmitFeedback, MENTOR, feedback_round=2, score=3)
    assert isinstance(good, FeedbackSubmitted) and not good.low
    assert isinstance(healthy, HealthChanged) and (healthy.health, healthy.reasons) == (Health.HEALTHY, ())
    assert not story.state.low_feedback_parties


# --- concerns -----------------------------------------------------------------------------


def test_a_concern_reaches_the_coordinators_and_keeps_the_relationship_at_risk_until_resolved() -> None:
    story = active()
    story.advance(timedelta(days=2))
    raised, at_risk = story.do(RaiseConcern, MENTEE, text=f"{SECRET} my mentor belittles me")
    assert isinstance(raised, ConcernRaised) and (raised.party, raised.raised_by) == ("mentee", MENTEE)
    concern_id = raised.concern_id
    assert isinstance(at_risk, HealthChanged) and (at_risk.health, at_risk.reasons) == (Health.AT_RISK, ("concern_open",))
    assert set(story.state.open_concerns) == {concern_id} and story.state.concerns_raised == 1
    [alert] = [n for n in story.notifications() if n.template == "concern_raised"]
    assert (alert.recipient_id, alert.data) == (COORDINATOR, {"concern_id": concern_id, "raised_by_party": "mentee"})

    # Meeting well does not outweigh an open concern.
    story.meet()
    assert story.state.health is Health.AT_RISK

    assert story.refuse(ResolveConcern, MENTOR, concern_id=concern_id) == (
        "only a coordinator or whoever raised the concern may resolve it"
    )
    assert story.refuse(ResolveConcern, COORDINATOR, concern_id="c-unknown") == "there is no open concern c-unknown"
    resolved, healthy = story.do(ResolveConcern, COORDINATOR, concern_id=concern_id, resolution=f"{SECRET} talked")
    assert isinstance(resolved, ConcernResolved) and resolved.resolved_by == COORDINATOR
    assert isinstance(healthy, HealthChanged) and healthy.health is Health.HEALTHY
    assert story.state.open_concerns == {} and story.state.concerns_raised == 1
    # Only whoever raised it and the coordinators knew of it.
    assert [n.recipient_id for n in story.notifications() if n.template == "concern_resolved"] == [MENTEE, COORDINATOR]
    assert "no open concern" in story.refuse(ResolveConcern, MENTEE, concern_id=concern_id)


def test_whoever_raised_a_concern_may_resolve_it_and_a_coordinators_concern_only_coordinators() -> None:
    story = active()
    [by_mentor, _] = story.do(RaiseConcern, MENTOR, text=f"{SECRET} no-shows")
    [by_coordinator] = story.do(RaiseConcern, COORDINATOR, text=f"{SECRET} complaint from the team")
    assert isinstance(by_coordinator, ConcernRaised) and by_coordinator.party is None
    assert story.state.health_reasons == ("concern_open",)
    assert [e.type for e in story.do(ResolveConcern, MENTOR, concern_id=by_mentor.concern_id)] == ["ConcernResolved"]  # type: ignore[union-attr]
    assert story.state.health is Health.AT_RISK  # one still open
    for party in (MENTEE, MENTOR):
        assert "only a coordinator" in story.refuse(ResolveConcern, party, concern_id=by_coordinator.concern_id)
    _, healthy = story.do(ResolveConcern, COORDINATOR, concern_id=by_coordinator.concern_id)
    assert isinstance(healthy, HealthChanged) and healthy.health is Health.HEALTHY


def test_a_concern_raised_while_matching_counts_once_the_cadence_starts() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    [raised] = story.do(RaiseConcern, MENTEE, text=f"{SECRET} unsure about this mentor")
    assert isinstance(raised, ConcernRaised) and story.state.health is Health.HEALTHY
    story.do(AcceptMatch, MENTEE)
    story.do(AcceptMatch, MENTOR)
    story.do(ProposeAgreement, MENTOR, terms=terms())
    story.do(SignAgreement, MENTEE, agreement_version=1)
    *_, flagged = story.do(SignAgreement, MENTOR, agreement_version=1)
    assert isinstance(flagged, HealthChanged) and flagged.reasons == ("concern_open",)


# --- introductions and resources ------------------------------------------------------------


def test_introductions_and_shared_resources_are_recorded() -> None:
    story = active()
    [introduced] = story.do(RecordIntroduction, MENTOR, introduced_to="the platform team lead", note=f"{SECRET} x")
    assert isinstance(introduced, IntroductionRecorded) and introduced.recorded_by == MENTOR
    [shared] = story.do(ShareResource, MENTEE, title="The Staff Engineer's Path", url="https://example.org/book")
    assert isinstance(shared, ResourceShared) and (shared.shared_by, shared.url) == (MENTEE, "https://example.org/book")
    story.do(ShareResource, MENTOR, title="A talk")
    assert (story.state.introductions, story.state.resources_shared) == (1, 2)
    assert notifications_for(introduced, story.state) == [] and notifications_for(shared, story.state) == []


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


# --- health -------------------------------------------------------------------------------


def test_silence_nudges_then_flags_at_risk_then_stalled_and_a_meeting_restores_health() -> None:
    story = active(term_months=12, meeting_frequency="monthly")
    activated_at = story.state.activated_at
    assert activated_at is not None

    fired = story.advance(to=activated_at + timedelta(days=30) - timedelta(seconds=1))
    [nudge] = [e for e in fired if isinstance(e, NudgeIssued)]
    assert nudge.occurred_at == activated_at + timedelta(days=23) and nudge.quiet_since == activated_at
    assert story.state.health is Health.HEALTHY
    [at_risk] = [e for e in story.advance(timedelta(seconds=1)) if isinstance(e, HealthChanged)]
    assert (at_risk.health, at_risk.previous, at_risk.reasons) == (Health.AT_RISK, Health.HEALTHY, ("quiet",))
    assert at_risk.occurred_at == activated_at + timedelta(days=30)

    fired = story.advance(to=activated_at + timedelta(days=60))
    changes = [e for e in fired if isinstance(e, HealthChanged)]
    # The second missed meeting in a row adds its reason; then sixty quiet days stall it.
    assert [(c.health, c.reasons) for c in changes] == [
        (Health.AT_RISK, ("quiet", "missed_meetings")),
        (Health.STALLED, ("quiet", "missed_meetings")),
    ]
    assert changes[-1].occurred_at == activated_at + timedelta(days=60)
    assert story.state.stalled_at == activated_at + timedelta(days=60)
    assert not [e for e in fired if isinstance(e, NudgeIssued)], "one nudge per quiet spell"
    stalled_to = [n.recipient_id for n in story.notifications() if n.template == "health_stalled"]
    assert stalled_to == [MENTEE, MENTOR, COORDINATOR]
    assert [n.recipient_id for n in story.notifications() if n.template == "health_at_risk"] == [MENTEE, MENTOR] * 2

    story.advance(timedelta(days=5))
    # Held two hours ago: nearest to meeting 3, missed four days ago, so that record is corrected.
    held, restored = story.do(RecordMeeting, MENTOR, held_at=story.now - timedelta(hours=2), duration_minutes=30)
    assert isinstance(held, MeetingHeld) and (held.meeting_number, held.correction) == (3, True)
    assert isinstance(restored, HealthChanged)
    assert (restored.health, restored.previous, restored.reasons) == (Health.HEALTHY, Health.STALLED, ())
    assert story.state.stalled_at is None and story.state.consecutive_missed == 0
    assert assess_health(story.state, story.now) == (Health.HEALTHY, ())


def test_a_stalled_relationship_closes_after_close_stalled_after_days() -> None:
    story = active(programme(close_stalled_after_days=20), term_months=12, meeting_frequency="monthly")
    activated_at = story.state.activated_at
    assert activated_at is not None
    story.advance(to=activated_at + timedelta(days=60))
    assert story.state.health is Health.STALLED
    deadline = next_deadline(story.state)
    assert deadline is not None and deadline.kind != "close_stalled"  # meetings come first
    fired = story.advance(to=activated_at + timedelta(days=80))
    assert isinstance(fired[-1], ClosureBegun)
    assert (fired[-1].reason, fired[-1].closed_by, fired[-1].occurred_at) == (
        ClosureReason.STALLED, None, activated_at + timedelta(days=80)
    )
    story.advance(timedelta(days=14))
    assert story.state.is_closed and story.state.summary is not None
    assert story.state.summary.closure_reason is ClosureReason.STALLED and story.state.summary.reflections_from == ()


def test_with_close_stalled_after_days_zero_a_stalled_relationship_stays_open() -> None:
    story = active(programme(close_stalled_after_days=0), term_months=6, meeting_frequency="monthly")
    story.advance(timedelta(days=80))
    assert story.state.health is Health.STALLED and story.state.phase is Phase.ACTIVE
    fired = story.advance(timedelta(days=10))
    assert not [e for e in fired if isinstance(e, ClosureBegun)]


def test_a_meeting_pushes_the_at_risk_moment_back() -> None:
    story = active(term_months=12, meeting_frequency="monthly")
    story.meet()
    held_at = story.state.last_meeting_at
    assert held_at is not None
    fired = story.advance(to=held_at + timedelta(days=30) - timedelta(seconds=1))
    assert not [e for e in fired if isinstance(e, HealthChanged)]
    [at_risk] = [e for e in story.advance(timedelta(seconds=1)) if isinstance(e, HealthChanged)]
    assert at_risk.occurred_at == held_at + timedelta(days=30)


def test_a_late_reported_old_meeting_does_not_flip_health_back_and_forth() -> None:
    # Reported on day 32 but held on day 1: still 31 quiet days, so still at risk. Declaring
    # the relationship healthy would only re-flag it at once and notify everyone twice.
    story = active(term_months=12, meeting_frequency="monthly")
    activated_at = story.state.activated_at
    assert activated_at is not None
    story.advance(to=activated_at + timedelta(days=32))
    assert (story.state.health, story.state.health_reasons) == (Health.AT_RISK, ("quiet",))

    assert "HealthChanged" not in types(
        story.do(RecordMeeting, MENTEE, held_at=activated_at + timedelta(days=1), duration_minutes=60)
    )
    assert story.state.health is Health.AT_RISK
    assert not [event for event in story.advance(timedelta(seconds=1)) if isinstance(event, HealthChanged)]
    # A recent meeting does restore it.
    restored = story.do(RecordMeeting, MENTEE, held_at=story.now, duration_minutes=60)[-1]
    assert isinstance(restored, HealthChanged) and restored.health is Health.HEALTHY


def test_health_combines_its_reasons() -> None:
    story = active(programme(feedback_every_sessions=1))
    story.meet()
    story.do(RaiseConcern, MENTOR, text=f"{SECRET} a")
    *_, change = story.do(SubmitFeedback, MENTEE, feedback_round=1, score=1)
    assert isinstance(change, HealthChanged) and change.reasons == ("concern_open", "low_feedback")
    assert change.previous is Health.AT_RISK and change.health is Health.AT_RISK
    # Health outside the cadence is left as it is.
    assert assess_health(closed().state, T0 + timedelta(days=999))[0] is Health.HEALTHY


# --- reviews ------------------------------------------------------------------------------


def test_either_side_or_a_coordinator_may_ask_for_a_review_at_any_time() -> None:
    story = active()
    story.meet()
    [opened] = story.do(RequestReview, MENTOR)
    assert isinstance(opened, ReviewOpened)
    assert (opened.kind, opened.requested_by, opened.respond_by) == ("on_demand", MENTOR, story.now + timedelta(days=14))
    assert story.state.phase is Phase.REVIEW
    assert story.refuse(RequestReview, COORDINATOR) == (
        "request_review is only allowed in the active phase; the relationship is in review"
    )
    assert [n.template for n in story.notifications()][-2:] == ["on_demand_review_opened"] * 2
    story.do(SubmitReview, MENTEE, outcome="continue")
    _, completed = story.do(SubmitReview, MENTOR, outcome="continue")
    assert isinstance(completed, ReviewCompleted) and (completed.kind, completed.outcome) == ("on_demand", "continue")
    after_review = story.state
    assert after_review.phase is Phase.ACTIVE and after_review.reviews_completed == ("on_demand",)
    # The midpoint review is still to come.
    story.do(RequestReview, COORDINATOR)
    assert story.state.review is not None and story.state.review.kind == "on_demand"


def test_a_midpoint_review_closes_when_either_party_wants_to_close() -> None:
    story = in_review()
    story.do(SubmitReview, MENTEE, outcome="continue")
    _, completed, begun = story.do(SubmitReview, MENTOR, outcome="close", comment=f"{SECRET} not for me")
    assert isinstance(completed, ReviewCompleted) and completed.outcome == "close"
    assert isinstance(begun, ClosureBegun) and begun.reason is ClosureReason.REVIEW_DECIDED_CLOSE


def test_recalibrating_goals_is_asked_for_until_a_goal_revision_is_acknowledged() -> None:
    story = in_review()
    story.do(SubmitReview, MENTEE, outcome="recalibrate", goal_assessments=(GoalAssessment(goal_id="g1", progress_percent=20, comment=f"{SECRET} slow"),))
    _, completed = story.do(SubmitReview, MENTOR, outcome="continue")
    assert isinstance(completed, ReviewCompleted) and completed.outcome == "recalibrate"
    assert story.state.phase is Phase.ACTIVE and story.state.needs_recalibration
    assert story.state.goals["g1"].progress_percent == 20
    [proposed] = story.do(ProposeGoalRevision, MENTOR, goal=Goal(goal_id="g1", title="Run one design review"))
    assert story.state.needs_recalibration
    story.do(AcknowledgeGoalRevision, MENTEE, revision_id=proposed.revision_id)  # type: ignore[union-attr]
    assert not story.state.needs_recalibration


def test_review_submissions_are_checked() -> None:
    story = in_review()
    assert story.refuse(SubmitReview, MENTEE, outcome="continue", goal_assessments=(GoalAssessment(goal_id="g9", progress_percent=5),)) == (
        "there is no goal g9"
    )
    assert story.refuse(SubmitReview, MENTEE, outcome="continue", extension_months=2) == (
        "extension_months only goes with outcome extend"
    )
    assert story.refuse(SubmitReview, MENTEE, outcome="extend", extension_months=4) == (
        "extension_months may be at most 3"
    )
    story.do(SubmitReview, MENTEE, outcome="continue")
    assert story.refuse(SubmitReview, MENTEE, outcome="close") == "the mentee has already submitted the midpoint review"
    assert "is not a party" in story.refuse(SubmitReview, COORDINATOR, outcome="close")


def test_both_asking_to_extend_at_the_midpoint_extends_the_term_once_by_the_smaller_ask() -> None:
    story = in_review()
    term_ends_at = story.state.term_ends_at
    assert term_ends_at is not None
    story.do(SubmitReview, MENTEE, outcome="extend", extension_months=3)
    _, completed, extended = story.do(SubmitReview, MENTOR, outcome="extend", extension_months=2)
    assert isinstance(completed, ReviewCompleted) and (completed.kind, completed.outcome) == ("midpoint", "extend")
    assert isinstance(extended, TermExtended)
    assert (extended.months, extended.term_ends_at) == (2, add_months(term_ends_at, 2))
    assert story.state.term_ends_at == extended.term_ends_at and story.state.extensions == 1
    assert story.state.phase is Phase.ACTIVE
    assert [n.recipient_id for n in story.notifications() if n.template == "term_extended"] == [MENTEE, MENTOR, COORDINATOR]

    # At most max_extensions (1) extensions.
    story.do(RequestReview, MENTEE)
    assert story.refuse(SubmitReview, MENTEE, outcome="extend") == (
        "outcome cannot extend again (at most 1 extensions)"
    )


def test_one_side_asking_to_extend_is_not_enough() -> None:
    story = in_review()
    story.do(SubmitReview, MENTEE, outcome="extend")
    _, completed = story.do(SubmitReview, MENTOR, outcome="continue")
    assert isinstance(completed, ReviewCompleted) and completed.outcome == "continue"
    assert story.state.extensions == 0


def test_both_extending_at_the_final_review_extends_the_term_and_the_next_final_review_closes_it() -> None:
    story = active(term_months=2, meeting_frequency="weekly")
    term_ends_at = story.state.term_ends_at
    assert term_ends_at is not None
    while story.state.phase is not Phase.REVIEW or story.state.review.kind != "final":  # type: ignore[union-attr]
        story.meet_or_wait()
        if story.state.review is not None and story.state.review.kind == "midpoint":
            story.do(SubmitReview, MENTEE, outcome="continue")
            story.do(SubmitReview, MENTOR, outcome="continue")
    story.do(SubmitReview, MENTEE, outcome="extend")
    _, completed, extended, scheduled = story.do(SubmitReview, MENTOR, outcome="extend")
    assert isinstance(completed, ReviewCompleted) and (completed.kind, completed.outcome) == ("final", "extend")
    assert isinstance(extended, TermExtended)
    assert (extended.months, extended.term_ends_at) == (3, add_months(term_ends_at, 3))  # max_extension_months
    assert story.states[-1].phase is Phase.ACTIVE
    # No meeting fitted in the old term's last days; the extended term has room again.
    assert isinstance(scheduled, MeetingScheduled) and term_ends_at < scheduled.ends_at <= extended.term_ends_at
    while story.state.review is None:
        story.meet_or_wait()
    assert story.of_type(ReviewOpened)[-1].occurred_at == extended.term_ends_at
    story.advance(timedelta(days=14))  # nobody answers: the final review still completes the term
    state = story.state
    assert state.phase is Phase.CLOSING and state.closure_reason is ClosureReason.TERM_COMPLETED
    assert state.reviews_completed == ("midpoint", "final", "final")


def test_an_unanswered_midpoint_review_completes_at_its_deadline_and_records_who_was_missing() -> None:
    story = in_review()
    review = story.state.review
    assert review is not None
    story.do(SubmitReview, MENTEE, outcome="extend")
    fired = story.advance(to=review.respond_by)
    [completed] = [e for e in fired if isinstance(e, ReviewCompleted)]
    assert (completed.outcome, completed.missing_parties) == ("continue", ("mentor",))
    assert completed.occurred_at == review.respond_by
    assert story.state.phase is Phase.ACTIVE and story.state.extensions == 0


def test_an_unanswered_final_review_still_completes_the_term() -> None:
    story = active(term_months=1)
    story.advance(timedelta(days=120))
    assert story.state.is_closed
    assert story.state.closure_reason is ClosureReason.TERM_COMPLETED
    [final] = [event for event in story.of_type(ReviewCompleted) if event.kind == "final"]
    assert final.missing_parties == ("mentee", "mentor")


def test_without_a_midpoint_review_only_the_final_one_opens() -> None:
    story = active(programme(midpoint_review=False), term_months=2, meeting_frequency="weekly")
    story.meet_until_a_review()
    assert [e.kind for e in story.of_type(ReviewOpened)] == ["final"]


# --- closure ------------------------------------------------------------------------------


def test_closing_reflections_from_both_close_the_relationship_and_release_everything() -> None:
    story = closing(MENTOR)
    [reflected] = story.do(SubmitReflection, MENTEE, text=f"{SECRET} it helped")
    assert isinstance(reflected, ReflectionSubmitted) and reflected.party == "mentee"
    assert story.refuse(SubmitReflection, MENTEE, text="again") == "the mentee has already shared a reflection"
    assert story.refuse(SubmitReflection, COORDINATOR, text="x") == f"actor {COORDINATOR} is not a party to this relationship"
    _, closure = story.do(SubmitReflection, MENTOR, text=f"{SECRET} good luck")
    assert isinstance(closure, RelationshipClosed)
    assert (closure.reason, closure.closed_by) == (ClosureReason.CLOSED_BY_MENTOR, MENTOR)
    assert closure.summary.reflections_from == ("mentee", "mentor") and closure.summary.meetings_held == 1
    state = story.state
    assert (state.next_meeting, state.review, state.paused_until, state.candidate) == (None, None, None, None)
    assert next_deadline(state) is None
    summary_notes = [n for n in story.notifications() if n.template == "relationship_summary"]
    assert [n.recipient_id for n in summary_notes] == [MENTEE, MENTOR, COORDINATOR]
    assert summary_notes[0].data == {
        "reason": "closed_by_mentor",
        "meetings_held": "1",
        "meetings_missed": "0",
        "goals_achieved": "0",
        "goals_total": "2",
        "duration_days": str(closure.summary.duration_days),
        "feedback_trend": "",
    }


def test_the_reflection_deadline_closes_with_whatever_reflections_came() -> None:
    story = closing(MENTEE)
    due = story.state.reflections_due_at
    assert due is not None
    story.do(SubmitReflection, MENTOR, text=f"{SECRET} fine")
    assert story.advance(to=due - timedelta(seconds=1)) == []
    [closure] = story.advance(to=due)
    assert isinstance(closure, RelationshipClosed) and closure.occurred_at == due
    assert closure.summary.reflections_from == ("mentor",) and closure.summary.closed_at == due
    assert closure.reason is ClosureReason.CLOSED_BY_MENTEE and closure.closed_by == MENTEE


def test_a_paused_relationship_can_be_closed_and_the_pause_goes_with_it() -> None:
    story = active()
    story.do(PauseRelationship, MENTEE, until=story.now + timedelta(days=30))
    [begun] = story.do(CloseRelationship, COORDINATOR)
    assert isinstance(begun, ClosureBegun) and not story.state.is_paused
    deadline = next_deadline(story.state)
    assert deadline is not None and deadline.kind == "reflection_deadline"


# --- participants leaving -------------------------------------------------------------------


def test_a_mentee_leaving_the_organisation_closes_the_relationship() -> None:
    story = active()
    story.meet()
    assert story.refuse(ReportParticipantLeft, MENTOR, participant_id=MENTEE) == (
        "only the directory or a coordinator may report that a participant left"
    )
    assert story.refuse(ReportParticipantLeft, DIRECTORY_ACTOR, participant_id=OTHER_MENTOR) == (
        f"participant {OTHER_MENTOR} is not part of this relationship"
    )
    [begun] = story.do(ReportParticipantLeft, DIRECTORY_ACTOR, participant_id=MENTEE)
    assert isinstance(begun, ClosureBegun)
    assert (begun.reason, begun.closed_by) == (ClosureReason.PARTICIPANT_LEFT, DIRECTORY_ACTOR)


def test_a_matched_mentor_leaving_before_the_agreement_closes_at_once() -> None:
    story = matched()
    [closure] = story.do(ReportParticipantLeft, COORDINATOR, participant_id=MENTOR)
    assert isinstance(closure, RelationshipClosed) and closure.reason is ClosureReason.PARTICIPANT_LEFT


def test_a_proposed_mentor_leaving_counts_as_a_decline_and_matching_goes_on() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    story.do(AcceptMatch, MENTEE)
    [declined] = story.do(ReportParticipantLeft, DIRECTORY_ACTOR, participant_id=MENTOR)
    assert isinstance(declined, MatchDeclined)
    assert (declined.mentor_id, declined.party, declined.declined_by, declined.reason) == (
        MENTOR, "mentor", DIRECTORY_ACTOR, "participant left"
    )
    assert story.state.phase is Phase.MATCHING and story.state.candidate is None
    assert (story.state.match_attempts, story.state.declined_mentor_ids) == (1, (MENTOR,))
    # Told with the state before the event: the mentor who left is still among the recipients.
    after, before = story.states[-1], story.states[-2]
    assert [n.recipient_id for n in notifications_for(declined, after, before)] == [MENTEE, MENTOR, COORDINATOR]
    story.do(ProposeMatch, COORDINATOR, mentor_id=OTHER_MENTOR)


def test_the_last_proposed_mentor_leaving_closes_unmatched() -> None:
    story = Story(programme(max_match_attempts=1))
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    declined, closure = story.do(ReportParticipantLeft, DIRECTORY_ACTOR, participant_id=MENTOR)
    assert isinstance(declined, MatchDeclined)
    assert isinstance(closure, RelationshipClosed) and closure.reason is ClosureReason.UNMATCHED


def test_a_mentee_leaving_while_matching_closes_at_once() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    [closure] = story.do(ReportParticipantLeft, DIRECTORY_ACTOR, participant_id=MENTEE)
    assert isinstance(closure, RelationshipClosed)
    assert (closure.reason, closure.closed_by) == (ClosureReason.PARTICIPANT_LEFT, DIRECTORY_ACTOR)


# --- notifications and confidentiality ------------------------------------------------------


def test_a_match_proposal_notifies_the_mentee_and_the_proposed_mentor_with_the_explanation() -> None:
    story = Story()
    [proposed] = story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR, explanation="shares 3 of 4 goals")
    assert isinstance(proposed, MatchProposed)
    notifications = notifications_for(proposed, story.state)
    assert [(n.recipient_id, n.template) for n in notifications] == [
        (MENTEE, "match_proposed"),
        (MENTOR, "match_proposed"),
    ]
    assert [n.notification_id for n in notifications] == [
        f"{proposed.event_id}:{MENTEE}",
        f"{proposed.event_id}:{MENTOR}",
    ]
    assert all(n.relationship_id == STREAM for n in notifications)
    assert notifications[0].data == {
        "mentor_id": MENTOR,
        "respond_by": proposed.expires_at.isoformat(),
        "explanation": "shares 3 of 4 goals",
    }


def test_an_agreement_proposal_notifies_the_other_party_only() -> None:
    story = matched()
    [proposed] = story.do(ProposeAgreement, MENTOR, terms=terms())
    assert [n.recipient_id for n in notifications_for(proposed, story.state)] == [MENTEE]


def test_a_decline_still_reaches_the_declined_mentor_after_the_candidate_is_cleared() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    [declined] = story.do(DeclineMatch, MENTEE)
    assert [n.recipient_id for n in notifications_for(declined, story.state)] == [MENTEE, MENTOR, COORDINATOR]


def test_recipients_come_from_the_state_before_the_event() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    [closure] = story.do(CloseRelationship, COORDINATOR)
    before, after = story.states[-2], story.states[-1]
    # After the closure the candidate is gone; the proposed mentor is still told.
    assert [n.recipient_id for n in notifications_for(closure, after)] == [MENTEE, COORDINATOR]
    assert [n.recipient_id for n in notifications_for(closure, after, before)] == [MENTEE, MENTOR, COORDINATOR]
    assert {n.relationship_id for n in notifications_for(closure, after, before)} == {STREAM}


def test_someone_in_two_roles_is_notified_once() -> None:
    # The mentor also coordinates the programme.
    story = active(ProgrammeSettings(coordinator_ids=(COORDINATOR, MENTOR)))
    [begun] = story.do(CloseRelationship, MENTEE)
    story.advance(timedelta(days=14))
    closure = story.history[-1]
    assert isinstance(begun, ClosureBegun) and isinstance(closure, RelationshipClosed)
    recipients = [n.recipient_id for n in notifications_for(closure, story.state, story.states[-2])]
    assert recipients == [MENTEE, MENTOR, COORDINATOR]


def test_bookkeeping_events_notify_nobody() -> None:
    story = active()
    story.meet()
    quiet = (
        "RelationshipStarted", "MatchAccepted", "AgreementSigned", "MeetingHeld", "CommandRejected",
        "GoalProgressRecorded", "IntroductionRecorded", "ResourceShared", "ReflectionSubmitted",
        "ReviewSubmitted", "AgreementExpired",
    )  # fmt: skip
    story.apply([reject(story.state, "accept_match", "x-1", refuse(RefusalCode.NOT_ALLOWED, "no"), story.now)])
    for event in story.history:
        if event.type in quiet:
            assert notifications_for(event, story.state) == [], event.type


def test_notification_ids_are_unique_across_a_whole_relationship() -> None:
    story = in_review()
    story.do(SubmitReview, MENTEE, outcome="close")
    story.do(SubmitReview, MENTOR, outcome="close")
    story.advance(timedelta(days=30))
    assert story.state.is_closed
    ids = []
    for notification in story.notifications():
        assert notification.notification_id.endswith(f":{notification.recipient_id}")
        ids.append(notification.notification_id)
    assert ids and len(ids) == len(set(ids))


def test_confidential_text_never_reaches_notifications_state_or_rejections() -> None:
    """Notes, concerns, feedback, reflections: planted in every confidential field, they stay
    in the events that carry them and appear nowhere else."""
    story = Story(programme(feedback_every_sessions=1, low_feedback_score=2))
    story.do(ProposeMatch, COORDINATOR, mentor_id=OTHER_MENTOR)
    story.do(DeclineMatch, OTHER_MENTOR, reason=f"{SECRET} decline reason")
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    story.do(RaiseConcern, MENTEE, text=f"{SECRET} concern while matching")
    story.do(AcceptMatch, MENTEE)
    story.do(AcceptMatch, MENTOR)
    story.do(ProposeAgreement, MENTEE, terms=terms())
    story.do(SignAgreement, MENTEE, agreement_version=1)
    story.do(SignAgreement, MENTOR, agreement_version=1)
    [concern_id] = story.state.open_concerns
    story.do(ResolveConcern, COORDINATOR, concern_id=concern_id, resolution=f"{SECRET} resolution")
    story.advance(to=story.meeting.starts_at)
    story.do(RecordMeeting, MENTOR, held_at=story.now, duration_minutes=60, notes=f"{SECRET} meeting notes")
    story.do(SubmitFeedback, MENTEE, feedback_round=1, score=1, comment=f"{SECRET} low feedback comment")
    story.do(SubmitFeedback, MENTOR, feedback_round=1, score=5, comment=f"{SECRET} good feedback comment")
    story.do(CancelMeeting, MENTEE, meeting_number=story.meeting.meeting_number, reason=f"{SECRET} cancel reason")
    story.do(ProposeGoalRevision, MENTOR, goal=Goal(goal_id="g2", title="Coach a junior"), rationale=f"{SECRET} rationale")
    story.do(RecordIntroduction, MENTOR, introduced_to="a principal engineer", note=f"{SECRET} introduction note")
    story.do(RaiseConcern, MENTOR, text=f"{SECRET} second concern")
    story.do(PauseRelationship, MENTEE, until=story.now + timedelta(days=5), reason=f"{SECRET} pause reason")
    story.do(ResumeRelationship, MENTEE)
    story.do(RequestReview, MENTOR)
    story.do(
        SubmitReview, MENTEE, outcome="continue", comment=f"{SECRET} review comment",
        goal_assessments=(GoalAssessment(goal_id="g1", progress_percent=10, comment=f"{SECRET} assessment"),),
    )  # fmt: skip
    story.do(SubmitReview, MENTOR, outcome="close", comment=f"{SECRET} review close comment")
    story.do(SubmitReflection, MENTEE, text=f"{SECRET} mentee reflection")
    story.do(SubmitReflection, MENTOR, text=f"{SECRET} mentor reflection")
    assert story.state.is_closed

    # The events do carry it (what the event store encrypts) …
    stored = json.dumps([event.model_dump(mode="json") for event in story.history])
    assert stored.count(SECRET) == 16
    # … and nothing derived from them does.
    notifications = story.notifications()
    assert {n.template for n in notifications} >= {
        "match_declined", "concern_raised", "concern_resolved", "low_feedback", "meeting_cancelled",
        "goal_revision_to_acknowledge", "relationship_paused", "review_completed", "relationship_summary",
    }  # fmt: skip
    for notification in notifications:
        assert SECRET not in notification.model_dump_json(), notification.template
    for state in story.states:
        assert SECRET not in state.model_dump_json()
    assert story.state.summary is not None and SECRET not in story.state.summary.model_dump_json()


# --- idempotency --------------------------------------------------------------------------


def test_a_command_id_already_applied_decides_nothing() -> None:
    story = Story()
    first = ProposeMatch(command_id="cmd-retried", actor_id=COORDINATOR, mentor_id=MENTOR)
    story.apply(decide(story.state, first, story.now))  # type: ignore[arg-type]
    assert "cmd-retried" in story.state.processed_command_ids

    assert decide(story.state, first, story.now) == []
    assert story.state.applied_commands["cmd-retried"].events == ("MatchProposed",)


def test_a_command_id_reused_for_other_content_is_refused_not_answered_as_a_retry() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR, command_id="cmd-1")
    other_message = AcceptMatch(command_id="cmd-1", actor_id=MENTEE)
    other_content = ProposeMatch(command_id="cmd-1", actor_id=COORDINATOR, mentor_id="someone-else")
    for reused in (other_message, other_content):
        decision = decide(story.state, reused, story.now)
        assert isinstance(decision, Rejection) and decision.code is RefusalCode.COMMAND_ID_REUSED
        assert "propose_match" in decision.reason


def test_a_retried_command_while_closing_or_closed_is_still_a_no_op_not_a_rejection() -> None:
    story = active()
    close = CloseRelationship(command_id="close-1", actor_id=MENTOR)
    story.apply(decide(story.state, close, story.now))  # type: ignore[arg-type]
    assert story.state.phase is Phase.CLOSING
    assert decide(story.state, close, story.now) == []
    reflection = SubmitReflection(command_id="reflect-1", actor_id=MENTOR, text="x")
    story.apply(decide(story.state, reflection, story.now))  # type: ignore[arg-type]
    story.advance(timedelta(days=30))
    assert story.state.is_closed
    assert decide(story.state, close, story.now) == [] and decide(story.state, reflection, story.now) == []


def test_a_rejected_command_does_not_use_its_id_up() -> None:
    story = Story()
    premature = AcceptMatch(command_id="early-accept", actor_id=MENTEE)
    decision = decide(story.state, premature, story.now)
    assert isinstance(decision, Rejection)

    rejected = reject(story.state, premature.message_name, premature.command_id, decision, story.now)
    assert isinstance(rejected, CommandRejected)
    assert (rejected.version, rejected.command_id) == (2, "early-accept")
    story.apply([rejected])
    assert "early-accept" not in story.state.processed_command_ids
    [kept] = story.state.rejected_commands
    assert (kept.command_id, kept.command_name, kept.code, kept.reason) == (
        "early-accept",
        "accept_match",
        RefusalCode.NOT_FOUND,
        decision.reason,
    )

    # Sent again once a proposal exists, the command is decided afresh (a corrected resend).
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    [accepted] = decide(story.state, premature, story.now)  # type: ignore[misc]
    assert isinstance(accepted, MatchAccepted)


def test_only_the_most_recent_rejections_are_kept_in_state() -> None:
    story = Story()
    for number in range(REJECTIONS_KEPT + 5):
        story.apply([reject(story.state, "accept_match", f"bad-{number}", refuse(RefusalCode.NOT_ALLOWED, "no proposal"), story.now)])
    kept = story.state.rejected_commands
    assert len(kept) == REJECTIONS_KEPT
    assert kept[0].command_id == "bad-5" and kept[-1].command_id == f"bad-{REJECTIONS_KEPT + 4}"
    # …and no rejected id is used up.
    assert not {f"bad-{number}" for number in range(REJECTIONS_KEPT + 5)} & story.state.processed_command_ids


def test_a_rejection_without_a_command_id_still_gets_a_unique_event_id() -> None:
    story = Story()
    first = reject(story.state, "accept_match", None, refuse(RefusalCode.NOT_ALLOWED, "malformed"), story.now)
    story.apply([first])
    second = reject(story.state, "accept_match", None, refuse(RefusalCode.NOT_ALLOWED, "malformed"), story.now)
    assert first.event_id != second.event_id
    assert story.state.processed_command_ids == frozenset()


# --- stored events ------------------------------------------------------------------------


def test_every_event_of_a_history_round_trips_through_its_stored_json_form() -> None:
    story = in_review(programme(feedback_every_sessions=2))
    story.do(SubmitFeedback, MENTEE, feedback_round=1, score=2, comment="meh")
    story.do(RaiseConcern, MENTOR, text="worry")
    story.do(RecordGoalProgress, MENTEE, goal_id="g1", progress_percent=100, milestones_reached=("m1",))
    story.do(ProposeGoalRevision, MENTOR, goal=Goal(goal_id="g3", title="New"))
    story.do(SubmitReview, MENTEE, outcome="extend", goal_assessments=(GoalAssessment(goal_id="g1", progress_percent=100),))
    story.do(SubmitReview, MENTOR, outcome="extend", extension_months=1)
    story.do(RescheduleMeeting, MENTEE, meeting_number=story.meeting.meeting_number, starts_at=story.now + timedelta(days=3))
    story.do(PauseRelationship, MENTOR, until=story.now + timedelta(days=4))
    story.advance(timedelta(days=5))
    story.apply([reject(story.state, "submit_review", "late-1", refuse(RefusalCode.NOT_ALLOWED, "already submitted"), story.now)])
    story.do(CloseRelationship, COORDINATOR)
    story.do(SubmitReflection, MENTEE, text="bye")
    story.advance(timedelta(days=20))
    assert story.state.is_closed
    assert len({event.type for event in story.history}) >= 30
    stored = [event.model_dump(mode="json") for event in story.history]
    loaded = [load_event(data) for data in stored]
    assert loaded == story.history
    assert fold(loaded) == story.state
    # The state the workflow carries across continue-as-new survives JSON as well.
    for state in story.states[::7] + [story.state]:
        assert RelationshipState.model_validate_json(state.model_dump_json()) == state


def test_load_event_lifts_an_older_stored_schema_with_the_registered_upcaster(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend MatchDeclined v1 stored "who" instead of "party"/"declined_by" and had no reason.
    def upcast_match_declined_v1_v2(data: dict[str, Any]) -> dict[str, Any]:
        who = data.pop("who")
        return data | {"party": who["party"], "declined_by": who["id"], "reason": ""}

    monkeypatch.setitem(UPCASTERS, ("MatchDeclined", 1), upcast_match_declined_v1_v2)
    stored = {
        "type": "MatchDeclined",
        "schema_version": 1,
        "stream_id": STREAM,
        "version": 3,
        "event_id": "evt-3",
        "occurred_at": "2025-01-07T09:00:00Z",
        "command_id": "cmd-3",
        "mentor_id": MENTOR,
        "who": {"party": "mentor", "id": MENTOR},
    }
    snapshot = dict(stored)

    event = load_event(stored)

    assert isinstance(event, MatchDeclined)
    assert (event.party, event.declined_by, event.reason, event.schema_version) == ("mentor", MENTOR, "", 2)
    assert event.occurred_at == datetime(2025, 1, 7, 9, 0, tzinfo=UTC)
    assert stored == snapshot, "a stored event is never rewritten"


def test_load_event_applies_a_chain_of_upcasters_from_the_stored_version_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        return data | {"duration": data.pop("hours") * 60}

    def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
        calls.append(2)
        return data | {"duration_minutes": data.pop("duration")}

    monkeypatch.setitem(UPCASTERS, ("MeetingHeld", 1), v1_to_v2)
    monkeypatch.setitem(UPCASTERS, ("MeetingHeld", 2), v2_to_v3)
    envelope = {
        "type": "MeetingHeld",
        "stream_id": STREAM,
        "version": 9,
        "event_id": "evt-9",
        "occurred_at": "2025-02-01T10:00:00+00:00",
        "meeting_number": 1,
        "held_at": "2025-02-01T09:00:00+00:00",
        "recorded_by": MENTEE,
    }

    oldest = load_event(envelope | {"hours": 2})  # no schema_version stored means version 1
    assert isinstance(oldest, MeetingHeld)
    assert (oldest.duration_minutes, oldest.schema_version) == (120, 3)
    assert calls == [1, 2]

    calls.clear()
    middle = load_event(envelope | {"schema_version": 2, "duration": 45})
    assert isinstance(middle, MeetingHeld) and middle.duration_minutes == 45
    assert calls == [2]

    calls.clear()
    current = load_event(envelope | {"schema_version": 3, "duration_minutes": 30})
    assert isinstance(current, MeetingHeld) and current.duration_minutes == 30
    assert calls == []


def test_load_event_without_an_upcaster_rejects_an_unknown_old_shape() -> None:
    with pytest.raises(ValueError):
        load_event({"type": "MatchDeclined", "stream_id": STREAM, "version": 3, "event_id": "e",
                    "occurred_at": "2025-01-07T09:00:00Z", "mentor_id": MENTOR, "who": "mentor"})  # fmt: skip


def test_a_stream_must_begin_with_relationship_started_and_versions_must_follow() -> None:
    story = Story()
    decision = decide(story.state, story.command(ProposeMatch, COORDINATOR, mentor_id=MENTOR), story.now)
    assert isinstance(decision, list)
    [proposed] = decision
    with pytest.raises(ValueError, match="must begin with RelationshipStarted"):
        evolve(None, proposed)
    with pytest.raises(ValueError, match="does not follow"):
        evolve(evolve(story.state, proposed), proposed)
    with pytest.raises(ValueError, match="may only begin a stream"):
        evolve(story.state, story.history[0].model_copy(update={"version": 2}))


# --- event ids ----------------------------------------------------------------------------


def test_deciding_the_same_thing_twice_yields_identical_events() -> None:
    story = matched()
    command = ProposeAgreement(command_id="agree-1", actor_id=MENTEE, terms=terms())
    assert decide(story.state, command, story.now) == decide(story.state, command, story.now)

    later = story.now + timedelta(days=30)
    first, second = decide_deadline(story.state, later), decide_deadline(story.state, later)
    assert first and first == second
    assert [event.event_id for event in first] == [event.event_id for event in second]

    assert start_relationship(STREAM, PROGRAMME, MENTEE, PROGRAMME_SETTINGS, T0) == start_relationship(
        STREAM, PROGRAMME, MENTEE, PROGRAMME_SETTINGS, T0
    )


def test_different_causes_at_the_same_version_get_different_event_ids() -> None:
    story = matched()
    by_mentee = decide(story.state, ProposeAgreement(command_id="a", actor_id=MENTEE, terms=terms()), story.now)
    by_mentor = decide(story.state, ProposeAgreement(command_id="b", actor_id=MENTOR, terms=terms()), story.now)
    assert isinstance(by_mentee, list) and isinstance(by_mentor, list)
    assert by_mentee[0].version == by_mentor[0].version
    assert by_mentee[0].event_id != by_mentor[0].event_id
    other_stream = start_relationship("rel-2", PROGRAMME, MENTEE, PROGRAMME_SETTINGS, T0)
    assert other_stream[0].event_id != story.history[0].event_id


def test_event_ids_are_unique_and_versions_contiguous_across_a_whole_history() -> None:
    story = in_review()
    story.do(SubmitReview, MENTEE, outcome="continue")
    story.do(SubmitReview, MENTOR, outcome="continue")
    story.advance(timedelta(days=400))
    assert story.state.is_closed
    assert [event.version for event in story.history] == list(range(1, len(story.history) + 1))
    ids = [event.event_id for event in story.history]
    assert len(ids) == len(set(ids))
    assert all(event.stream_id == STREAM for event in story.history)


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


# --- properties ---------------------------------------------------------------------------

ACTORS = (MENTEE, MENTOR, OTHER_MENTOR, COORDINATOR, STRANGER, DIRECTORY_ACTOR)
MENTORS = (MENTOR, OTHER_MENTOR, THIRD_MENTOR)
# Repeats weight the draw: closing is rare so that relationships get to live a while.
COMMAND_KINDS: tuple[type[Command], ...] = (
    ProposeMatch, ProposeMatch, AcceptMatch, AcceptMatch, AcceptMatch, DeclineMatch,
    ProposeAgreement, ProposeAgreement, SignAgreement, SignAgreement, SignAgreement,
    RecordMeeting, RecordMeeting, RecordMeeting, CancelMeeting, RescheduleMeeting,
    RecordGoalProgress, ProposeGoalRevision, AcknowledgeGoalRevision, SubmitFeedback, SubmitFeedback,
    RaiseConcern, ResolveConcern, RecordIntroduction, ShareResource, PauseRelationship, ResumeRelationship,
    RequestReview, SubmitReview, SubmitReview, SubmitReview, SubmitReflection, SubmitReflection,
    CloseRelationship, ReportParticipantLeft,
)  # fmt: skip

# What the parties of each phase usually send; closing is left to the unplanned commands.
FITTING_KINDS: dict[Phase, tuple[type[Command], ...]] = {
    Phase.MATCHING: (ProposeMatch, AcceptMatch, AcceptMatch),
    Phase.AGREEMENT: (ProposeAgreement, SignAgreement, SignAgreement),
    Phase.ACTIVE: (
        RecordMeeting, RecordMeeting, RecordMeeting, RecordMeeting, CancelMeeting, RescheduleMeeting,
        RecordGoalProgress, ProposeGoalRevision, AcknowledgeGoalRevision, SubmitFeedback, SubmitFeedback,
        RaiseConcern, ResolveConcern, RecordIntroduction, ShareResource, PauseRelationship, ResumeRelationship,
        RequestReview,
    ),  # fmt: skip
    Phase.REVIEW: (SubmitReview, SubmitReview, SubmitReview, RecordMeeting, SubmitFeedback),
    Phase.CLOSING: (SubmitReflection,),
    Phase.CLOSED: COMMAND_KINDS,
}

AVAILABILITIES: tuple[tuple[PartyAvailability, ...], ...] = (
    (),
    (MENTEE_IN_KOLKATA, MENTOR_IN_NEW_YORK),
    (available("mentor", "Europe/Berlin", window(2, "16:00", "18:00"), window(4, "08:00", "08:30")),),
    # Never overlapping: the due time itself.
    (
        available("mentee", "Asia/Kolkata", window(MONDAY, "19:00", "20:00")),
        available("mentor", "America/New_York", window(MONDAY, "17:00", "18:00")),
    ),
)

agreement_terms = st.builds(
    terms,
    meeting_frequency=st.sampled_from(FREQUENCY_ORDER),
    meeting_minutes=st.sampled_from((10, 15, 60, 120, 121)),
    term_months=st.integers(min_value=1, max_value=14),
)


@st.composite
def programme_settings(draw: st.DrawFn) -> ProgrammeSettings:
    at_risk = draw(st.integers(min_value=2, max_value=30))
    min_term = draw(st.integers(min_value=1, max_value=3))
    ttl = draw(st.integers(min_value=2, max_value=20))
    return ProgrammeSettings(
        proposal_ttl_days=draw(st.integers(min_value=1, max_value=10)),
        matching_timeout_days=draw(st.integers(min_value=5, max_value=40)),
        max_match_attempts=draw(st.integers(min_value=1, max_value=4)),
        agreement_ttl_days=ttl,
        agreement_reminder_days=tuple(draw(st.sets(st.integers(min_value=1, max_value=ttl - 1), max_size=2))),
        minimum_meeting_frequency=draw(st.sampled_from(FREQUENCY_ORDER)),
        min_term_months=min_term,
        max_term_months=draw(st.integers(min_value=min_term, max_value=12)),
        meeting_reminder_lead_hours=draw(st.integers(min_value=0, max_value=72)),
        agenda_request_lead_hours=draw(st.integers(min_value=0, max_value=72)),
        missed_meeting_grace_hours=draw(st.integers(min_value=1, max_value=72)),
        feedback_every_sessions=draw(st.integers(min_value=1, max_value=3)),
        low_feedback_score=draw(st.integers(min_value=1, max_value=3)),
        max_pause_days=draw(st.integers(min_value=1, max_value=60)),
        nudge_before_at_risk_days=draw(st.integers(min_value=0, max_value=at_risk - 1)),
        at_risk_after_days=at_risk,
        stalled_after_days=draw(st.integers(min_value=at_risk + 1, max_value=at_risk + 40)),
        close_stalled_after_days=draw(st.sampled_from((0, 1, 10, 30))),
        missed_meetings_at_risk=draw(st.integers(min_value=1, max_value=3)),
        midpoint_review=draw(st.booleans()),
        review_response_days=draw(st.integers(min_value=1, max_value=20)),
        max_extensions=draw(st.integers(min_value=0, max_value=2)),
        max_extension_months=draw(st.integers(min_value=1, max_value=3)),
        reflection_days=draw(st.integers(min_value=1, max_value=20)),
        coordinator_ids=draw(st.sampled_from(((COORDINATOR,), ()))),
    )


def waiting_for(state: RelationshipState, kind: type[Command]) -> tuple[str, ...]:
    """The parties who have yet to answer what the current phase asks of them."""
    mentor = state.mentor_id or (state.candidate.mentor_id if state.candidate else None)
    answered: tuple[str, ...] = ()
    if kind is AcceptMatch and state.candidate is not None:
        answered = state.candidate.accepted_by
    elif kind is SignAgreement and state.agreement is not None:
        answered = state.agreement.signed_by
    elif kind is SubmitReview and state.review is not None:
        answered = tuple(state.review.submissions)
    elif kind is SubmitReflection and state.phase is Phase.CLOSING:
        answered = state.reflections_from
    else:
        return ()
    parties = {"mentee": MENTEE, "mentor": mentor}
    return tuple(actor for party, actor in parties.items() if party not in answered and actor is not None)


def terms_within(programme: ProgrammeSettings) -> st.SearchStrategy[AgreementTerms]:
    allowed = FREQUENCY_ORDER[: FREQUENCY_ORDER.index(programme.minimum_meeting_frequency) + 1]
    return st.builds(
        terms,
        meeting_frequency=st.sampled_from(allowed),
        meeting_minutes=st.integers(min_value=programme.min_meeting_minutes, max_value=programme.max_meeting_minutes),
        # Short terms more often, so that runs get to their reviews and closure.
        term_months=st.sampled_from(
            (programme.min_term_months, programme.min_term_months, programme.max_term_months)
        ),
        availability=st.sampled_from(AVAILABILITIES),
        cancellation_notice_hours=st.sampled_from((0, 24, 72)),
        agenda_policy=st.sampled_from(("mentee_shares", "both_share", "no_agenda")),
    )


time_steps = st.one_of(
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)),
    st.sampled_from([timedelta(hours=1), timedelta(days=6), timedelta(days=13), timedelta(days=29)]),
)


class RelationshipMachine(RuleBasedStateMachine):
    """Plausible senders and a clock that only moves forward, against the pure core."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[AnyEvent] = []
        self.states: list[RelationshipState] = []
        self.state: RelationshipState
        self.now = T0
        self.command_ids = itertools.count(1)
        self.sent_ids: list[str] = []
        self.applied_ids: set[str] = set()

    @initialize(programme=programme_settings(), head_start=st.sampled_from(("none", "matched", "active", "active")), data=st.data())
    def start(self, programme: ProgrammeSettings, head_start: str, data: st.DataObject) -> None:
        self.history = start_relationship(STREAM, PROGRAMME, MENTEE, programme, self.now)
        state = fold(self.history)
        assert state is not None
        self.state = state
        self.states = [state]
        # Most runs skip ahead (through the same rules) to spend their steps in the cadence.
        if head_start == "none":
            return
        proposer = programme.coordinator_ids[0] if programme.coordinator_ids else "matching-engine"
        self.send(ProposeMatch(command_id="head-1", actor_id=proposer, mentor_id=MENTOR), False)
        self.send(AcceptMatch(command_id="head-2", actor_id=MENTEE), False)
        self.send(AcceptMatch(command_id="head-3", actor_id=MENTOR), False)
        if head_start == "active":
            agreed = data.draw(terms_within(programme))
            self.send(ProposeAgreement(command_id="head-4", actor_id=MENTOR, terms=agreed), False)
            self.send(SignAgreement(command_id="head-5", actor_id=MENTEE, agreement_version=1), False)
            self.send(SignAgreement(command_id="head-6", actor_id=MENTOR, agreement_version=1), False)
            assert self.state.phase is Phase.ACTIVE

    def apply(self, events: list[AnyEvent]) -> None:
        for expected_version, event in enumerate(events, start=self.state.version + 1):
            assert event.version == expected_version and event.stream_id == STREAM
            assert event.occurred_at == self.now
            self.state = evolve(self.state, event)
            self.states.append(self.state)
        self.history.extend(events)

    def draw_command(self, data: st.DataObject, fitting: bool, kind: type[Command] | None = None) -> Command:
        """Any command from anyone, or (`fitting`) one the current phase expects from a party."""
        state, programme = self.state, self.state.settings
        mentor = state.mentor_id or (state.candidate.mentor_id if state.candidate else MENTOR)
        reused = self.sent_ids and data.draw(st.integers(min_value=0, max_value=9)) == 0
        command_id = data.draw(st.sampled_from(self.sent_ids)) if reused else f"cmd-{next(self.command_ids)}"
        if fitting:
            kind = kind or data.draw(st.sampled_from(FITTING_KINDS[state.phase]))
            actor = data.draw(st.sampled_from(waiting_for(state, kind) or (MENTEE, mentor)))
        else:
            kind = data.draw(st.sampled_from(COMMAND_KINDS))
            actor = data.draw(st.sampled_from((MENTEE, mentor, *ACTORS)))

        def pick(options: Any) -> Any:
            return data.draw(st.sampled_from(tuple(options)))

        secret = f"{SECRET} {kind.message_name}"
        meeting_number = state.next_meeting.meeting_number if state.next_meeting else 1
        fields: dict[str, Any] = {}
        if kind is ProposeMatch:
            proposers = programme.coordinator_ids or ("matching-engine",)
            actor = pick(proposers if fitting else (*proposers, STRANGER, MENTEE))
            fields["mentor_id"] = pick(MENTORS if fitting else (*MENTORS, MENTEE))
        elif kind is DeclineMatch:
            fields["reason"] = pick(("", secret))
        elif kind is ProposeAgreement:
            fields["terms"] = data.draw(terms_within(programme) if fitting else agreement_terms)
        elif kind is SignAgreement:
            current = state.agreement.agreement_version if state.agreement else 1
            fields["agreement_version"] = pick((current,) if fitting else (current, current + 1, max(current - 1, 1)))
        elif kind is RecordMeeting:
            # At the meeting, up to skew in the future, reported weeks late, or correcting a miss.
            offset = data.draw(st.timedeltas(min_value=timedelta(days=-40), max_value=timedelta(hours=2)))
            fields["held_at"] = pick((self.now, self.now + offset))
            fields["duration_minutes"] = data.draw(st.integers(min_value=1, max_value=480))
            fields["notes"] = secret
            corrections: tuple[int, ...] = state.missed_meeting_numbers if fitting else (*state.missed_meeting_numbers, 1, 99)
            correcting = data.draw(st.booleans())
            if corrections and correcting:
                fields["meeting_number"] = pick(corrections)
        elif kind is CancelMeeting:
            fields["meeting_number"] = meeting_number if fitting else pick((meeting_number, meeting_number + 1))
            fields["reason"] = secret
        elif kind is RescheduleMeeting:
            fields["meeting_number"] = meeting_number if fitting else pick((meeting_number, meeting_number + 1))
            fields["starts_at"] = self.now + data.draw(st.timedeltas(min_value=timedelta(hours=-1), max_value=timedelta(days=20)))
        elif kind is RecordGoalProgress:
            fields["goal_id"] = pick((tuple(state.goals) or ("g1",)) if fitting else ("g1", "g2", "g9"))
            fields["progress_percent"] = pick((0, 30, 60, 100))
            milestones = ("m1", "m2") if fitting else ("m1", "m2", "m9")
            fields["milestones_reached"] = tuple(data.draw(st.lists(st.sampled_from(milestones), max_size=2)))
        elif kind is ProposeGoalRevision:
            fields["goal"] = pick((Goal(goal_id="g1", title="Run two reviews"), Goal(goal_id="g3", title="Give a talk")))
            fields["rationale"] = secret
        elif kind is AcknowledgeGoalRevision:
            pending = tuple(state.pending_goal_revisions)
            fields["revision_id"] = pick(pending if fitting and pending else (*pending, "r-unknown"))
        elif kind is SubmitFeedback:
            fields["feedback_round"] = data.draw(st.integers(min_value=1, max_value=state.feedback_round + 1))
            fields["score"] = data.draw(st.integers(min_value=1, max_value=5))
            fields["comment"] = secret
        elif kind is RaiseConcern:
            actor = pick((actor, COORDINATOR))
            fields["text"] = secret
        elif kind is ResolveConcern:
            actor = pick((actor, COORDINATOR))
            fields["concern_id"] = pick((*state.open_concerns, "c-unknown"))
            fields["resolution"] = secret
        elif kind is RecordIntroduction:
            fields["introduced_to"] = "a staff engineer"
            fields["note"] = secret
        elif kind is ShareResource:
            fields["title"] = "a book"
        elif kind is PauseRelationship:
            fields["until"] = self.now + data.draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=70)))
            fields["reason"] = secret
        elif kind in (ResumeRelationship, RequestReview):
            actor = pick((actor, COORDINATOR))
        elif kind is SubmitReview:
            outcome = pick(("continue", "continue", "recalibrate", "extend", "close"))
            fields["outcome"] = outcome
            if outcome == "extend" or not fitting:
                fields["extension_months"] = pick((None, 1, 2, 4))
            if data.draw(st.booleans()):
                goal_id = pick((*state.goals, "g1") if fitting else ("g1", "g9"))
                fields["goal_assessments"] = (GoalAssessment(goal_id=goal_id, progress_percent=50, comment=secret),)
            fields["comment"] = secret
        elif kind is CloseRelationship:
            fields["note"] = secret
        elif kind is ReportParticipantLeft:
            actor = pick((DIRECTORY_ACTOR, COORDINATOR, actor))
            fields["participant_id"] = pick((MENTEE, mentor, STRANGER))
        elif kind is SubmitReflection:
            fields["text"] = secret
        return kind(command_id=command_id, actor_id=actor, **fields)

    def send(self, command: Command, record_rejection: bool) -> None:
        before = self.state.model_dump_json()
        decision = decide(self.state, command, self.now)
        # A decision is either events or a rejection, never both, and never a mutation.
        assert isinstance(decision, (list, Rejection))
        assert self.state.model_dump_json() == before
        assert decide(self.state, command, self.now) == decision
        if command.command_id in self.state.processed_command_ids:
            # A retry decides nothing; the same id with other content is refused as reused.
            first = self.state.applied_commands[command.command_id]
            if first.digest == command_digest(command):
                assert decision == []
            else:
                assert isinstance(decision, Rejection) and decision.code is RefusalCode.COMMAND_ID_REUSED
        if isinstance(decision, Rejection):
            # A rejection emits nothing and says why, without confidential text.
            assert decision.reason and SECRET not in decision.reason
            if record_rejection:
                self.apply([reject(self.state, command.message_name, command.command_id, decision, self.now)])
        else:
            assert all(event.command_id == command.command_id for event in decision)
            assert command.command_id in self.state.processed_command_ids or decision
            self.apply(decision)
            if decision:
                self.applied_ids.add(command.command_id)
        self.sent_ids.append(command.command_id)

    @rule(data=st.data(), record_rejection=st.booleans())
    def send_any_command(self, data: st.DataObject, record_rejection: bool) -> None:
        self.send(self.draw_command(data, fitting=False), record_rejection)

    @rule(data=st.data(), record_rejection=st.booleans())
    def send_a_command_the_phase_expects(self, data: st.DataObject, record_rejection: bool) -> None:
        self.send(self.draw_command(data, fitting=True), record_rejection)

    @rule(data=st.data())
    def send_another_command_the_phase_expects(self, data: st.DataObject) -> None:
        self.send(self.draw_command(data, fitting=True), record_rejection=False)

    @precondition(lambda self: self.state.phase in (Phase.MATCHING, Phase.AGREEMENT, Phase.REVIEW, Phase.CLOSING))
    @rule(data=st.data())
    def both_sides_answer_at_once(self, data: st.DataObject) -> None:
        """Everything the current phase still waits for, sent in a row (it may still be refused)."""
        state = self.state
        if state.phase is Phase.MATCHING and state.candidate is None:
            self.send(self.draw_command(data, fitting=True, kind=ProposeMatch), record_rejection=False)
        elif state.phase is Phase.AGREEMENT and state.agreement is None:
            self.send(self.draw_command(data, fitting=True, kind=ProposeAgreement), record_rejection=False)
        answers: dict[Phase, type[Command]] = {
            Phase.MATCHING: AcceptMatch, Phase.AGREEMENT: SignAgreement, Phase.REVIEW: SubmitReview, Phase.CLOSING: SubmitReflection
        }  # fmt: skip
        kind = answers.get(self.state.phase)
        if kind is None:
            return
        for _ in waiting_for(self.state, kind):
            self.send(self.draw_command(data, fitting=True, kind=kind), record_rejection=False)

    @precondition(lambda self: self.state.in_cadence and not self.state.is_paused and self.state.next_meeting is not None)
    @rule(data=st.data())
    def meet_as_scheduled(self, data: st.DataObject) -> None:
        """Wait for the scheduled meeting (firing what falls due first) and report it held."""
        meeting = self.state.next_meeting
        assert meeting is not None
        self.live_until(meeting.starts_at)
        if self.state.next_meeting == meeting:
            actor = data.draw(st.sampled_from((MENTEE, MENTOR)))
            self.send(RecordMeeting(command_id=f"cmd-{next(self.command_ids)}", actor_id=actor, held_at=self.now, duration_minutes=60), False)

    @precondition(lambda self: self.state.is_paused)
    @rule(actor=st.sampled_from((MENTEE, MENTOR, COORDINATOR)))
    def resume_early(self, actor: str) -> None:
        self.send(ResumeRelationship(command_id=f"cmd-{next(self.command_ids)}", actor_id=actor), False)

    @precondition(lambda self: self.state.phase is Phase.ACTIVE and not self.state.is_paused)
    @rule(data=st.data())
    def meet_until_the_next_review(self, data: st.DataObject) -> None:
        """Keep the rhythm until a review opens (or for a while), then answer it or not."""
        for _ in range(30):
            if self.state.phase is not Phase.ACTIVE or self.state.is_paused or self.state.next_meeting is None:
                break
            self.meet_as_scheduled(data)
        if self.state.phase is Phase.REVIEW:
            answer = data.draw(st.sampled_from(("each their own", "agree", "agree", "leave it")))
            if answer == "each their own":
                self.both_sides_answer_at_once(data)
            elif answer == "agree":
                self.agree_on_a_review_outcome(data.draw(st.sampled_from(("continue", "recalibrate", "extend", "close"))))

    @precondition(lambda self: self.state.phase is Phase.ACTIVE and not self.state.is_paused)
    @rule(data=st.data())
    def pause_for_a_while(self, data: st.DataObject) -> None:
        longest = self.state.settings.max_pause_days
        until = self.now + timedelta(days=data.draw(st.integers(min_value=1, max_value=longest)))
        actor = data.draw(st.sampled_from((MENTEE, MENTOR, COORDINATOR)))
        self.send(PauseRelationship(command_id=f"cmd-{next(self.command_ids)}", actor_id=actor, until=until), False)

    @precondition(lambda self: bool(self.state.open_concerns) and self.state.phase not in (Phase.CLOSING, Phase.CLOSED))
    @rule(data=st.data())
    def resolve_a_concern(self, data: st.DataObject) -> None:
        concern_id = data.draw(st.sampled_from(sorted(self.state.open_concerns)))
        raised_by = self.state.open_concerns[concern_id].party
        actor = COORDINATOR if raised_by is None else data.draw(st.sampled_from((COORDINATOR, self.state.id_of(raised_by) or MENTEE)))
        self.send(ResolveConcern(command_id=f"cmd-{next(self.command_ids)}", actor_id=actor, concern_id=concern_id), False)

    @precondition(lambda self: bool(self.state.missed_meeting_numbers) and self.state.in_cadence)
    @rule(data=st.data())
    def correct_a_missed_meeting(self, data: st.DataObject) -> None:
        """It did take place after all: the record of a missed meeting is corrected."""
        number = data.draw(st.sampled_from(self.state.missed_meeting_numbers))
        held_at = max(self.now - timedelta(days=data.draw(st.integers(min_value=0, max_value=20))), self.state.activated_at)  # type: ignore[type-var]
        correction = RecordMeeting(
            command_id=f"cmd-{next(self.command_ids)}", actor_id=MENTOR, held_at=held_at, duration_minutes=45, meeting_number=number
        )
        self.send(correction, False)

    @precondition(lambda self: self.state.in_cadence and self.state.feedback_round > 0)
    @rule(actor=st.sampled_from((MENTEE, MENTOR)), score=st.integers(min_value=1, max_value=5))
    def give_feedback_for_the_latest_round(self, actor: str, score: int) -> None:
        feedback = SubmitFeedback(
            command_id=f"cmd-{next(self.command_ids)}", actor_id=actor, feedback_round=self.state.feedback_round, score=score
        )
        self.send(feedback, False)

    @precondition(lambda self: self.state.in_cadence)
    @rule(proposer=st.sampled_from((MENTEE, MENTOR)), goal_id=st.sampled_from(("g1", "g3")))
    def revise_a_goal_in_writing(self, proposer: str, goal_id: str) -> None:
        goal = Goal(goal_id=goal_id, title="Revised", milestones=(Milestone(milestone_id="m2", title="Review held"),))
        command_id = f"cmd-{next(self.command_ids)}"
        self.send(ProposeGoalRevision(command_id=command_id, actor_id=proposer, goal=goal), False)
        if command_id in self.state.pending_goal_revisions:
            other = MENTOR if proposer == MENTEE else MENTEE
            self.send(AcknowledgeGoalRevision(command_id=f"cmd-{next(self.command_ids)}", actor_id=other, revision_id=command_id), False)

    @precondition(lambda self: self.state.phase is Phase.REVIEW)
    @rule(outcome=st.sampled_from(("continue", "recalibrate", "extend", "close")))
    def agree_on_a_review_outcome(self, outcome: str) -> None:
        for actor in waiting_for(self.state, SubmitReview):
            review = SubmitReview(command_id=f"cmd-{next(self.command_ids)}", actor_id=actor, outcome=outcome)
            self.send(review, False)

    @rule(step=time_steps)
    def let_time_pass(self, step: timedelta) -> None:
        self.now += step

    @rule()
    def check_deadline_now(self) -> None:
        events = decide_deadline(self.state, self.now)
        deadline = next_deadline(self.state)
        # Every due deadline yields events; one that is not due yields none.
        assert bool(events) == (deadline is not None and deadline.at <= self.now)
        assert decide_deadline(self.state, self.now) == events
        assert all(event.command_id is None for event in events)
        self.apply(events)

    @rule(days=st.sampled_from((0, 1, 30, 400)))
    def catch_up_after_a_gap(self, days: int) -> None:
        # What the workflow does when a command arrives: apply whatever is overdue first.
        self.now += timedelta(days=days)
        present, events = catch_up(self.state, self.now)
        assert fold(events, self.state) == present
        assert decide_deadline(present, self.now) == []
        deadline = next_deadline(present)
        assert deadline is None or deadline.at > self.now
        assert catch_up(present, self.now) == (present, [])
        self.apply(events)

    @precondition(lambda self: not self.state.is_closed)
    @rule()
    def sleep_until_next_deadline(self) -> None:
        deadline = next_deadline(self.state)
        assert deadline is not None
        self.now = max(self.now, deadline.at)
        events = decide_deadline(self.state, self.now)
        assert events, f"a due {deadline.kind} deadline must change something"
        self.apply(events)

    def live_until(self, target: datetime) -> None:
        # What the workflow does while nobody writes: wake at each deadline, decide, sleep again.
        while (deadline := next_deadline(self.state)) is not None and deadline.at <= target:
            self.now = max(self.now, deadline.at)
            events = decide_deadline(self.state, self.now)
            assert events, f"a due {deadline.kind} deadline must change something"
            self.apply(events)
        self.now = max(self.now, target)

    # Long quiet spells once active; matching and agreement move at the pace of the rules above.
    @precondition(lambda self: self.state.phase in (Phase.ACTIVE, Phase.REVIEW, Phase.CLOSING))
    @rule(days=st.integers(min_value=1, max_value=120))
    def live_through_the_deadlines_of_the_coming_days(self, days: int) -> None:
        self.live_until(self.now + timedelta(days=days))

    @invariant()
    def folding_the_history_rebuilds_the_state(self) -> None:
        # The fold of the whole history == the state built step by step, deterministically.
        assert fold(self.history) == self.state

    @invariant()
    def an_open_relationship_always_has_a_next_deadline(self) -> None:
        if self.state.is_closed:
            assert next_deadline(self.state) is None
            assert self.state.closure_reason is not None and self.state.closed_at is not None
            assert self.state.summary is not None and self.state.summary.closure_reason is self.state.closure_reason
        else:
            assert next_deadline(self.state) is not None

    @invariant()
    def versions_are_contiguous_and_event_ids_unique(self) -> None:
        assert self.state.version == len(self.history) == self.history[-1].version
        ids = {event.event_id for event in self.history}
        assert len(ids) == len(self.history)

    @invariant()
    def every_applied_command_id_is_processed(self) -> None:
        assert self.applied_ids <= self.state.processed_command_ids
        applied = {e.command_id for e in self.history if e.command_id is not None and not isinstance(e, CommandRejected)}
        assert self.state.processed_command_ids == applied == set(self.state.applied_commands)

    @invariant()
    def the_state_matches_its_phase(self) -> None:
        state = self.state
        assert (state.phase is Phase.REVIEW) == (state.review is not None)
        assert state.meetings_held == len([e for e in self.history if isinstance(e, MeetingHeld)])
        corrections = len([e for e in self.history if isinstance(e, MeetingHeld) and e.correction])
        assert state.meetings_missed == len(state.missed_meeting_numbers) == len(
            [e for e in self.history if isinstance(e, MeetingMissed)]
        ) - corrections
        assert 0 <= state.consecutive_missed <= state.meetings_missed
        assert state.reflections_from == tuple(sorted({e.party for e in self.history if isinstance(e, ReflectionSubmitted)}))
        if state.phase in (Phase.CLOSING, Phase.CLOSED):
            assert state.closure_reason is not None and state.next_meeting is None and not state.is_paused
            return
        assert state.match_attempts < state.settings.max_match_attempts or state.phase is not Phase.MATCHING
        if state.phase is Phase.MATCHING:
            assert state.mentor_id is None and state.agreement is None
        if state.phase is Phase.AGREEMENT:
            assert state.mentor_id is not None and state.agreement_due_at is not None and state.candidate is None
        if state.in_cadence:
            assert state.activated_at is not None and state.term_ends_at is not None
            assert state.agreement is not None and set(state.agreement.signed_by) == {"mentee", "mentor"}
            if state.is_paused:
                assert state.phase is Phase.ACTIVE and state.next_meeting is None
                assert next_deadline(state).kind == "pause_ends"  # type: ignore[union-attr]
            elif state.next_meeting is None:
                # In its cadence a relationship has its next meeting, unless none fits in the
                # term any more (as of its last decision; a rejection decides nothing).
                decided_at = next(e.occurred_at for e in reversed(self.history) if not isinstance(e, CommandRejected))
                assert plan_next_meeting(state, decided_at) is None
            else:
                # The latest one numbered, and never past the end of the term.
                assert state.next_meeting.meeting_number == state.last_meeting_number
                assert state.next_meeting.starts_at < state.next_meeting.ends_at <= state.term_ends_at

    @invariant()
    def health_is_what_assess_health_says_until_the_next_deadline(self) -> None:
        state = self.state
        deadline = next_deadline(state)
        if state.in_cadence and not state.is_paused and deadline is not None and deadline.at > self.now:
            assert assess_health(state, self.now) == (state.health, state.health_reasons)

    @invariant()
    def closure_is_final(self) -> None:
        phases = [state.phase for state in self.states]
        if Phase.CLOSING in phases or Phase.CLOSED in phases:
            first = next(i for i, phase in enumerate(phases) if phase in (Phase.CLOSING, Phase.CLOSED))
            assert all(phase in (Phase.CLOSING, Phase.CLOSED) for phase in phases[first:])
            allowed = {"ReflectionSubmitted", "RelationshipClosed", "CommandRejected"}
            assert {event.type for event in self.history[first + 1 :]} <= allowed
        if Phase.CLOSED in phases:
            closed_at = phases.index(Phase.CLOSED)
            assert {event.type for event in self.history[closed_at + 1 :]} <= {"CommandRejected"}

    @invariant()
    def nothing_confidential_is_in_the_state(self) -> None:
        assert SECRET not in self.state.model_dump_json()

    def teardown(self) -> None:
        if not self.history:
            return
        # What the event store hands back must fold to the same state.
        loaded = [load_event(json.loads(json.dumps(event.model_dump(mode="json")))) for event in self.history]
        assert fold(loaded) == self.state
        for before, event, after in zip(self.states[:-1], self.history[1:], self.states[1:], strict=True):
            notifications = notifications_for(event, after, before)
            assert len({n.notification_id for n in notifications}) == len(notifications)
            for notification in notifications:
                assert SECRET not in notification.model_dump_json()
                assert notification.notification_id in (
                    f"{event.event_id}:{notification.recipient_id}",
                    f"{event.event_id}:{notification.template}:{notification.recipient_id}",
                )
        # Each change of health is a change, told from the health it replaced.
        health, reasons = Health.HEALTHY, tuple[str, ...]()
        for change in (event for event in self.history if isinstance(event, HealthChanged)):
            assert change.previous is health and (change.health, change.reasons) != (health, reasons)
            health, reasons = change.health, change.reasons


RelationshipMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_relationship_invariants_hold_for_any_plausible_sequence = RelationshipMachine.TestCase
