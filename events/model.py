"""The events of a relationship: immutable, past-tense facts.

Every event carries its envelope (stream id, version in the stream, event id, when it
occurred, the command that caused it) and an explicit schema version. A stored event is
never rewritten: when a shape changes, bump `schema_version` and register an upcaster in
`UPCASTERS` (events/store.py) that lifts the old stored shape to the new one while loading.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal, Union

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from events.commands import AgreementTerms, Goal, GoalAssessment, Party, ReviewOutcome
from events.refusals import FieldProblem, RefusalCode, code_of_stored_reason
from events.sensitivity import ConfidentialText, FieldPath, NotConfidential, confidential_paths
from events.settings import MeetingFrequency, ProgrammeSettings
from events.summary import ClosureReason as ClosureReason
from events.summary import Health as Health
from events.summary import RelationshipSummary as RelationshipSummary
from events.summary import ReviewKind as ReviewKind

# Text in events is confidential by default (`ConfidentialText`: encrypted in the store with
# the relationship's key, `[forgotten]` after `mentorflow forget`). `NotConfidential` is kept
# for what is not free text: ids of people, events, goals, concerns, revisions and commands
# (`*_id`, `*_by`: reports, projections and SQL join on them), codes, message names,
# digests, and texts the system writes itself (refusal reasons, health reason codes).


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CommandStamp(_Frozen):
    """Which message a command was and a digest of its content (`events.commands.command_digest`):
    what tells a retry of a command from another command sent under the same id."""

    message: NotConfidential
    digest: NotConfidential


class Event(_Frozen):
    stream_id: NotConfidential
    version: int = Field(ge=1)
    event_id: NotConfidential
    occurred_at: AwareDatetime
    # The command that caused this event; None for events caused by a deadline.
    command_id: NotConfidential | None = None
    # On the first event a command caused (absent on events stored before it was kept).
    caused_by: CommandStamp | None = None
    schema_version: int = 1


# -- matching ---------------------------------------------------------------------------


class RelationshipStarted(Event):
    type: Literal["RelationshipStarted"] = "RelationshipStarted"
    programme_id: NotConfidential
    mentee_id: NotConfidential
    settings: ProgrammeSettings


class MatchProposed(Event):
    type: Literal["MatchProposed"] = "MatchProposed"
    mentor_id: NotConfidential
    proposed_by: NotConfidential
    expires_at: AwareDatetime
    # Confidential: names the goals and topics the two share (or a coordinator's own words).
    explanation: ConfidentialText = ""
    score: float | None = None


class MatchAccepted(Event):
    type: Literal["MatchAccepted"] = "MatchAccepted"
    party: Party
    accepted_by: NotConfidential


class MatchDeclined(Event):
    type: Literal["MatchDeclined"] = "MatchDeclined"
    mentor_id: NotConfidential
    party: Party
    declined_by: NotConfidential
    reason: ConfidentialText = ""


class MatchProposalExpired(Event):
    type: Literal["MatchProposalExpired"] = "MatchProposalExpired"
    mentor_id: NotConfidential


class MatchConfirmed(Event):
    type: Literal["MatchConfirmed"] = "MatchConfirmed"
    mentor_id: NotConfidential
    agreement_due_at: AwareDatetime


# -- agreement --------------------------------------------------------------------------


class AgreementProposed(Event):
    type: Literal["AgreementProposed"] = "AgreementProposed"
    agreement_version: int
    terms: AgreementTerms
    proposed_by: NotConfidential


class AgreementSigned(Event):
    type: Literal["AgreementSigned"] = "AgreementSigned"
    agreement_version: int
    party: Party
    signed_by: NotConfidential


class AgreementReminderIssued(Event):
    type: Literal["AgreementReminderIssued"] = "AgreementReminderIssued"
    days_left: int
    agreement_due_at: AwareDatetime


class AgreementExpired(Event):
    type: Literal["AgreementExpired"] = "AgreementExpired"


class RelationshipActivated(Event):
    type: Literal["RelationshipActivated"] = "RelationshipActivated"
    agreement_version: int
    meeting_frequency: MeetingFrequency
    term_ends_at: AwareDatetime


# -- meetings ---------------------------------------------------------------------------


class MeetingScheduled(Event):
    type: Literal["MeetingScheduled"] = "MeetingScheduled"
    meeting_number: int
    starts_at: AwareDatetime
    ends_at: AwareDatetime


class AgendaRequested(Event):
    type: Literal["AgendaRequested"] = "AgendaRequested"
    meeting_number: int
    starts_at: AwareDatetime


class MeetingReminderIssued(Event):
    type: Literal["MeetingReminderIssued"] = "MeetingReminderIssued"
    meeting_number: int
    starts_at: AwareDatetime


class MeetingHeld(Event):
    type: Literal["MeetingHeld"] = "MeetingHeld"
    meeting_number: int
    held_at: AwareDatetime
    duration_minutes: int
    recorded_by: NotConfidential
    notes: ConfidentialText = ""
    # True when this corrects a meeting that had been marked missed.
    correction: bool = False


class MeetingCancelled(Event):
    type: Literal["MeetingCancelled"] = "MeetingCancelled"
    meeting_number: int
    party: Party
    cancelled_by: NotConfidential
    # Cancelled with less notice than the agreement asks for.
    late: bool
    reason: ConfidentialText = ""


class MeetingRescheduled(Event):
    type: Literal["MeetingRescheduled"] = "MeetingRescheduled"
    meeting_number: int
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    party: Party
    rescheduled_by: NotConfidential
    late: bool


class MeetingMissed(Event):
    type: Literal["MeetingMissed"] = "MeetingMissed"
    meeting_number: int
    starts_at: AwareDatetime


class MeetingReportedNotHeld(Event):
    """A party said the meeting did not take place (a `MeetingMissed` counts it, if nothing had)."""

    type: Literal["MeetingReportedNotHeld"] = "MeetingReportedNotHeld"
    meeting_number: int
    party: Party
    reported_by: NotConfidential
    reason: ConfidentialText = ""


class MeetingReportCorrected(Event):
    """A party corrected the report of a past meeting; the `MeetingHeld` (a correction) or
    `MeetingMissed` before it in the same decision counts the meeting anew."""

    type: Literal["MeetingReportCorrected"] = "MeetingReportCorrected"
    meeting_number: int
    outcome: Literal["held", "not_held"]
    party: Party
    corrected_by: NotConfidential
    reason: ConfidentialText = ""


# -- goals, feedback, concerns, records -------------------------------------------------


class GoalProgressRecorded(Event):
    type: Literal["GoalProgressRecorded"] = "GoalProgressRecorded"
    goal_id: NotConfidential
    progress_percent: int
    recorded_by: NotConfidential


class MilestoneReached(Event):
    type: Literal["MilestoneReached"] = "MilestoneReached"
    goal_id: NotConfidential
    milestone_id: NotConfidential


class GoalAchieved(Event):
    type: Literal["GoalAchieved"] = "GoalAchieved"
    goal_id: NotConfidential


class GoalRevisionProposed(Event):
    type: Literal["GoalRevisionProposed"] = "GoalRevisionProposed"
    revision_id: NotConfidential
    goal: Goal
    party: Party
    proposed_by: NotConfidential
    rationale: ConfidentialText = ""


class GoalRevised(Event):
    type: Literal["GoalRevised"] = "GoalRevised"
    revision_id: NotConfidential
    goal: Goal
    acknowledged_by: NotConfidential


class FeedbackRequested(Event):
    type: Literal["FeedbackRequested"] = "FeedbackRequested"
    feedback_round: int
    after_meeting: int


class FeedbackSubmitted(Event):
    type: Literal["FeedbackSubmitted"] = "FeedbackSubmitted"
    feedback_round: int
    party: Party
    score: int
    low: bool
    comment: ConfidentialText = ""


class ConcernRaised(Event):
    type: Literal["ConcernRaised"] = "ConcernRaised"
    concern_id: NotConfidential
    party: Party | None
    raised_by: NotConfidential
    text: ConfidentialText


class ConcernResolved(Event):
    type: Literal["ConcernResolved"] = "ConcernResolved"
    concern_id: NotConfidential
    resolved_by: NotConfidential
    resolution: ConfidentialText = ""


class IntroductionRecorded(Event):
    type: Literal["IntroductionRecorded"] = "IntroductionRecorded"
    # Confidential: free text, often a person's name or role.
    introduced_to: ConfidentialText
    recorded_by: NotConfidential
    note: ConfidentialText = ""


class ResourceShared(Event):
    type: Literal["ResourceShared"] = "ResourceShared"
    # Confidential: what the mentee reads says what they work on; a URL may carry a token.
    title: ConfidentialText
    url: ConfidentialText | None
    shared_by: NotConfidential


# -- pause, health ----------------------------------------------------------------------


class RelationshipPaused(Event):
    type: Literal["RelationshipPaused"] = "RelationshipPaused"
    until: AwareDatetime
    paused_by: NotConfidential
    reason: ConfidentialText = ""


class RelationshipResumed(Event):
    type: Literal["RelationshipResumed"] = "RelationshipResumed"
    resumed_by: NotConfidential | None
    # The term is extended by the time spent paused.
    term_ends_at: AwareDatetime


class HealthChanged(Event):
    type: Literal["HealthChanged"] = "HealthChanged"
    health: Health
    previous: Health
    # Plain: codes (quiet, missed_meetings, concern_open, low_feedback; events/health.py).
    reasons: tuple[NotConfidential, ...] = ()


class NudgeIssued(Event):
    """Both are nudged before a quiet relationship becomes at risk (004 "fizzle out")."""

    type: Literal["NudgeIssued"] = "NudgeIssued"
    quiet_since: AwareDatetime


NudgeReminder = Literal["match_proposal", "agreement", "meeting", "meeting_report", "review", "reflection"]


class RelationshipNudged(Event):
    """A coordinator had the reminder of what the relationship waits for sent again."""

    type: Literal["RelationshipNudged"] = "RelationshipNudged"
    nudged_by: NotConfidential
    # What was waiting: the match proposal's answers, the agreement's signatures, the next
    # meeting, the report of a meeting that has begun, the review's answers, the reflections.
    reminder: NudgeReminder
    # Who was reminded: the parties that still have to act.
    parties: tuple[Party, ...]


# -- review -----------------------------------------------------------------------------


class ReviewOpened(Event):
    type: Literal["ReviewOpened"] = "ReviewOpened"
    kind: ReviewKind
    respond_by: AwareDatetime
    requested_by: NotConfidential | None = None


class ReviewSubmitted(Event):
    type: Literal["ReviewSubmitted"] = "ReviewSubmitted"
    kind: ReviewKind
    party: Party
    outcome: ReviewOutcome
    goal_assessments: tuple[GoalAssessment, ...] = ()
    extension_months: int | None = None
    comment: ConfidentialText = ""


class ReviewCompleted(Event):
    type: Literal["ReviewCompleted"] = "ReviewCompleted"
    kind: ReviewKind
    outcome: ReviewOutcome
    missing_parties: tuple[Party, ...] = ()


class TermExtended(Event):
    type: Literal["TermExtended"] = "TermExtended"
    months: int
    term_ends_at: AwareDatetime


# -- closure ----------------------------------------------------------------------------


class ClosureBegun(Event):
    """The relationship ends; both are asked for a closing reflection (004) until the deadline."""

    type: Literal["ClosureBegun"] = "ClosureBegun"
    reason: ClosureReason
    closed_by: NotConfidential | None = None
    reflections_due_at: AwareDatetime
    # What whoever closed it early wrote (close_relationship's note).
    note: ConfidentialText = ""
    # Who left the organisation, when that is why it closed (participant_left).
    participant_id: NotConfidential | None = None


class ReflectionSubmitted(Event):
    type: Literal["ReflectionSubmitted"] = "ReflectionSubmitted"
    party: Party
    text: ConfidentialText


class RelationshipClosed(Event):
    type: Literal["RelationshipClosed"] = "RelationshipClosed"
    reason: ClosureReason
    closed_by: NotConfidential | None = None
    summary: RelationshipSummary
    # What whoever closed it wrote (close_relationship's note), when it closed at once.
    note: ConfidentialText = ""
    # Who left the organisation, when that is why it closed (participant_left).
    participant_id: NotConfidential | None = None


class CommandRejected(Event):
    """A signalled command that was not allowed; kept so the sender can see why."""

    type: Literal["CommandRejected"] = "CommandRejected"
    # Plain: a message name of the contract, and a text the decider writes, which names
    # fields and rules but never a value sent (events/refusals.py).
    command_name: NotConfidential
    code: RefusalCode
    reason: NotConfidential
    problems: tuple[FieldProblem, ...] = ()
    # A digest of the refused payload: the same payload sent again is not recorded twice.
    payload_digest: NotConfidential | None = None

    @model_validator(mode="before")
    @classmethod
    def _code_of_older_events(cls, data: Any) -> Any:
        # Rejections stored before codes existed carry only their text.
        if isinstance(data, dict) and "code" not in data and isinstance(data.get("reason"), str):
            return {**data, "code": code_of_stored_reason(data["reason"])}
        return data


AnyEvent = Annotated[
    Union[
        RelationshipStarted,
        MatchProposed,
        MatchAccepted,
        MatchDeclined,
        MatchProposalExpired,
        MatchConfirmed,
        AgreementProposed,
        AgreementSigned,
        AgreementReminderIssued,
        AgreementExpired,
        RelationshipActivated,
        MeetingScheduled,
        AgendaRequested,
        MeetingReminderIssued,
        MeetingHeld,
        MeetingCancelled,
        MeetingRescheduled,
        MeetingMissed,
        MeetingReportedNotHeld,
        MeetingReportCorrected,
        GoalProgressRecorded,
        MilestoneReached,
        GoalAchieved,
        GoalRevisionProposed,
        GoalRevised,
        FeedbackRequested,
        FeedbackSubmitted,
        ConcernRaised,
        ConcernResolved,
        IntroductionRecorded,
        ResourceShared,
        RelationshipPaused,
        RelationshipResumed,
        HealthChanged,
        NudgeIssued,
        RelationshipNudged,
        ReviewOpened,
        ReviewSubmitted,
        ReviewCompleted,
        TermExtended,
        ClosureBegun,
        ReflectionSubmitted,
        RelationshipClosed,
        CommandRejected,
    ],
    Field(discriminator="type"),
]

EVENT_TYPES: dict[str, type[Event]] = {
    model.model_fields["type"].default: model for model in typing.get_args(typing.get_args(AnyEvent)[0])
}
# Where each event type keeps confidential text in its stored payload, e.g. MeetingHeld:
# (("notes",),); ReviewSubmitted: (("goal_assessments", "*", "comment"), ("comment",)).
CONFIDENTIAL_PATHS: dict[str, tuple[FieldPath, ...]] = {
    name: paths for name, model in EVENT_TYPES.items() if (paths := confidential_paths(model))
}
