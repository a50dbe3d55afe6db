"""What an event says about a relationship as a whole: its health, why it closed, the kinds
of review, and the final summary. Kept apart from the events themselves (events/model.py,
which re-exports them) so that module stays within its size."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from events.commands import Party
from events.sensitivity import NotConfidential

ReviewKind = Literal["midpoint", "final", "on_demand"]


class Health(StrEnum):
    HEALTHY = "healthy"
    AT_RISK = "at_risk"
    STALLED = "stalled"


class ClosureReason(StrEnum):
    UNMATCHED = "unmatched"
    AGREEMENT_EXPIRED = "agreement_expired"
    CLOSED_BY_MENTOR = "closed_by_mentor"
    CLOSED_BY_MENTEE = "closed_by_mentee"
    CLOSED_BY_COORDINATOR = "closed_by_coordinator"
    PARTICIPANT_LEFT = "participant_left"
    STALLED = "stalled"
    REVIEW_DECIDED_CLOSE = "review_decided_close"
    TERM_COMPLETED = "term_completed"



class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RelationshipSummary(_Frozen):
    """The final account of a relationship: stored with its last event, sent to everyone
    concerned, and returned as the workflow's result. Counts and ids only."""

    relationship_id: NotConfidential
    programme_id: NotConfidential
    mentee_id: NotConfidential
    mentor_id: NotConfidential | None
    closure_reason: ClosureReason
    started_at: AwareDatetime
    activated_at: AwareDatetime | None
    closed_at: AwareDatetime
    duration_days: int
    meetings_held: int
    meetings_missed: int
    meetings_cancelled: int
    late_cancellations: int
    meeting_minutes_total: int
    goals_total: int
    goals_achieved: int
    goal_progress: dict[NotConfidential, int]
    # Average feedback score per feedback round, oldest first.
    feedback_trend: tuple[float, ...]
    concerns_raised: int
    reviews_completed: tuple[ReviewKind, ...]
    extensions: int
    reflections_from: tuple[Party, ...]
