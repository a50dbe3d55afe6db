"""The cadence: when the next meeting is, and which meeting a `record_meeting` report is
about. The meeting commands that use it are in events/meetings.py.

**The cadence (rules 2, `CADENCE_RULES`).** The first meeting is the first slot both
parties are free at least `scheduling_lead` (`MIN_SCHEDULING_LEAD`, or the programme's
agenda/reminder lead if longer) after the agreement took effect. From the day of the first
meeting, time is cut into periods one rhythm long (7, 14 or 30 days), and each meeting
falls in the period after the previous one's, at the first common slot from the start of
that period's first day. Reports, whenever they arrive, never move this grid (a meeting
moved into a later period moves the ones after it along). The days are counted in the
time zone of the first party that gave availability, and every common slot lies inside
that party's own same-day windows, so a daylight-saving change never moves a meeting into
the next or the previous period: no week is skipped or doubled. Without availability the
periods are exact days from the first meeting (UTC) and a meeting is set at its due time.
A meeting that would end after the term (`term_ends_at`, as pauses and extensions leave
it) is not scheduled; one the legacy rules left there is planned again inside the term at
the next decision if there is room, and otherwise left for the final review.

**Reports.** A report names its meeting (`meeting_number`) or is matched by `held_at` to
the meeting planned nearest to it (cancelled ones aside): the scheduled meeting, one
counted as missed (a correction), or one already recorded as held — refused as a
`conflict`, so a second report of the same meeting never counts twice. A meeting a party
reported as not held is refused too: that report is changed by `correct_meeting_report`
(events/meetings.py), not by a contrary one.

**The legacy rules (1, `LEGACY_CADENCE_RULES`)** are those from before: the next meeting
due one rhythm after the later of the last meeting held and the last planned (the first a
week after activation), every report taken as the scheduled meeting. A workflow re-decides
every command and deadline when it replays its history, so a run that made decisions by
them must go on deciding by them; `RelationshipState.cadence_rules` says which apply.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from events.commands import RecordMeeting
from events.refusals import FieldProblem, RefusalCode, Rejection, refuse
from events.scheduling import first_common_slot, next_slot
from events.settings import FREQUENCY_DAYS
from events.state import LEGACY_CADENCE_RULES, PastMeeting, RelationshipState, ScheduledMeeting


# A newly scheduled meeting is at least this far ahead, so reminders can still go out.
MIN_SCHEDULING_LEAD = timedelta(days=1)
# The first meeting comes within a week of signing, even for a monthly rhythm: the legacy
# rules set it due then; the anchored ones take the first common slot after the lead, which
# lies within this when the parties' weekly windows meet after the lead.
FIRST_MEETING_WITHIN = timedelta(days=7)


# -- when --------------------------------------------------------------------------------


def plan_next_meeting(state: RelationshipState, now: datetime) -> tuple[int, datetime] | None:
    """The meeting to (re)plan and its start: the next one when none is scheduled, or — under
    the anchored rules — a scheduled one that ends after the term, moved into it. None when
    there is nothing to plan, or no room left in the term for it."""
    assert state.agreement is not None and state.activated_at is not None and state.meeting_frequency is not None
    if state.cadence_rules == LEGACY_CADENCE_RULES:
        if state.next_meeting is not None:
            return None
        return state.last_meeting_number + 1, _legacy_start(state, now)
    if state.next_meeting is None:
        number = state.last_meeting_number + 1
        start = _anchored_start(state, state.last_scheduled_start, now)
    elif beyond_the_term(state, state.next_meeting.ends_at):
        # Left past the end of the term by the legacy rules: planned again from now.
        number = state.next_meeting.meeting_number
        start = _anchored_start(state, _before(state, number, now), now)
    else:
        return None
    return None if start is None else (number, start)


def beyond_the_term(state: RelationshipState, ends_at: datetime) -> bool:
    return state.term_ends_at is not None and ends_at > state.term_ends_at


def scheduling_lead(state: RelationshipState) -> timedelta:
    """How far ahead the anchored rules plan a meeting at the least: `MIN_SCHEDULING_LEAD`,
    or the programme's agenda-request or reminder lead if longer, so both still go out."""
    settings = state.settings
    asks_agenda = state.agreement is not None and state.agreement.terms.agenda_policy != "no_agenda"
    hours = max(settings.meeting_reminder_lead_hours, settings.agenda_request_lead_hours if asks_agenda else 0)
    return max(MIN_SCHEDULING_LEAD, timedelta(hours=hours))


def _legacy_start(state: RelationshipState, now: datetime) -> datetime:
    assert state.agreement is not None and state.activated_at is not None and state.meeting_frequency is not None
    terms = state.agreement.terms
    interval = timedelta(days=FREQUENCY_DAYS[state.meeting_frequency])
    anchors = [m for m in (state.last_meeting_at, state.last_scheduled_start) if m is not None]
    due = max(anchors) + interval if anchors else state.activated_at + min(interval, FIRST_MEETING_WITHIN)
    return next_slot(max(due, now + MIN_SCHEDULING_LEAD), terms.availability, terms.meeting_minutes)


def _anchored_start(state: RelationshipState, previous: datetime | None, now: datetime) -> datetime | None:
    """The start of the meeting after the one planned for `previous`: on the grid, in the
    period after that one's (None: the first meeting, at the first slot after the lead).
    None if it would end after the term."""
    assert state.agreement is not None and state.activated_at is not None
    terms = state.agreement.terms
    lead = scheduling_lead(state)
    earliest = now + lead
    if previous is None:
        search_from = fallback = max(state.activated_at + lead, earliest)
    else:
        grid = _Grid(state)
        period = grid.period_of(previous) + 1
        search_from, fallback = max(grid.opens(period), earliest), max(grid.due(period), earliest)
    slot = first_common_slot(search_from, terms.availability, terms.meeting_minutes)
    start = (fallback if slot is None else slot).astimezone(UTC)
    return None if beyond_the_term(state, start + timedelta(minutes=terms.meeting_minutes)) else start


def _before(state: RelationshipState, number: int, now: datetime) -> datetime:
    """When the meeting before `number` was, for planning `number` again: its planned start,
    or now if that lies ahead (a legacy schedule that ran away from the reports) or is unknown."""
    earlier = [m.starts_at for m in state.past_meetings if m.meeting_number == number - 1]
    return min(earlier[0], now) if earlier else now


class _Grid:
    """Periods one rhythm long from the first meeting, counted in the reference zone."""

    def __init__(self, state: RelationshipState) -> None:
        assert state.agreement is not None and state.activated_at is not None and state.meeting_frequency is not None
        availability = state.agreement.terms.availability
        # Whole days of the first party that gave availability: its windows never cross
        # its own midnight, so no common slot ever crosses a period's boundary.
        self.by_day = bool(availability)
        self.zone: tzinfo = ZoneInfo(availability[0].timezone) if availability else UTC
        self.origin = (state.cadence_origin or state.activated_at).astimezone(self.zone)
        self.days = FREQUENCY_DAYS[state.meeting_frequency]

    def due(self, period: int) -> datetime:
        """The origin's wall-clock time, `period` rhythms on (where the meeting falls
        without a common slot)."""
        return self.origin + timedelta(days=self.days * period)

    def opens(self, period: int) -> datetime:
        due = self.due(period)
        if not self.by_day:
            return due
        return datetime.combine(due.date(), datetime.min.time(), tzinfo=self.zone)

    def period_of(self, moment: datetime) -> int:
        if self.by_day:
            return (moment.astimezone(self.zone).date() - self.origin.date()).days // self.days
        return (moment - self.origin) // timedelta(days=self.days)


# -- which -------------------------------------------------------------------------------


def meeting_reported(state: RelationshipState, command: RecordMeeting) -> tuple[int, bool] | Rejection:
    """Which meeting a report is about, and whether it corrects one counted as missed."""
    if state.cadence_rules == LEGACY_CADENCE_RULES:
        return _legacy_meeting_reported(state, command)
    if command.meeting_number is not None:
        return _by_number(state, command.meeting_number)
    return _by_time(state, command.held_at)


def _legacy_meeting_reported(state: RelationshipState, command: RecordMeeting) -> tuple[int, bool] | Rejection:
    number, scheduled = command.meeting_number, state.next_meeting
    if number is not None and (scheduled is None or number != scheduled.meeting_number):
        if number not in state.missed_meeting_numbers:
            return refuse(RefusalCode.NOT_FOUND, f"meeting {number} is neither the next meeting nor one marked missed")
        return _unless_reported(state, number, "meeting_number")
    assert scheduled is not None, "a relationship in its cadence always has a next meeting"
    return scheduled.meeting_number, False


def _by_number(state: RelationshipState, number: int) -> tuple[int, bool] | Rejection:
    scheduled = state.next_meeting
    if scheduled is not None and scheduled.meeting_number == number:
        return number, False
    if number in state.missed_meeting_numbers:
        return _unless_reported(state, number, "meeting_number")
    past = next((m for m in state.past_meetings if m.meeting_number == number), None)
    if past is not None:
        return _already(past, "meeting_number")
    return refuse(
        RefusalCode.NOT_FOUND,
        f"meeting {number} is neither the next meeting nor one marked missed",
        FieldProblem(field="meeting_number", message="is neither the next meeting nor one marked missed"),
    )


def _by_time(state: RelationshipState, held_at: datetime) -> tuple[int, bool] | Rejection:
    candidates: list[PastMeeting | ScheduledMeeting] = [m for m in state.past_meetings if m.outcome != "cancelled"]
    if state.next_meeting is not None:
        candidates.append(state.next_meeting)
    if not candidates:
        return refuse(
            RefusalCode.NOT_FOUND, "no meeting is scheduled or marked missed (the term may have no room for another)"
        )
    # The meeting planned nearest to held_at; on a tie the later one.
    nearest = min(candidates, key=lambda m: (abs(m.starts_at - held_at), -m.meeting_number))
    if isinstance(nearest, ScheduledMeeting):
        return nearest.meeting_number, False
    if nearest.outcome == "missed":
        return _unless_reported(state, nearest.meeting_number, "held_at")
    return _already(nearest, "held_at")


def _unless_reported(state: RelationshipState, number: int, field: str) -> tuple[int, bool] | Rejection:
    """A meeting counted missed, to be recorded as held (a correction) — unless a party
    reported it as not held: then only `correct_meeting_report` changes that."""
    past = next((m for m in state.past_meetings if m.meeting_number == number), None)
    if past is None or past.reported_by is None:
        return number, True
    return refuse(
        RefusalCode.CONFLICT,
        f"meeting {number} was reported as not held by the {past.reported_by}; "
        "if it did take place, send correct_meeting_report",
        FieldProblem(field=field, message=f"is meeting {number}, which a party reported as not held"),
    )


def _already(past: PastMeeting, field: str) -> Rejection:
    """A report of a meeting that is over: held (a repeated report) or cancelled."""
    what = "was already recorded as held" if past.outcome == "held" else "was cancelled"
    hint = "" if field == "meeting_number" else "; to record another meeting, give its meeting_number"
    return refuse(
        RefusalCode.CONFLICT,
        f"meeting {past.meeting_number} (planned for {past.starts_at.isoformat()}) {what}{hint}",
        FieldProblem(field=field, message=f"is meeting {past.meeting_number}, which {what}"),
    )
