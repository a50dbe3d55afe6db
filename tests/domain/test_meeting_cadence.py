"""Issue #11, the meeting items: every report lands on the meeting it is about (and counts
once), the rhythm follows the agreement and stays inside the term, the clock-skew tolerance
is written down, daylight saving never skips or doubles a week, the first meeting comes at
the first common slot — and relationships decided by the legacy rules replay identically.

Pure tests, like tests/domain/test_domain_*.py, driving tests/support/domain_story.py's `Story`.
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from events.commands import (
    COMMAND_TYPES,
    CancelMeeting,
    PauseRelationship,
    ProposeAgreement,
    RecordIntroduction,
    RecordMeeting,
    RescheduleMeeting,
    ResumeRelationship,
    SignAgreement,
    SubmitReview,
    read_command,
)
from events.deadlines import next_due, next_due_at
from events.decider import Rejection, decide, decide_deadline, start_relationship
from events.cadence import FIRST_MEETING_WITHIN, MIN_SCHEDULING_LEAD
from events.meetings import CADENCE_RULES, LEGACY_CADENCE_RULES, MEETING_CLOCK_SKEW, under_cadence_rules
from events.model import AnyEvent, MeetingHeld, MeetingScheduled
from events.store import load_event
from events.refusals import RefusalCode
from events.scheduling import first_common_slot
from events.settings import FREQUENCY_DAYS, ProgrammeSettings
from events.state import Phase
from events.decider import evolve, fold
from tests.support.session import project_root
from tests.support.legacy_cadence import FIXTURE, MENTEE as LEGACY_MENTEE, PROGRAMME as LEGACY_PROGRAMME
from tests.support.legacy_cadence import SETTINGS as LEGACY_SETTINGS, STREAM as LEGACY_STREAM, event_record
from tests.support.domain_story import (
    MENTEE,
    MENTOR,
    T0,
    Story,
    active,
    available,
    in_window,
    matched,
    programme,
    terms,
    window,
)

DAY = timedelta(days=1)


def decided(story: Story, command_type: Any, actor: str, **fields: Any) -> list[AnyEvent] | Rejection:
    """Send a command whatever the outcome: its events (applied) or its refusal."""
    decision = decide(story.state, story.command(command_type, actor, **fields), story.now)
    if not isinstance(decision, Rejection):
        story.apply(decision)
    return decision


def scheduled_past_the_term(story: Story) -> list[MeetingScheduled]:
    """Meetings planned to end after the term as it stood when they were planned."""
    late = []
    for before, event in zip(story.states, story.history[1:], strict=False):
        if isinstance(event, MeetingScheduled) and before.term_ends_at is not None and event.ends_at > before.term_ends_at:
            late.append(event)
    return late


# --- 1. every report lands on its meeting, and counts once ----------------------------------


def test_five_reports_within_seconds_count_one_meeting_and_leave_the_rhythm_alone() -> None:
    story = active(meeting_frequency="weekly")
    first = story.meeting
    story.advance(to=first.starts_at + timedelta(minutes=50))
    outcomes = []
    for attempt in range(5):
        outcomes.append(decided(story, RecordMeeting, (MENTEE, MENTOR)[attempt % 2], held_at=story.now, duration_minutes=60))
        story.now += timedelta(seconds=3)
    accepted, *repeats = outcomes
    assert not isinstance(accepted, Rejection) and isinstance(accepted[0], MeetingHeld)
    assert all(isinstance(r, Rejection) and r.code is RefusalCode.CONFLICT for r in repeats)
    assert "meeting 1 (planned for" in repeats[0].reason and "already recorded as held" in repeats[0].reason  # type: ignore[union-attr]
    assert story.state.meetings_held == 1
    # The next meeting is a week after the first, not five weeks on.
    assert story.meeting.meeting_number == 2 and story.meeting.starts_at == first.starts_at + 7 * DAY


def test_the_other_partys_report_of_the_same_meeting_is_refused_by_time_or_by_number() -> None:
    story = active()
    meeting = story.meeting
    story.meet(actor=MENTEE)
    again = decided(story, RecordMeeting, MENTOR, held_at=meeting.starts_at + timedelta(minutes=10), duration_minutes=55)
    assert isinstance(again, Rejection) and again.code is RefusalCode.CONFLICT
    by_number = decided(story, RecordMeeting, MENTOR, held_at=meeting.starts_at, duration_minutes=55, meeting_number=1)
    assert isinstance(by_number, Rejection) and by_number.code is RefusalCode.CONFLICT
    assert [p.field for p in by_number.problems] == ["meeting_number"]
    assert (story.state.meetings_held, story.state.meeting_minutes_total) == (1, 60)


def test_a_report_of_a_missed_meeting_corrects_that_one_and_the_scheduled_one_stays() -> None:
    story = active(meeting_frequency="weekly")
    first = story.meeting
    story.advance(to=first.ends_at + timedelta(hours=48))  # nobody reported it: missed
    assert story.state.missed_meeting_numbers == (1,)
    second = story.meeting
    # Backfilled without a meeting number: held_at says it was meeting 1, not the scheduled 2.
    [held] = story.do(RecordMeeting, MENTOR, held_at=first.starts_at + timedelta(minutes=30), duration_minutes=40)
    assert isinstance(held, MeetingHeld) and (held.meeting_number, held.correction) == (1, True)
    assert story.state.next_meeting == second and story.state.missed_meeting_numbers == ()
    assert story.state.meetings_held == 1 and story.state.meetings_missed == 0


def test_backfilled_meetings_are_matched_to_the_missed_ones_they_belong_to() -> None:
    story = active(meeting_frequency="weekly", term_months=3)
    misses = []
    for _ in range(3):
        misses.append(story.meeting)
        story.advance(to=story.meeting.ends_at + timedelta(hours=48))
    assert story.state.missed_meeting_numbers == (1, 2, 3)
    held, *_ = story.do(RecordMeeting, MENTEE, held_at=misses[1].starts_at - timedelta(hours=20), duration_minutes=60)
    assert isinstance(held, MeetingHeld) and (held.meeting_number, held.correction) == (2, True)
    held, *_ = story.do(RecordMeeting, MENTEE, held_at=misses[2].starts_at, duration_minutes=60)
    assert isinstance(held, MeetingHeld) and (held.meeting_number, held.correction) == (3, True)
    assert story.state.missed_meeting_numbers == (1,) and story.state.consecutive_missed == 0


def test_what_matches_no_meeting_is_refused() -> None:
    story = active()
    unknown = decided(story, RecordMeeting, MENTEE, held_at=story.now, duration_minutes=30, meeting_number=9)
    assert isinstance(unknown, Rejection) and unknown.code is RefusalCode.NOT_FOUND
    assert unknown.reason == "meeting 9 is neither the next meeting nor one marked missed"
    story.advance(DAY / 2)
    decided(story, CancelMeeting, MENTOR, meeting_number=1)
    cancelled = decided(story, RecordMeeting, MENTEE, held_at=story.now, duration_minutes=30, meeting_number=1)
    assert isinstance(cancelled, Rejection) and cancelled.code is RefusalCode.CONFLICT and "was cancelled" in cancelled.reason
    assert story.state.meetings_held == 0


def test_after_the_last_meeting_of_the_term_a_report_refers_to_a_held_one_or_nothing() -> None:
    story = active(programme(midpoint_review=False), term_months=1, meeting_frequency="weekly")
    story.meet_until_a_review()
    assert story.state.review is not None and story.state.next_meeting is None
    last = story.state.past_meetings[-1]
    late = decided(story, RecordMeeting, MENTOR, held_at=story.now, duration_minutes=30)
    assert isinstance(late, Rejection) and late.code is RefusalCode.CONFLICT and f"meeting {last.meeting_number}" in late.reason


# --- 2. the rhythm follows the agreement, inside the term ------------------------------------


def test_the_rhythm_follows_the_first_meeting_whenever_and_however_meetings_are_reported() -> None:
    story = active(meeting_frequency="weekly", term_months=3)
    first = story.meeting.starts_at
    # Held a day late, reported at once; held as planned, reported two days on; held two days early.
    story.advance(to=story.meeting.starts_at + DAY)
    story.do(RecordMeeting, MENTEE, held_at=story.now, duration_minutes=60)
    planned = story.meeting.starts_at
    story.advance(to=planned + 2 * DAY)
    story.do(RecordMeeting, MENTOR, held_at=planned, duration_minutes=60)
    story.advance(to=story.meeting.starts_at - 2 * DAY)
    story.do(RecordMeeting, MENTOR, held_at=story.now, duration_minutes=60)
    for _ in range(3):
        story.meet()
    starts = [m.starts_at for m in story.of_type(MeetingScheduled)]
    assert starts == [first + 7 * DAY * n for n in range(len(starts))]


def test_a_relationship_driven_quickly_never_schedules_past_its_term() -> None:
    story = active(term_months=6, meeting_frequency="weekly")
    term_ends_at = story.state.term_ends_at
    assert term_ends_at is not None
    for _ in range(300):  # a test driver reporting a meeting a minute, and moving time along
        decided(story, RecordMeeting, MENTEE, held_at=story.now, duration_minutes=30)
        story.advance(timedelta(minutes=1))
        due = next_due_at(story.state)
        assert due is not None and due <= term_ends_at
    assert story.state.meetings_held == 1
    assert not scheduled_past_the_term(story)


def test_the_last_meeting_of_a_term_ends_inside_it_and_none_is_set_after() -> None:
    story = active(term_months=2, meeting_frequency="weekly")
    term_ends_at = story.state.term_ends_at
    assert term_ends_at is not None
    while story.state.next_meeting is not None:
        story.meet()  # the midpoint review, unanswered, completes by itself meanwhile
    last = story.of_type(MeetingScheduled)[-1]
    assert last.ends_at <= term_ends_at < last.starts_at + 7 * DAY
    assert story.state.phase is Phase.ACTIVE and next_due(story.state).what == "The end of the term"  # type: ignore[union-attr]
    assert not scheduled_past_the_term(story)


def test_a_meeting_cannot_be_moved_past_the_end_of_the_term() -> None:
    story = active(term_months=1)
    term_ends_at = story.state.term_ends_at
    assert term_ends_at is not None
    refused = decided(story, RescheduleMeeting, MENTEE, meeting_number=1, starts_at=term_ends_at - timedelta(minutes=30))
    assert isinstance(refused, Rejection) and refused.code is RefusalCode.LIMIT
    assert [p.field for p in refused.problems] == ["starts_at"] and "would end after the term" in refused.reason
    story.do(RescheduleMeeting, MENTEE, meeting_number=1, starts_at=term_ends_at - timedelta(hours=1))


def test_a_pause_moves_the_end_of_the_term_and_the_meetings_follow_it_there() -> None:
    story = active(term_months=2, meeting_frequency="weekly")
    old_end = story.state.term_ends_at
    assert old_end is not None
    story.advance(to=old_end - 12 * DAY)
    story.do(PauseRelationship, MENTOR, until=story.now + 30 * DAY)
    story.advance(20 * DAY)
    story.do(ResumeRelationship, MENTEE)
    new_end = story.state.term_ends_at
    assert new_end == old_end + 20 * DAY
    story.meet_until_a_review()
    held_after_the_old_end = [m for m in story.of_type(MeetingHeld) if m.held_at > old_end]
    assert held_after_the_old_end and not scheduled_past_the_term(story)
    assert story.of_type(MeetingScheduled)[-1].ends_at <= new_end


def legacy_active(settings: ProgrammeSettings | None = None, **changes: Any) -> Story:
    """An active relationship decided by the legacy rules all along (its state says so)."""
    story = matched(settings or programme())
    story.state = under_cadence_rules(story.state, LEGACY_CADENCE_RULES)  # evolve keeps it
    story.do(ProposeAgreement, MENTEE, terms=terms(**changes))
    story.do(SignAgreement, MENTEE, agreement_version=1)
    story.do(SignAgreement, MENTOR, agreement_version=1)
    assert story.state.cadence_rules == LEGACY_CADENCE_RULES and story.meeting.starts_at == T0 + FIRST_MEETING_WITHIN
    return story


def from_stored_events(story: Story) -> None:
    """Go on from the state its stored events fold to, as a run on the current code does."""
    stored = [json.loads(json.dumps(event.model_dump(mode="json"))) for event in story.history]
    state = fold(load_event(e) for e in stored)
    assert state is not None and state.cadence_rules == CADENCE_RULES
    story.state = state


def test_a_meeting_the_legacy_rules_left_past_the_term_is_planned_again_inside_it_at_the_next_decision() -> None:
    # A test driver reported a meeting every five minutes: each took the scheduled meeting
    # and planned the next one a rhythm after it, far past the end of the term.
    story = legacy_active(term_months=6, meeting_frequency="monthly")
    for _ in range(8):
        story.do(RecordMeeting, MENTEE, held_at=story.now, duration_minutes=30)
        story.now += timedelta(minutes=5)
    term_ends_at = story.state.term_ends_at
    assert term_ends_at is not None and story.meeting.starts_at > term_ends_at + 30 * DAY
    from_stored_events(story)
    leftover = story.meeting
    story.advance(timedelta(hours=1))
    events = story.do(RecordIntroduction, MENTOR, introduced_to="a staff engineer")
    replanned = [e for e in events if isinstance(e, MeetingScheduled)]
    assert [e.meeting_number for e in replanned] == [leftover.meeting_number]
    assert story.now + MIN_SCHEDULING_LEAD <= replanned[0].starts_at and replanned[0].ends_at <= term_ends_at
    meeting = story.meeting
    assert meeting.revision == leftover.revision + 1 and not meeting.reminded
    assert next_due_at(story.state) == meeting.starts_at
    # From there on the rhythm is the grid's, and inside the term.
    story.meet()
    assert story.meeting.ends_at <= term_ends_at


def test_a_leftover_with_no_room_left_in_the_term_waits_for_the_final_review() -> None:
    story = legacy_active(programme(midpoint_review=False), term_months=2, meeting_frequency="monthly")
    term_ends_at = story.state.term_ends_at
    assert term_ends_at is not None
    while story.meeting.starts_at < term_ends_at:
        story.meet()
    story.advance(to=term_ends_at - timedelta(hours=12))
    leftover = story.meeting  # the legacy rules planned the last one past the end of the term
    assert leftover.starts_at > term_ends_at
    from_stored_events(story)
    # Less than the scheduling lead is left: nothing fits, the meeting stays for the final
    # review to settle (closing withdraws it; an extension may take it in), and what is due
    # next is the end of the term, not the meeting after it.
    assert not [e for e in story.do(RecordIntroduction, MENTOR, introduced_to="a peer") if isinstance(e, MeetingScheduled)]
    assert story.state.next_meeting == leftover
    due = next_due(story.state)
    assert due is not None and (due.at, due.what) == (term_ends_at, "The end of the term")
    assert next_due(under_cadence_rules(story.state, LEGACY_CADENCE_RULES)).at == leftover.starts_at  # type: ignore[union-attr]
    story.advance(to=term_ends_at)
    assert story.state.review is not None and story.state.review.kind == "final"


# --- 3. the clock-skew tolerance is written down ----------------------------------------------


def test_the_clock_skew_tolerance_is_documented_where_record_meeting_is() -> None:
    hours = MEETING_CLOCK_SKEW / timedelta(hours=1)
    said = f"{hours:g} hour"
    assert said in (RecordMeeting.__doc__ or "")
    docs = (project_root() / "docs" / "relationships.md").read_text(encoding="utf-8")
    [row] = [line for line in docs.splitlines() if line.startswith("| `record_meeting`")]
    assert said in row and "clock" in row


def test_up_to_the_documented_skew_ahead_is_accepted_and_beyond_it_refused() -> None:
    story = active()
    story.advance(DAY / 2)
    beyond = decided(story, RecordMeeting, MENTEE, held_at=story.now + MEETING_CLOCK_SKEW + timedelta(seconds=1), duration_minutes=5)
    assert isinstance(beyond, Rejection) and beyond.code is RefusalCode.LIMIT
    story.do(RecordMeeting, MENTEE, held_at=story.now + MEETING_CLOCK_SKEW, duration_minutes=5)


# --- 4. daylight saving never skips or doubles a week ------------------------------------------

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Sydney", "America/Santiago")


@st.composite
def weekly_windows(draw: st.DrawFn, zone: str) -> tuple[Any, ...]:
    """Both parties in one zone, sharing at least an hour on one or two weekdays (daytime:
    the clocks change at night, and a window the change swallows has no slot that week)."""
    weekdays = draw(st.lists(st.integers(0, 6), min_size=1, max_size=2, unique=True))
    mentee, mentor = [], []
    for weekday in weekdays:
        start = draw(st.integers(6 * 4, 20 * 4))  # quarter hours, 06:00 to 20:00
        common = draw(st.integers(4, 8))  # 1 to 2 hours
        before, after = draw(st.integers(0, 8)), draw(st.integers(0, 8))
        hhmm = lambda q: f"{min(q, 23 * 4 + 3) // 4:02d}:{min(q, 23 * 4 + 3) % 4 * 15:02d}"  # noqa: E731
        mentee.append(window(weekday, hhmm(start), hhmm(start + common)))
        mentor.append(window(weekday, hhmm(max(start - before, 0)), hhmm(start + common + after)))
    parties = [available("mentee", zone, *mentee), available("mentor", zone, *mentor)]
    return tuple(parties if draw(st.booleans()) else parties[::-1])


@settings(max_examples=150, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    frequency=st.sampled_from(("weekly", "biweekly")),
    day=st.integers(0, 364),
    minute=st.integers(0, 24 * 60 - 1),
    data=st.data(),
)
def test_a_cadence_never_skips_or_doubles_a_week_across_daylight_saving_changes(
    zone: str, frequency: str, day: int, minute: int, data: st.DataObject
) -> None:
    availability = data.draw(weekly_windows(zone))
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=day, minutes=minute)
    story = active(now=start, meeting_frequency=frequency, term_months=12, availability=availability)
    first = story.meeting.starts_at
    assert first == first_common_slot(start + MIN_SCHEDULING_LEAD, availability, 60)
    while story.state.phase is not Phase.CLOSING and not (story.state.review and story.state.review.kind == "final"):
        if story.state.review is not None:
            for actor in (MENTEE, MENTOR):
                story.do(SubmitReview, actor, outcome="continue")
        else:
            story.meet_or_wait()
    local = ZoneInfo(zone)
    meetings = story.of_type(MeetingScheduled)
    assert len(meetings) >= 365 // FREQUENCY_DAYS[frequency] - 1  # both changes lie inside the term
    for earlier, later in itertools.pairwise(meetings):
        days = (later.starts_at.astimezone(local).date() - earlier.starts_at.astimezone(local).date()).days
        assert days == FREQUENCY_DAYS[frequency], (earlier.starts_at, later.starts_at)
    for meeting in meetings:
        assert all(in_window(meeting.starts_at, 60, party) for party in availability)
    assert meetings[-1].ends_at <= story.state.term_ends_at  # type: ignore[operator]


def test_new_york_and_berlin_change_clocks_weeks_apart_and_the_week_is_still_kept() -> None:
    # 9 March New York moves to EDT, 30 March Berlin to CEST: for three weeks they are five
    # hours apart, not six. Their common hour moves in Berlin's clock, not across a day.
    berlin = available("mentee", "Europe/Berlin", window(1, "14:00", "18:00"))
    new_york = available("mentor", "America/New_York", window(1, "09:00", "11:00"))
    story = active(now=datetime(2025, 2, 17, 12, tzinfo=UTC), meeting_frequency="weekly", term_months=3, availability=(berlin, new_york))
    for _ in range(8):
        story.meet()
    starts = [m.starts_at for m in story.of_type(MeetingScheduled)]
    local = ZoneInfo("Europe/Berlin")
    assert {(b.astimezone(local).date() - a.astimezone(local).date()).days for a, b in itertools.pairwise(starts)} == {7}
    assert [s.astimezone(local).strftime("%H:%M") for s in starts] == ["15:00"] * 3 + ["14:00"] * 3 + ["15:00"] * 3


# --- 5. the first meeting at the first common slot ---------------------------------------------


def test_signed_on_a_saturday_the_first_meeting_is_the_common_slot_on_tuesday() -> None:
    saturday = datetime(2025, 1, 11, 9, 0, tzinfo=UTC)
    tuesdays = (available("mentee", "UTC", window(1, "21:00", "22:00")), available("mentor", "UTC", window(1, "20:00", "23:00")))
    story = active(now=saturday, meeting_frequency="monthly", availability=tuesdays)
    assert story.state.activated_at == saturday
    first = story.meeting.starts_at
    assert first == datetime(2025, 1, 14, 21, 0, tzinfo=UTC)  # day 3½, not day 10½
    assert first - saturday <= FIRST_MEETING_WITHIN


def test_the_first_meeting_waits_out_the_lead_and_then_takes_the_first_common_slot() -> None:
    monday = datetime(2025, 1, 6, 9, 30, tzinfo=UTC)
    # The only common slot of the week is Monday 09:00–10:00: this Monday's is within the lead.
    mondays = (available("mentee", "UTC", window(0, "09:00", "10:00")),)
    story = active(now=monday, availability=mondays)
    assert story.meeting.starts_at == datetime(2025, 1, 13, 9, 0, tzinfo=UTC)


def test_the_docs_say_when_the_first_meeting_is() -> None:
    docs = (project_root() / "docs" / "relationships.md").read_text(encoding="utf-8")
    agreement = docs.split("### Agreement", 1)[1].split("`terms`, the written agreement", 1)[0]
    assert "a week after the second signature" not in agreement
    assert re.search(r"first slot .* at least 24 hours after the second signature", agreement.replace("\n", " "))


# --- replay: the legacy rules still decide what they decided -------------------------------------


def test_a_state_folds_to_the_current_rules_and_the_legacy_ones_are_chosen_explicitly() -> None:
    story = active()
    assert story.state.cadence_rules == CADENCE_RULES
    legacy = under_cadence_rules(story.state, LEGACY_CADENCE_RULES)
    assert legacy.cadence_rules == LEGACY_CADENCE_RULES and under_cadence_rules(legacy, None) is legacy
    assert under_cadence_rules(story.state, CADENCE_RULES) is story.state


def replay_recorded(scenario: dict[str, Any], rules: int | None) -> list[str]:
    """Re-decide every recorded step on the state folded so far; the steps that differ."""
    events = start_relationship(LEGACY_STREAM, LEGACY_PROGRAMME, LEGACY_MENTEE, LEGACY_SETTINGS, datetime.fromisoformat(scenario["start"]))
    assert [event_record(e) for e in events] == scenario["started"]
    state = fold(events)
    assert state is not None
    differences = []
    for index, step in enumerate(scenario["steps"]):
        now = datetime.fromisoformat(step["at"])
        judged = under_cadence_rules(state, rules)
        if "deadline" in step:
            decision: list[AnyEvent] | Rejection = decide_deadline(judged, now)
        else:
            command = read_command(COMMAND_TYPES[step["message"]], step["payload"])
            assert not isinstance(command, Rejection), command
            decision = decide(judged, command, now)
        if isinstance(decision, Rejection):
            if decision.code.value != step.get("refused"):
                differences.append(f"step {index}: refused ({decision.code}) instead of {step.get('events') and 'applied'}")
                break
            continue
        if [event_record(e) for e in decision] != step.get("events"):
            differences.append(f"step {index} ({step.get('message') or step.get('deadline')}) decided differently")
            break
        for event in decision:
            state = evolve(state, event)
    return differences


RECORDED: list[dict[str, Any]] = json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("scenario", RECORDED, ids=lambda s: f"seed-{s['seed']}-{s['frequency']}-{s['availability']}")
def test_the_legacy_rules_decide_exactly_what_they_decided_before_the_change(scenario: dict[str, Any]) -> None:
    """What a workflow run begun before the change re-decides when it replays its history."""
    assert replay_recorded(scenario, LEGACY_CADENCE_RULES) == []


def test_the_current_rules_would_decide_those_histories_differently() -> None:
    """Why a run begun before the change must keep the legacy rules (a `workflow.patched`
    gate): replayed on the current rules every one of them diverges, silently."""
    assert all(replay_recorded(scenario, None) for scenario in RECORDED)
