"""A relationship's state. How each event changes it is declared by the stage the event
belongs to (events/matching.py, …); `evolve` and `fold` are in events/decider.py.

The state holds no confidential text (notes, concerns, feedback comments, reflections live
only in the events): the `state` query can be shown to anyone entitled to see the
relationship exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, field_serializer

from events.commands import AgreementTerms, Goal, Party, ReviewOutcome
from events.model import ClosureReason, Health, RelationshipStarted, RelationshipSummary, ReviewKind
from events.refusals import FieldProblem, RefusalCode
from events.settings import MeetingFrequency, ProgrammeSettings

# Rejections are kept for the sender to read, but only the most recent ones: the full
# record is in the event store.
REJECTIONS_KEPT = 20

# The generations of meeting rules (`RelationshipState.cadence_rules`, events/cadence.py).
# 1: the next meeting falls due one rhythm after the later of the last meeting held and the
# last one planned, and a report is always the scheduled meeting. Kept only so that runs
# which made decisions by it re-decide them identically when they replay.
LEGACY_CADENCE_RULES = 1
# 2: meetings on a grid anchored to the first meeting, never past the end of the term, and
# each report matched to the meeting it belongs to.
CADENCE_RULES = 2


class Phase(StrEnum):
    MATCHING = "matching"
    AGREEMENT = "agreement"
    ACTIVE = "active"
    REVIEW = "review"
    CLOSING = "closing"
    CLOSED = "closed"


def started_fields(event: RelationshipStarted) -> dict[str, Any]:
    """What a relationship's state, and each read-model row of one, takes from its first event."""
    return {"relationship_id": event.stream_id, "programme_id": event.programme_id, "mentee_id": event.mentee_id,
            "started_at": event.occurred_at, "version": event.version}  # fmt: skip


def joined(parties: tuple[Party, ...], party: Party) -> tuple[Party, ...]:
    """`parties` with `party` among them, in a stable order (who accepted, signed, reflected)."""
    return tuple(sorted({*parties, party}))


# pydantic gives every model a set of the fields it was given (`model_fields_set`, read only
# by `exclude_unset`): a set per applied command and per past meeting, about half of a
# relationship's state in memory, where only a handful of different sets ever occur. The
# state's models share one set per content instead; pydantic copies a set before it changes
# one, and a frozen model never changes its own. At most this many are kept.
_FIELDS_SETS_KEPT = 4096
_fields_sets: dict[frozenset[str], set[str]] = {}


def _share_fields_set(model: BaseModel) -> None:
    given = model.__pydantic_fields_set__
    shared = _fields_sets.get(frozenset(given))
    if shared is None:
        if len(_fields_sets) >= _FIELDS_SETS_KEPT:
            return
        shared = _fields_sets.setdefault(frozenset(given), given)
    object.__setattr__(model, "__pydantic_fields_set__", shared)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_post_init(self, context: Any, /) -> None:
        _share_fields_set(self)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        _share_fields_set(copied)
        return copied


class MatchCandidate(_Frozen):
    mentor_id: str
    proposed_at: AwareDatetime
    expires_at: AwareDatetime
    accepted_by: tuple[Party, ...] = ()


class AgreementDraft(_Frozen):
    agreement_version: int
    terms: AgreementTerms
    proposed_by: str
    proposed_at: AwareDatetime
    signed_by: tuple[Party, ...] = ()


class ScheduledMeeting(_Frozen):
    meeting_number: int
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    # Bumped on every reschedule (the SEQUENCE of the calendar invite).
    revision: int = 0
    agenda_requested: bool = False
    reminded: bool = False


MeetingOutcome = Literal["held", "missed", "cancelled"]


class PastMeeting(_Frozen):
    """A meeting no longer scheduled: when it was (last) planned for, and what became of it."""

    meeting_number: int
    starts_at: AwareDatetime
    outcome: MeetingOutcome
    # Held: when and for how long, as reported (None in records kept before these were).
    held_at: AwareDatetime | None = None
    duration_minutes: int | None = None
    # The party whose report the outcome is (None: counted missed because nobody reported it).
    reported_by: Party | None = None


class GoalProgress(_Frozen):
    goal: Goal
    progress_percent: int = 0
    milestones_reached: tuple[str, ...] = ()
    achieved_at: AwareDatetime | None = None


class PendingGoalRevision(_Frozen):
    goal: Goal
    party: Party
    proposed_at: AwareDatetime


class FeedbackScore(_Frozen):
    feedback_round: int
    party: Party
    score: int


class OpenConcern(_Frozen):
    party: Party | None
    raised_at: AwareDatetime


class ReviewSubmission(_Frozen):
    outcome: ReviewOutcome
    extension_months: int | None = None


class OpenReview(_Frozen):
    kind: ReviewKind
    opened_at: AwareDatetime
    respond_by: AwareDatetime
    submissions: dict[Party, ReviewSubmission] = {}


class RejectedCommand(_Frozen):
    command_id: str | None
    command_name: str
    code: RefusalCode = RefusalCode.NOT_ALLOWED
    reason: str
    problems: tuple[FieldProblem, ...] = ()
    rejected_at: AwareDatetime
    payload_digest: str | None = None


class AppliedCommand(_Frozen):
    """What a command did when it was applied: the answer a retry of it gets again."""

    # None for commands applied before their message and digest were kept.
    message: str | None = None
    digest: str | None = None
    events: tuple[str, ...] = ()
    version: int
    phase: Phase


class RelationshipState(_Frozen):
    """Everything a relationship knows; the `state` query returns it whole."""

    relationship_id: str
    programme_id: str
    mentee_id: str
    settings: ProgrammeSettings
    version: int
    phase: Phase
    started_at: AwareDatetime
    phase_entered_at: AwareDatetime

    # matching
    candidate: MatchCandidate | None = None
    declined_mentor_ids: tuple[str, ...] = ()
    match_attempts: int = 0
    mentor_id: str | None = None

    # agreement
    agreement_due_at: AwareDatetime | None = None
    agreement: AgreementDraft | None = None
    agreement_reminders_sent: tuple[int, ...] = ()

    # active cadence
    activated_at: AwareDatetime | None = None
    term_ends_at: AwareDatetime | None = None
    meeting_frequency: MeetingFrequency | None = None
    next_meeting: ScheduledMeeting | None = None
    last_scheduled_start: AwareDatetime | None = None
    last_meeting_number: int = 0
    missed_meeting_numbers: tuple[int, ...] = ()
    consecutive_missed: int = 0
    meetings_held: int = 0
    meetings_missed: int = 0
    meetings_cancelled: int = 0
    late_cancellations: int = 0
    meeting_minutes_total: int = 0
    last_meeting_at: AwareDatetime | None = None
    # Which meeting rules decide (see CADENCE_RULES). No event sets it: every relationship
    # folds to the current rules, and a workflow run that replays decisions made by the
    # legacy rules decides on a copy set to LEGACY_CADENCE_RULES (docs/relationships.md).
    cadence_rules: int = CADENCE_RULES
    # Where the meeting grid starts: the start meeting 1 was first planned for.
    cadence_origin: AwareDatetime | None = None
    # Every meeting no longer scheduled (held, missed, cancelled), oldest first; a report of
    # a meeting is matched against them. Empty in states carried over from before it was kept.
    past_meetings: tuple[PastMeeting, ...] = ()
    paused_at: AwareDatetime | None = None
    paused_until: AwareDatetime | None = None
    resumed_at: AwareDatetime | None = None

    # goals, feedback, concerns, records
    goals: dict[str, GoalProgress] = {}
    pending_goal_revisions: dict[str, PendingGoalRevision] = {}
    feedback_round: int = 0
    # How many meetings had been held when the latest feedback round was requested: a round
    # is requested once per count, however corrections move the count back and forth.
    feedback_requested_after: int = 0
    feedback_scores: tuple[FeedbackScore, ...] = ()
    low_feedback_parties: tuple[Party, ...] = ()
    open_concerns: dict[str, OpenConcern] = {}
    concerns_raised: int = 0
    introductions: int = 0
    resources_shared: int = 0

    # health
    health: Health = Health.HEALTHY
    health_reasons: tuple[str, ...] = ()
    stalled_at: AwareDatetime | None = None
    nudged_quiet_since: AwareDatetime | None = None
    # When a coordinator last had the waiting reminder sent again (`nudge_relationship`).
    coordinator_nudged_at: AwareDatetime | None = None

    # review
    review: OpenReview | None = None
    reviews_completed: tuple[ReviewKind, ...] = ()
    extensions: int = 0
    needs_recalibration: bool = False

    # closure
    closure_reason: ClosureReason | None = None
    closed_by: str | None = None
    reflections_due_at: AwareDatetime | None = None
    reflections_from: tuple[Party, ...] = ()
    closed_at: AwareDatetime | None = None
    summary: RelationshipSummary | None = None

    # Ids of the commands applied (each at most once); a refused command's id is not used up.
    processed_command_ids: frozenset[str] = frozenset()
    applied_commands: dict[str, AppliedCommand] = {}
    rejected_commands: tuple[RejectedCommand, ...] = ()

    @field_serializer("processed_command_ids")
    def _sorted_ids(self, ids: frozenset[str]) -> list[str]:
        # Sorted so the serialized state is the same in every process.
        return sorted(ids)

    def party_of(self, actor_id: str) -> Party | None:
        if actor_id == self.mentee_id:
            return "mentee"
        mentor = self.mentor_id or (self.candidate.mentor_id if self.candidate else None)
        if mentor is not None and actor_id == mentor:
            return "mentor"
        return None

    def participant_ids(self) -> tuple[str, ...]:
        mentor = self.mentor_id or (self.candidate.mentor_id if self.candidate else None)
        return (self.mentee_id,) if mentor is None else (self.mentee_id, mentor)

    def id_of(self, party: Party) -> str | None:
        return self.mentee_id if party == "mentee" else self.mentor_id

    @property
    def is_closed(self) -> bool:
        return self.phase is Phase.CLOSED

    @property
    def is_paused(self) -> bool:
        return self.paused_until is not None

    @property
    def in_cadence(self) -> bool:
        """Meeting and meets in the rhythm of the agreement: active or under review."""
        return self.phase in (Phase.ACTIVE, Phase.REVIEW)
