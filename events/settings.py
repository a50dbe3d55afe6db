"""Programme settings: every default from DOMAIN.md is a setting, never a constant in code."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from events.daytime import DeliveryWindow
from events.sensitivity import NotConfidential

MeetingFrequency = Literal["weekly", "biweekly", "monthly"]

# Ordered from most to least frequent; an agreement may never be less frequent than the
# programme's minimum.
FREQUENCY_ORDER: tuple[MeetingFrequency, ...] = ("weekly", "biweekly", "monthly")
FREQUENCY_DAYS: dict[MeetingFrequency, int] = {"weekly": 7, "biweekly": 14, "monthly": 30}


class ProgrammeSettings(BaseModel):
    """The rules a relationship copies from its programme when it starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # matching
    proposal_ttl_days: int = Field(default=7, ge=1, le=90)
    matching_timeout_days: int = Field(default=30, ge=1, le=365)
    max_match_attempts: int = Field(default=3, ge=1, le=50)

    # agreement
    agreement_ttl_days: int = Field(default=14, ge=1, le=90)
    agreement_reminder_days: tuple[int, ...] = Field(default=(3, 1), max_length=5)
    minimum_meeting_frequency: MeetingFrequency = "monthly"
    min_meeting_minutes: int = Field(default=15, ge=5, le=480)
    max_meeting_minutes: int = Field(default=120, ge=5, le=480)
    min_term_months: int = Field(default=1, ge=1, le=36)
    max_term_months: int = Field(default=12, ge=1, le=36)

    # active cadence
    meeting_reminder_lead_hours: int = Field(default=24, ge=0, le=24 * 14)
    # Equal to the reminder lead by default, so one wake-up sends both (a cheaper history).
    agenda_request_lead_hours: int = Field(default=24, ge=0, le=24 * 14)
    missed_meeting_grace_hours: int = Field(default=48, ge=1, le=24 * 14)
    feedback_every_sessions: int = Field(default=3, ge=1, le=52)
    low_feedback_score: int = Field(default=2, ge=1, le=4)
    max_pause_days: int = Field(default=60, ge=1, le=365)

    # health
    nudge_before_at_risk_days: int = Field(default=7, ge=0, le=90)
    at_risk_after_days: int = Field(default=30, ge=1, le=365)
    stalled_after_days: int = Field(default=60, ge=1, le=365)
    # A stalled relationship closes this many days after it stalled; 0 never closes it.
    close_stalled_after_days: int = Field(default=30, ge=0, le=365)
    missed_meetings_at_risk: int = Field(default=2, ge=1, le=20)

    # review
    midpoint_review: bool = True
    review_response_days: int = Field(default=14, ge=1, le=90)
    max_extensions: int = Field(default=1, ge=0, le=10)
    max_extension_months: int = Field(default=3, ge=1, le=24)

    # closure
    reflection_days: int = Field(default=14, ge=1, le=90)

    # Coordinators get a digest of what needs them every this many days; None: none (issue #15).
    digest_every_days: int | None = Field(default=7, ge=1, le=90)

    # Non-urgent messages reach each recipient inside this local window (events/daytime.py);
    # None: at any time.
    delivery_window: DeliveryWindow | None = DeliveryWindow()

    # The signed links in a relationship's emails work for this many days (docs/people.md).
    link_lifetime_days: int = Field(default=14, ge=1, le=90)

    coordinator_ids: tuple[NotConfidential, ...] = ()

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> ProgrammeSettings:
        if self.min_meeting_minutes > self.max_meeting_minutes:
            raise ValueError("min_meeting_minutes must not exceed max_meeting_minutes")
        if self.min_term_months > self.max_term_months:
            raise ValueError("min_term_months must not exceed max_term_months")
        if self.at_risk_after_days >= self.stalled_after_days:
            raise ValueError("at_risk_after_days must be less than stalled_after_days")
        if self.nudge_before_at_risk_days >= self.at_risk_after_days:
            raise ValueError("nudge_before_at_risk_days must be less than at_risk_after_days")
        if any(days < 1 or days >= self.agreement_ttl_days for days in self.agreement_reminder_days):
            raise ValueError("agreement_reminder_days must each be between 1 and agreement_ttl_days - 1")
        return self


class ProgrammeRequest(BaseModel):
    """What a starting relationship asks the directory: its programme's settings. `given`:
    settings the starter passed, which are verified against the programme's (a start from
    outside may not choose its own rules), unless the worker trusts them (tests only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    programme_id: str
    given: ProgrammeSettings | None = None
