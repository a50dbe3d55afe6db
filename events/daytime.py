"""Daytime delivery: messages that are not urgent reach people in their own daytime.

A programme's delivery window (default 08:00–20:00, local to each recipient) holds back a
non-urgent message that falls outside it until the window next opens in the recipient's time
zone — never past the moment the message is about (a reminder for a meeting that starts
before the window opens goes out at once). A window may run across midnight (22:00–06:00 for
night shifts). Daylight-saving changes are the time zone database's: a window opening inside
a skipped hour opens when the clock resumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

# Template names of the messages that wait for daytime (issue #15): reminders, agenda
# requests, review and feedback requests, nudges, the coordinators' digest
# (tests/domain/test_daytime.py checks every name here is one the core sends). Everything else — a
# match to answer, a concern, a cancellation, a closure — goes out when it happens.
NOT_URGENT = frozenset(
    {
        "meeting_reminder",
        "agreement_reminder",
        "agenda_request",
        "feedback_request",
        # events/notifications.py: f"{kind}_review_opened" for each ReviewKind.
        "midpoint_review_opened",
        "final_review_opened",
        "on_demand_review_opened",
        "nudge",
        "coordinator_digest",
    }
)

# The parameters that say when what a message is about happens, first found first: a
# message never waits past it (a reminder for a meeting at 07:30 goes out at 05:00 rather
# than at 08:00, after the meeting; a request due before the window opens goes at once).
DEADLINE_PARAMETERS = ("meeting_start", "respond_by", "agreement_due_at")


class DeliveryWindow(BaseModel):
    """Local wall-clock times between which non-urgent messages go out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    opens: time = time(8, 0)
    closes: time = time(20, 0)

    @field_validator("opens", "closes", mode="before")
    @classmethod
    def _written_as_a_time(cls, value: object) -> object:
        # YAML reads an unquoted 20:00 as the number 1200 (base 60), which would be 00:20.
        if isinstance(value, int | float):
            raise ValueError('write the time as "HH:MM" in quotes (unquoted, YAML reads 20:00 as a number)')
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> DeliveryWindow:
        if self.opens == self.closes:
            raise ValueError("delivery window: opens and closes at the same time; leave it out to deliver any time")
        if self.opens.tzinfo or self.closes.tzinfo:
            raise ValueError("delivery window: times are local to each recipient, without an offset")
        return self

    def __str__(self) -> str:  # as `programme show` lists it
        return f"{self.opens:%H:%M}–{self.closes:%H:%M}"

    def holds(self, clock: time) -> bool:
        if self.opens < self.closes:
            return self.opens <= clock < self.closes
        return clock >= self.opens or clock < self.closes


def zone_of(name: str) -> ZoneInfo:
    """The recipient's time zone; an unknown name counts as UTC (the directory checks names on import)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _local_opening(day: date, window: DeliveryWindow, zone: ZoneInfo) -> datetime:
    """The first moment, as UTC, at which the clock in `zone` reads `window.opens` on `day` (or
    later, when that reading is skipped by a daylight-saving change: the moment the clock resumes)."""
    wanted = datetime.combine(day, window.opens)
    moment = wanted.replace(tzinfo=zone).astimezone(UTC)
    if moment.astimezone(zone).replace(tzinfo=None) == wanted:
        return moment
    # Skipped: start where the clock still reads earlier (the later offset) and walk to the jump.
    moment = wanted.replace(tzinfo=zone, fold=1).astimezone(UTC)
    while moment.astimezone(zone).replace(tzinfo=None) < wanted:
        moment += timedelta(minutes=1)
    return moment


def deliver_at(
    moment: datetime,
    zone_name: str,
    window: DeliveryWindow | None,
    *,
    template: str,
    deliver_by: datetime | None = None,
) -> datetime:
    """When a message decided at `moment` reaches a recipient in `zone_name`: at once when it
    is urgent, there is no window, or the recipient's clock is inside it; otherwise when the
    window next opens, unless that is at or after `deliver_by` (then at once)."""
    if window is None or template not in NOT_URGENT:
        return moment
    zone = zone_of(zone_name)
    local = moment.astimezone(zone)
    if window.holds(local.timetz().replace(tzinfo=None)):
        return moment
    opening = _local_opening(local.date(), window, zone)
    if opening <= moment:
        opening = _local_opening(local.date() + timedelta(days=1), window, zone)
    if deliver_by is not None and opening >= deliver_by:
        return moment
    return opening


def deadline_of(parameters: Mapping[str, str]) -> datetime | None:
    """When what a message is about happens (`DEADLINE_PARAMETERS`), from its parameters; None
    when it names no such moment (or not one that reads as an ISO 8601 time with an offset)."""
    for name in DEADLINE_PARAMETERS:
        text = parameters.get(name)
        if not text:
            continue
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            continue
        if moment.tzinfo is not None:
            return moment
    return None
