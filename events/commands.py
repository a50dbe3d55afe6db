"""Commands: what other systems ask a relationship to do.

Each command is one pydantic model with a stable message name (the signal and update name
on the `Relationship` workflow). Every command carries a `command_id` chosen by the sender;
a relationship applies each id at most once, so a sender may retry freely. Fields marked
confidential hold what mentees and mentors share in confidence (notes, concerns, feedback,
reflections, the agreement and its goals, …): all free text is, unless a field says why not.
They never reach search attributes, ids, logs or error messages.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date, datetime, time
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from events.refusals import Rejection, field_problems, invalid_payload
from events.sensitivity import CONFIDENTIAL, NOT_CONFIDENTIAL, ConfidentialText, NotConfidential
from events.settings import MeetingFrequency

# Ids are opaque references (no names or free text): they end up in search attributes,
# workflow ids and logs.
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"), NOT_CONFIDENTIAL
]
# Short free text (a match explanation, who someone was introduced to, a resource's title):
# confidential like all free text (security issue #12; there is no plain free text).
ShortConfidential = Annotated[str, StringConstraints(max_length=2000), CONFIDENTIAL]
# Encrypted in the event store with the relationship's own key (events/sensitivity.py).
Confidential = Annotated[str, StringConstraints(max_length=10_000), CONFIDENTIAL]


# Payloads are validated exactly as their JSON Schema reads (`contract/`): strict types (no
# "60" for 60, no 1 for true) and times as RFC 3339 strings with an offset. JSON has no
# tuples, dates or times of its own, so those fields take arrays and strings (and, from
# Python callers, the native values).
_RFC3339_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


def _text_as(pattern: re.Pattern[str], native: type, expected: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, native) or (isinstance(value, str) and pattern.match(value)):
            return value
        raise ValueError(f"should be {expected}")

    return BeforeValidator(check)


Moment = Annotated[
    AwareDatetime,
    Strict(False),
    _text_as(_RFC3339_DATETIME, datetime, "an RFC 3339 date-time with an offset, e.g. 2027-03-01T09:00:00+01:00"),
]
Day = Annotated[date, Strict(False), _text_as(_ISO_DATE, date, "a date, e.g. 2027-03-01")]
# Published as a pattern: JSON Schema's `format: time` is RFC 3339's full-time (seconds and
# an offset, "09:30:00Z"), while a window is a wall-clock time in the party's own time zone.
ClockTime = Annotated[
    time,
    Strict(False),
    _text_as(_ISO_TIME, time, "a time of day, e.g. 09:30"),
    WithJsonSchema({"type": "string", "pattern": _ISO_TIME.pattern, "description": "A wall-clock time, HH:MM[:SS]."}),
]

Party = Literal["mentor", "mentee"]
MeetingFormat = Literal["in_person", "phone", "video", "email", "chat"]
AgendaPolicy = Literal["mentee_shares", "both_share", "no_agenda"]
ReviewOutcome = Literal["continue", "recalibrate", "extend", "close"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

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
        raise ValueError("unknown time zone (use an IANA name such as Europe/Berlin)") from None
    return name


# -- the agreement ----------------------------------------------------------------------


class Milestone(_Model):
    milestone_id: Identifier
    # Confidential: a step towards a goal the mentee shared in confidence (002 §2).
    title: ConfidentialText = Field(min_length=1, max_length=500)


class Goal(_Model):
    """A SMART goal: specific (title), measurable (measure), time-bound (target_date)."""

    goal_id: Identifier
    # Confidential: goals are what mentees share in confidence (002 §2). Reports and
    # projections count goals by `goal_id`; only the two parties see the words.
    title: ConfidentialText = Field(min_length=1, max_length=500)
    measure: ConfidentialText = Field(default="", max_length=1000)
    target_date: Day | None = None
    milestones: Annotated[tuple[Milestone, ...], Strict(False)] = Field(default=(), max_length=20)

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
    start: ClockTime
    end: ClockTime

    @model_validator(mode="after")
    def _ordered(self) -> AvailabilityWindow:
        if self.end <= self.start:
            raise ValueError("a window must end after it starts")
        return self


class PartyAvailability(_Model):
    party: Party
    # Plain: an IANA zone name checked against the tz database (`check_timezone`), not free
    # text; scheduling needs it.
    timezone: NotConfidential = "UTC"
    windows: Annotated[tuple[AvailabilityWindow, ...], Strict(False)] = Field(min_length=1, max_length=50)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        return check_timezone(name)


class Confidentiality(_Model):
    private_by_default: bool = True
    # What is *not* private, stated in the agreement (seed 000 "Keep it confidential").
    # Confidential: the parties may write their own, personal exceptions here.
    not_private: Annotated[tuple[ConfidentialText, ...], Strict(False)] = (
        "risk of harm to anyone",
        "breaches of law or of the organisation's policies",
    )


class AgreementTerms(_Model):
    """The written mentoring agreement (seed 004)."""

    # Confidential, like the goals and the exit plan: what the mentee wants out of it.
    objective: ConfidentialText = Field(min_length=1, max_length=4000)
    goals: Annotated[tuple[Goal, ...], Strict(False)] = Field(min_length=1, max_length=20)
    formats: Annotated[tuple[MeetingFormat, ...], Strict(False)] = Field(default=("video",), min_length=1)
    meeting_frequency: MeetingFrequency
    meeting_minutes: int = Field(ge=5, le=480)
    term_months: int = Field(ge=1, le=36)
    availability: Annotated[tuple[PartyAvailability, ...], Strict(False)] = Field(default=(), max_length=2)
    cancellation_notice_hours: int = Field(default=24, ge=0, le=24 * 14)
    agenda_policy: AgendaPolicy = "mentee_shares"
    confidentiality: Confidentiality = Confidentiality()
    early_exit_plan: ConfidentialText = Field(
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
    # Confidential: it names the goals and topics the two share; shown to the two parties.
    explanation: ShortConfidential = ""
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
    """A meeting was held. `meeting_number` says which: the scheduled meeting, or one
    marked missed (that record is corrected). Without it, `held_at` decides: the meeting
    planned nearest to it, cancelled ones aside. A meeting already recorded as held is
    refused as a conflict, so a meeting reported twice counts once.

    `held_at` may lie at most 1 hour in the future (`MEETING_CLOCK_SKEW` in
    events/meetings.py: the sender's clock may run ahead, a report made from the calendar
    entry may carry the meeting's end); further ahead, or before the agreement took effect,
    it is refused as `limit`."""

    message_name: ClassVar[str] = "record_meeting"
    held_at: Moment
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
    starts_at: Moment


class ReportMeetingNotHeld(Command):
    """A party says meeting `meeting_number` did not take place: the scheduled meeting, once
    its start has passed, then counts as missed at once (as it would have when its report
    was overdue); a meeting already counted as missed keeps that count and gets the party's
    word. One recorded as held is corrected with `correct_meeting_report` instead."""

    message_name: ClassVar[str] = "report_meeting_not_held"
    meeting_number: int = Field(ge=1)
    reason: Confidential = ""


class CorrectMeetingReport(Command):
    """A party corrects what was reported about a past meeting: `outcome` "held" (it did
    take place: at `held_at`, for `duration_minutes`; by default the meeting's planned start
    and the agreed length) or "not_held" (it did not, after all)."""

    message_name: ClassVar[str] = "correct_meeting_report"
    meeting_number: int = Field(ge=1)
    outcome: Literal["held", "not_held"]
    held_at: Moment | None = None
    duration_minutes: int | None = Field(default=None, ge=1, le=480)
    reason: Confidential = ""


class RecordGoalProgress(Command):
    message_name: ClassVar[str] = "record_goal_progress"
    goal_id: Identifier
    progress_percent: int = Field(ge=0, le=100)
    milestones_reached: Annotated[tuple[Identifier, ...], Strict(False)] = ()


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
    # Confidential: free text, often a person's name or role (not an id).
    introduced_to: ShortConfidential = Field(min_length=1)
    note: Confidential = ""


class ShareResource(Command):
    message_name: ClassVar[str] = "share_resource"
    # Confidential: what someone reads says what they work on; a URL may carry a token.
    title: ShortConfidential = Field(min_length=1)
    url: ConfidentialText | None = Field(default=None, max_length=2000)


class PauseRelationship(Command):
    message_name: ClassVar[str] = "pause_relationship"
    until: Moment
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
    goal_assessments: Annotated[tuple[GoalAssessment, ...], Strict(False)] = ()
    # With outcome "extend": by how many months (bounded by the programme).
    extension_months: int | None = Field(default=None, ge=1, le=24)
    comment: Confidential = ""


class NudgeRelationship(Command):
    """A coordinator sends again the reminder of what the relationship waits for."""

    message_name: ClassVar[str] = "nudge_relationship"


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


# Every command model above, by message name, in the order they are defined (a relationship's
# lifecycle). Each has its rules (phases, senders) and decision in the module of its stage;
# events/decider.py refuses to load if one has none.
COMMAND_TYPES: dict[str, type[Command]] = {cls.message_name: cls for cls in Command.__subclasses__()}

# The actor id the workflow uses for what the directory tells it.
DIRECTORY_ACTOR = "directory"
# The actor ids of the mentor pool: the relationship asking it for a candidate, and a
# programme's matching round. They may propose (and withdraw, for want of capacity)
# like a coordinator.
MATCHING_ACTOR = "matching-engine"
ROUND_ACTOR = "matching-round"
MATCHING_ACTORS = frozenset({MATCHING_ACTOR, ROUND_ACTOR})
# Actors that are the system itself. The workflow issues the directory's and the pool's
# commands itself; from outside, only a round's proposal may name one (and is checked
# against the round's records before it is applied).
INTERNAL_ACTORS = frozenset({DIRECTORY_ACTOR, *MATCHING_ACTORS})


def command_digest(command: Command) -> str:
    """A fingerprint of what a command asks (its message and every field), so that a command
    id sent again with other content is told apart from an honest retry."""
    canonical = json.dumps(
        {"message": command.message_name, **command.model_dump(mode="json")}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def payload_digest(message_name: str, payload: Any) -> str:
    """`command_digest` of a payload as it was sent (one that may not be a valid command)."""
    canonical = json.dumps({"message": message_name, "payload": payload}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def read_command(model: type[Command], payload: Any) -> Command | Rejection:
    """A payload as the command it is, validated exactly as its JSON Schema in `contract/`
    reads, or the `invalid_payload` refusal naming every field at fault."""
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        return invalid_payload(field_problems(error, known=frozenset(model.model_fields)))
