"""How a relationship ends, whichever stage ends it: with closing reflections if it ever got
going, else at once, and always with its summary. The closure commands are in events/closure.py."""

from __future__ import annotations

from datetime import datetime, timedelta

from events.decision import Emitter
from events.model import ClosureBegun, ClosureReason, RelationshipClosed, RelationshipSummary
from events.state import RelationshipState


def close(emit: Emitter, reason: ClosureReason, closed_by: str | None, note: str = "", *, left: str | None = None) -> None:
    """End the relationship: with closing reflections if it ever got going, else at once.
    `left`: who left the organisation (participant_left)."""
    state = emit.current
    if state.activated_at is None:
        summary = summarize(state, reason, emit.now)
        emit(RelationshipClosed, reason=reason, closed_by=closed_by, summary=summary, note=note, participant_id=left)
        return
    due = emit.now + timedelta(days=state.settings.reflection_days)
    emit(ClosureBegun, reason=reason, closed_by=closed_by, reflections_due_at=due, note=note, participant_id=left)


def finish(emit: Emitter) -> None:
    """Close a relationship that was waiting for its closing reflections."""
    state = emit.current
    assert state.closure_reason is not None
    emit(
        RelationshipClosed,
        reason=state.closure_reason,
        closed_by=state.closed_by,
        summary=summarize(state, state.closure_reason, emit.now),
    )


# What the summary says as the state keeps it: the ids, the dates and the running counts.
_AS_KEPT = (
    "relationship_id", "programme_id", "mentee_id", "mentor_id", "started_at", "activated_at", "meetings_held",
    "meetings_missed", "meetings_cancelled", "late_cancellations", "meeting_minutes_total", "concerns_raised",
    "reviews_completed", "extensions", "reflections_from",
)  # fmt: skip


def summarize(state: RelationshipState, reason: ClosureReason, now: datetime) -> RelationshipSummary:
    rounds: dict[int, list[int]] = {}
    for score in state.feedback_scores:
        rounds.setdefault(score.feedback_round, []).append(score.score)
    return RelationshipSummary(
        **{name: getattr(state, name) for name in _AS_KEPT},
        closure_reason=reason,
        closed_at=now,
        duration_days=(now - state.started_at).days,
        goals_total=len(state.goals),
        goals_achieved=sum(1 for goal in state.goals.values() if goal.achieved_at is not None),
        goal_progress={goal_id: goal.progress_percent for goal_id, goal in state.goals.items()},
        feedback_trend=tuple(round(sum(s) / len(s), 2) for _, s in sorted(rounds.items())),
    )
