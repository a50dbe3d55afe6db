"""Meetings: the cadence keeps the next meeting scheduled; the parties report, cancel and move
meetings; time asks for an agenda, reminds, and counts an unreported meeting as missed.

**Reports.** A meeting's outcome is a party's report — `record_meeting` (held) or
`report_meeting_not_held` — or, when nobody reported it in time, the deadline's miss.
A meeting counted missed by the deadline alone still takes either report (a late one:
what the "did it take place?" message asks for). A party's report is changed only by
`correct_meeting_report`, by either party, within `REPORT_CORRECTABLE_FOR` of the
meeting's planned start; it counts the meeting anew (`MeetingHeld` as a correction, or
`MeetingMissed`), so counts, health and the misses in a row are what the right report
would have made them. A feedback round already asked for stays asked for; the next one
comes when the count of meetings held first passes the next multiple.

When a meeting falls and which meeting a report is about: events/cadence.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from events.cadence import beyond_the_term, meeting_reported, plan_next_meeting
from events.commands import (
    CancelMeeting,
    CorrectMeetingReport,
    Party,
    RecordMeeting,
    ReportMeetingNotHeld,
    RescheduleMeeting,
)
from events.decision import CADENCE_PHASES, PARTIES, Changes, Emitter, Pause, Stage
from events.model import (
    AgendaRequested,
    FeedbackRequested,
    MeetingCancelled,
    MeetingHeld,
    MeetingMissed,
    MeetingReminderIssued,
    MeetingReportCorrected,
    MeetingReportedNotHeld,
    MeetingRescheduled,
    MeetingScheduled,
)
from events.refusals import FieldProblem, RefusalCode, Rejection, limit, limits, refuse
from events.state import (
    CADENCE_RULES,
    LEGACY_CADENCE_RULES,
    MeetingOutcome,
    PastMeeting,
    RelationshipState,
    ScheduledMeeting,
)

# The rule generations are the state's (events/state.py); the workflow's cadence gate takes
# them from here with `under_cadence_rules`.
__all__ = [
    "CADENCE_RULES",
    "LEGACY_CADENCE_RULES",
    "MAX_RESCHEDULE_AHEAD",
    "MEETING_CLOCK_SKEW",
    "REPORT_CORRECTABLE_FOR",
    "schedule_next_meeting",
    "stage",
    "under_cadence_rules",
]

# How far in the future `held_at` may lie: clocks of senders and servers disagree by
# minutes, and a report sent from a meeting's own calendar entry may carry its end. A meeting
# reported further ahead is a clock or input error, not a meeting (refused as `limit`).
MEETING_CLOCK_SKEW = timedelta(hours=1)
# A meeting is rescheduled at most this far ahead: beyond it is an input error (and a date
# near the end of the calendar would overflow the deadlines computed from it).
MAX_RESCHEDULE_AHEAD = timedelta(days=366)
# How long after a meeting's planned start a party may correct what was reported about it:
# longer than the one-click links in the emails about it live, and than the rhythm of
# meetings, so the other party sees a mistaken report in time; after that the record stands.
REPORT_CORRECTABLE_FOR = timedelta(days=30)

stage = Stage("meetings")


def under_cadence_rules(state: RelationshipState, rules: int | None) -> RelationshipState:
    """The state to decide on under `rules` (None: the state's own). The workflow passes
    LEGACY_CADENCE_RULES for a run that made decisions by them (a `workflow.patched` gate)."""
    if rules is None or rules == state.cadence_rules:
        return state
    return state.model_copy(update={"cadence_rules": rules})


def schedule_next_meeting(emit: Emitter) -> None:
    """Schedule the next meeting if none is (or move one left past the end of the term into
    it), by the rules in events/cadence.py; nothing when the term has no room for it."""
    state = emit.current
    planned = plan_next_meeting(state, emit.now)
    if planned is None:
        return
    number, starts_at = planned
    assert state.agreement is not None
    ends_at = starts_at + timedelta(minutes=state.agreement.terms.meeting_minutes)
    emit(MeetingScheduled, meeting_number=number, starts_at=starts_at, ends_at=ends_at)


@stage.command(RecordMeeting, phases=CADENCE_PHASES, senders=PARTIES, pause=Pause.NOT_PAUSED)
def record_meeting(command: RecordMeeting, emit: Emitter, party: Party) -> Rejection | None:
    state = emit.current
    if rejection := _held_at_allowed(state, command.held_at, emit.now):
        return rejection
    reported = meeting_reported(state, command)
    if isinstance(reported, Rejection):
        return reported
    number, correction = reported
    _held(emit, number, correction, command.held_at, command.duration_minutes, command.actor_id, command.notes)
    return None


def _held_at_allowed(state: RelationshipState, held_at: datetime, now: datetime) -> Rejection | None:
    assert state.activated_at is not None
    if held_at > now + MEETING_CLOCK_SKEW:
        return limit("held_at", "is in the future")
    if held_at < state.activated_at:
        return limit("held_at", "is before the agreement took effect")
    return None


def _held(emit: Emitter, number: int, correction: bool, held_at: datetime, minutes: int, by: str, notes: str = "") -> None:
    """Meeting `number` was held (`correction`: it had been counted missed)."""
    state = emit.current
    emit(
        MeetingHeld,
        meeting_number=number,
        correction=correction,
        held_at=held_at,
        duration_minutes=minutes,
        recorded_by=by,
        notes=notes,
    )
    # A corrected meeting counts as held too, so it may complete a feedback round; each
    # count asks once, however corrections move it back and forth.
    every = state.settings.feedback_every_sessions
    held_count = emit.current.meetings_held
    if held_count % every == 0 and held_count > state.feedback_requested_after:
        emit(FeedbackRequested, feedback_round=state.feedback_round + 1, after_meeting=held_count)


@stage.command(ReportMeetingNotHeld, phases=CADENCE_PHASES, senders=PARTIES, condition="once the meeting has begun")
def report_meeting_not_held(command: ReportMeetingNotHeld, emit: Emitter, party: Party) -> Rejection | None:
    state, number = emit.current, command.meeting_number
    scheduled = state.next_meeting
    if scheduled is not None and scheduled.meeting_number == number:
        if scheduled.starts_at > emit.now:
            return refuse(
                RefusalCode.LIMIT,
                f"meeting {number} has not begun (it is planned for {scheduled.starts_at.isoformat()}); "
                "to call it off, send cancel_meeting",
                FieldProblem(field="meeting_number", message="has not begun yet"),
            )
        emit(MeetingMissed, meeting_number=number, starts_at=scheduled.starts_at)
    else:
        past = _past_meeting(state, number)
        if isinstance(past, Rejection):
            return past
        if past.outcome == "held":
            return refuse(
                RefusalCode.CONFLICT,
                f"meeting {number} was recorded as held; if it did not take place, send correct_meeting_report",
            )
        if past.reported_by is not None:
            return refuse(RefusalCode.CONFLICT, f"meeting {number} was already reported as not held (by the {past.reported_by})")
    emit(MeetingReportedNotHeld, meeting_number=number, party=party, reported_by=command.actor_id, reason=command.reason)
    return None


@stage.command(
    CorrectMeetingReport,
    phases=CADENCE_PHASES,
    senders=PARTIES,
    condition=f"within {REPORT_CORRECTABLE_FOR.days} days of the meeting's planned start",
)
def correct_meeting_report(command: CorrectMeetingReport, emit: Emitter, party: Party) -> Rejection | None:
    state, number = emit.current, command.meeting_number
    if command.outcome == "not_held":
        given = (name for name in ("held_at", "duration_minutes") if getattr(command, name) is not None)
        if rejection := limits([FieldProblem(field=name, message="only goes with outcome held") for name in given]):
            return rejection
    past = _past_meeting(state, number)
    if isinstance(past, Rejection):
        return past
    if emit.now > past.starts_at + REPORT_CORRECTABLE_FOR:
        days = REPORT_CORRECTABLE_FOR.days
        return limit("meeting_number", f"was planned more than {days} days ago: its record can no longer be corrected")
    if (command.outcome == "held") == (past.outcome == "held"):
        counted = "held" if past.outcome == "held" else "not held"
        return refuse(RefusalCode.CONFLICT, f"meeting {number} is already counted as {counted}")
    if command.outcome == "held":
        held_at = command.held_at or past.starts_at
        if rejection := _held_at_allowed(state, held_at, emit.now):
            return rejection
        assert state.agreement is not None
        minutes = command.duration_minutes or state.agreement.terms.meeting_minutes
        _held(emit, number, True, held_at, minutes, command.actor_id)
    else:
        emit(MeetingMissed, meeting_number=number, starts_at=past.starts_at)
    emit(
        MeetingReportCorrected,
        meeting_number=number,
        outcome=command.outcome,
        party=party,
        corrected_by=command.actor_id,
        reason=command.reason,
    )
    return None


def _past_meeting(state: RelationshipState, number: int) -> PastMeeting | Rejection:
    """Meeting `number` as reported (held) or counted missed; refused if it is the scheduled
    one, was cancelled or is not known."""
    past = next((m for m in state.past_meetings if m.meeting_number == number), None)
    if past is not None and past.outcome != "cancelled":
        return past
    if past is not None:
        return refuse(RefusalCode.CONFLICT, f"meeting {number} was cancelled")
    scheduled = state.next_meeting is not None and state.next_meeting.meeting_number == number
    problem = "is the scheduled meeting, not yet reported" if scheduled else "is no meeting held or missed"
    return refuse(RefusalCode.NOT_FOUND, f"meeting {number} {problem}", FieldProblem(field="meeting_number", message=problem))


def _scheduled(state: RelationshipState, command: CancelMeeting | RescheduleMeeting) -> Rejection | None:
    meeting = state.next_meeting
    if meeting is None or meeting.meeting_number != command.meeting_number:
        current = f"meeting {meeting.meeting_number}" if meeting else "none"
        return refuse(RefusalCode.NOT_FOUND, f"meeting {command.meeting_number} is not the scheduled meeting (that is {current})")
    return None


def _is_late(state: RelationshipState, now: datetime) -> bool:
    assert state.next_meeting is not None and state.agreement is not None
    notice = timedelta(hours=state.agreement.terms.cancellation_notice_hours)
    return now > state.next_meeting.starts_at - notice


@stage.command(CancelMeeting, phases=CADENCE_PHASES, senders=PARTIES, pause=Pause.NOT_PAUSED)
def cancel_meeting(command: CancelMeeting, emit: Emitter, party: Party) -> Rejection | None:
    state = emit.current
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


@stage.command(RescheduleMeeting, phases=CADENCE_PHASES, senders=PARTIES, pause=Pause.NOT_PAUSED)
def reschedule_meeting(command: RescheduleMeeting, emit: Emitter, party: Party) -> Rejection | None:
    state = emit.current
    if rejection := _scheduled(state, command):
        return rejection
    if command.starts_at <= emit.now:
        return limit("starts_at", "is not in the future")
    if command.starts_at > emit.now + MAX_RESCHEDULE_AHEAD:
        return limit("starts_at", f"is more than {MAX_RESCHEDULE_AHEAD.days} days ahead")
    assert state.agreement is not None and state.term_ends_at is not None
    ends_at = command.starts_at + timedelta(minutes=state.agreement.terms.meeting_minutes)
    if state.cadence_rules != LEGACY_CADENCE_RULES and beyond_the_term(state, ends_at):
        return limit("starts_at", f"would end after the term ({state.term_ends_at.isoformat()})")
    emit(
        MeetingRescheduled,
        meeting_number=command.meeting_number,
        starts_at=command.starts_at,
        ends_at=ends_at,
        party=party,
        rescheduled_by=command.actor_id,
        late=_is_late(state, emit.now),
    )
    return None


@stage.deadline("agenda_request")
def request_agenda(emit: Emitter) -> None:
    meeting = emit.current.next_meeting
    assert meeting is not None
    emit(AgendaRequested, meeting_number=meeting.meeting_number, starts_at=meeting.starts_at)


@stage.deadline("meeting_reminder")
def remind_of_meeting(emit: Emitter) -> None:
    meeting = emit.current.next_meeting
    assert meeting is not None
    emit(MeetingReminderIssued, meeting_number=meeting.meeting_number, starts_at=meeting.starts_at)


@stage.deadline("meeting_missed")
def meeting_missed(emit: Emitter) -> None:
    meeting = emit.current.next_meeting
    assert meeting is not None
    emit(MeetingMissed, meeting_number=meeting.meeting_number, starts_at=meeting.starts_at)


# -- state changes ---------------------------------------------------------------------------


def _replanned(meeting: ScheduledMeeting, starts_at: datetime, ends_at: datetime) -> ScheduledMeeting:
    """The same meeting at another time: a new revision of its invite, agenda and reminder due again."""
    again = {"starts_at": starts_at, "ends_at": ends_at, "revision": meeting.revision + 1}
    return meeting.model_copy(update={**again, "agenda_requested": False, "reminded": False})


@stage.evolves(MeetingScheduled)
def _scheduled_meeting(event: MeetingScheduled, state: RelationshipState) -> Changes:
    meeting = state.next_meeting
    if meeting is not None and meeting.meeting_number == event.meeting_number:
        # Planned again (it lay past the end of the term).
        planned = _replanned(meeting, event.starts_at, event.ends_at)
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


def _past(
    state: RelationshipState, number: int, starts_at: datetime, outcome: MeetingOutcome, **details: object
) -> tuple[PastMeeting, ...]:
    """The past meetings with meeting `number` recorded as `outcome` (replacing its record)."""
    kept = tuple(m for m in state.past_meetings if m.meeting_number != number)
    past = PastMeeting.model_validate({"meeting_number": number, "starts_at": starts_at, "outcome": outcome, **details})
    return tuple(sorted((*kept, past), key=lambda m: m.meeting_number))


def _reported_by(state: RelationshipState, number: int, party: Party) -> Changes:
    return {"past_meetings": tuple(
        m.model_copy(update={"reported_by": party}) if m.meeting_number == number else m for m in state.past_meetings
    )}  # fmt: skip


def _update_meeting(state: RelationshipState, **fields: object) -> ScheduledMeeting:
    assert state.next_meeting is not None
    return state.next_meeting.model_copy(update=fields)


@stage.evolves(AgendaRequested)
def _agenda_requested(event: AgendaRequested, state: RelationshipState) -> Changes:
    return {"next_meeting": _update_meeting(state, agenda_requested=True)}


@stage.evolves(MeetingReminderIssued)
def _reminded(event: MeetingReminderIssued, state: RelationshipState) -> Changes:
    return {"next_meeting": _update_meeting(state, reminded=True)}


@stage.evolves(MeetingHeld)
def _meeting_held(event: MeetingHeld, state: RelationshipState) -> Changes:
    last = state.last_meeting_at
    details = {
        "held_at": event.held_at,
        "duration_minutes": event.duration_minutes,
        "reported_by": state.party_of(event.recorded_by),
    }
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
            changes["past_meetings"] = _past(state, missed.meeting_number, missed.starts_at, "held", **details)
    else:
        changes["consecutive_missed"] = 0
        if state.next_meeting is not None and state.next_meeting.meeting_number == event.meeting_number:
            changes["next_meeting"] = None
            changes["past_meetings"] = _past(state, event.meeting_number, state.next_meeting.starts_at, "held", **details)
    return changes


@stage.evolves(MeetingCancelled)
def _cancelled(event: MeetingCancelled, state: RelationshipState) -> Changes:
    changes: Changes = {
        "next_meeting": None,
        "meetings_cancelled": state.meetings_cancelled + 1,
        "late_cancellations": state.late_cancellations + (1 if event.late else 0),
    }
    if state.next_meeting is not None:
        changes["past_meetings"] = _past(state, event.meeting_number, state.next_meeting.starts_at, "cancelled")
    return changes


@stage.evolves(MeetingRescheduled)
def _rescheduled(event: MeetingRescheduled, state: RelationshipState) -> Changes:
    assert state.next_meeting is not None
    return {
        "next_meeting": _replanned(state.next_meeting, event.starts_at, event.ends_at),
        "late_cancellations": state.late_cancellations + (1 if event.late else 0),
        "last_scheduled_start": event.starts_at,
    }


@stage.evolves(MeetingMissed)
def _missed(event: MeetingMissed, state: RelationshipState) -> Changes:
    number = event.meeting_number
    was = next((m for m in state.past_meetings if m.meeting_number == number), None)
    past = _past(state, number, event.starts_at, "missed")
    changes: Changes = {
        "meetings_missed": state.meetings_missed + 1,
        "missed_meeting_numbers": tuple(sorted({*state.missed_meeting_numbers, number})),
        "past_meetings": past,
    }
    if state.next_meeting is not None and state.next_meeting.meeting_number == number:
        changes["next_meeting"] = None
    if was is not None and was.outcome == "held":
        changes.update(_no_longer_held(state, was, past))
    else:
        changes["consecutive_missed"] = state.consecutive_missed + 1
    return changes


def _no_longer_held(state: RelationshipState, was: PastMeeting, past: tuple[PastMeeting, ...]) -> Changes:
    """A meeting recorded as held is corrected to not held: it leaves the count, the minutes,
    the last meeting (the latest held one before it) and ends no run of misses any more."""
    held = [m for m in past if m.outcome == "held"]
    latest_held = max((m.meeting_number for m in held), default=0)
    run = sum(1 for m in past if m.outcome == "missed" and m.meeting_number > latest_held)
    last = state.last_meeting_at
    if was.held_at is None or last is None or was.held_at >= last:
        last = max((m.held_at or m.starts_at for m in held), default=None)
    return {
        "meetings_held": state.meetings_held - 1,
        "meeting_minutes_total": state.meeting_minutes_total - (was.duration_minutes or 0),
        "last_meeting_at": last,
        "consecutive_missed": max(state.consecutive_missed, run),
    }


@stage.evolves(MeetingReportedNotHeld)
def _reported_not_held(event: MeetingReportedNotHeld, state: RelationshipState) -> Changes:
    return _reported_by(state, event.meeting_number, event.party)


@stage.evolves(MeetingReportCorrected)
def _report_corrected(event: MeetingReportCorrected, state: RelationshipState) -> Changes:
    return _reported_by(state, event.meeting_number, event.party)
