"""Goals and feedback: progress, milestones, agreed goal changes, feedback rounds, introductions,
resources."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from events.commands import (
    AcknowledgeGoalRevision, Goal, Milestone, ProposeGoalRevision, RecordGoalProgress, RecordIntroduction,
    RecordMeeting, ShareResource, SubmitFeedback,
)
from events.model import (
    FeedbackRequested, FeedbackSubmitted, GoalAchieved, GoalProgressRecorded, GoalRevised, GoalRevisionProposed, Health,
    HealthChanged, IntroductionRecorded, MilestoneReached, ResourceShared,
)
from events.notifications import notifications_for
from tests.support.domain_story import COORDINATOR, MENTEE, MENTOR, SECRET, active, programme, types

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
    # Why stays in its event (confidential text): the page that asks for the acknowledgement
    # reads it from the event store, never from the state or a notification.
    assert proposed.rationale == f"{SECRET} I was too timid" and SECRET not in story.state.model_dump_json()
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
