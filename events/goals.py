"""Goals and feedback: progress on the agreed goals, goal changes both sides agree to, the
feedback rounds, and what the two share along the way (introductions, resources)."""

from __future__ import annotations

from events.commands import (
    AcknowledgeGoalRevision,
    Party,
    ProposeGoalRevision,
    RecordGoalProgress,
    RecordIntroduction,
    ShareResource,
    SubmitFeedback,
)
from events.decision import CADENCE_PHASES, PARTIES, Changes, Emitter, Stage
from events.model import (
    FeedbackRequested,
    FeedbackSubmitted,
    GoalAchieved,
    GoalProgressRecorded,
    GoalRevised,
    GoalRevisionProposed,
    IntroductionRecorded,
    MilestoneReached,
    ResourceShared,
)
from events.refusals import RefusalCode, Rejection, refuse
from events.state import FeedbackScore, GoalProgress, PendingGoalRevision, RelationshipState

# At most this many goals in one relationship (the agreement's own bound).
MAX_GOALS = 20

stage = Stage("goals")


@stage.command(RecordGoalProgress, phases=CADENCE_PHASES, senders=PARTIES)
def record_goal_progress(command: RecordGoalProgress, emit: Emitter, party: Party) -> Rejection | None:
    state = emit.current
    goal = state.goals.get(command.goal_id)
    if goal is None:
        known = ", ".join(state.goals) or "none"
        return refuse(RefusalCode.NOT_FOUND, f"there is no goal {command.goal_id}; goals are {known}")
    milestones = {m.milestone_id for m in goal.goal.milestones}
    unknown = [m for m in command.milestones_reached if m not in milestones]
    if unknown:
        return refuse(RefusalCode.NOT_FOUND, f"goal {command.goal_id} has no milestone {', '.join(unknown)}")
    emit(GoalProgressRecorded, goal_id=command.goal_id, progress_percent=command.progress_percent, recorded_by=command.actor_id)
    for milestone_id in dict.fromkeys(command.milestones_reached):
        if milestone_id not in goal.milestones_reached:
            emit(MilestoneReached, goal_id=command.goal_id, milestone_id=milestone_id)
    if command.progress_percent == 100 and goal.achieved_at is None:
        emit(GoalAchieved, goal_id=command.goal_id)
    return None


@stage.command(ProposeGoalRevision, phases=CADENCE_PHASES, senders=PARTIES)
def propose_goal_revision(command: ProposeGoalRevision, emit: Emitter, party: Party) -> Rejection | None:
    state = emit.current
    goal_id = command.goal.goal_id
    if any(pending.goal.goal_id == goal_id for pending in state.pending_goal_revisions.values()):
        return refuse(RefusalCode.CONFLICT, f"a revision of goal {goal_id} is already waiting for acknowledgement")
    if goal_id not in state.goals and len(state.goals) >= MAX_GOALS:
        return refuse(RefusalCode.LIMIT, f"a relationship can have at most {MAX_GOALS} goals")
    emit(
        GoalRevisionProposed,
        revision_id=command.command_id,
        goal=command.goal,
        party=party,
        proposed_by=command.actor_id,
        rationale=command.rationale,
    )
    return None


@stage.command(
    AcknowledgeGoalRevision, phases=CADENCE_PHASES, senders=PARTIES, who="the other party (not the one who proposed it)"
)
def acknowledge_goal_revision(command: AcknowledgeGoalRevision, emit: Emitter, party: Party) -> Rejection | None:
    pending = emit.current.pending_goal_revisions.get(command.revision_id)
    if pending is None:
        return refuse(RefusalCode.NOT_FOUND, f"there is no goal revision {command.revision_id} waiting for acknowledgement")
    if pending.party == party:
        return refuse(
            RefusalCode.NOT_ALLOWED, f"the {party} proposed revision {command.revision_id}; the other side must acknowledge it"
        )
    emit(GoalRevised, revision_id=command.revision_id, goal=pending.goal, acknowledged_by=command.actor_id)
    return None


@stage.command(SubmitFeedback, phases=CADENCE_PHASES, senders=PARTIES, who="a party, once per round")
def submit_feedback(command: SubmitFeedback, emit: Emitter, party: Party) -> Rejection | None:
    state = emit.current
    if not 1 <= command.feedback_round <= state.feedback_round:
        asked = f"rounds 1 to {state.feedback_round}" if state.feedback_round else "no round yet"
        return refuse(RefusalCode.NOT_FOUND, f"feedback round {command.feedback_round} has not been requested ({asked})")
    if any(s.feedback_round == command.feedback_round and s.party == party for s in state.feedback_scores):
        return refuse(RefusalCode.CONFLICT, f"the {party} has already given feedback for round {command.feedback_round}")
    emit(
        FeedbackSubmitted,
        feedback_round=command.feedback_round,
        party=party,
        score=command.score,
        low=command.score <= state.settings.low_feedback_score,
        comment=command.comment,
    )
    return None


@stage.command(RecordIntroduction, phases=CADENCE_PHASES, senders=PARTIES)
def record_introduction(command: RecordIntroduction, emit: Emitter, party: Party) -> Rejection | None:
    emit(IntroductionRecorded, introduced_to=command.introduced_to, recorded_by=command.actor_id, note=command.note)
    return None


@stage.command(ShareResource, phases=CADENCE_PHASES, senders=PARTIES)
def share_resource(command: ShareResource, emit: Emitter, party: Party) -> Rejection | None:
    emit(ResourceShared, title=command.title, url=command.url, shared_by=command.actor_id)
    return None


# -- state changes ---------------------------------------------------------------------------


def _update_goal(state: RelationshipState, goal_id: str, **fields: object) -> Changes:
    goal = state.goals[goal_id]
    return {"goals": {**state.goals, goal_id: goal.model_copy(update=fields)}}


@stage.evolves(GoalProgressRecorded)
def _progress(event: GoalProgressRecorded, state: RelationshipState) -> Changes:
    return _update_goal(state, event.goal_id, progress_percent=event.progress_percent)


@stage.evolves(MilestoneReached)
def _milestone(event: MilestoneReached, state: RelationshipState) -> Changes:
    reached = state.goals[event.goal_id].milestones_reached
    return _update_goal(state, event.goal_id, milestones_reached=(*reached, event.milestone_id))


@stage.evolves(GoalAchieved)
def _achieved(event: GoalAchieved, state: RelationshipState) -> Changes:
    return _update_goal(state, event.goal_id, achieved_at=event.occurred_at, progress_percent=100)


@stage.evolves(GoalRevisionProposed)
def _revision_proposed(event: GoalRevisionProposed, state: RelationshipState) -> Changes:
    pending = PendingGoalRevision(goal=event.goal, party=event.party, proposed_at=event.occurred_at)
    return {"pending_goal_revisions": {**state.pending_goal_revisions, event.revision_id: pending}}


@stage.evolves(GoalRevised)
def _revised(event: GoalRevised, state: RelationshipState) -> Changes:
    pending = {key: value for key, value in state.pending_goal_revisions.items() if key != event.revision_id}
    existing = state.goals.get(event.goal.goal_id)
    if existing is None:
        revised = GoalProgress(goal=event.goal)
    else:
        kept = tuple(m for m in existing.milestones_reached if m in {x.milestone_id for x in event.goal.milestones})
        revised = existing.model_copy(update={"goal": event.goal, "milestones_reached": kept})
    return {
        "goals": {**state.goals, event.goal.goal_id: revised},
        "pending_goal_revisions": pending,
        "needs_recalibration": False,
    }


@stage.evolves(FeedbackRequested)
def _feedback_requested(event: FeedbackRequested, state: RelationshipState) -> Changes:
    return {"feedback_round": event.feedback_round, "feedback_requested_after": event.after_meeting}


@stage.evolves(FeedbackSubmitted)
def _feedback_submitted(event: FeedbackSubmitted, state: RelationshipState) -> Changes:
    low = set(state.low_feedback_parties)
    (low.add if event.low else low.discard)(event.party)
    score = FeedbackScore(feedback_round=event.feedback_round, party=event.party, score=event.score)
    return {"feedback_scores": (*state.feedback_scores, score), "low_feedback_parties": tuple(sorted(low))}


@stage.evolves(IntroductionRecorded)
def _introduced(event: IntroductionRecorded, state: RelationshipState) -> Changes:
    return {"introductions": state.introductions + 1}


@stage.evolves(ResourceShared)
def _shared(event: ResourceShared, state: RelationshipState) -> Changes:
    return {"resources_shared": state.resources_shared + 1}
