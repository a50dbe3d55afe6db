"""Meetings: scheduling in both parties' availability, reports, misses, cancellations, moves."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from events.commands import (
    CancelMeeting, CorrectMeetingReport, PartyAvailability, RecordMeeting, ReportMeetingNotHeld, RescheduleMeeting,
)  # fmt: skip
from events.deadlines import next_deadline
from events.cadence import FIRST_MEETING_WITHIN, MIN_SCHEDULING_LEAD
from events.meetings import REPORT_CORRECTABLE_FOR
from events.model import (
    AgendaRequested, FeedbackRequested, Health, HealthChanged, MeetingCancelled, MeetingHeld, MeetingMissed, MeetingReminderIssued,
    MeetingReportCorrected, MeetingReportedNotHeld, MeetingRescheduled, MeetingScheduled,
)
from events.notifications import Notification
from events.scheduling import SEARCH_DAYS, next_slot
from events.settings import FREQUENCY_DAYS, FREQUENCY_ORDER
from events.state import Phase
from tests.support.domain_story import (
    COORDINATOR, MENTEE, MENTEE_IN_KOLKATA, MENTOR, MENTOR_IN_NEW_YORK, MONDAY, SECRET, STREAM, T0, active, available, in_review,
    in_window, programme, types, window,
)

# --- scheduling in both parties' availability ---------------------------------------------

KOLKATA, NEW_YORK = ZoneInfo("Asia/Kolkata"), ZoneInfo("America/New_York")


def test_without_availability_the_slot_is_the_due_time_itself() -> None:
    due = datetime(2025, 3, 5, 7, 7, tzinfo=UTC)
    assert next_slot(due, (), 60) == due


@pytest.mark.parametrize(
    ("not_before", "expected_utc", "new_york", "kolkata"),
    [
        # New York on EST (UTC-5): 09:00 there is 14:00 UTC, 19:30 in Kolkata.
        (datetime(2025, 3, 3, 0, 0, tzinfo=UTC), datetime(2025, 3, 3, 14, 0, tzinfo=UTC), time(9, 0), time(19, 30)),
        # After the switch to EDT on 9 March the same local hour is 13:00 UTC, 18:30 in Kolkata
        # (India keeps no daylight saving time).
        (datetime(2025, 3, 10, 0, 0, tzinfo=UTC), datetime(2025, 3, 10, 13, 0, tzinfo=UTC), time(9, 0), time(18, 30)),
        # Asked for mid-week: the next Monday.
        (datetime(2025, 3, 12, 0, 0, tzinfo=UTC), datetime(2025, 3, 17, 13, 0, tzinfo=UTC), time(9, 0), time(18, 30)),
        # Already inside the window: the next quarter hour that still leaves 60 minutes.
        (datetime(2025, 3, 10, 13, 7, tzinfo=UTC), datetime(2025, 3, 10, 13, 15, tzinfo=UTC), time(9, 15), time(18, 45)),
        # Too late in the window for a whole meeting: a week later.
        (datetime(2025, 3, 10, 13, 31, tzinfo=UTC), datetime(2025, 3, 17, 13, 0, tzinfo=UTC), time(9, 0), time(18, 30)),
    ],
)
def test_a_slot_lies_in_both_windows_across_time_zones_and_daylight_saving_time(
    not_before: datetime, expected_utc: datetime, new_york: time, kolkata: time
) -> None:
    slot = next_slot(not_before, (MENTEE_IN_KOLKATA, MENTOR_IN_NEW_YORK), 60)
    assert slot == expected_utc
    assert slot.astimezone(NEW_YORK).time() == new_york and slot.astimezone(KOLKATA).time() == kolkata
    assert in_window(slot, 60, MENTEE_IN_KOLKATA) and in_window(slot, 60, MENTOR_IN_NEW_YORK)


def test_a_slot_can_fall_on_different_weekdays_for_each_party() -> None:
    # Tuesday 07:00 in Tokyo is Monday 14:00 in Los Angeles (PST).
    tokyo = available("mentee", "Asia/Tokyo", window(1, "07:00", "08:00"))
    los_angeles = available("mentor", "America/Los_Angeles", window(MONDAY, "14:00", "16:00"))
    slot = next_slot(datetime(2025, 1, 6, tzinfo=UTC), (tokyo, los_angeles), 60)
    assert slot == datetime(2025, 1, 6, 22, 0, tzinfo=UTC)
    assert slot.astimezone(ZoneInfo("Asia/Tokyo")).weekday() == 1
    assert slot.astimezone(ZoneInfo("America/Los_Angeles")).weekday() == MONDAY


@pytest.mark.parametrize(
    "mentor",
    [
        # 17:00–18:00 in New York never meets 19:00–20:00 in Kolkata.
        available("mentor", "America/New_York", window(MONDAY, "17:00", "18:00")),
        # They overlap for only 30 minutes: too short for a 60-minute meeting.
        available("mentor", "America/New_York", window(MONDAY, "08:00", "09:00")),
    ],
)
def test_without_a_common_slot_the_meeting_falls_back_to_the_due_time(mentor: PartyAvailability) -> None:
    mentee = available("mentee", "Asia/Kolkata", window(MONDAY, "19:00", "20:00"))
    due = datetime(2025, 3, 12, 9, 0, tzinfo=UTC)
    assert next_slot(due, (mentee, mentor), 60) == due


def test_daylight_saving_time_can_part_two_windows_for_months_and_the_search_stops_at_its_horizon() -> None:
    # Monday 17:00 in New York is Tuesday 09:00 in Sydney only while they are 16 hours apart:
    # from 9 March (New York on EDT) until 2 November (New York back on EST) they never meet.
    new_york = available("mentor", "America/New_York", window(MONDAY, "17:00", "18:00"))
    sydney = available("mentee", "Australia/Sydney", window(1, "09:00", "10:00"))
    both = (sydney, new_york)
    assert next_slot(datetime(2025, 2, 24, tzinfo=UTC), both, 60) == datetime(2025, 2, 24, 22, 0, tzinfo=UTC)
    assert next_slot(datetime(2025, 3, 10, tzinfo=UTC), both, 60) == datetime(2025, 3, 10, tzinfo=UTC)
    # 3 November is 26 days after 8 October: found; from 6 October it lies beyond SEARCH_DAYS.
    assert SEARCH_DAYS == 28
    assert next_slot(datetime(2025, 10, 8, tzinfo=UTC), both, 60) == datetime(2025, 11, 3, 22, 0, tzinfo=UTC)
    assert next_slot(datetime(2025, 10, 6, tzinfo=UTC), both, 60) == datetime(2025, 10, 6, tzinfo=UTC)


def test_the_cadence_places_every_meeting_in_both_windows_through_a_dst_change() -> None:
    availability = (
        available("mentee", "Asia/Kolkata", window(MONDAY, "18:00", "23:30"), window(3, "18:00", "23:30")),
        available("mentor", "America/New_York", window(MONDAY, "08:00", "12:00")),
    )
    start = datetime(2025, 2, 24, 12, 0, tzinfo=UTC)  # two weeks before New York moves its clocks
    story = active(now=start, meeting_frequency="weekly", availability=availability)
    for _ in range(4):
        story.meet()
    scheduled = story.of_type(MeetingScheduled)
    assert len(scheduled) == 5
    for earlier, later in itertools.pairwise(scheduled):
        # One meeting a week, on the same local day: the clock change neither skips nor doubles one.
        assert (later.starts_at.astimezone(KOLKATA).date() - earlier.starts_at.astimezone(KOLKATA).date()).days == 7
    for meeting in scheduled:
        assert all(in_window(meeting.starts_at, 60, party) for party in availability)
        assert meeting.ends_at - meeting.starts_at == timedelta(minutes=60)
    # Each at the first slot both share that day. On EST that opens the mentor's window
    # (08:00, 18:30 in Kolkata); on EDT New York's 08:00 is 17:30 in Kolkata, before the
    # mentee's window: 08:30 then, when the mentee's opens.
    assert [m.starts_at.astimezone(NEW_YORK).time() for m in scheduled] == [time(8, 0)] + [time(8, 30)] * 4
    assert scheduled[0].starts_at == datetime(2025, 3, 3, 13, 0, tzinfo=UTC)
    assert scheduled[1].starts_at == datetime(2025, 3, 10, 12, 30, tzinfo=UTC)


def test_the_cadence_falls_back_to_the_due_time_when_the_parties_never_overlap() -> None:
    availability = (
        available("mentee", "Asia/Kolkata", window(MONDAY, "19:00", "20:00")),
        available("mentor", "America/New_York", window(MONDAY, "17:00", "18:00")),
    )
    story = active(availability=availability)
    assert story.meeting.starts_at == story.state.activated_at + MIN_SCHEDULING_LEAD  # type: ignore[operator]


def test_one_partys_availability_is_enough_to_place_the_meeting() -> None:
    mentor = available("mentor", "Europe/Berlin", window(2, "16:00", "18:00"))  # Wednesdays
    story = active(availability=(mentor,))
    starts_at = story.meeting.starts_at
    assert starts_at >= story.state.activated_at + MIN_SCHEDULING_LEAD  # type: ignore[operator]
    assert in_window(starts_at, 60, mentor)
    assert starts_at == datetime(2025, 1, 8, 15, 0, tzinfo=UTC)  # 16:00 in Berlin (CET), two days on


# --- meetings -----------------------------------------------------------------------------

CALENDAR_FIELDS = ("meeting_number", "meeting_start", "meeting_end", "meeting_uid", "meeting_sequence")


def calendar_fields(notification: Notification) -> dict[str, str]:
    """What the email channel builds the .ics invite from."""
    return {key: notification.data[key] for key in CALENDAR_FIELDS}


def test_the_first_meeting_is_within_a_week_whatever_the_rhythm_and_then_in_the_rhythm() -> None:
    for frequency in FREQUENCY_ORDER:
        story = active(meeting_frequency=frequency, term_months=12)
        first = story.meeting
        assert (first.meeting_number, first.starts_at) == (1, T0 + MIN_SCHEDULING_LEAD)
        assert first.starts_at <= T0 + FIRST_MEETING_WITHIN
        story.meet()
        second = story.meeting
        assert second.meeting_number == 2
        assert second.starts_at == first.starts_at + timedelta(days=FREQUENCY_DAYS[frequency])


def test_an_early_meeting_completes_the_scheduled_one_and_the_rhythm_continues_from_it() -> None:
    story = active()
    scheduled = story.meeting
    story.advance(timedelta(days=2))
    held, next_scheduled = story.do(RecordMeeting, MENTOR, held_at=story.now, duration_minutes=50, notes=f"{SECRET} x")
    assert isinstance(held, MeetingHeld) and (held.meeting_number, held.correction) == (1, False)
    assert isinstance(next_scheduled, MeetingScheduled) and next_scheduled.meeting_number == 2
    # Due two weeks after the later of the meeting held and the meeting planned.
    assert next_scheduled.starts_at == scheduled.starts_at + timedelta(days=14)
    assert (story.state.meetings_held, story.state.meeting_minutes_total, story.state.last_meeting_at) == (1, 50, story.now)


def test_agenda_request_and_reminder_go_out_lead_hours_before_the_meeting() -> None:
    story = active(programme(agenda_request_lead_hours=72, meeting_reminder_lead_hours=12))
    starts_at = story.meeting.starts_at
    deadline = next_deadline(story.state)
    assert deadline is not None and (deadline.kind, deadline.at) == ("agenda_request", starts_at - timedelta(hours=72))
    [agenda] = story.advance(to=deadline.at)
    assert isinstance(agenda, AgendaRequested) and (agenda.meeting_number, agenda.starts_at) == (1, starts_at)
    assert story.state.next_meeting is not None and story.state.next_meeting.agenda_requested
    deadline = next_deadline(story.state)
    assert deadline is not None and (deadline.kind, deadline.at) == ("meeting_reminder", starts_at - timedelta(hours=12))
    [reminder] = story.advance(to=deadline.at)
    assert isinstance(reminder, MeetingReminderIssued) and reminder.meeting_number == 1
    # One of each per meeting: next comes the check whether it took place.
    deadline = next_deadline(story.state)
    assert deadline is not None and deadline.kind == "meeting_missed"
    agenda_to, reminder_to = (
        [n.recipient_id for n in story.notifications() if n.template == template]
        for template in ("agenda_request", "meeting_reminder")
    )
    assert (agenda_to, reminder_to) == ([MENTEE], [MENTEE, MENTOR])


@pytest.mark.parametrize(("policy", "recipients"), [("both_share", [MENTEE, MENTOR]), ("no_agenda", [])])
def test_the_agenda_policy_decides_who_is_asked_for_an_agenda(policy: str, recipients: list[str]) -> None:
    story = active(agenda_policy=policy)
    story.meet()
    assert [n.recipient_id for n in story.notifications() if n.template == "agenda_request"] == recipients
    assert bool(story.of_type(AgendaRequested)) == bool(recipients)


def test_a_meeting_nobody_reports_is_missed_after_the_grace_period_and_can_be_corrected() -> None:
    story = active(programme(missed_meeting_grace_hours=12, missed_meetings_at_risk=1))
    meeting = story.meeting
    grace_ends = meeting.ends_at + timedelta(hours=12)
    assert story.advance(to=grace_ends - timedelta(seconds=1))[-1].type == "MeetingReminderIssued"
    missed, scheduled, at_risk = story.advance(to=grace_ends)
    assert isinstance(missed, MeetingMissed) and (missed.meeting_number, missed.starts_at) == (1, meeting.starts_at)
    assert isinstance(scheduled, MeetingScheduled) and scheduled.meeting_number == 2
    assert scheduled.starts_at == meeting.starts_at + timedelta(days=14)
    assert isinstance(at_risk, HealthChanged) and (at_risk.health, at_risk.reasons) == (Health.AT_RISK, ("missed_meetings",))
    assert (story.state.meetings_missed, story.state.missed_meeting_numbers, story.state.consecutive_missed) == (1, (1,), 1)
    check = [n for n in story.notifications() if n.template == "meeting_missed_check"]
    assert [n.recipient_id for n in check] == [MENTEE, MENTOR] and check[0].data["meeting_number"] == "1"

    # It did take place after all: the record is corrected, the scheduled meeting 2 stays.
    story.advance(timedelta(days=1))
    assert story.refuse(RecordMeeting, MENTEE, held_at=meeting.starts_at, duration_minutes=60, meeting_number=7) == (
        "meeting 7 is neither the next meeting nor one marked missed"
    )
    corrected, restored = story.do(RecordMeeting, MENTEE, held_at=meeting.starts_at, duration_minutes=55, meeting_number=1)
    assert isinstance(corrected, MeetingHeld) and (corrected.meeting_number, corrected.correction) == (1, True)
    assert isinstance(restored, HealthChanged) and restored.health is Health.HEALTHY
    state = story.state
    assert (state.meetings_held, state.meetings_missed, state.missed_meeting_numbers, state.consecutive_missed) == (1, 0, (), 0)
    assert state.next_meeting is not None and state.next_meeting.meeting_number == 2
    assert state.last_meeting_at == meeting.starts_at
    # Reported again: the same meeting never counts twice.
    assert "meeting 1 (planned for 2025-01-07T09:00:00+00:00) was already recorded as held" == story.refuse(
        RecordMeeting, MENTEE, held_at=meeting.starts_at, duration_minutes=60, meeting_number=1
    )


def test_correcting_an_older_miss_keeps_the_run_of_later_misses() -> None:
    story = active(programme(missed_meetings_at_risk=2), term_months=12, meeting_frequency="weekly")
    for _ in range(2):
        story.advance(to=story.meeting.ends_at + timedelta(hours=48))
    assert story.state.consecutive_missed == 2 and "missed_meetings" in story.state.health_reasons
    story.do(RecordMeeting, MENTOR, held_at=story.now - timedelta(days=8), duration_minutes=60, meeting_number=1)
    # Meeting 2 was still missed, right after it: one miss in a row.
    assert story.state.consecutive_missed == 1 and "missed_meetings" not in story.state.health_reasons
    story.advance(to=story.meeting.ends_at + timedelta(hours=48))
    assert story.state.consecutive_missed == 2 and "missed_meetings" in story.state.health_reasons
    story.do(RecordMeeting, MENTOR, held_at=story.now - timedelta(days=2), duration_minutes=60, meeting_number=3)
    assert story.state.consecutive_missed == 0


FRIDAYS = available("mentor", "UTC", window(4, "09:00", "17:00"))


def test_a_meeting_cancelled_with_the_agreed_notice_is_not_late_and_the_next_one_follows_in_the_rhythm() -> None:
    # Available on Fridays only: the first meeting, that Friday, is more than 48 hours ahead.
    story = active(cancellation_notice_hours=48, availability=(FRIDAYS,))
    meeting = story.meeting
    story.advance(to=meeting.starts_at - timedelta(hours=48))
    assert story.refuse(CancelMeeting, MENTEE, meeting_number=2) == (
        "meeting 2 is not the scheduled meeting (that is meeting 1)"
    )
    cancelled, scheduled = story.do(CancelMeeting, MENTEE, meeting_number=1, reason=f"{SECRET} family")
    assert isinstance(cancelled, MeetingCancelled) and (cancelled.party, cancelled.late) == ("mentee", False)
    assert isinstance(scheduled, MeetingScheduled) and scheduled.meeting_number == 2
    assert scheduled.starts_at == meeting.starts_at + timedelta(days=14)
    assert (story.state.meetings_cancelled, story.state.late_cancellations) == (1, 0)
    [note, *_] = [n for n in story.notifications() if n.template == "meeting_cancelled"]
    assert note.data["late"] == "false" and note.data["cancelled_by"] == "mentee"
    assert note.data["meeting_start"] == meeting.starts_at.isoformat()
    assert note.data["meeting_uid"] == f"{STREAM}-meeting-1@mentorflow"


def test_a_late_cancellation_is_recorded_as_late() -> None:
    story = active(cancellation_notice_hours=48)
    meeting = story.meeting
    story.advance(to=meeting.starts_at - timedelta(hours=47))
    cancelled, _ = story.do(CancelMeeting, MENTOR, meeting_number=1)
    assert isinstance(cancelled, MeetingCancelled) and (cancelled.party, cancelled.late) == ("mentor", True)
    assert (story.state.meetings_cancelled, story.state.late_cancellations) == (1, 1)


def test_rescheduling_bumps_the_revision_and_rearms_agenda_and_reminder() -> None:
    story = active()
    meeting = story.meeting
    story.advance(to=meeting.starts_at - timedelta(hours=20))
    assert story.state.next_meeting is not None and story.state.next_meeting.reminded
    assert "is not in the future" in story.refuse(RescheduleMeeting, MENTEE, meeting_number=1, starts_at=story.now)
    assert "not the scheduled meeting" in story.refuse(
        RescheduleMeeting, MENTEE, meeting_number=2, starts_at=story.now + timedelta(days=3)
    )

    new_start = meeting.starts_at + timedelta(days=3, hours=2)
    [moved] = story.do(RescheduleMeeting, MENTOR, meeting_number=1, starts_at=new_start)
    assert isinstance(moved, MeetingRescheduled)
    assert (moved.starts_at, moved.ends_at, moved.party, moved.late) == (new_start, new_start + timedelta(hours=1), "mentor", True)
    rescheduled = story.state.next_meeting
    assert rescheduled is not None
    assert (rescheduled.meeting_number, rescheduled.starts_at, rescheduled.revision) == (1, new_start, 1)
    assert not rescheduled.agenda_requested and not rescheduled.reminded
    assert story.state.late_cancellations == 1
    deadline = next_deadline(story.state)
    agenda_lead = timedelta(hours=story.state.settings.agenda_request_lead_hours)
    assert deadline is not None and (deadline.kind, deadline.at) == ("agenda_request", new_start - agenda_lead)
    [invite] = [n for n in story.notifications() if n.template == "meeting_rescheduled" and n.recipient_id == MENTEE]
    assert calendar_fields(invite) == {
        "meeting_number": "1",
        "meeting_start": new_start.isoformat(),
        "meeting_end": (new_start + timedelta(hours=1)).isoformat(),
        "meeting_uid": f"{STREAM}-meeting-1@mentorflow",
        "meeting_sequence": "1",
    }

    # Moved again, well ahead: not late, revision 2. The rhythm stays where it was planned:
    # the next meeting is two weeks after meeting 1's planned start, not after where it moved.
    story.do(RescheduleMeeting, MENTEE, meeting_number=1, starts_at=new_start + timedelta(days=1))
    assert story.state.next_meeting is not None and story.state.next_meeting.revision == 2
    assert story.state.late_cancellations == 1
    fired = story.advance(to=new_start + timedelta(days=1) - timedelta(hours=1))
    assert types(fired) == ["AgendaRequested", "MeetingReminderIssued"]
    story.meet()
    assert story.meeting.starts_at == meeting.starts_at + timedelta(days=14)


def test_the_first_scheduled_invite_carries_the_calendar_fields() -> None:
    story = active()
    meeting = story.meeting
    invites = [n for n in story.notifications() if n.template == "meeting_scheduled"]
    assert [n.recipient_id for n in invites] == [MENTEE, MENTOR]
    assert calendar_fields(invites[0]) == {
        "meeting_number": "1",
        "meeting_start": meeting.starts_at.isoformat(),
        "meeting_end": meeting.ends_at.isoformat(),
        "meeting_uid": f"{STREAM}-meeting-1@mentorflow",
        "meeting_sequence": "0",
    }


def test_a_meeting_cannot_be_held_in_the_future_beyond_clock_skew() -> None:
    story = active()
    story.advance(timedelta(days=3))
    assert "is in the future" in story.refuse(
        RecordMeeting, MENTEE, held_at=story.now + timedelta(hours=2), duration_minutes=60
    )
    story.do(RecordMeeting, MENTEE, held_at=story.now + timedelta(minutes=30), duration_minutes=60)


def test_a_meeting_cannot_be_held_before_the_agreement_took_effect() -> None:
    story = active()
    activated_at = story.state.activated_at
    assert activated_at is not None
    story.advance(timedelta(days=3))
    assert "before the agreement took effect" in story.refuse(
        RecordMeeting, MENTOR, held_at=activated_at - timedelta(minutes=1), duration_minutes=60
    )
    story.do(RecordMeeting, MENTOR, held_at=activated_at, duration_minutes=60)


def test_meetings_may_still_be_recorded_during_a_review() -> None:
    story = in_review()
    before = story.state.meetings_held
    story.meet(actor=MENTOR)
    assert story.state.meetings_held == before + 1
    assert story.state.phase is Phase.REVIEW and story.state.next_meeting is not None


# --- a party says a meeting did not take place, and reports are corrected -------------------


def test_a_meeting_reported_not_held_counts_as_missed_at_once_and_the_next_is_planned() -> None:
    story = active(programme(missed_meetings_at_risk=1))
    meeting = story.meeting
    story.advance(to=meeting.starts_at - timedelta(minutes=1))
    refused = story.refuse(ReportMeetingNotHeld, MENTEE, meeting_number=1)
    assert refused.startswith("meeting 1 has not begun") and "cancel_meeting" in refused
    story.advance(to=meeting.starts_at + timedelta(minutes=20))
    events = story.do(ReportMeetingNotHeld, MENTEE, meeting_number=1, reason=f"{SECRET} they did not show up")
    # What the deadline would have done, plus the party's word: the next meeting planned,
    # one miss in a row (here enough to be at risk).
    assert types(events) == ["MeetingMissed", "MeetingReportedNotHeld", "MeetingScheduled", "HealthChanged"]
    state = story.state
    assert (state.meetings_missed, state.missed_meeting_numbers, state.consecutive_missed) == (1, (1,), 1)
    assert state.health_reasons == ("missed_meetings",) and story.meeting.meeting_number == 2
    [past] = state.past_meetings
    assert (past.outcome, past.reported_by) == ("missed", "mentee")
    # The other party hears of it (not the "did it take place?" question); never the reason.
    told = story.notifications_of(events)
    [notice] = [n for n in told if n.template == "meeting_reported_not_held"]
    assert notice.recipient_id == MENTOR and notice.data["party"] == "mentee"
    assert notice.data["meeting_planned_for"] == meeting.starts_at.isoformat()
    assert not [n for n in told if n.template == "meeting_missed_check"]
    assert SECRET not in str([n.model_dump() for n in told])
    # Said again, by either party: already so.
    assert "already reported as not held (by the mentee)" in story.refuse(ReportMeetingNotHeld, MENTOR, meeting_number=1)
    # A contrary report does not overturn it: the correction does.
    refused = story.refuse(RecordMeeting, MENTOR, held_at=meeting.starts_at, duration_minutes=60, meeting_number=1)
    assert "reported as not held by the mentee" in refused and "correct_meeting_report" in refused
    assert "reported as not held" in story.refuse(RecordMeeting, MENTOR, held_at=meeting.starts_at, duration_minutes=60)


def test_a_meeting_the_deadline_counted_missed_takes_a_partys_word_once() -> None:
    story = active()
    meeting = story.meeting
    story.advance(to=meeting.ends_at + timedelta(hours=story.state.settings.missed_meeting_grace_hours))
    assert story.state.missed_meeting_numbers == (1,)
    before = story.state
    [confirmed] = story.do(ReportMeetingNotHeld, MENTOR, meeting_number=1)
    assert isinstance(confirmed, MeetingReportedNotHeld) and confirmed.party == "mentor"
    # Nothing is counted twice.
    assert (story.state.meetings_missed, story.state.consecutive_missed) == (before.meetings_missed, before.consecutive_missed)
    assert story.state.past_meetings[0].reported_by == "mentor"


@pytest.mark.parametrize(
    ("number", "expected"),
    [(7, "meeting 7 is no meeting held or missed"), (2, "meeting 2 is the scheduled meeting, not yet reported")],
)
def test_reports_of_meetings_that_are_not_over_are_refused(number: int, expected: str) -> None:
    story = active()
    story.meet()
    assert story.meeting.meeting_number == 2
    story.advance(to=story.meeting.starts_at - timedelta(hours=1))
    assert story.refuse(CorrectMeetingReport, MENTEE, meeting_number=number, outcome="not_held") == expected
    if number == 7:
        assert story.refuse(ReportMeetingNotHeld, MENTEE, meeting_number=number) == expected


def test_a_held_meeting_is_reported_not_held_only_by_a_correction_which_undoes_it() -> None:
    story = active(programme(feedback_every_sessions=2, missed_meetings_at_risk=2))
    first = story.meet(minutes=50)[0]
    story.meet(minutes=40)
    second = story.state.past_meetings[1]
    assert story.state.feedback_round == 1 and story.state.feedback_requested_after == 2
    assert (story.state.meetings_held, story.state.meeting_minutes_total) == (2, 90)
    refused = story.refuse(ReportMeetingNotHeld, MENTOR, meeting_number=2)
    assert refused == "meeting 2 was recorded as held; if it did not take place, send correct_meeting_report"

    story.advance(timedelta(hours=2))
    events = story.do(CorrectMeetingReport, MENTOR, meeting_number=2, outcome="not_held", reason=f"{SECRET} mixed up")
    assert types(events)[:2] == ["MeetingMissed", "MeetingReportCorrected"]
    state = story.state
    # As if it had been reported not held: one held (the first), one missed, the last meeting the first.
    assert (state.meetings_held, state.meetings_missed, state.missed_meeting_numbers) == (1, 1, (2,))
    assert (state.meeting_minutes_total, state.consecutive_missed) == (50, 1)
    assert isinstance(first, MeetingHeld) and state.last_meeting_at == first.held_at
    assert [(m.meeting_number, m.outcome, m.reported_by) for m in state.past_meetings] == [
        (1, "held", "mentee"), (2, "missed", "mentor")
    ]
    assert state.next_meeting is not None and state.next_meeting.meeting_number == 3, "the scheduled meeting stays"
    [notice] = [n for n in story.notifications_of(events) if n.template == "meeting_report_corrected"]
    assert notice.recipient_id == MENTEE and (notice.data["outcome"], notice.data["party"]) == ("not_held", "mentor")
    assert notice.data["meeting_planned_for"] == second.starts_at.isoformat()
    assert "already counted as not held" in story.refuse(CorrectMeetingReport, MENTEE, meeting_number=2, outcome="not_held")

    # And back: held after all, at the planned time and the agreed length unless told.
    events = story.do(CorrectMeetingReport, MENTEE, meeting_number=2, outcome="held")
    assert types(events) == ["MeetingHeld", "MeetingReportCorrected"], "round 1 was asked for at 2 meetings already"
    held = events[0]
    assert isinstance(held, MeetingHeld) and held.correction
    assert (held.held_at, held.duration_minutes) == (second.starts_at, 60)
    state = story.state
    assert (state.meetings_held, state.meetings_missed, state.consecutive_missed) == (2, 0, 0)
    assert state.feedback_round == 1
    # The next count that asks for feedback still does, once.
    story.meet()
    story.meet()
    assert [(e.feedback_round, e.after_meeting) for e in story.of_type(FeedbackRequested)] == [(1, 2), (2, 4)]


def test_a_correction_to_held_is_checked_like_a_report() -> None:
    story = active()
    meeting = story.meeting
    story.advance(to=meeting.ends_at + timedelta(hours=story.state.settings.missed_meeting_grace_hours))
    assert "already counted as not held" in story.refuse(CorrectMeetingReport, MENTEE, meeting_number=1, outcome="not_held")
    assert story.refuse(
        CorrectMeetingReport, MENTEE, meeting_number=1, outcome="not_held", held_at=story.now, duration_minutes=30
    ) == "held_at only goes with outcome held; duration_minutes only goes with outcome held"
    assert "is in the future" in story.refuse(
        CorrectMeetingReport, MENTEE, meeting_number=1, outcome="held", held_at=story.now + timedelta(hours=2)
    )
    [held, corrected] = story.do(
        CorrectMeetingReport, MENTEE, meeting_number=1, outcome="held", held_at=meeting.starts_at, duration_minutes=25
    )[:2]
    assert isinstance(held, MeetingHeld) and (held.duration_minutes, held.correction) == (25, True)
    assert isinstance(corrected, MeetingReportCorrected) and corrected.outcome == "held"
    assert story.state.health is Health.HEALTHY and story.state.missed_meeting_numbers == ()


def test_a_report_may_be_corrected_for_thirty_days_by_either_party() -> None:
    story = active(meeting_frequency="weekly")
    starts_at = story.meeting.starts_at
    story.meet()
    story.meet()
    story.advance(to=starts_at + REPORT_CORRECTABLE_FOR + timedelta(seconds=1))
    assert story.refuse(CorrectMeetingReport, MENTOR, meeting_number=1, outcome="not_held") == (
        "meeting_number was planned more than 30 days ago: its record can no longer be corrected"
    )
    # Meeting 2, a week later, still may be; the mentor corrects the mentee's report.
    story.do(CorrectMeetingReport, MENTOR, meeting_number=2, outcome="not_held")
    assert "is not a party" in story.refuse(CorrectMeetingReport, COORDINATOR, meeting_number=1, outcome="not_held")
    assert "is not a party" in story.refuse(ReportMeetingNotHeld, COORDINATOR, meeting_number=1)


def test_a_cancelled_meeting_is_neither_reported_nor_corrected() -> None:
    story = active()
    story.do(CancelMeeting, MENTEE, meeting_number=1)
    story.advance(timedelta(days=3))
    assert story.refuse(ReportMeetingNotHeld, MENTOR, meeting_number=1) == "meeting 1 was cancelled"
    assert story.refuse(CorrectMeetingReport, MENTOR, meeting_number=1, outcome="held") == "meeting 1 was cancelled"
