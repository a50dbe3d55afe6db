"""Read models for reports: pure rules that fold events into rows, and the programme
dashboard computed from those rows. No I/O.

A `Projection` names its checkpoint and table, and says for each event which row it changes
(`row_key`) and what that row becomes (`apply`). The follower in activities/projections.py
loads the rows a batch of events touches, folds the batch with `project`, and writes back
the rows that changed, with the checkpoint, in one transaction; a rebuild runs the same
fold from the first event. So following in batches of any size and rebuilding give the
same rows.

Only ids, codes, numbers and dates are read — never notes, concern texts, feedback
comments or reflections — so the read models stay whole after a relationship's
confidential text has been forgotten (and work on events whose text comes back redacted).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict

from events.digest import DigestRow, apply_digest_row
from events.model import (
    AgreementProposed,
    AnyEvent,
    ClosureBegun,
    ClosureReason,
    FeedbackSubmitted,
    GoalAchieved,
    GoalRevised,
    Health,
    HealthChanged,
    MatchConfirmed,
    MeetingHeld,
    MeetingMissed,
    RelationshipActivated,
    RelationshipClosed,
    ReviewCompleted,
    ReviewOpened,
)
from events.state import Phase
from events.stream_rows import StreamRow, stream_row

Key = tuple[str | int, ...]


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RelationshipRow(StreamRow):
    health: Health = Health.HEALTHY
    started_at: AwareDatetime
    matched_at: AwareDatetime | None = None
    activated_at: AwareDatetime | None = None
    closed_at: AwareDatetime | None = None
    closure_reason: ClosureReason | None = None
    proposed_goal_ids: tuple[str, ...] = ()
    goal_ids: tuple[str, ...] = ()
    achieved_goal_ids: tuple[str, ...] = ()
    version: int


class MeetingRow(_Row):
    relationship_id: str
    meeting_number: int
    status: Literal["held", "missed"]
    at: AwareDatetime
    duration_minutes: int | None = None
    # The stream version of the last event applied to this row.
    version: int


class FeedbackRow(_Row):
    relationship_id: str
    feedback_round: int
    party: str
    score: int
    submitted_at: AwareDatetime


RowT = TypeVar("RowT", bound=BaseModel)


@dataclass(frozen=True)
class Projection(Generic[RowT]):
    name: str
    table: str
    row_type: type[RowT]
    key_columns: tuple[str, ...]
    # Which row an event changes; None when it changes none of this projection's rows.
    row_key: Callable[[AnyEvent], Key | None]
    # The row after the event (the row is None when there is none yet); None: unchanged.
    apply: Callable[[RowT | None, AnyEvent], RowT | None]

    def key_of(self, row: RowT) -> Key:
        return tuple(getattr(row, column) for column in self.key_columns)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.row_type.model_fields)


def project(projection: Projection[RowT], rows: Mapping[Key, RowT], events: Iterable[AnyEvent]) -> dict[Key, RowT]:
    """Fold `events` into `rows` (the rows they touch, as stored); returns the rows that changed."""
    current = dict(rows)
    changed: dict[Key, RowT] = {}
    for event in events:
        key = projection.row_key(event)
        if key is None:
            continue
        before = current.get(key)
        after = projection.apply(before, event)
        if after is None or after == before:
            continue
        current[key] = changed[key] = after
    return changed


# -- relationships -----------------------------------------------------------------------


def _relationship_key(event: AnyEvent) -> Key | None:
    return (event.stream_id,)


StreamRowT = TypeVar("StreamRowT", bound=StreamRow)


def _one_row_per_relationship(
    name: str, table: str, row_type: type[StreamRowT], apply: Callable[[StreamRowT | None, AnyEvent], StreamRowT | None]
) -> Projection[StreamRowT]:
    return Projection(name, table, row_type, key_columns=("relationship_id",), row_key=_relationship_key, apply=apply)


def _apply_relationship(row: RelationshipRow | None, event: AnyEvent) -> RelationshipRow | None:
    return stream_row(RelationshipRow, row, event, _relationship_changes)


def _relationship_changes(row: RelationshipRow, event: AnyEvent) -> dict[str, Any]:
    if isinstance(event, MatchConfirmed):
        return {"phase": Phase.AGREEMENT, "mentor_id": event.mentor_id, "matched_at": event.occurred_at}
    if isinstance(event, AgreementProposed):
        return {"proposed_goal_ids": tuple(goal.goal_id for goal in event.terms.goals)}
    if isinstance(event, RelationshipActivated):
        return {"phase": Phase.ACTIVE, "activated_at": event.occurred_at, "goal_ids": row.proposed_goal_ids}
    if isinstance(event, GoalRevised) and event.goal.goal_id not in row.goal_ids:
        return {"goal_ids": (*row.goal_ids, event.goal.goal_id)}
    if isinstance(event, GoalAchieved) and event.goal_id not in row.achieved_goal_ids:
        return {"achieved_goal_ids": (*row.achieved_goal_ids, event.goal_id)}
    if isinstance(event, HealthChanged):
        return {"health": event.health}
    if isinstance(event, ReviewOpened):
        return {"phase": Phase.REVIEW}
    if isinstance(event, ReviewCompleted) and event.outcome != "close":
        return {"phase": Phase.ACTIVE}
    if isinstance(event, ClosureBegun):
        return {"phase": Phase.CLOSING, "closure_reason": event.reason}
    if isinstance(event, RelationshipClosed):
        return {"phase": Phase.CLOSED, "closure_reason": event.reason, "closed_at": event.occurred_at}
    return {}


RELATIONSHIPS = _one_row_per_relationship("relationships", "report_relationships", RelationshipRow, _apply_relationship)


# -- meetings ------------------------------------------------------------------------------


def _meeting_key(event: AnyEvent) -> Key | None:
    if isinstance(event, MeetingHeld | MeetingMissed):
        return (event.stream_id, event.meeting_number)
    return None


def _apply_meeting(row: MeetingRow | None, event: AnyEvent) -> MeetingRow | None:
    # An event this row already reflects changes nothing (as for the rows of events/stream_rows.py).
    if row is not None and event.version <= row.version:
        return None
    # A meeting's last report counts, as in the relationship's state (events/meetings.py) and
    # the digest: a late `record_meeting` or `correct_meeting_report` counts it held anew, a
    # correction to not held counts it missed again.
    if isinstance(event, MeetingHeld):
        return MeetingRow(
            relationship_id=event.stream_id,
            meeting_number=event.meeting_number,
            status="held",
            at=event.held_at,
            duration_minutes=event.duration_minutes,
            version=event.version,
        )
    if isinstance(event, MeetingMissed):
        return MeetingRow(
            relationship_id=event.stream_id, meeting_number=event.meeting_number, status="missed", at=event.starts_at,
            version=event.version,
        )
    return None


MEETINGS: Projection[MeetingRow] = Projection(
    name="meetings",
    table="report_meetings",
    row_type=MeetingRow,
    key_columns=("relationship_id", "meeting_number"),
    row_key=_meeting_key,
    apply=_apply_meeting,
)


# -- feedback ------------------------------------------------------------------------------


def _feedback_key(event: AnyEvent) -> Key | None:
    if isinstance(event, FeedbackSubmitted):
        return (event.stream_id, event.feedback_round, event.party)
    return None


def _apply_feedback(row: FeedbackRow | None, event: AnyEvent) -> FeedbackRow | None:
    if isinstance(event, FeedbackSubmitted) and row is None:
        return FeedbackRow(
            relationship_id=event.stream_id,
            feedback_round=event.feedback_round,
            party=event.party,
            score=event.score,
            submitted_at=event.occurred_at,
        )
    return None


FEEDBACK: Projection[FeedbackRow] = Projection(
    name="feedback",
    table="report_feedback",
    row_type=FeedbackRow,
    key_columns=("relationship_id", "feedback_round", "party"),
    row_key=_feedback_key,
    apply=_apply_feedback,
)

# -- the coordinators' digest (its rows and rules: events/digest.py) -------------------------

DIGEST = _one_row_per_relationship("digest", "digest_relationships", DigestRow, apply_digest_row)

PROJECTIONS: tuple[Projection[Any], ...] = (RELATIONSHIPS, MEETINGS, FEEDBACK, DIGEST)
PROJECTIONS_BY_NAME: Mapping[str, Projection[Any]] = {p.name: p for p in PROJECTIONS}


# -- the programme dashboard -----------------------------------------------------------------


class TimeToMatch(_Row):
    """Days from a relationship's start to its confirmed match, over the matched ones."""

    matched: int
    unmatched: int
    median_days: float | None
    p75_days: float | None
    p90_days: float | None
    max_days: float | None


class MonthOfMeetings(_Row):
    month: str
    held: int
    missed: int


class MonthOfFeedback(_Row):
    month: str
    responses: int
    average_score: float


class GoalCompletion(_Row):
    goals: int
    achieved: int
    # achieved / goals, None without goals.
    rate: float | None


class ProgrammeReport(_Row):
    programme_id: str
    relationships: int
    # phase -> health -> count, every phase and health present (zeros included).
    by_phase_and_health: dict[str, dict[str, int]]
    time_to_match: TimeToMatch
    meetings_per_month: tuple[MonthOfMeetings, ...]
    goal_completion: GoalCompletion
    feedback_per_month: tuple[MonthOfFeedback, ...]
    # Closed (or closing) relationships by closure reason; only reasons that occur.
    closure_reasons: dict[str, int]


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def month_of(moment: datetime) -> str:
    """The UTC calendar month, e.g. 2027-03."""
    return moment.astimezone(UTC).strftime("%Y-%m")


def programme_report(
    programme_id: str,
    relationships: Iterable[RelationshipRow],
    meetings: Iterable[MeetingRow],
    feedback: Iterable[FeedbackRow],
) -> ProgrammeReport:
    """The dashboard of one programme from its rows (meetings and feedback of other
    programmes' relationships are left out)."""
    mine = [row for row in relationships if row.programme_id == programme_id]
    ids = {row.relationship_id for row in mine}

    by_phase = {phase.value: {health.value: 0 for health in Health} for phase in Phase}
    for row in mine:
        by_phase[row.phase.value][row.health.value] += 1

    days = [(row.matched_at - row.started_at).total_seconds() / 86400 for row in mine if row.matched_at]

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    time_to_match = TimeToMatch(
        matched=len(days),
        unmatched=len(mine) - len(days),
        median_days=rounded(percentile(days, 50)),
        p75_days=rounded(percentile(days, 75)),
        p90_days=rounded(percentile(days, 90)),
        max_days=rounded(max(days, default=None)),
    )

    held: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    for meeting in meetings:
        if meeting.relationship_id in ids:
            (held if meeting.status == "held" else missed)[month_of(meeting.at)] += 1
    meetings_per_month = tuple(
        MonthOfMeetings(month=month, held=held[month], missed=missed[month]) for month in sorted(held | missed)
    )

    goals = sum(len(row.goal_ids) for row in mine)
    achieved = sum(len(set(row.achieved_goal_ids) & set(row.goal_ids)) for row in mine)
    goal_completion = GoalCompletion(goals=goals, achieved=achieved, rate=round(achieved / goals, 4) if goals else None)

    scores: dict[str, list[int]] = {}
    for answer in feedback:
        if answer.relationship_id in ids:
            scores.setdefault(month_of(answer.submitted_at), []).append(answer.score)
    feedback_per_month = tuple(
        MonthOfFeedback(month=month, responses=len(values), average_score=round(sum(values) / len(values), 2))
        for month, values in sorted(scores.items())
    )

    reasons = Counter(row.closure_reason.value for row in mine if row.closure_reason is not None)
    return ProgrammeReport(
        programme_id=programme_id,
        relationships=len(mine),
        by_phase_and_health=by_phase,
        time_to_match=time_to_match,
        meetings_per_month=meetings_per_month,
        goal_completion=goal_completion,
        feedback_per_month=feedback_per_month,
        closure_reasons=dict(sorted(reasons.items())),
    )
