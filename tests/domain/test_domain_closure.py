"""Closure: early exits, participants leaving, closing reflections and the summary."""

from __future__ import annotations

from datetime import timedelta

import pytest

from events.commands import (
    DIRECTORY_ACTOR, AcceptMatch, CloseRelationship, PauseRelationship, ProposeMatch, ReportParticipantLeft,
    SubmitReflection,
)
from events.deadlines import next_deadline
from events.model import ClosureBegun, ClosureReason, MatchDeclined, ReflectionSubmitted, RelationshipClosed
from events.notifications import notifications_for
from events.state import Phase
from tests.support.domain_story import (
    COORDINATOR, MENTEE, MENTOR, OTHER_MENTOR, SECRET, STRANGER, Story, active, closing, matched, programme,
)

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
