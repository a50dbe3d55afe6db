"""Meetings: the cadence keeps the next meeting scheduled; the parties report, cancel and move
meetings; time asks for an agenda, reminds, and counts an unreported meeting as missed.

When a meeting falls and which meeting a report is about: events/cadence.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from events.cadence import beyond_the_term, meeting_reported, plan_next_meeting
from events.commands import CancelMeeting, Party, RecordMeeting, RescheduleMeeting
from events.decision import CADENCE_PHASES, PARTIES, Changes, Emitter, Pause, Stage
from events.model import (
    AgendaRequested,
    FeedbackRequested,
    MeetingCancelled,
    MeetingHeld,
    MeetingMissed,
    MeetingReminderIssued,
    MeetingRescheduled,
    MeetingScheduled,
)
from events.refusals import RefusalCode, Rejection, limit, refuse
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
    assert state.activated_at is not None
    if command.held_at > emit.now + MEETING_CLOCK_SKEW:
        return limit("held_at", "is in the future")
    if command.held_at < state.activated_at:
        return limit("held_at", "is before the agreement took effect")
    reported = meeting_reported(state, command)
    if isinstance(reported, Rejection):
        return reported
    number, correction = reported
    emit(
        MeetingHeld,
        meeting_number=number,
        correction=correction,
        held_at=command.held_at,
        duration_minutes=command.duration_minutes,
        recorded_by=command.actor_id,
        notes=command.notes,
    )
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


def _past(state: RelationshipState, number: int, starts_at: datetime, outcome: MeetingOutcome) -> tuple[PastMeeting, ...]:
    """The past meetings with meeting `number` recorded as `outcome` (replacing its record)."""
    kept = tuple(m for m in state.past_meetings if m.meeting_number != number)
    past = PastMeeting(meeting_number=number, starts_at=starts_at, outcome=outcome)
    return tuple(sorted((*kept, past), key=lambda m: m.meeting_number))


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
def _held(event: MeetingHeld, state: RelationshipState) -> Changes:
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
    return {
        "next_meeting": None,
        "meetings_missed": state.meetings_missed + 1,
        "missed_meeting_numbers": (*state.missed_meeting_numbers, event.meeting_number),
        "consecutive_missed": state.consecutive_missed + 1,
        "past_meetings": _past(state, event.meeting_number, event.starts_at, "missed"),
    }
