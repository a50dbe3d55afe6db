"""Commands: what other systems ask a relationship to do.

Each command is one pydantic model with a stable message name (the signal and update name
on the `Relationship` workflow). Every command carries a `command_id` chosen by the sender;
a relationship applies each id at most once, so a sender may retry freely. Fields marked
confidential hold what mentees and mentors share in confidence (notes, concerns, feedback,
reflections): they never reach search attributes, ids, logs or error messages.
"""

from __future__ import annotations

from datetime import date, time
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from events.sensitivity import CONFIDENTIAL, NOT_CONFIDENTIAL, NotConfidential
from events.settings import MeetingFrequency

# Ids are opaque references (no names or free text): they end up in search attributes,
# workflow ids and logs.
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"), NOT_CONFIDENTIAL
]
ShortText = Annotated[str, StringConstraints(max_length=2000), NOT_CONFIDENTIAL]
# Encrypted in the event store with the relationship's own key (events/sensitivity.py).
Confidential = Annotated[str, StringConstraints(max_length=10_000), CONFIDENTIAL]

Party = Literal["mentor", "mentee"]
MeetingFormat = Literal["in_person", "phone", "video", "email", "chat"]
AgendaPolicy = Literal["mentee_shares", "both_share", "no_agenda"]
ReviewOutcome = Literal["continue", "recalibrate", "extend", "close"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        # PostgreSQL stores no U+0000 in text or jsonb: a command carrying one could never be
        # written to the event store (its append would retry for ever), so it is refused here.
        if isinstance(data, dict):
            for name, value in data.items():
                if name in cls.model_fields and _holds_nul(value):
                    raise ValueError(f"{name} contains a NUL character (U+0000), which cannot be stored")
        return data


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, (list, tuple)):
        return any(_holds_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_nul(item) for item in value.values())
    return False


def check_timezone(name: str) -> str:
    # IANA names are short; a long one would also make ZoneInfo raise OSError (file name
    # too long), which pydantic does not turn into a validation error.
    if len(name) > 64:
        raise ValueError("unknown time zone (longer than any IANA name; use one such as Europe/Berlin)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from None
    return name


# -- the agreement ----------------------------------------------------------------------


class Milestone(_Model):
    milestone_id: Identifier
    title: NotConfidential = Field(min_length=1, max_length=500)


class Goal(_Model):
    """A SMART goal: specific (title), measurable (measure), time-bound (target_date)."""

    goal_id: Identifier
    title: NotConfidential = Field(min_length=1, max_length=500)
    measure: NotConfidential = Field(default="", max_length=1000)
    target_date: date | None = None
    milestones: tuple[Milestone, ...] = Field(default=(), max_length=20)

    @field_validator("milestones")
    @classmethod
    def _unique_milestones(cls, milestones: tuple[Milestone, ...]) -> tuple[Milestone, ...]:
        ids = [m.milestone_id for m in milestones]
        if len(set(ids)) != len(ids):
            raise ValueError("milestone ids must be unique within a goal")
        return milestones


class AvailabilityWindow(_Model):
    """A weekly window in the party's own time zone; weekday 0 is Monday."""

    weekday: int = Field(ge=0, le=6)
    start: time
    end: time

    @model_validator(mode="after")
    def _ordered(self) -> AvailabilityWindow:
        if self.end <= self.start:
            raise ValueError("a window must end after it starts")
        return self


class PartyAvailability(_Model):
    party: Party
    timezone: NotConfidential = "UTC"
    windows: tuple[AvailabilityWindow, ...] = Field(min_length=1, max_length=50)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        return check_timezone(name)


class Confidentiality(_Model):
    private_by_default: bool = True
    # What is *not* private, stated in the agreement (seed 000 "Keep it confidential").
    not_private: tuple[NotConfidential, ...] = ("risk of harm to anyone", "breaches of law or of the organisation's policies")


class AgreementTerms(_Model):
    """The written mentoring agreement (seed 004)."""

    objective: NotConfidential = Field(min_length=1, max_length=4000)
    goals: tuple[Goal, ...] = Field(min_length=1, max_length=20)
    formats: tuple[MeetingFormat, ...] = Field(default=("video",), min_length=1)
    meeting_frequency: MeetingFrequency
    meeting_minutes: int = Field(ge=5, le=480)
    term_months: int = Field(ge=1, le=36)
    availability: tuple[PartyAvailability, ...] = Field(default=(), max_length=2)
    cancellation_notice_hours: int = Field(default=24, ge=0, le=24 * 14)
    agenda_policy: AgendaPolicy = "mentee_shares"
    confidentiality: Confidentiality = Confidentiality()
    early_exit_plan: NotConfidential = Field(
        default="Either of us may end the relationship early after telling the other and the coordinator why.",
        min_length=1,
        max_length=4000,
    )

    @model_validator(mode="before")
    @classmethod
    def _number_goals(cls, data: Any) -> Any:
        # Callers may leave goal ids out; they are then g1, g2, … in the order given.
        if isinstance(data, dict) and isinstance(data.get("goals"), (list, tuple)):
            goals = [
                {"goal_id": f"g{n}", **goal} if isinstance(goal, dict) and "goal_id" not in goal else goal
                for n, goal in enumerate(data["goals"], start=1)
            ]
            data = {**data, "goals": goals}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> AgreementTerms:
        ids = [goal.goal_id for goal in self.goals]
        if len(set(ids)) != len(ids):
            raise ValueError("goal ids must be unique")
        parties = [availability.party for availability in self.availability]
        if len(set(parties)) != len(parties):
            raise ValueError("give availability at most once per party")
        return self


# -- commands -----------------------------------------------------------------------------


class Command(_Model):
    message_name: ClassVar[str]

    command_id: Identifier
    actor_id: Identifier


class ProposeMatch(Command):
    """A coordinator (or the matching engine) proposes a mentor to the mentee."""

    message_name: ClassVar[str] = "propose_match"
    mentor_id: Identifier
    # Why this mentor: shown to both sides (e.g. "shares 3 of 4 goals; 5 h/week overlap").
    explanation: ShortText = ""
    score: float | None = None


class AcceptMatch(Command):
    """The mentee or the proposed mentor accepts the current proposal."""

    message_name: ClassVar[str] = "accept_match"


class DeclineMatch(Command):
    message_name: ClassVar[str] = "decline_match"
    reason: Confidential = ""


class ProposeAgreement(Command):
    """Either party proposes the agreement, or amends it; an amendment voids signatures."""

    message_name: ClassVar[str] = "propose_agreement"
    terms: AgreementTerms


class SignAgreement(Command):
    message_name: ClassVar[str] = "sign_agreement"
    agreement_version: int = Field(ge=1)


class RecordMeeting(Command):
    """A meeting was held. Without `meeting_number` it is the one currently scheduled; with
    the number of a meeting marked missed, it corrects that record."""

    message_name: ClassVar[str] = "record_meeting"
    held_at: AwareDatetime
    duration_minutes: int = Field(ge=1, le=480)
    notes: Confidential = ""
    meeting_number: int | None = Field(default=None, ge=1)


class CancelMeeting(Command):
    message_name: ClassVar[str] = "cancel_meeting"
    meeting_number: int = Field(ge=1)
    reason: Confidential = ""


class RescheduleMeeting(Command):
    message_name: ClassVar[str] = "reschedule_meeting"
    meeting_number: int = Field(ge=1)
    starts_at: AwareDatetime


class RecordGoalProgress(Command):
    message_name: ClassVar[str] = "record_goal_progress"
    goal_id: Identifier
    progress_percent: int = Field(ge=0, le=100)
    milestones_reached: tuple[Identifier, ...] = ()


class ProposeGoalRevision(Command):
    """Add a goal or change one; it takes effect once the other side acknowledges it (000:
    "changes to goals put in writing")."""

    message_name: ClassVar[str] = "propose_goal_revision"
    goal: Goal
    rationale: Confidential = ""


class AcknowledgeGoalRevision(Command):
    message_name: ClassVar[str] = "acknowledge_goal_revision"
    revision_id: Identifier


class SubmitFeedback(Command):
    message_name: ClassVar[str] = "submit_feedback"
    feedback_round: int = Field(ge=1)
    score: int = Field(ge=1, le=5)
    comment: Confidential = ""


class RaiseConcern(Command):
    message_name: ClassVar[str] = "raise_concern"
    text: Confidential = Field(min_length=1)


class ResolveConcern(Command):
    message_name: ClassVar[str] = "resolve_concern"
    concern_id: Identifier
    resolution: Confidential = ""


class RecordIntroduction(Command):
    """The mentor introduced the mentee to someone in their network (002 §9)."""

    message_name: ClassVar[str] = "record_introduction"
    introduced_to: ShortText = Field(min_length=1)
    note: Confidential = ""


class ShareResource(Command):
    message_name: ClassVar[str] = "share_resource"
    title: ShortText = Field(min_length=1)
    url: NotConfidential | None = Field(default=None, max_length=2000)


class PauseRelationship(Command):
    message_name: ClassVar[str] = "pause_relationship"
    until: AwareDatetime
    reason: Confidential = ""


class ResumeRelationship(Command):
    message_name: ClassVar[str] = "resume_relationship"


class RequestReview(Command):
    message_name: ClassVar[str] = "request_review"


class GoalAssessment(_Model):
    goal_id: Identifier
    progress_percent: int = Field(ge=0, le=100)
    comment: Confidential = ""


class SubmitReview(Command):
    message_name: ClassVar[str] = "submit_review"
    outcome: ReviewOutcome
    goal_assessments: tuple[GoalAssessment, ...] = ()
    # With outcome "extend": by how many months (bounded by the programme).
    extension_months: int | None = Field(default=None, ge=1, le=24)
    comment: Confidential = ""


class CloseRelationship(Command):
    """Either party (per the agreed exit plan) or a coordinator ends the relationship early."""

    message_name: ClassVar[str] = "close_relationship"
    note: Confidential = ""


class ReportParticipantLeft(Command):
    """The directory (or a coordinator) reports that a participant left the organisation."""

    message_name: ClassVar[str] = "participant_left"
    participant_id: Identifier


class SubmitReflection(Command):
    message_name: ClassVar[str] = "submit_reflection"
    text: Confidential = Field(min_length=1)


COMMAND_TYPES: dict[str, type[Command]] = {
    cls.message_name: cls
    for cls in (
        ProposeMatch,
        AcceptMatch,
        DeclineMatch,
        ProposeAgreement,
        SignAgreement,
        RecordMeeting,
        CancelMeeting,
        RescheduleMeeting,
        RecordGoalProgress,
        ProposeGoalRevision,
        AcknowledgeGoalRevision,
        SubmitFeedback,
        RaiseConcern,
        ResolveConcern,
        RecordIntroduction,
        ShareResource,
        PauseRelationship,
        ResumeRelationship,
        RequestReview,
        SubmitReview,
        CloseRelationship,
        ReportParticipantLeft,
        SubmitReflection,
    )
}

# The actor id the workflow uses for what the directory tells it.
DIRECTORY_ACTOR = "directory"
# The actor ids of the mentor pool: the relationship asking it for a candidate, and a
# programme's matching round. They may propose (and withdraw, for want of capacity)
# like a coordinator.
MATCHING_ACTOR = "matching-engine"
MATCHING_ACTORS = frozenset({MATCHING_ACTOR, "matching-round"})
