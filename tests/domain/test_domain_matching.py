"""Matching: proposals, answers, expiry and giving up."""

from __future__ import annotations

from datetime import timedelta


from events.commands import AcceptMatch, DeclineMatch, ProposeMatch
from events.deadlines import next_deadline
from events.cadence import MIN_SCHEDULING_LEAD
from events.decider import Rejection, catch_up, decide, decide_deadline
from events.model import ClosureReason, Health, MatchDeclined, MatchProposalExpired, RelationshipClosed
from events.state import Phase
from events.decider import fold
from tests.support.domain_story import (
    COORDINATOR, MENTEE, MENTOR, OTHER_MENTOR, SECRET, Story, T0, THIRD_MENTOR, active, programme, types,
)

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
