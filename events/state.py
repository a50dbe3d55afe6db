"""A relationship's state and `evolve`, the one fold used by the workflow and the store.

The state holds no confidential text (notes, concerns, feedback comments, reflections live
only in the events): the `state` query can be shown to anyone entitled to see the
relationship exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from functools import singledispatch
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, field_serializer

from events.commands import AgreementTerms, Goal, Party, ReviewOutcome
from events.model import (
    AgendaRequested,
    AgreementExpired,
    AgreementProposed,
    AgreementReminderIssued,
    AgreementSigned,
    AnyEvent,
    ClosureBegun,
    ClosureReason,
    CommandRejected,
    ConcernRaised,
    ConcernResolved,
    Event,
    FeedbackRequested,
    FeedbackSubmitted,
    GoalAchieved,
    GoalProgressRecorded,
    GoalRevised,
    GoalRevisionProposed,
    Health,
    HealthChanged,
    IntroductionRecorded,
    MatchAccepted,
    MatchConfirmed,
    MatchDeclined,
    MatchProposalExpired,
    MatchProposed,
    MeetingCancelled,
    MeetingHeld,
    MeetingMissed,
    MeetingReminderIssued,
    MeetingRescheduled,
    MeetingScheduled,
    MilestoneReached,
    NudgeIssued,
    ReflectionSubmitted,
    RelationshipActivated,
    RelationshipClosed,
    RelationshipPaused,
    RelationshipResumed,
    RelationshipStarted,
    RelationshipSummary,
    ResourceShared,
    ReviewCompleted,
    ReviewKind,
    ReviewOpened,
    ReviewSubmitted,
    TermExtended,
)
from events.refusals import FieldProblem, RefusalCode
from events.settings import MeetingFrequency, ProgrammeSettings

# Rejections are kept for the sender to read, but only the most recent ones: the full
# record is in the event store.
REJECTIONS_KEPT = 20

# The generations of meeting rules (`RelationshipState.cadence_rules`, events/meetings.py).
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


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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


def evolve(state: RelationshipState | None, event: AnyEvent) -> RelationshipState:
    """Apply one event. The first event of a stream must be `RelationshipStarted`."""
    if state is None:
        if not isinstance(event, RelationshipStarted):
            raise ValueError(f"a stream must begin with RelationshipStarted, not {event.type}")
        return RelationshipState(
            relationship_id=event.stream_id,
            programme_id=event.programme_id,
            mentee_id=event.mentee_id,
            settings=event.settings,
            version=event.version,
            phase=Phase.MATCHING,
            started_at=event.occurred_at,
            phase_entered_at=event.occurred_at,
            processed_command_ids=frozenset({event.command_id} if event.command_id else ()),
        )
    if event.version != state.version + 1:
        raise ValueError(f"event version {event.version} does not follow state version {state.version}")
    changes = _changes(event, state)
    changes["version"] = event.version
    if event.command_id is not None and not isinstance(event, CommandRejected):
        if event.command_id not in state.processed_command_ids:
            changes["processed_command_ids"] = state.processed_command_ids | {event.command_id}
        changes["applied_commands"] = _applied(state, event, changes.get("phase", state.phase))
    if "phase" in changes and changes["phase"] is not state.phase:
        changes["phase_entered_at"] = event.occurred_at
    return state.model_copy(update=changes)


def _applied(state: RelationshipState, event: AnyEvent, phase: object) -> dict[str, AppliedCommand]:
    assert event.command_id is not None and isinstance(phase, Phase)
    first = state.applied_commands.get(event.command_id)
    if first is None:
        stamp = event.caused_by
        record = AppliedCommand(
            message=stamp.message if stamp else None,
            digest=stamp.digest if stamp else None,
            events=(event.type,),
            version=event.version,
            phase=phase,
        )
    else:
        record = first.model_copy(update={"events": (*first.events, event.type), "version": event.version, "phase": phase})
    return {**state.applied_commands, event.command_id: record}


def fold(events: Iterable[AnyEvent], state: RelationshipState | None = None) -> RelationshipState | None:
    for event in events:
        state = evolve(state, event)
    return state


Changes = dict[str, object]


@singledispatch
def _changes(event: Event, state: RelationshipState) -> Changes:
    raise TypeError(f"no evolve rule for {type(event).__name__}")


@_changes.register
def _(event: RelationshipStarted, state: RelationshipState) -> Changes:
    raise ValueError("RelationshipStarted may only begin a stream")


# -- matching ---------------------------------------------------------------------------


@_changes.register
def _(event: MatchProposed, state: RelationshipState) -> Changes:
    return {
        "candidate": MatchCandidate(
            mentor_id=event.mentor_id, proposed_at=event.occurred_at, expires_at=event.expires_at
        )
    }


@_changes.register
def _(event: MatchAccepted, state: RelationshipState) -> Changes:
    assert state.candidate is not None
    accepted = tuple(sorted({*state.candidate.accepted_by, event.party}))
    return {"candidate": state.candidate.model_copy(update={"accepted_by": accepted})}


@_changes.register
def _(event: MatchDeclined, state: RelationshipState) -> Changes:
    return _candidate_gone(state, event.mentor_id)


@_changes.register
def _(event: MatchProposalExpired, state: RelationshipState) -> Changes:
    return _candidate_gone(state, event.mentor_id)


def _candidate_gone(state: RelationshipState, mentor_id: str) -> Changes:
    return {
        "candidate": None,
        "match_attempts": state.match_attempts + 1,
        "declined_mentor_ids": (*state.declined_mentor_ids, mentor_id),
    }


@_changes.register
def _(event: MatchConfirmed, state: RelationshipState) -> Changes:
    return {
        "phase": Phase.AGREEMENT,
        "mentor_id": event.mentor_id,
        "candidate": None,
        "agreement_due_at": event.agreement_due_at,
    }


# -- agreement --------------------------------------------------------------------------


@_changes.register
def _(event: AgreementProposed, state: RelationshipState) -> Changes:
    return {
        "agreement": AgreementDraft(
            agreement_version=event.agreement_version,
            terms=event.terms,
            proposed_by=event.proposed_by,
            proposed_at=event.occurred_at,
        )
    }


@_changes.register
def _(event: AgreementSigned, state: RelationshipState) -> Changes:
    assert state.agreement is not None
    signed = tuple(sorted({*state.agreement.signed_by, event.party}))
    return {"agreement": state.agreement.model_copy(update={"signed_by": signed})}


@_changes.register
def _(event: AgreementReminderIssued, state: RelationshipState) -> Changes:
    return {"agreement_reminders_sent": (*state.agreement_reminders_sent, event.days_left)}


@_changes.register
def _(event: AgreementExpired, state: RelationshipState) -> Changes:
    return {}


@_changes.register
def _(event: RelationshipActivated, state: RelationshipState) -> Changes:
    assert state.agreement is not None
    return {
        "phase": Phase.ACTIVE,
        "activated_at": event.occurred_at,
        "term_ends_at": event.term_ends_at,
        "meeting_frequency": event.meeting_frequency,
        "goals": {goal.goal_id: GoalProgress(goal=goal) for goal in state.agreement.terms.goals},
    }


# -- meetings ---------------------------------------------------------------------------


@_changes.register
def _(event: MeetingScheduled, state: RelationshipState) -> Changes:
    meeting = state.next_meeting
    if meeting is not None and meeting.meeting_number == event.meeting_number:
        # Planned again (it lay past the end of the term): a new revision of the same invite.
        planned = meeting.model_copy(
            update={
                "starts_at": event.starts_at,
                "ends_at": event.ends_at,
                "revision": meeting.revision + 1,
                "agenda_requested": False,
                "reminded": False,
            }
        )
    else:
        planned = ScheduledMeeting(meeting_number=event.meeting_number, starts_at=event.starts_at, ends_at=event.ends_at)
    changes: Changes = {
        "next_meeting": planned,
        "last_meeting_number": max(state.last_meeting_number, event.meeting_number),
        "last_scheduled_start": event.starts_at,
    }
    if event.meeting_number == 1 and state.cadence_origin is None:
        changes["cadence_origin"] = event.starts_at
    return changes


def _past(state: RelationshipState, number: int, starts_at: datetime, outcome: MeetingOutcome) -> tuple[PastMeeting, ...]:
    """The past meetings with meeting `number` recorded as `outcome` (replacing its record)."""
    kept = tuple(m for m in state.past_meetings if m.meeting_number != number)
    return tuple(sorted((*kept, PastMeeting(meeting_number=number, starts_at=starts_at, outcome=outcome)), key=lambda m: m.meeting_number))


@_changes.register
def _(event: AgendaRequested, state: RelationshipState) -> Changes:
    return {"next_meeting": _update_meeting(state, agenda_requested=True)}


@_changes.register
def _(event: MeetingReminderIssued, state: RelationshipState) -> Changes:
    return {"next_meeting": _update_meeting(state, reminded=True)}


def _update_meeting(state: RelationshipState, **fields: object) -> ScheduledMeeting:
    assert state.next_meeting is not None
    return state.next_meeting.model_copy(update=fields)


@_changes.register
def _(event: MeetingHeld, state: RelationshipState) -> Changes:
    last = state.last_meeting_at
    changes: Changes = {
        "meetings_held": state.meetings_held + 1,
        "meeting_minutes_total": state.meeting_minutes_total + event.duration_minutes,
        "last_meeting_at": event.held_at if last is None else max(last, event.held_at),
    }
    if event.correction:
        still_missed = tuple(n for n in state.missed_meeting_numbers if n != event.meeting_number)
        changes["meetings_missed"] = state.meetings_missed - 1
        changes["missed_meeting_numbers"] = still_missed
        # The corrected meeting was held: of the misses in a row, only those after it remain.
        later_misses = sum(1 for n in still_missed if n > event.meeting_number)
        changes["consecutive_missed"] = min(state.consecutive_missed, later_misses)
        missed = next((m for m in state.past_meetings if m.meeting_number == event.meeting_number), None)
        if missed is not None:
            changes["past_meetings"] = _past(state, missed.meeting_number, missed.starts_at, "held")
    else:
        changes["consecutive_missed"] = 0
        if state.next_meeting is not None and state.next_meeting.meeting_number == event.meeting_number:
            changes["next_meeting"] = None
            changes["past_meetings"] = _past(state, event.meeting_number, state.next_meeting.starts_at, "held")
    return changes


@_changes.register
def _(event: MeetingCancelled, state: RelationshipState) -> Changes:
    changes: Changes = {
        "next_meeting": None,
        "meetings_cancelled": state.meetings_cancelled + 1,
        "late_cancellations": state.late_cancellations + (1 if event.late else 0),
    }
    if state.next_meeting is not None:
        changes["past_meetings"] = _past(state, event.meeting_number, state.next_meeting.starts_at, "cancelled")
    return changes


@_changes.register
def _(event: MeetingRescheduled, state: RelationshipState) -> Changes:
    assert state.next_meeting is not None
    return {
        "next_meeting": state.next_meeting.model_copy(
            update={
                "starts_at": event.starts_at,
                "ends_at": event.ends_at,
                "revision": state.next_meeting.revision + 1,
                "agenda_requested": False,
                "reminded": False,
            }
        ),
        "late_cancellations": state.late_cancellations + (1 if event.late else 0),
        "last_scheduled_start": event.starts_at,
    }


@_changes.register
def _(event: MeetingMissed, state: RelationshipState) -> Changes:
    return {
        "next_meeting": None,
        "meetings_missed": state.meetings_missed + 1,
        "missed_meeting_numbers": (*state.missed_meeting_numbers, event.meeting_number),
        "consecutive_missed": state.consecutive_missed + 1,
        "past_meetings": _past(state, event.meeting_number, event.starts_at, "missed"),
    }


# -- goals, feedback, concerns, records -------------------------------------------------


def _update_goal(state: RelationshipState, goal_id: str, **fields: object) -> Changes:
    goal = state.goals[goal_id]
    return {"goals": {**state.goals, goal_id: goal.model_copy(update=fields)}}


@_changes.register
def _(event: GoalProgressRecorded, state: RelationshipState) -> Changes:
    return _update_goal(state, event.goal_id, progress_percent=event.progress_percent)


@_changes.register
def _(event: MilestoneReached, state: RelationshipState) -> Changes:
    reached = state.goals[event.goal_id].milestones_reached
    return _update_goal(state, event.goal_id, milestones_reached=(*reached, event.milestone_id))


@_changes.register
def _(event: GoalAchieved, state: RelationshipState) -> Changes:
    return _update_goal(state, event.goal_id, achieved_at=event.occurred_at, progress_percent=100)


@_changes.register
def _(event: GoalRevisionProposed, state: RelationshipState) -> Changes:
    pending = PendingGoalRevision(goal=event.goal, party=event.party, proposed_at=event.occurred_at)
    return {"pending_goal_revisions": {**state.pending_goal_revisions, event.revision_id: pending}}


@_changes.register
def _(event: GoalRevised, state: RelationshipState) -> Changes:
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


@_changes.register
def _(event: FeedbackRequested, state: RelationshipState) -> Changes:
    return {"feedback_round": event.feedback_round}


@_changes.register
def _(event: FeedbackSubmitted, state: RelationshipState) -> Changes:
    low = set(state.low_feedback_parties)
    (low.add if event.low else low.discard)(event.party)
    score = FeedbackScore(feedback_round=event.feedback_round, party=event.party, score=event.score)
    return {"feedback_scores": (*state.feedback_scores, score), "low_feedback_parties": tuple(sorted(low))}


@_changes.register
def _(event: ConcernRaised, state: RelationshipState) -> Changes:
    concern = OpenConcern(party=event.party, raised_at=event.occurred_at)
    return {"open_concerns": {**state.open_concerns, event.concern_id: concern}, "concerns_raised": state.concerns_raised + 1}


@_changes.register
def _(event: ConcernResolved, state: RelationshipState) -> Changes:
    return {"open_concerns": {key: value for key, value in state.open_concerns.items() if key != event.concern_id}}


@_changes.register
def _(event: IntroductionRecorded, state: RelationshipState) -> Changes:
    return {"introductions": state.introductions + 1}


@_changes.register
def _(event: ResourceShared, state: RelationshipState) -> Changes:
    return {"resources_shared": state.resources_shared + 1}


# -- pause, health ----------------------------------------------------------------------


@_changes.register
def _(event: RelationshipPaused, state: RelationshipState) -> Changes:
    return {"paused_at": event.occurred_at, "paused_until": event.until, "next_meeting": None}


@_changes.register
def _(event: RelationshipResumed, state: RelationshipState) -> Changes:
    return {
        "paused_at": None,
        "paused_until": None,
        "resumed_at": event.occurred_at,
        "term_ends_at": event.term_ends_at,
    }


@_changes.register
def _(event: HealthChanged, state: RelationshipState) -> Changes:
    stalled_at = state.stalled_at
    if event.health is Health.STALLED and state.health is not Health.STALLED:
        stalled_at = event.occurred_at
    elif event.health is not Health.STALLED:
        stalled_at = None
    return {"health": event.health, "health_reasons": event.reasons, "stalled_at": stalled_at}


@_changes.register
def _(event: NudgeIssued, state: RelationshipState) -> Changes:
    return {"nudged_quiet_since": event.quiet_since}


# -- review -----------------------------------------------------------------------------


@_changes.register
def _(event: ReviewOpened, state: RelationshipState) -> Changes:
    return {
        "phase": Phase.REVIEW,
        "review": OpenReview(kind=event.kind, opened_at=event.occurred_at, respond_by=event.respond_by),
    }


@_changes.register
def _(event: ReviewSubmitted, state: RelationshipState) -> Changes:
    assert state.review is not None
    submission = ReviewSubmission(outcome=event.outcome, extension_months=event.extension_months)
    changes: Changes = {
        "review": state.review.model_copy(update={"submissions": {**state.review.submissions, event.party: submission}})
    }
    goals = dict(state.goals)
    for assessment in event.goal_assessments:
        if assessment.goal_id in goals:
            goals[assessment.goal_id] = goals[assessment.goal_id].model_copy(
                update={"progress_percent": assessment.progress_percent}
            )
    if event.goal_assessments:
        changes["goals"] = goals
    return changes


@_changes.register
def _(event: ReviewCompleted, state: RelationshipState) -> Changes:
    changes: Changes = {"review": None, "reviews_completed": (*state.reviews_completed, event.kind)}
    if event.outcome != "close":
        changes["phase"] = Phase.ACTIVE
    if event.outcome == "recalibrate":
        changes["needs_recalibration"] = True
    return changes


@_changes.register
def _(event: TermExtended, state: RelationshipState) -> Changes:
    return {"term_ends_at": event.term_ends_at, "extensions": state.extensions + 1}


# -- closure ----------------------------------------------------------------------------


@_changes.register
def _(event: ClosureBegun, state: RelationshipState) -> Changes:
    return {
        "phase": Phase.CLOSING,
        "closure_reason": event.reason,
        "closed_by": event.closed_by,
        "reflections_due_at": event.reflections_due_at,
        "candidate": None,
        "review": None,
        "next_meeting": None,
        "paused_at": None,
        "paused_until": None,
    }


@_changes.register
def _(event: ReflectionSubmitted, state: RelationshipState) -> Changes:
    return {"reflections_from": tuple(sorted({*state.reflections_from, event.party}))}


@_changes.register
def _(event: RelationshipClosed, state: RelationshipState) -> Changes:
    return {
        "phase": Phase.CLOSED,
        "closed_at": event.occurred_at,
        "closure_reason": event.reason,
        "closed_by": event.closed_by,
        "summary": event.summary,
        "candidate": None,
        "review": None,
        "next_meeting": None,
        "paused_at": None,
        "paused_until": None,
    }


@_changes.register
def _(event: CommandRejected, state: RelationshipState) -> Changes:
    rejection = RejectedCommand(
        command_id=event.command_id,
        command_name=event.command_name,
        code=event.code,
        reason=event.reason,
        problems=event.problems,
        rejected_at=event.occurred_at,
        payload_digest=event.payload_digest,
    )
    return {"rejected_commands": (*state.rejected_commands, rejection)[-REJECTIONS_KEPT:]}
