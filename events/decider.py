"""`decide`: given the state, a command and the time, which events happen (or why not).

Pure functions only. Event ids are derived from the stream, the version and the cause (the
command id or the deadline), so deciding the same thing twice yields the same events — a
retried append is recognised as the same write, and a replayed workflow decides identically.

Every decision ends with the same follow-up (`_follow_up`): a relationship in its cadence
always has its next meeting scheduled while the term has room for one (events/meetings.py),
and its health always matches `assess_health`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from events.commands import (
    DIRECTORY_ACTOR,
    INTERNAL_ACTORS,
    MATCHING_ACTORS,
    ROUND_ACTOR,
    AcceptMatch,
    AcknowledgeGoalRevision,
    CancelMeeting,
    CloseRelationship,
    Command,
    DeclineMatch,
    Party,
    PauseRelationship,
    ProposeAgreement,
    ProposeGoalRevision,
    ProposeMatch,
    RaiseConcern,
    RecordGoalProgress,
    RecordIntroduction,
    RecordMeeting,
    ReportParticipantLeft,
    RequestReview,
    RescheduleMeeting,
    ResolveConcern,
    ResumeRelationship,
    ReviewOutcome,
    ShareResource,
    SignAgreement,
    SubmitFeedback,
    SubmitReflection,
    SubmitReview,
    command_digest,
)
from events.deadlines import Deadline, add_months, next_deadline
from events.health import assess_health, quiet_since
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
    CommandStamp,
    ConcernRaised,
    ConcernResolved,
    FeedbackRequested,
    FeedbackSubmitted,
    GoalAchieved,
    GoalProgressRecorded,
    GoalRevised,
    GoalRevisionProposed,
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
    ReviewOpened,
    ReviewSubmitted,
    TermExtended,
)
from events.refusals import FieldProblem, RefusalCode, Rejection, limits, refuse
from events.meetings import FIRST_MEETING_WITHIN as FIRST_MEETING_WITHIN
from events.meetings import MIN_SCHEDULING_LEAD as MIN_SCHEDULING_LEAD
from events.meetings import (
    MAX_RESCHEDULE_AHEAD,
    MEETING_CLOCK_SKEW,
    beyond_the_term,
    meeting_reported,
    plan_next_meeting,
)
from events.settings import FREQUENCY_ORDER, ProgrammeSettings
from events.state import LEGACY_CADENCE_RULES, Phase, RelationshipState, evolve

NOT_ALLOWED, WRONG_PHASE, NOT_FOUND, LIMIT, CONFLICT = (
    RefusalCode.NOT_ALLOWED,
    RefusalCode.WRONG_PHASE,
    RefusalCode.NOT_FOUND,
    RefusalCode.LIMIT,
    RefusalCode.CONFLICT,
)

_EVENT_ID_NAMESPACE = uuid.UUID("5f0c6a4e-2b7d-4c1e-9a55-6d0b8f3e7a21")

# The meeting rules and their constants (clock skew, scheduling lead, …): events/meetings.py.


Decision = list[AnyEvent] | Rejection


class _Emitter:
    """Stamps successive events with the envelope (next version, derived id, time, cause)
    and folds each one, so later rules see the state the earlier events made."""

    def __init__(
        self,
        state: RelationshipState | None,
        stream_id: str,
        cause: str,
        now: datetime,
        command_id: str | None,
        stamp: CommandStamp | None = None,
    ):
        self.state = state
        self.stream_id, self.cause, self.now, self.command_id = stream_id, cause, now, command_id
        # Goes on the first event only: it is what the command was, not what each event is.
        self.stamp = stamp
        self.version = state.version if state else 0
        self.events: list[AnyEvent] = []

    @property
    def current(self) -> RelationshipState:
        assert self.state is not None
        return self.state

    def __call__(self, event_type: type[Any], **fields: Any) -> None:
        self.version += 1
        event_id = uuid.uuid5(_EVENT_ID_NAMESPACE, f"{self.stream_id}/{self.version}/{self.cause}")
        event = event_type(
            stream_id=self.stream_id,
            version=self.version,
            event_id=str(event_id),
            occurred_at=self.now,
            command_id=self.command_id,
            **({"caused_by": self.stamp} if self.stamp and not self.events else {}),
            **fields,
        )
        self.state = evolve(self.state, event)
        self.events.append(event)


def start_relationship(
    relationship_id: str, programme_id: str, mentee_id: str, settings: ProgrammeSettings, now: datetime
) -> list[AnyEvent]:
    emit = _Emitter(None, relationship_id, "start", now, command_id=None)
    emit(RelationshipStarted, programme_id=programme_id, mentee_id=mentee_id, settings=settings)
    return emit.events


def reject(
    state: RelationshipState,
    command_name: str,
    command_id: str | None,
    rejection: Rejection,
    now: datetime,
    payload_digest: str | None = None,
) -> AnyEvent:
    """The event that records a signalled command which was not allowed."""
    cause = f"rejected:{command_id}" if command_id else f"rejected:{state.version}"
    emit = _Emitter(state, state.relationship_id, cause, now, command_id)
    emit(
        CommandRejected,
        command_name=command_name,
        code=rejection.code,
        reason=rejection.reason,
        problems=rejection.problems,
        payload_digest=payload_digest,
    )
    return emit.events[0]


def already_refused(state: RelationshipState, command_id: str | None, payload_digest: str) -> bool:
    """Whether this very payload was refused last time its command id was sent: a resent
    signal is then not recorded again (a corrected one, with other content, is decided)."""
    if command_id is None:
        return False
    for rejected in reversed(state.rejected_commands):
        if rejected.command_id == command_id:
            return rejected.payload_digest == payload_digest
    return False


def refuse_from_outside(command: Command) -> Rejection | None:
    """A message sent from outside (a signal or update) that claims to be the system itself.

    The directory's and the pool's commands are issued by the workflow, never received; a
    matching round's `propose_match` is received and must then be confirmed against the
    round's own records (the workflow does that, it needs I/O)."""
    if command.actor_id not in INTERNAL_ACTORS:
        return None
    if command.actor_id == ROUND_ACTOR and isinstance(command, ProposeMatch):
        return None
    return refuse(
        NOT_ALLOWED, f"actor {command.actor_id} is the system itself: it acts only from the system's own workflows"
    )


def decide(state: RelationshipState, command: Command, now: datetime) -> Decision:
    """The events a command causes, `[]` for a command already applied (a retry), or a rejection.

    A command id names one command: sent again with the same content it is a retry and
    changes nothing; sent with other content (or as another message) it is refused with
    `command_id_reused`. A refused command does not use its id up."""
    digest = command_digest(command)
    if command.command_id in state.processed_command_ids:
        first = state.applied_commands.get(command.command_id)
        if first is not None and first.digest is not None and first.digest != digest:
            return refuse(
                RefusalCode.COMMAND_ID_REUSED,
                f"command id {command.command_id} was already used for another command ({first.message}); "
                "nothing happened: send a new command with a new command id",
            )
        return []
    if state.phase is Phase.CLOSED:
        return refuse(WRONG_PHASE, f"the relationship is closed ({state.closure_reason})")
    if state.phase is Phase.CLOSING and not isinstance(command, SubmitReflection):
        return refuse(WRONG_PHASE, "the relationship is closing; only submit_reflection is accepted")
    handler = _HANDLERS.get(type(command))
    if handler is None:
        return refuse(RefusalCode.UNKNOWN_MESSAGE, f"unknown command {command.message_name}")
    stamp = CommandStamp(message=command.message_name, digest=digest)
    emit = _Emitter(state, state.relationship_id, f"command:{command.command_id}", now, command.command_id, stamp)
    rejection = handler(command, emit)
    if rejection is not None:
        return rejection
    _follow_up(emit)
    return emit.events


def decide_deadline(state: RelationshipState, now: datetime) -> list[AnyEvent]:
    """The events caused by the next deadline if it is due at `now`, else none."""
    deadline = next_deadline(state)
    if deadline is None or deadline.at > now:
        return []
    emit = _Emitter(state, state.relationship_id, f"deadline:{deadline.kind}:{deadline.at.isoformat()}", now, None)
    _DEADLINE_HANDLERS[deadline.kind](deadline, emit)
    _follow_up(emit)
    return emit.events


# Every deadline handler moves the state past its deadline, so catching up ends; the bound
# turns a rule that does not into a loud error instead of a hung workflow task.
MAX_DEADLINES_PER_CATCH_UP = 100


def catch_up(state: RelationshipState, now: datetime) -> tuple[RelationshipState, list[AnyEvent]]:
    """Apply every deadline that is due at `now`, so a command is judged on the present.

    Without this, a command arriving just after a deadline but before its timer fired
    would be decided on the past (accepting a proposal that has already expired).
    """
    caught_up: list[AnyEvent] = []
    for _ in range(MAX_DEADLINES_PER_CATCH_UP):
        due = decide_deadline(state, now)
        if not due:
            return state, caught_up
        for event in due:
            state = evolve(state, event)
        caught_up.extend(due)
    raise RuntimeError(f"deadlines of {state.relationship_id} did not settle after {MAX_DEADLINES_PER_CATCH_UP} steps")


# -- the follow-up every decision ends with ----------------------------------------------


def _follow_up(emit: _Emitter) -> None:
    state = emit.current
    if not state.in_cadence or state.is_paused:
        return
    _schedule_next_meeting(emit)
    state = emit.current
    health, reasons = assess_health(state, emit.now)
    if (health, reasons) != (state.health, state.health_reasons):
        emit(HealthChanged, health=health, previous=state.health, reasons=reasons)


def _schedule_next_meeting(emit: _Emitter) -> None:
    """Schedule the next meeting if none is (or move one left past the end of the term into
    it), by the rules in events/meetings.py; nothing when the term has no room for it."""
    state = emit.current
    planned = plan_next_meeting(state, emit.now)
    if planned is None:
        return
    number, starts_at = planned
    assert state.agreement is not None
    ends_at = starts_at + timedelta(minutes=state.agreement.terms.meeting_minutes)
    emit(MeetingScheduled, meeting_number=number, starts_at=starts_at, ends_at=ends_at)


# -- who may act ---------------------------------------------------------------------------


def _wrong_phase(state: RelationshipState, command: Command, *allowed: Phase) -> Rejection | None:
    if state.phase in allowed:
        return None
    names = " or ".join(phase.value for phase in allowed)
    return refuse(
        WRONG_PHASE, f"{command.message_name} is only allowed in the {names} phase; the relationship is in {state.phase.value}"
    )


def _party(state: RelationshipState, command: Command) -> Party | Rejection:
    party = state.party_of(command.actor_id)
    if party is None:
        return refuse(NOT_ALLOWED, f"actor {command.actor_id} is not a party to this relationship")
    return party


def _party_in_phase(state: RelationshipState, command: Command, *phases: Phase) -> Party | Rejection:
    """The acting party, if the command is allowed in this phase and the actor is a party."""
    return _wrong_phase(state, command, *phases) or _party(state, command)


def _is_coordinator(state: RelationshipState, actor_id: str) -> bool:
    return actor_id in state.settings.coordinator_ids


def _party_or_coordinator(state: RelationshipState, command: Command) -> Party | None | Rejection:
    """The acting party, None for a coordinator, or a rejection for anyone else."""
    party = state.party_of(command.actor_id)
    if party is not None:
        return party
    if _is_coordinator(state, command.actor_id):
        return None
    return refuse(NOT_ALLOWED, f"actor {command.actor_id} is neither a party nor a coordinator of this relationship")


def _not_paused(state: RelationshipState, command: Command) -> Rejection | None:
    if state.paused_until is None:
        return None
    return refuse(WRONG_PHASE, f"{command.message_name} is not allowed while the relationship is paused; resume it first")


Handler = Callable[[Any, _Emitter], Rejection | None]


# -- matching ------------------------------------------------------------------------------


def _propose_match(command: ProposeMatch, emit: _Emitter) -> Rejection | None:
    state = emit.current
    if rejection := _wrong_phase(state, command, Phase.MATCHING):
        return rejection
    coordinators = state.settings.coordinator_ids
    if coordinators and command.actor_id not in coordinators and command.actor_id not in MATCHING_ACTORS:
        return refuse(NOT_ALLOWED, f"actor {command.actor_id} is not a coordinator of this programme")
    if command.actor_id == state.mentee_id:
        return refuse(NOT_ALLOWED, "the mentee cannot propose their own mentor")
    if command.mentor_id == state.mentee_id:
        return refuse(CONFLICT, "mentor_id must differ from the mentee")
    if command.mentor_id in state.declined_mentor_ids:
        return refuse(CONFLICT, f"mentor {command.mentor_id} was already proposed and declined or let it expire")
    if state.candidate is not None:
        return refuse(CONFLICT, f"mentor {state.candidate.mentor_id} is already proposed; wait for an answer or expiry")
    emit(
        MatchProposed,
        mentor_id=command.mentor_id,
        proposed_by=command.actor_id,
        expires_at=emit.now + timedelta(days=state.settings.proposal_ttl_days),
        explanation=command.explanation,
        score=command.score,
    )
    return None


def _accept_match(command: AcceptMatch, emit: _Emitter) -> Rejection | None:
    state = emit.current
    if rejection := _wrong_phase(state, command, Phase.MATCHING):
        return rejection
    if state.candidate is None:
        return refuse(NOT_FOUND, "there is no match proposal to accept")
    party = _party(state, command)
    if isinstance(party, Rejection):
        return party
    if party in state.candidate.accepted_by:
        return refuse(CONFLICT, f"the {party} has already accepted this proposal")
    emit(MatchAccepted, party=party, accepted_by=command.actor_id)
    if len(state.candidate.accepted_by) == 1:
        emit(
            MatchConfirmed,
            mentor_id=state.candidate.mentor_id,
            agreement_due_at=emit.now + timedelta(days=state.settings.agreement_ttl_days),
        )
    return None


def _decline_match(command: DeclineMatch, emit: _Emitter) -> Rejection | None:
    state = emit.current
    if rejection := _wrong_phase(state, command, Phase.MATCHING):
        return rejection
    if state.candidate is None:
        return refuse(NOT_FOUND, "there is no match proposal to decline")
    # The pool withdraws a proposal whose mentor has no free slot, on the mentor's behalf.
    party = "mentor" if command.actor_id in MATCHING_ACTORS else _party(state, command)
    if isinstance(party, Rejection):
        return party
    _candidate_declined(emit, party, command.actor_id, command.reason)
    return None


def _candidate_declined(emit: _Emitter, party: Party, declined_by: str, reason: str) -> None:
    state = emit.current
    assert state.candidate is not None
    emit(MatchDeclined, mentor_id=state.candidate.mentor_id, party=party, declined_by=declined_by, reason=reason)
    if state.match_attempts + 1 >= state.settings.max_match_attempts:
        _close(emit, ClosureReason.UNMATCHED, None)


# -- agreement -----------------------------------------------------------------------------


def _propose_agreement(command: ProposeAgreement, emit: _Emitter) -> Rejection | None:
    state = emit.current
    party = _party_in_phase(state, command, Phase.AGREEMENT)
    if isinstance(party, Rejection):
        return party
    settings, terms = state.settings, command.terms
    problems: list[FieldProblem] = []
    if FREQUENCY_ORDER.index(terms.meeting_frequency) > FREQUENCY_ORDER.index(settings.minimum_meeting_frequency):
        problems.append(
            FieldProblem(
                field="terms.meeting_frequency",
                message=f"is less often than the programme minimum ({settings.minimum_meeting_frequency})",
            )
        )
    if not settings.min_meeting_minutes <= terms.meeting_minutes <= settings.max_meeting_minutes:
        problems.append(
            FieldProblem(
                field="terms.meeting_minutes",
                message=f"must be between {settings.min_meeting_minutes} and {settings.max_meeting_minutes}",
            )
        )
    if not settings.min_term_months <= terms.term_months <= settings.max_term_months:
        problems.append(
            FieldProblem(
                field="terms.term_months",
                message=f"must be between {settings.min_term_months} and {settings.max_term_months}",
            )
        )
    if rejection := limits(problems):
        return rejection
    version = state.agreement.agreement_version + 1 if state.agreement else 1
    emit(AgreementProposed, agreement_version=version, terms=terms, proposed_by=command.actor_id)
    return None


def _sign_agreement(command: SignAgreement, emit: _Emitter) -> Rejection | None:
    state = emit.current
    party = _party_in_phase(state, command, Phase.AGREEMENT)
    if isinstance(party, Rejection):
        return party
    agreement = state.agreement
    if agreement is None:
        return refuse(NOT_FOUND, "no agreement has been proposed yet")
    if command.agreement_version != agreement.agreement_version:
        return refuse(
            NOT_FOUND,
            f"agreement_version is not the current version ({agreement.agreement_version}); read it and sign that one",
            FieldProblem(field="agreement_version", message=f"should be {agreement.agreement_version}"),
        )
    if party in agreement.signed_by:
        return refuse(CONFLICT, f"the {party} has already signed version {agreement.agreement_version}")
    emit(AgreementSigned, agreement_version=agreement.agreement_version, party=party, signed_by=command.actor_id)
    if len(agreement.signed_by) == 1:
        emit(
            RelationshipActivated,
            agreement_version=agreement.agreement_version,
            meeting_frequency=agreement.terms.meeting_frequency,
            term_ends_at=add_months(emit.now, agreement.terms.term_months),
        )
    return None


# -- meetings ------------------------------------------------------------------------------


def _record_meeting(command: RecordMeeting, emit: _Emitter) -> Rejection | None:
    state = emit.current
    if rejection := _wrong_phase(state, command, Phase.ACTIVE, Phase.REVIEW) or _not_paused(state, command):
        return rejection
    party = _party(state, command)
    if isinstance(party, Rejection):
        return party
    assert state.activated_at is not None
    if command.held_at > emit.now + MEETING_CLOCK_SKEW:
        return refuse(LIMIT, "held_at is in the future", FieldProblem(field="held_at", message="is in the future"))
    if command.held_at < state.activated_at:
        return refuse(
            LIMIT,
            "held_at is before the agreement took effect",
            FieldProblem(field="held_at", message="is before the agreement took effect"),
        )
    reported = meeting_reported(state, command)
    if isinstance(reported, Rejection):
        return reported
    number, correction = reported
    held = {"held_at": command.held_at, "duration_minutes": command.duration_minutes, "recorded_by": command.actor_id, "notes": command.notes}
    emit(MeetingHeld, meeting_number=number, correction=correction, **held)
    # A corrected meeting counts as held too, so it may complete a feedback round.
    every = state.settings.feedback_every_sessions
    held_count = emit.current.meetings_held
    if held_count % every == 0:
        emit(FeedbackRequested, feedback_round=state.feedback_round + 1, after_meeting=held_count)
    return None


def _scheduled(state: RelationshipState, command: CancelMeeting | RescheduleMeeting) -> Rejection | None:
    meeting = state.next_meeting
    if meeting is None or meeting.meeting_number != command.meeting_number:
        current = f"meeting {meeting.meeting_number}" if meeting else "none"
        return refuse(NOT_FOUND, f"meeting {command.meeting_number} is not the scheduled meeting (that is {current})")
    return None


def _is_late(state: RelationshipState, now: datetime) -> bool:
    assert state.next_meeting is not None and state.agreement is not None
    notice = timedelta(hours=state.agreement.terms.cancellation_notice_hours)
    return now > state.next_meeting.starts_at - notice


def _cancel_meeting(command: CancelMeeting, emit: _Emitter) -> Rejection | None:
    state = emit.current
    if rejection := _wrong_phase(state, command, Phase.ACTIVE, Phase.REVIEW) or _not_paused(state, command):
        return rejection
    party = _party(state, command)
    if isinstance(party, Rejection):
        return party
    if rejection := _scheduled(state, command):
        return rejection
    emit(
        MeetingCancelled,
        meeting_number=command.meeting_number,
        party=party,
        cancelled_by=command.actor_id,
        late=_is_late(state, emit.now),
        reason=command.reason,
    )
    return None


def _reschedule_meeting(command: RescheduleMeeting, emit: _Emitter) -> Rejection | None:
    state = emit.current
    if rejection := _wrong_phase(state, command, Phase.ACTIVE, Phase.REVIEW) or _not_paused(state, command):
        return rejection
    party = _party(state, command)
    if isinstance(party, Rejection):
        return party
    if rejection := _scheduled(state, command):
        return rejection
    if command.starts_at <= emit.now:
        return refuse(LIMIT, "starts_at is not in the future", FieldProblem(field="starts_at", message="is not in the future"))
    if command.starts_at > emit.now + MAX_RESCHEDULE_AHEAD:
        ahead = f"is more than {MAX_RESCHEDULE_AHEAD.days} days ahead"
        return refuse(LIMIT, f"starts_at {ahead}", FieldProblem(field="starts_at", message=ahead))
    assert state.agreement is not None and state.term_ends_at is not None
    ends_at = command.starts_at + timedelta(minutes=state.agreement.terms.meeting_minutes)
    if state.cadence_rules != LEGACY_CADENCE_RULES and beyond_the_term(state, ends_at):
        after = f"would end after the term ({state.term_ends_at.isoformat()})"
        return refuse(LIMIT, f"starts_at {after}", FieldProblem(field="starts_at", message=after))
    emit(
        MeetingRescheduled,
        meeting_number=command.meeting_number,
        starts_at=command.starts_at,
        ends_at=command.starts_at + timedelta(minutes=state.agreement.terms.meeting_minutes),
        party=party,
        rescheduled_by=command.actor_id,
        late=_is_late(state, emit.now),
    )
    return None


# -- goals, feedback, concerns, records -----------------------------------------------------


def _record_goal_progress(command: RecordGoalProgress, emit: _Emitter) -> Rejection | None:
    state = emit.current
    party = _party_in_phase(state, command, Phase.ACTIVE, Phase.REVIEW)
    if isinstance(party, Rejection):
        return party
    goal = state.goals.get(command.goal_id)
    if goal is None:
        return refuse(NOT_FOUND, f"there is no goal {command.goal_id}; goals are {', '.join(state.goals) or 'none'}")
    known = {m.milestone_id for m in goal.goal.milestones}
    unknown = [m for m in command.milestones_reached if m not in known]
    if unknown:
        return refuse(NOT_FOUND, f"goal {command.goal_id} has no milestone {', '.join(unknown)}")
    emit(GoalProgressRecorded, goal_id=command.goal_id, progress_percent=command.progress_percent, recorded_by=command.actor_id)
    for milestone_id in dict.fromkeys(command.milestones_reached):
        if milestone_id not in goal.milestones_reached:
            emit(MilestoneReached, goal_id=command.goal_id, milestone_id=milestone_id)
    if command.progress_percent == 100 and goal.achieved_at is None:
        emit(GoalAchieved, goal_id=command.goal_id)
    return None


def _propose_goal_revision(command: ProposeGoalRevision, emit: _Emitter) -> Rejection | None:
    state = emit.current
    party = _party_in_phase(state, command, Phase.ACTIVE, Phase.REVIEW)
    if isinstance(party, Rejection):
        return party
    goal_id = command.goal.goal_id
    if any(pending.goal.goal_id == goal_id for pending in state.pending_goal_revisions.values()):
        return refuse(CONFLICT, f"a revision of goal {goal_id} is already waiting for acknowledgement")
    if goal_id not in state.goals and len(state.goals) >= 20:
        return refuse(LIMIT, "a relationship can have at most 20 goals")
    emit(
        GoalRevisionProposed,
        revision_id=command.command_id,
        goal=command.goal,
        party=party,
        proposed_by=command.actor_id,
        rationale=command.rationale,
    )
    return None


def _acknowledge_goal_revision(command: AcknowledgeGoalRevision, emit: _Emitter) -> Rejection | None:
    state = emit.current
    party = _party_in_phase(state, command, Phase.ACTIVE, Phase.REVIEW)
    if isinstance(party, Rejection):
        return party
    pending = state.pending_goal_revisions.get(command.revision_id)
    if pending is None:
        return refuse(NOT_FOUND, f"there is no goal revision {command.revision_id} waiting for acknowledgement")
    if pending.party == party:
        return refuse(NOT_ALLOWED, f"the {party} proposed revision {command.revision_id}; the other side must acknowledge it")
    emit(GoalRevised, revision_id=command.revision_id, goal=pending.goal, acknowledged_by=command.actor_id)
    return None


def _submit_feedback(command: SubmitFeedback, emit: _Emitter) -> Rejection | None:
    state = emit.current
    party = _party_in_phase(state, command, Phase.ACTIVE, Phase.REVIEW)
    if isinstance(party, Rejection):
        return party
    if not 1 <= command.feedback_round <= state.feedback_round:
        asked = f"rounds 1 to {state.feedback_round}" if state.feedback_round else "no round yet"
        return refuse(NOT_FOUND, f"feedback round {command.feedback_round} has not been requested ({asked})")
    if any(s.feedback_round == command.feedback_round and s.party == party for s in state.feedback_scores):
        return refuse(CONFLICT, f"the {party} has already given feedback for round {command.feedback_round}")
    emit(
        FeedbackSubmitted,
        feedback_round=command.feedback_round,
        party=party,
        score=command.score,
        low=command.score <= state.settings.low_feedback_score,
        comment=command.comment,
    )
    return None


_CONCERN_PHASES = (Phase.MATCHING, Phase.AGREEMENT, Phase.ACTIVE, Phase.REVIEW)


def _raise_concern(command: RaiseConcern, emit: _Emitter) -> Rejection | None:
    state = emit.current
    if rejection := _wrong_phase(state, command, *_CONCERN_PHASES):
        return rejection
    party = _party_or_coordinator(state, command)
    if isinstance(party, Rejection):
        return party
    emit(ConcernRaised, concern_id=command.command_id, party=party, raised_by=command.actor_id, text=command.text)
    return None


def _resolve_concern(command: ResolveConcern, emit: _Emitter) -> Rejection | None:
    state = emit.current
    concern = state.open_concerns.get(command.concern_id)
    if concern is None:
        return refuse(NOT_FOUND, f"there is no open concern {command.concern_id}")
    raised_by_actor = concern.party is not None and state.party_of(command.actor_id) == concern.party
    if not (_is_coordinator(state, command.actor_id) or raised_by_actor):
        return refuse(NOT_ALLOWED, "only a coordinator or whoever raised the concern may resolve it")
    emit(ConcernResolved, concern_id=command.concern_id, resolved_by=command.actor_id, resolution=command.resolution)
    return None


def _record_introduction(command: RecordIntroduction, emit: _Emitter) -> Rejection | None:
    state = emit.current
    if isinstance(party := _party_in_phase(state, command, Phase.ACTIVE, Phase.REVIEW), Rejection):
        return party
    emit(IntroductionRecorded, introduced_to=command.introduced_to, recorded_by=command.actor_id, note=command.note)
    return None


def _share_resource(command: ShareResource, emit: _Emitter) -> Rejection | None:
    state = emit.current
    if isinstance(party := _party_in_phase(state, command, Phase.ACTIVE, Phase.REVIEW), Rejection):
        return party
    emit(ResourceShared, title=command.title, url=command.url, shared_by=command.actor_id)
    return None


# -- pause ---------------------------------------------------------------------------------


def _pause(command: PauseRelationship, emit: _Emitter) -> Rejection | None:
    state = emit.current
    if rejection := _wrong_phase(state, command, Phase.ACTIVE) or _not_paused(state, command):
        return rejection
    if isinstance(party := _party_or_coordinator(state, command), Rejection):
        return party
    longest = timedelta(days=state.settings.max_pause_days)
    if command.until <= emit.now:
        return refuse(LIMIT, "until is not in the future", FieldProblem(field="until", message="is not in the future"))
    if command.until > emit.now + longest:
        most = f"is more than {state.settings.max_pause_days} days ahead (the longest pause)"
        return refuse(LIMIT, f"until {most}", FieldProblem(field="until", message=most))
    emit(RelationshipPaused, until=command.until, paused_by=command.actor_id, reason=command.reason)
    return None


def _resume(command: ResumeRelationship, emit: _Emitter) -> Rejection | None:
    state = emit.current
    if state.paused_until is None:
        return refuse(WRONG_PHASE, "the relationship is not paused")
    if isinstance(party := _party_or_coordinator(state, command), Rejection):
        return party
    _resume_now(emit, command.actor_id)
    return None


def _resume_now(emit: _Emitter, resumed_by: str | None) -> None:
    state = emit.current
    assert state.paused_at is not None and state.term_ends_at is not None
    emit(RelationshipResumed, resumed_by=resumed_by, term_ends_at=state.term_ends_at + (emit.now - state.paused_at))


# -- review --------------------------------------------------------------------------------


def _request_review(command: RequestReview, emit: _Emitter) -> Rejection | None:
    state = emit.current
    if rejection := _wrong_phase(state, command, Phase.ACTIVE) or _not_paused(state, command):
        return rejection
    if isinstance(party := _party_or_coordinator(state, command), Rejection):
        return party
    _open_review(emit, "on_demand", command.actor_id)
    return None


def _open_review(emit: _Emitter, kind: str, requested_by: str | None) -> None:
    respond_by = emit.now + timedelta(days=emit.current.settings.review_response_days)
    emit(ReviewOpened, kind=kind, respond_by=respond_by, requested_by=requested_by)


def _submit_review(command: SubmitReview, emit: _Emitter) -> Rejection | None:
    state = emit.current
    party = _party_in_phase(state, command, Phase.REVIEW)
    if isinstance(party, Rejection):
        return party
    review = state.review
    assert review is not None
    if party in review.submissions:
        return refuse(CONFLICT, f"the {party} has already submitted the {review.kind} review")
    unknown = [a.goal_id for a in command.goal_assessments if a.goal_id not in state.goals]
    if unknown:
        return refuse(NOT_FOUND, f"there is no goal {', '.join(unknown)}")
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
        _complete_review(emit)
    return None


def _complete_review(emit: _Emitter) -> None:
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
        _close(emit, reason, None)


# -- closure -------------------------------------------------------------------------------


def _close_relationship(command: CloseRelationship, emit: _Emitter) -> Rejection | None:
    state = emit.current
    if _is_coordinator(state, command.actor_id):
        reason = ClosureReason.CLOSED_BY_COORDINATOR
    elif command.actor_id == state.mentee_id:
        reason = ClosureReason.CLOSED_BY_MENTEE
    elif state.mentor_id is not None and command.actor_id == state.mentor_id:
        reason = ClosureReason.CLOSED_BY_MENTOR
    else:
        return refuse(NOT_ALLOWED, f"actor {command.actor_id} may not close this relationship")
    _close(emit, reason, command.actor_id, command.note)
    return None


def _participant_left(command: ReportParticipantLeft, emit: _Emitter) -> Rejection | None:
    state = emit.current
    if not (command.actor_id == DIRECTORY_ACTOR or _is_coordinator(state, command.actor_id)):
        return refuse(NOT_ALLOWED, "only the directory or a coordinator may report that a participant left")
    party = state.party_of(command.participant_id)
    if party is None:
        return refuse(NOT_FOUND, f"participant {command.participant_id} is not part of this relationship")
    if state.phase is Phase.MATCHING and party == "mentor":
        # Only proposed, not yet matched: the search goes on without them.
        _candidate_declined(emit, "mentor", command.actor_id, "participant left")
    else:
        _close(emit, ClosureReason.PARTICIPANT_LEFT, command.actor_id, left=command.participant_id)
    return None


def _submit_reflection(command: SubmitReflection, emit: _Emitter) -> Rejection | None:
    state = emit.current
    party = _party_in_phase(state, command, Phase.CLOSING)
    if isinstance(party, Rejection):
        return party
    if party in state.reflections_from:
        return refuse(CONFLICT, f"the {party} has already shared a reflection")
    emit(ReflectionSubmitted, party=party, text=command.text)
    if len(emit.current.reflections_from) == 2:
        _finish(emit)
    return None


def _close(
    emit: _Emitter, reason: ClosureReason, closed_by: str | None, note: str = "", *, left: str | None = None
) -> None:
    """End the relationship: with closing reflections if it ever got going, else at once.
    `left`: who left the organisation (participant_left)."""
    state = emit.current
    if state.activated_at is None:
        summary = summarize(state, reason, emit.now)
        emit(RelationshipClosed, reason=reason, closed_by=closed_by, summary=summary, note=note, participant_id=left)
        return
    due = emit.now + timedelta(days=state.settings.reflection_days)
    emit(ClosureBegun, reason=reason, closed_by=closed_by, reflections_due_at=due, note=note, participant_id=left)


def _finish(emit: _Emitter) -> None:
    state = emit.current
    assert state.closure_reason is not None
    emit(
        RelationshipClosed,
        reason=state.closure_reason,
        closed_by=state.closed_by,
        summary=summarize(state, state.closure_reason, emit.now),
    )


def summarize(state: RelationshipState, reason: ClosureReason, now: datetime) -> RelationshipSummary:
    rounds: dict[int, list[int]] = {}
    for score in state.feedback_scores:
        rounds.setdefault(score.feedback_round, []).append(score.score)
    return RelationshipSummary(
        relationship_id=state.relationship_id,
        programme_id=state.programme_id,
        mentee_id=state.mentee_id,
        mentor_id=state.mentor_id,
        closure_reason=reason,
        started_at=state.started_at,
        activated_at=state.activated_at,
        closed_at=now,
        duration_days=(now - state.started_at).days,
        meetings_held=state.meetings_held,
        meetings_missed=state.meetings_missed,
        meetings_cancelled=state.meetings_cancelled,
        late_cancellations=state.late_cancellations,
        meeting_minutes_total=state.meeting_minutes_total,
        goals_total=len(state.goals),
        goals_achieved=sum(1 for goal in state.goals.values() if goal.achieved_at is not None),
        goal_progress={goal_id: goal.progress_percent for goal_id, goal in state.goals.items()},
        feedback_trend=tuple(round(sum(s) / len(s), 2) for _, s in sorted(rounds.items())),
        concerns_raised=state.concerns_raised,
        reviews_completed=state.reviews_completed,
        extensions=state.extensions,
        reflections_from=state.reflections_from,
    )


_HANDLERS: dict[type[Command], Handler] = {
    ProposeMatch: _propose_match,
    AcceptMatch: _accept_match,
    DeclineMatch: _decline_match,
    ProposeAgreement: _propose_agreement,
    SignAgreement: _sign_agreement,
    RecordMeeting: _record_meeting,
    CancelMeeting: _cancel_meeting,
    RescheduleMeeting: _reschedule_meeting,
    RecordGoalProgress: _record_goal_progress,
    ProposeGoalRevision: _propose_goal_revision,
    AcknowledgeGoalRevision: _acknowledge_goal_revision,
    SubmitFeedback: _submit_feedback,
    RaiseConcern: _raise_concern,
    ResolveConcern: _resolve_concern,
    RecordIntroduction: _record_introduction,
    ShareResource: _share_resource,
    PauseRelationship: _pause,
    ResumeRelationship: _resume,
    RequestReview: _request_review,
    SubmitReview: _submit_review,
    CloseRelationship: _close_relationship,
    ReportParticipantLeft: _participant_left,
    SubmitReflection: _submit_reflection,
}


# -- deadlines -----------------------------------------------------------------------------

DeadlineHandler = Callable[[Deadline, _Emitter], None]


def _proposal_expired(deadline: Deadline, emit: _Emitter) -> None:
    state = emit.current
    assert state.candidate is not None
    emit(MatchProposalExpired, mentor_id=state.candidate.mentor_id)
    if state.match_attempts + 1 >= state.settings.max_match_attempts:
        _close(emit, ClosureReason.UNMATCHED, None)


def _agreement_reminder(deadline: Deadline, emit: _Emitter) -> None:
    state = emit.current
    assert state.agreement_due_at is not None
    days_left = next(d for d in sorted(state.settings.agreement_reminder_days, reverse=True) if d not in state.agreement_reminders_sent)
    emit(AgreementReminderIssued, days_left=days_left, agreement_due_at=state.agreement_due_at)


def _agreement_expired(deadline: Deadline, emit: _Emitter) -> None:
    emit(AgreementExpired)
    _close(emit, ClosureReason.AGREEMENT_EXPIRED, None)


def _agenda_request(deadline: Deadline, emit: _Emitter) -> None:
    meeting = emit.current.next_meeting
    assert meeting is not None
    emit(AgendaRequested, meeting_number=meeting.meeting_number, starts_at=meeting.starts_at)


def _meeting_reminder(deadline: Deadline, emit: _Emitter) -> None:
    meeting = emit.current.next_meeting
    assert meeting is not None
    emit(MeetingReminderIssued, meeting_number=meeting.meeting_number, starts_at=meeting.starts_at)


def _meeting_missed(deadline: Deadline, emit: _Emitter) -> None:
    meeting = emit.current.next_meeting
    assert meeting is not None
    emit(MeetingMissed, meeting_number=meeting.meeting_number, starts_at=meeting.starts_at)


def _nudge(deadline: Deadline, emit: _Emitter) -> None:
    since = quiet_since(emit.current)
    assert since is not None
    emit(NudgeIssued, quiet_since=since)


def _health_threshold(deadline: Deadline, emit: _Emitter) -> None:
    # The follow-up that ends every decision records the change of health.
    pass


def _close_stalled(deadline: Deadline, emit: _Emitter) -> None:
    _close(emit, ClosureReason.STALLED, None)


def _scheduled_review(deadline: Deadline, emit: _Emitter) -> None:
    _open_review(emit, "midpoint" if deadline.kind == "midpoint_review" else "final", None)


def _review_deadline(deadline: Deadline, emit: _Emitter) -> None:
    _complete_review(emit)


def _pause_ends(deadline: Deadline, emit: _Emitter) -> None:
    _resume_now(emit, None)


def _reflections_due(deadline: Deadline, emit: _Emitter) -> None:
    _finish(emit)


_DEADLINE_HANDLERS: Mapping[str, DeadlineHandler] = {
    "match_proposal_expiry": _proposal_expired,
    "matching_timeout": lambda deadline, emit: _close(emit, ClosureReason.UNMATCHED, None),
    "agreement_reminder": _agreement_reminder,
    "agreement_expiry": _agreement_expired,
    "agenda_request": _agenda_request,
    "meeting_reminder": _meeting_reminder,
    "meeting_missed": _meeting_missed,
    "nudge": _nudge,
    "health_quiet": _health_threshold,
    "health_stalled": _health_threshold,
    "close_stalled": _close_stalled,
    "midpoint_review": _scheduled_review,
    "final_review": _scheduled_review,
    "review_deadline": _review_deadline,
    "pause_ends": _pause_ends,
    "reflection_deadline": _reflections_due,
}
