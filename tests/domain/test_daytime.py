"""Daytime delivery (events/daytime.py): non-urgent messages wait for the recipient's daytime."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from typing import get_args

from activities.template_texts import TEMPLATES
from activities.templates import COMPOSED
from events.daytime import NOT_URGENT, DeliveryWindow, deadline_of, deliver_at
from events.model import ReviewKind
from events.settings import ProgrammeSettings

DAY = DeliveryWindow()
BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_the_reported_midpoint_review_waits_for_morning_in_each_zone() -> None:
    # 03:33 UTC: 04:33 in Berlin, 22:33 (the day before) in New York.
    decided = utc(2027, 3, 2, 3, 33)
    assert deliver_at(decided, BERLIN, DAY, template="midpoint_review_opened") == utc(2027, 3, 2, 7, 0)
    assert deliver_at(decided, NEW_YORK, DAY, template="midpoint_review_opened") == utc(2027, 3, 2, 13, 0)


def test_daytime_and_urgent_messages_go_at_once() -> None:
    noon_berlin = utc(2027, 3, 2, 11, 0)
    assert deliver_at(noon_berlin, BERLIN, DAY, template="meeting_reminder") == noon_berlin
    night = utc(2027, 3, 2, 1, 0)
    assert deliver_at(night, BERLIN, DAY, template="concern_raised") == night
    assert deliver_at(night, BERLIN, None, template="meeting_reminder") == night


def test_a_reminder_never_waits_past_what_it_is_about() -> None:
    night = utc(2027, 3, 2, 4, 0)  # 05:00 Berlin; the meeting is at 07:30 Berlin
    meeting = utc(2027, 3, 2, 6, 30)
    assert deliver_at(night, BERLIN, DAY, template="meeting_reminder", deliver_by=meeting) == night
    later_meeting = utc(2027, 3, 2, 9, 0)
    assert deliver_at(night, BERLIN, DAY, template="meeting_reminder", deliver_by=later_meeting) == utc(2027, 3, 2, 7, 0)


def test_evening_waits_for_the_next_morning() -> None:
    evening = utc(2027, 3, 2, 20, 30)  # 21:30 Berlin
    assert deliver_at(evening, BERLIN, DAY, template="nudge") == utc(2027, 3, 3, 7, 0)


def test_a_window_across_midnight() -> None:
    nights = DeliveryWindow(opens=time(22), closes=time(6))
    assert deliver_at(utc(2027, 3, 2, 23, 0), "UTC", nights, template="nudge") == utc(2027, 3, 2, 23, 0)
    assert deliver_at(utc(2027, 3, 2, 3, 0), "UTC", nights, template="nudge") == utc(2027, 3, 2, 3, 0)
    assert deliver_at(utc(2027, 3, 2, 12, 0), "UTC", nights, template="nudge") == utc(2027, 3, 2, 22, 0)


def test_daylight_saving_moves_the_opening_with_the_clock() -> None:
    # Berlin springs forward on 2027-03-28 at 02:00; 08:00 is 07:00 UTC before, 06:00 after.
    assert deliver_at(utc(2027, 3, 27, 21, 0), BERLIN, DAY, template="nudge") == utc(2027, 3, 28, 6, 0)
    early = DeliveryWindow(opens=time(2, 30), closes=time(20))  # 02:30 does not exist that day:
    # the window opens when the clock jumps from 02:00 to 03:00 (01:00 UTC).
    assert deliver_at(utc(2027, 3, 27, 23, 0), BERLIN, early, template="nudge") == utc(2027, 3, 28, 1, 0)


def test_an_empty_or_zoned_window_is_refused_with_a_reason() -> None:
    with pytest.raises(ValidationError, match="same time"):
        DeliveryWindow(opens=time(8), closes=time(8))
    with pytest.raises(ValidationError, match="without an offset"):
        DeliveryWindow(opens=time(8, tzinfo=UTC))


def test_an_unknown_zone_counts_as_utc() -> None:
    assert deliver_at(utc(2027, 3, 2, 3, 0), "Mars/Olympus", DAY, template="nudge") == utc(2027, 3, 2, 8, 0)


def test_every_message_that_waits_is_one_the_core_sends() -> None:
    assert NOT_URGENT <= set(TEMPLATES) | set(COMPOSED), sorted(NOT_URGENT - set(TEMPLATES) - set(COMPOSED))
    # events/notifications.py names a review's message after its kind: every kind waits.
    assert {f"{kind}_review_opened" for kind in get_args(ReviewKind)} <= NOT_URGENT
    # What must be answered or known at once never waits.
    assert not {"match_proposed", "concern_raised", "meeting_cancelled", "relationship_summary"} & NOT_URGENT


def test_a_message_never_waits_past_the_moment_it_is_about() -> None:
    meeting = {"meeting_start": "2027-03-02T06:30:00+00:00", "respond_by": "2027-03-09T12:00:00+00:00"}
    assert deadline_of(meeting) == utc(2027, 3, 2, 6, 30)  # the meeting, not the answer
    assert deadline_of({"respond_by": "2027-03-09T12:00:00+00:00"}) == utc(2027, 3, 9, 12)
    assert deadline_of({"agreement_due_at": "2027-03-03T00:00:00+00:00"}) == utc(2027, 3, 3)
    assert deadline_of({"meeting_start": "soon", "quiet_since": "2027-02-01T00:00:00+00:00"}) is None
    assert deadline_of({"meeting_start": "2027-03-02T06:30:00"}) is None  # no offset: not a moment


def test_the_window_is_a_programme_setting_on_by_default() -> None:
    assert ProgrammeSettings().delivery_window == DeliveryWindow(opens=time(8), closes=time(20))
    assert ProgrammeSettings(delivery_window=None).delivery_window is None
    night = ProgrammeSettings.model_validate({"delivery_window": {"opens": "22:00", "closes": "06:00"}})
    assert night.delivery_window == DeliveryWindow(opens=time(22), closes=time(6))
    assert str(night.delivery_window) == "22:00–06:00"
    # YAML reads an unquoted 20:00 as 1200: refused rather than taken as 00:20.
    with pytest.raises(ValidationError, match="in quotes"):
        ProgrammeSettings.model_validate({"delivery_window": {"opens": "08:00", "closes": 1200}})


ZONES = st.sampled_from(["UTC", BERLIN, NEW_YORK, "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham"])
MOMENTS = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))
WINDOWS = st.tuples(st.integers(0, 47), st.integers(0, 47)).filter(lambda w: w[0] != w[1]).map(
    lambda w: DeliveryWindow(opens=time(w[0] // 2, 30 * (w[0] % 2)), closes=time(w[1] // 2, 30 * (w[1] % 2)))
)


@given(MOMENTS, ZONES, WINDOWS, st.sampled_from(sorted(NOT_URGENT)))
def test_a_held_message_goes_at_the_next_opening_within_a_day(
    moment: datetime, zone: str, window: DeliveryWindow, template: str
) -> None:
    sent = deliver_at(moment, zone, window, template=template)
    assert moment <= sent <= moment + timedelta(hours=25)
    local = sent.astimezone(ZoneInfo(zone))
    assert window.holds(local.time().replace(tzinfo=None)) or sent == moment
    if sent > moment:
        # Nothing earlier was inside the window (checked every 15 minutes back from the sending).
        probe = sent - timedelta(minutes=15)
        while probe > moment:
            assert not window.holds(probe.astimezone(ZoneInfo(zone)).time())
            probe -= timedelta(minutes=15)
