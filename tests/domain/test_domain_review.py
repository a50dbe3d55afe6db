"""Review: midpoint, final and on-demand reviews and their outcomes."""

from __future__ import annotations

from datetime import timedelta


from events.commands import (
    AcknowledgeGoalRevision, Goal, GoalAssessment, ProposeGoalRevision, RequestReview, SubmitReview,
)
from events.deadlines import add_months
from events.model import ClosureBegun, ClosureReason, MeetingScheduled, ReviewCompleted, ReviewOpened, TermExtended
from events.state import Phase
from tests.support.domain_story import COORDINATOR, MENTEE, MENTOR, SECRET, active, in_review, programme

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
