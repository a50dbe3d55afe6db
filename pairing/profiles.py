"""Mentor and mentee profiles: what each side offers, wants and rules out.

Profiles hold ids, topics and codes only, never names: scores and explanations built
from them end up in workflow history. A programme's own `attributes` (organisation, grade,
characteristics, …) are declared in its matching settings with a confidentiality class;
explanations never show their values, and the store encrypts the confidential ones.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

# The same shape as events.commands.Identifier: ids travel into workflow ids and commands.
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")
]
Role = Literal["mentor", "mentee"]
MeetingFormat = Literal["video", "in_person", "phone", "chat"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_SPACES = re.compile(r"\s+")
_TIME = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")


def normalise_topic(topic: str) -> str:
    """Spreadsheets spell topics freely: 'System  Design' and 'system design' are one topic."""
    return _SPACES.sub(" ", topic.strip().lower())


def _topic(value: str) -> str:
    topic = normalise_topic(value)
    if not topic:
        raise ValueError("a topic must not be empty")
    if any(char in topic for char in ";|:"):
        raise ValueError("a topic must not contain ';', '|' or ':'")
    return topic


Topic = Annotated[str, StringConstraints(max_length=80), AfterValidator(_topic)]
Language = Annotated[str, StringConstraints(min_length=2, max_length=16, pattern=r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")]


def _attribute_text(value: str) -> str:
    text = normalise_topic(value)
    if not text:
        raise ValueError("an attribute value must not be empty")
    return text


# Attribute values are compared like topics: case- and space-insensitively.
AttributeText = Annotated[str, StringConstraints(max_length=200), AfterValidator(_attribute_text)]
AttributeName = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")]
# A number (grade), a text (organisation) or several texts (characteristics). Which one an
# attribute must be is the programme's setting (pairing.settings.AttributeSpec).
AttributeValue = float | AttributeText | tuple[AttributeText, ...]


def minutes_of(clock: str) -> int:
    match = _TIME.match(clock)
    if not match or (match[1] == "24" and match[2] != "00"):
        raise ValueError(f"{clock!r} is not a time of day like 09:30")
    return int(match[1]) * 60 + int(match[2])


class Strength(BaseModel):
    """A topic a mentor can help with, at a level from 1 (some) to 5 (expert)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: Topic
    level: int = Field(default=3, ge=1, le=5)


class GoalTopic(BaseModel):
    """A topic a mentee wants help with, with a priority from 1 (nice to have) to 3 (essential)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: Topic
    priority: int = Field(default=1, ge=1, le=3)


class AvailabilityWindow(BaseModel):
    """A weekly window in the participant's own time zone; an end before the start runs
    past midnight into the next day."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    day: Weekday
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        minutes = minutes_of(value)
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    @field_validator("start")
    @classmethod
    def _starts_within_the_day(cls, value: str) -> str:
        if value == "24:00":
            raise ValueError("a window must start before 24:00")
        return value

    @field_validator("end")
    @classmethod
    def _not_empty(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("start") == value:
            raise ValueError("a window must not end when it starts")
        return value

    @property
    def start_minute(self) -> int:
        return minutes_of(self.start)

    @property
    def length_minutes(self) -> int:
        length = minutes_of(self.end) - self.start_minute
        return length if length > 0 else length + 24 * 60

    def __str__(self) -> str:
        return f"{self.day} {self.start}-{self.end}"


@cache
def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _sorted_unique(values: tuple[object, ...]) -> tuple[object, ...]:
    # A canonical order: the same spreadsheet row always makes the same profile, so a
    # re-import is recognised as unchanged.
    return tuple(sorted(set(values), key=str))


class Profile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    participant_id: Identifier
    # IANA name, e.g. Europe/Berlin: availability windows are in this zone.
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    # 0 (entry level) … 20; None when not given.
    seniority: int | None = Field(default=None, ge=0, le=20)
    languages: tuple[Language, ...] = ()
    formats: tuple[MeetingFormat, ...] = ()
    availability: tuple[AvailabilityWindow, ...] = ()
    # The management chain upwards (direct manager first): nobody is paired with someone
    # in their own reporting line.
    reports_to: tuple[Identifier, ...] = ()
    previous_partners: tuple[Identifier, ...] = ()
    opt_out: tuple[Identifier, ...] = ()
    # People this participant would like to be paired with.
    preferred: tuple[Identifier, ...] = ()
    # The programme's own attributes (declared in its matching settings).
    attributes: dict[AttributeName, AttributeValue] = Field(default_factory=dict, max_length=100)
    active: bool = True

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not _known_zone(value):
            raise ValueError("not a time zone of the IANA database (e.g. Europe/Berlin)")
        return value

    @field_validator("languages", "formats", "previous_partners", "opt_out", "preferred", mode="after")
    @classmethod
    def _canonical(cls, value: tuple[object, ...]) -> tuple[object, ...]:
        return _sorted_unique(value)

    @field_validator("attributes", mode="after")
    @classmethod
    def _canonical_sets(cls, value: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
        return {name: _sorted_unique(item) if isinstance(item, tuple) else item for name, item in sorted(value.items())}  # type: ignore[misc]

    @field_validator("availability", mode="after")
    @classmethod
    def _windows_in_order(cls, value: tuple[AvailabilityWindow, ...]) -> tuple[AvailabilityWindow, ...]:
        return tuple(sorted(set(value), key=lambda w: (WEEKDAYS.index(w.day), w.start, w.end)))


def _best_per_topic(items: tuple[Strength, ...] | tuple[GoalTopic, ...], amount: str) -> dict[str, int]:
    """One entry per topic, keeping the highest level / priority given for it."""
    best: dict[str, int] = {}
    for item in items:
        best[item.topic] = max(best.get(item.topic, 0), getattr(item, amount))
    return best


class MentorProfile(Profile):
    role: Literal["mentor"] = "mentor"
    strengths: tuple[Strength, ...] = ()
    # How many mentees at once.
    capacity: int = Field(default=1, ge=0, le=50)

    @field_validator("strengths", mode="after")
    @classmethod
    def _one_level_per_topic(cls, value: tuple[Strength, ...]) -> tuple[Strength, ...]:
        return tuple(Strength(topic=topic, level=level) for topic, level in sorted(_best_per_topic(value, "level").items()))

    def level_in(self, topic: str) -> int:
        return next((s.level for s in self.strengths if s.topic == topic), 0)


class MenteeProfile(Profile):
    role: Literal["mentee"] = "mentee"
    goals: tuple[GoalTopic, ...] = ()
    # How many mentors (open relationships) at once; None: the programme's
    # max_open_relationships_per_mentee.
    mentor_quota: int | None = Field(default=None, ge=0, le=20)

    @field_validator("goals", mode="after")
    @classmethod
    def _one_priority_per_topic(cls, value: tuple[GoalTopic, ...]) -> tuple[GoalTopic, ...]:
        # Most important first: explanations list goals in this order.
        ordered = sorted(_best_per_topic(value, "priority").items(), key=lambda item: (-item[1], item[0]))
        return tuple(GoalTopic(topic=topic, priority=priority) for topic, priority in ordered)


AnyProfile = MentorProfile | MenteeProfile
