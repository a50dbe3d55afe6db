"""Who is told what, and confidential text never leaving the events that carry it."""

from __future__ import annotations

import json
from datetime import timedelta


from events.commands import (
    AcceptMatch, CancelMeeting, CloseRelationship, DeclineMatch, Goal, GoalAssessment, PauseRelationship,
    ProposeAgreement, ProposeGoalRevision, ProposeMatch, RaiseConcern, RecordIntroduction, RecordMeeting, RequestReview,
    ResolveConcern, ResumeRelationship, SignAgreement, SubmitFeedback, SubmitReflection, SubmitReview,
)
from events.decider import reject
from events.model import ClosureBegun, MatchProposed, RelationshipClosed
from events.notifications import notifications_for
from events.refusals import RefusalCode, refuse
from events.settings import ProgrammeSettings
from tests.support.domain_story import (
    COORDINATOR, MENTEE, MENTOR, OTHER_MENTOR, SECRET, STREAM, Story, active, matched, programme, reviewed, terms,
)

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
    story = reviewed("close")
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
