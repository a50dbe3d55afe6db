"""Review: at the middle and the end of the term, or on demand, both parties say how to go on
(continue, recalibrate, extend, close); a review closes when both answered or at its deadline."""

from __future__ import annotations

from datetime import timedelta

from events.commands import Party, RequestReview, ReviewOutcome, SubmitReview
from events.deadlines import add_months
from events.decision import PARTIES, PARTIES_OR_COORDINATORS, Changes, Emitter, Pause, Stage
from events.ending import close
from events.model import ClosureReason, ReviewCompleted, ReviewKind, ReviewOpened, ReviewSubmitted, TermExtended
from events.refusals import FieldProblem, RefusalCode, Rejection, limits, refuse
from events.state import OpenReview, Phase, RelationshipState, ReviewSubmission

stage = Stage("review")


@stage.command(RequestReview, phases=(Phase.ACTIVE,), senders=PARTIES_OR_COORDINATORS, pause=Pause.NOT_PAUSED)
def request_review(command: RequestReview, emit: Emitter, party: Party | None) -> Rejection | None:
    open_review(emit, "on_demand", command.actor_id)
    return None


@stage.deadline("midpoint_review")
def midpoint_review(emit: Emitter) -> None:
    open_review(emit, "midpoint", None)


@stage.deadline("final_review")
def final_review(emit: Emitter) -> None:
    open_review(emit, "final", None)


def open_review(emit: Emitter, kind: ReviewKind, requested_by: str | None) -> None:
    respond_by = emit.now + timedelta(days=emit.current.settings.review_response_days)
    emit(ReviewOpened, kind=kind, respond_by=respond_by, requested_by=requested_by)


@stage.command(SubmitReview, phases=(Phase.REVIEW,), senders=PARTIES, who="a party, once per review")
def submit_review(command: SubmitReview, emit: Emitter, party: Party) -> Rejection | None:
    state = emit.current
    review = state.review
    assert review is not None
    if party in review.submissions:
        return refuse(RefusalCode.CONFLICT, f"the {party} has already submitted the {review.kind} review")
    unknown = [a.goal_id for a in command.goal_assessments if a.goal_id not in state.goals]
    if unknown:
        return refuse(RefusalCode.NOT_FOUND, f"there is no goal {', '.join(unknown)}")
    settings = state.settings
    problems: list[FieldProblem] = []
    if command.outcome == "extend":
        if state.extensions >= settings.max_extensions:
            problems.append(
                FieldProblem(field="outcome", message=f"cannot extend again (at most {settings.max_extensions} extensions)")
            )
        if (command.extension_months or settings.max_extension_months) > settings.max_extension_months:
            problems.append(FieldProblem(field="extension_months", message=f"may be at most {settings.max_extension_months}"))
    elif command.extension_months is not None:
        problems.append(FieldProblem(field="extension_months", message="only goes with outcome extend"))
    if rejection := limits(problems):
        return rejection
    emit(
        ReviewSubmitted,
        kind=review.kind,
        party=party,
        outcome=command.outcome,
        goal_assessments=command.goal_assessments,
        extension_months=command.extension_months,
        comment=command.comment,
    )
    if len(emit.current.review.submissions) == 2:  # type: ignore[union-attr]
        complete_review(emit)
    return None


@stage.deadline("review_deadline")
def complete_review(emit: Emitter) -> None:
    """Close the open review with whoever answered: the outcome both want, or the cautious one."""
    state = emit.current
    review = state.review
    assert review is not None
    submissions = review.submissions
    missing = tuple(party for party in ("mentee", "mentor") if party not in submissions)
    outcomes = [s.outcome for s in submissions.values()]
    both_extend = not missing and all(outcome == "extend" for outcome in outcomes)
    outcome: ReviewOutcome
    if "close" in outcomes:
        outcome = "close"
    elif both_extend and state.extensions < state.settings.max_extensions:
        outcome = "extend"
    elif review.kind == "final":
        outcome = "close"
    elif "recalibrate" in outcomes:
        outcome = "recalibrate"
    else:
        outcome = "continue"
    emit(ReviewCompleted, kind=review.kind, outcome=outcome, missing_parties=missing)
    if outcome == "extend":
        assert state.term_ends_at is not None
        months = min(s.extension_months or state.settings.max_extension_months for s in submissions.values())
        emit(TermExtended, months=months, term_ends_at=add_months(state.term_ends_at, months))
    elif outcome == "close":
        reason = ClosureReason.TERM_COMPLETED if review.kind == "final" else ClosureReason.REVIEW_DECIDED_CLOSE
        close(emit, reason, None)


# -- state changes ---------------------------------------------------------------------------


@stage.evolves(ReviewOpened)
def _opened(event: ReviewOpened, state: RelationshipState) -> Changes:
    return {"phase": Phase.REVIEW, "review": OpenReview(kind=event.kind, opened_at=event.occurred_at, respond_by=event.respond_by)}


@stage.evolves(ReviewSubmitted)
def _submitted(event: ReviewSubmitted, state: RelationshipState) -> Changes:
    assert state.review is not None
    submission = ReviewSubmission(outcome=event.outcome, extension_months=event.extension_months)
    changes: Changes = {
        "review": state.review.model_copy(update={"submissions": {**state.review.submissions, event.party: submission}})
    }
    goals = dict(state.goals)
    for assessment in event.goal_assessments:
        if assessment.goal_id in goals:
            progress = {"progress_percent": assessment.progress_percent}
            goals[assessment.goal_id] = goals[assessment.goal_id].model_copy(update=progress)
    if event.goal_assessments:
        changes["goals"] = goals
    return changes


@stage.evolves(ReviewCompleted)
def _completed(event: ReviewCompleted, state: RelationshipState) -> Changes:
    changes: Changes = {"review": None, "reviews_completed": (*state.reviews_completed, event.kind)}
    if event.outcome != "close":
        changes["phase"] = Phase.ACTIVE
    if event.outcome == "recalibrate":
        changes["needs_recalibration"] = True
    return changes


@stage.evolves(TermExtended)
def _extended(event: TermExtended, state: RelationshipState) -> Changes:
    return {"term_ends_at": event.term_ends_at, "extensions": state.extensions + 1}
