"""The coordinators' digest, on the pure rules (events/digest.py) and its words
(activities/digest_text.py): relationships driven by the real core, their events folded
into the digest's rows, the items decided, the message rendered. No Temporal, no database
(tests/notifications/test_digest_temporal.py runs it end to end)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from activities.templates import render
from events.commands import AcceptMatch, CorrectMeetingReport, RaiseConcern, ResolveConcern, SubmitReflection, SubmitReview
from events.digest import (
    CoordinatorDigest,
    DigestItem,
    DigestRow,
    MentorLoad,
    coordinator_digests,
    digest_notification,
    is_due,
    items_of,
)
from events.model import AnyEvent, Health, HealthChanged
from events.people import Participant
from events.projections import DIGEST, project
from events.settings import ProgrammeSettings
from events.state import Phase, RelationshipState
from tests.support.projection_stories import SECRET, stories
from tests.support.relationship_phases import (
    COORDINATOR,
    MENTEE,
    MENTOR,
    PROGRAMME,
    STREAM,
    Relationship,
    active,
    closing,
    in_review,
    matching,
)

SETTINGS = ProgrammeSettings(coordinator_ids=(COORDINATOR,))
PEOPLE = {
    MENTEE: Participant(participant_id=MENTEE, display_name="Priya Raman", email="priya@example.org"),
    MENTOR: Participant(participant_id=MENTOR, display_name="Marcus Webb", email="marcus@example.org"),
    COORDINATOR: Participant(
        participant_id=COORDINATOR, display_name="Lena Ortiz", email="lena@example.org", timezone="Europe/Berlin"
    ),
}


def row_of(events: list[AnyEvent]) -> DigestRow:
    [row] = project(DIGEST, {}, events).values()
    return row


def items(relationship: Relationship, settings: ProgrammeSettings = SETTINGS, load: list[MentorLoad] | None = None) -> list[DigestItem]:
    digests = coordinator_digests(settings, [row_of(relationship.history)], load or [], relationship.now)
    return [item for digest in digests for item in digest.items]


def kinds(relationship: Relationship, settings: ProgrammeSettings = SETTINGS) -> list[str]:
    return [item.kind for item in items(relationship, settings)]


def text_of(digest: CoordinatorDigest, day: date, settings: ProgrammeSettings = SETTINGS) -> str:
    notification = digest_notification(PROGRAMME, "Spring 2027", day, settings, digest)
    message = render(notification, PEOPLE[digest.coordinator_id], PEOPLE)
    assert message.from_template and "$" not in message.subject + message.body
    return message.subject + "\n" + message.body


# -- the row follows the relationship ------------------------------------------------------


def agrees(row: DigestRow, state: RelationshipState) -> None:
    assert (row.programme_id, row.mentee_id, row.mentor_id, row.phase) == (state.programme_id, state.mentee_id, state.mentor_id, state.phase)
    assert (row.health, row.health_reasons) == (state.health, state.health_reasons)
    assert (row.activated_at, row.last_meeting_at, row.resumed_at, row.paused_until) == (
        state.activated_at, state.last_meeting_at, state.resumed_at, state.paused_until,
    )  # fmt: skip
    assert set(row.open_concern_ids) == set(state.open_concerns)
    assert dict(zip(row.open_concern_ids, row.open_concerns_raised_at, strict=True)) == {
        concern_id: concern.raised_at for concern_id, concern in state.open_concerns.items()
    }
    candidate = state.candidate
    assert (row.candidate_id, row.proposed_at, row.accepted_by) == (
        (candidate.mentor_id, candidate.proposed_at, candidate.accepted_by) if candidate else (None, None, ())
    )
    review = state.review
    assert (row.review_kind, row.review_respond_by, row.review_answered_by) == (
        (review.kind, review.respond_by, tuple(sorted(review.submissions))) if review else (None, None, ())
    )
    assert (row.reflections_due_at, row.reflections_from, row.closed_at) == (state.reflections_due_at, state.reflections_from, state.closed_at)
    assert row.version == state.version


def test_the_row_agrees_with_the_relationships_own_state_after_every_event() -> None:
    drivers: list[Any] = [*stories(), in_review(), closing()]
    concerned = active()
    concerned.do(RaiseConcern, MENTEE, text=f"{SECRET} about the sessions")
    concerned.do(RaiseConcern, COORDINATOR, text=f"{SECRET} second")
    concerned.do(ResolveConcern, COORDINATOR, concern_id=concerned.state.open_concerns and next(iter(concerned.state.open_concerns)))
    drivers.append(concerned)
    corrected = active()
    corrected.meet()
    second = corrected.meet()[0]
    corrected.do(CorrectMeetingReport, MENTOR, meeting_number=second.meeting_number, outcome="not_held")  # type: ignore[attr-defined]
    assert corrected.state.last_meeting_at is not None and corrected.state.last_meeting_at < second.held_at  # type: ignore[attr-defined]
    drivers.append(corrected)
    for driver in drivers:
        rows: dict[Any, DigestRow] = {}
        for event, state in zip(driver.history, driver.states, strict=True):
            rows.update(project(DIGEST, rows, [event]))
            agrees(rows[(state.relationship_id,)], state)


def test_a_health_change_keeps_the_moment_it_entered_that_health() -> None:
    relationship = active(SETTINGS, meeting_frequency="monthly")
    relationship.advance(timedelta(days=40))
    entered = [e for e in relationship.history if isinstance(e, HealthChanged) and e.previous is Health.HEALTHY]
    assert entered and row_of(relationship.history).health_since == entered[-1].occurred_at


# -- the seed story: heard of at once, not at day 60 ---------------------------------------


class DailyRuns:
    """The digest run every morning at 06:00 the way the schedule runs it: due at most every
    `digest_every_days`, recorded only when there was something to send."""

    def __init__(self, relationship: Relationship, settings: ProgrammeSettings = SETTINGS):
        self.relationship, self.settings = relationship, settings
        self.last: date | None = None

    def run(self, days: int) -> dict[datetime, CoordinatorDigest]:
        """The digests sent over the next `days` mornings, by when they were sent."""
        relationship, sent = self.relationship, {}
        for _ in range(days):
            today = relationship.now.date() + timedelta(days=1)
            relationship.advance(to=datetime.combine(today, time(6), tzinfo=relationship.now.tzinfo))
            if not is_due(self.settings, self.last, today):
                continue
            digests = coordinator_digests(self.settings, [row_of(relationship.history)], [], relationship.now)
            if digests:
                [sent[relationship.now]] = digests
                self.last = today
        return sent


def test_the_seed_year_relationship_reaches_the_coordinator_the_morning_after_it_turns_at_risk() -> None:
    # A monthly relationship that held its first meeting, then went 42 days without one.
    relationship = active(SETTINGS, meeting_frequency="monthly")
    relationship.meet()
    first_meeting = relationship.now
    runs = DailyRuns(relationship)
    assert runs.run(29) == {}  # a month of meeting as agreed: nothing needs the coordinator
    sent = runs.run(14)
    assert (relationship.now - first_meeting).days == 42
    [turned] = [e for e in relationship.of_type(HealthChanged) if e.health is Health.AT_RISK]
    assert turned.occurred_at == first_meeting + timedelta(days=SETTINGS.at_risk_after_days)
    heard_at = min(sent)
    [item] = sent[heard_at].items
    assert item.kind == "at_risk" and item.reasons == ("quiet",) and item.since == turned.occurred_at
    # Heard of the first morning after it turned at risk, not when it stalls at day 60; and
    # reminded a week later while nobody meets.
    assert timedelta(0) < heard_at - turned.occurred_at <= timedelta(days=1)
    assert sorted(sent) == [heard_at, heard_at + timedelta(days=SETTINGS.digest_every_days or 0)]
    text = text_of(sent[heard_at], heard_at.date())
    assert f"Priya Raman and Marcus Webb (relationship {STREAM}): at risk since" in text
    assert item.days == (heard_at - first_meeting).days and f"Why: no meeting for {item.days} days." in text

    # Day 42 without a meeting: they meet, recover, and go quiet again — at risk a second
    # time, and the coordinator hears again, in the first digest due after that.
    relationship.meet()
    assert relationship.state.health is Health.HEALTHY
    sent = runs.run(45)
    again = [e for e in relationship.of_type(HealthChanged) if e.health is Health.AT_RISK][-1]
    assert again.occurred_at > turned.occurred_at
    first = min(sent)
    assert [item.kind for item in sent[first].items] == ["at_risk"] and sent[first].items[0].since == again.occurred_at
    assert timedelta(0) < first - again.occurred_at <= timedelta(days=1)


def test_a_stalled_relationship_is_listed_as_stalled_with_its_reasons() -> None:
    relationship = active(SETTINGS, meeting_frequency="monthly")
    relationship.advance(timedelta(days=SETTINGS.stalled_after_days + 2))
    assert relationship.state.health is Health.STALLED
    [item] = items(relationship)
    assert item.kind == "stalled" and "quiet" in item.reasons and item.days == SETTINGS.stalled_after_days + 2
    [digest] = coordinator_digests(SETTINGS, [row_of(relationship.history)], [], relationship.now)
    assert "stopped meeting" in text_of(digest, relationship.now.date())


# -- concerns: how many and how old, never what ---------------------------------------------


def test_an_open_concern_is_counted_and_aged_and_its_text_never_leaves_the_event() -> None:
    relationship = active()
    raised = relationship.do(RaiseConcern, MENTOR, text=f"{SECRET} the mentee never prepares")[0]
    relationship.advance(timedelta(days=3))
    relationship.meet()  # healthy again as to meetings; the concern keeps it at risk
    relationship.advance(timedelta(days=6, hours=1))
    listed = items(relationship)
    assert [item.kind for item in listed] == ["at_risk", "concerns"]
    concern = listed[1]
    assert (concern.count, concern.since, concern.days) == (1, raised.occurred_at, (relationship.now - raised.occurred_at).days)
    assert listed[0].reasons == ("concern_open",)
    [digest] = coordinator_digests(SETTINGS, [row_of(relationship.history)], [], relationship.now)
    notification = digest_notification(PROGRAMME, "Spring 2027", relationship.now.date(), SETTINGS, digest)
    text = text_of(digest, relationship.now.date())
    assert SECRET not in notification.model_dump_json() and SECRET not in text
    assert f"Priya Raman and Marcus Webb (relationship {STREAM}): 1 open concern, the oldest raised {concern.days} days ago." in text
    assert "Why: a concern is open." in text

    concern_id = next(iter(relationship.state.open_concerns))
    relationship.do(ResolveConcern, COORDINATOR, concern_id=concern_id)
    assert "concerns" not in kinds(relationship)


# -- matching --------------------------------------------------------------------------------


def test_a_proposal_is_listed_once_half_its_time_to_answer_has_passed_naming_who_is_silent() -> None:
    relationship = matching()  # proposed at T0, 7 days to answer
    relationship.advance(timedelta(days=3))
    assert kinds(relationship) == []
    relationship.do(AcceptMatch, MENTEE)
    relationship.advance(timedelta(hours=13))  # 3.5 days
    [item] = items(relationship)
    assert (item.kind, item.mentor_id, item.waiting_for, item.days) == ("proposal_unanswered", MENTOR, ("mentor",), 3)
    [digest] = coordinator_digests(SETTINGS, [row_of(relationship.history)], [], relationship.now)
    text = text_of(digest, relationship.now.date())
    assert f"Marcus Webb was proposed as the mentor of Priya Raman 3 days ago (relationship {STREAM}); no answer yet from the mentor." in text
    assert "What you can do: remind whoever has not answered, or propose another mentor." in text

    relationship.advance(timedelta(days=4))  # expired unanswered: the mentee waits for a mentor
    [item] = items(relationship)
    assert (item.kind, item.what, item.mentor_id, item.days) == ("waiting_for_mentor", "expired", MENTOR, 0)
    [digest] = coordinator_digests(SETTINGS, [row_of(relationship.history)], [], relationship.now)
    text = text_of(digest, relationship.now.date())
    assert f"Priya Raman (relationship {STREAM}) has had no mentor for 0 days: the proposal of Marcus Webb expired unanswered." in text
    assert "What you can do: propose a mentor." in text


# -- reviews and reflections ----------------------------------------------------------------


def test_a_review_closing_before_the_next_digest_is_listed_then_once_more_if_it_closed_unanswered() -> None:
    relationship = in_review()
    respond_by = relationship.state.review.respond_by  # type: ignore[union-attr]
    assert kinds(relationship) == []  # 14 days to answer: not before the next digest
    relationship.do(SubmitReview, MENTEE, outcome="continue")
    relationship.advance(to=respond_by - timedelta(days=6))
    [item] = items(relationship)
    assert (item.kind, item.what, item.due, item.waiting_for) == ("review_due", "midpoint", respond_by, ("mentor",))
    relationship.advance(to=respond_by + timedelta(days=1))
    assert relationship.state.phase is Phase.ACTIVE
    [item] = [i for i in items(relationship) if i.kind.startswith("review")]
    assert (item.kind, item.what, item.waiting_for) == ("review_unanswered", "midpoint", ("mentor",))
    [digest] = coordinator_digests(SETTINGS, [row_of(relationship.history)], [], relationship.now)
    due = respond_by.astimezone(ZoneInfo("Europe/Berlin"))
    assert f"the midpoint review closed {due:%A} {due.day} {due:%B %Y}, {due:%H:%M} {due.tzname()} without an answer from the mentor." in text_of(digest, relationship.now.date())
    # After one period it is old news.
    relationship.advance(timedelta(days=SETTINGS.digest_every_days or 0))
    assert "review_unanswered" not in kinds(relationship)


def test_closing_reflections_due_then_missing_after_the_closure() -> None:
    relationship = closing()  # the mentee closed it; both asked to reflect in 14 days
    assert kinds(relationship) == []
    relationship.do(SubmitReflection, MENTEE, text=f"{SECRET} it helped")
    relationship.advance(timedelta(days=8))
    [item] = items(relationship)
    assert (item.kind, item.waiting_for) == ("reflections_due", ("mentor",))
    relationship.advance(timedelta(days=7))
    assert relationship.state.is_closed
    [item] = items(relationship)
    assert (item.kind, item.waiting_for, item.due) == ("reflections_missing", ("mentor",), relationship.state.closed_at)
    relationship.advance(timedelta(days=7))
    assert kinds(relationship) == []


# -- who hears of what ---------------------------------------------------------------------


def test_each_coordinator_gets_their_own_digest_without_relationships_they_are_a_party_of() -> None:
    settings = ProgrammeSettings(coordinator_ids=(COORDINATOR, MENTOR, "coord-2", COORDINATOR))
    relationship = active(settings)
    relationship.do(RaiseConcern, MENTEE, text="about the mentor")
    load = [MentorLoad(mentor_id=MENTOR, taken=2, capacity=2), MentorLoad(mentor_id="mentor-9", taken=1, capacity=3),
            MentorLoad(mentor_id="mentor-0", taken=0, capacity=0)]  # fmt: skip
    digests = coordinator_digests(settings, [row_of(relationship.history)], load, relationship.now)
    by_coordinator = {d.coordinator_id: [i.kind for i in d.items] for d in digests}
    assert by_coordinator == {
        COORDINATOR: ["at_risk", "concerns", "mentor_at_capacity"],
        # The mentor, a coordinator too, hears nothing of the concern raised in their relationship.
        MENTOR: ["mentor_at_capacity"],
        "coord-2": ["at_risk", "concerns", "mentor_at_capacity"],
    }
    [full] = [i for i in digests[0].items if i.kind == "mentor_at_capacity"]
    assert "Marcus Webb: 2 of 2 places taken." in text_of(digests[0], relationship.now.date(), settings)


def test_no_digest_when_it_is_off_or_nobody_coordinates() -> None:
    relationship = active(SETTINGS, meeting_frequency="monthly")
    relationship.advance(timedelta(days=40))
    rows = [row_of(relationship.history)]
    off = SETTINGS.model_copy(update={"digest_every_days": None})
    assert coordinator_digests(off, rows, [], relationship.now) == []
    assert coordinator_digests(ProgrammeSettings(), rows, [], relationship.now) == []
    assert not is_due(off, None, date(2027, 5, 1)) and not is_due(ProgrammeSettings(), None, date(2027, 5, 1))
    assert is_due(SETTINGS, None, date(2027, 5, 1))
    assert not is_due(SETTINGS, date(2027, 4, 25), date(2027, 5, 1)) and is_due(SETTINGS, date(2027, 4, 24), date(2027, 5, 1))
    # A paused relationship is on hold by agreement: its health is not news.
    assert coordinator_digests(SETTINGS, [rows[0].model_copy(update={"paused_until": relationship.now})], [], relationship.now) == []


@pytest.mark.parametrize("value", [0, 91, "weekly"])
def test_the_setting_is_checked_and_named(value: Any) -> None:
    with pytest.raises(ValidationError, match="digest_every_days"):
        ProgrammeSettings(digest_every_days=value)
    assert ProgrammeSettings(digest_every_days=None).digest_every_days is None
    assert ProgrammeSettings().digest_every_days == 7


# -- the message ------------------------------------------------------------------------------


def test_the_notification_carries_ids_numbers_and_dates_and_gives_its_items_back() -> None:
    relationship = active(SETTINGS, meeting_frequency="monthly")
    relationship.advance(timedelta(days=31))
    relationship.do(RaiseConcern, MENTEE, text=f"{SECRET} worried")
    [digest] = coordinator_digests(SETTINGS, [row_of(relationship.history)], [], relationship.now)
    day = relationship.now.date()
    notification = digest_notification(PROGRAMME, "Spring 2027", day, SETTINGS, digest)
    assert notification.notification_id == f"coordinator_digest:{PROGRAMME}:{day.isoformat()}:{COORDINATOR}"
    assert (notification.template, notification.recipient_id, notification.relationship_id) == (
        "coordinator_digest", COORDINATOR, f"programme/{PROGRAMME}",
    )  # fmt: skip
    assert items_of(notification.data) == list(digest.items)
    assert "Priya" not in notification.model_dump_json() and SECRET not in notification.model_dump_json()
    message = render(notification, PEOPLE[COORDINATOR], PEOPLE)
    assert message.subject == "Mentoring digest for Spring 2027: 2 things to look at"
    body = message.body
    assert body.startswith("Hello Lena Ortiz,\n\nThis is what needs you in Spring 2027 (prog-phases), as of ")
    assert "At risk:\n- Priya Raman and Marcus Webb" in body and "\nWhat you can do: nudge them to meet" in body
    assert "Why: no meeting for 31 days, a concern is open." in body
    assert "mute coordinator_digest" in body and f"--id {COORDINATOR} --mute coordinator_digest" in body
    assert body.rstrip().endswith("Your mentoring programme") and "(relationship programme/" not in body
    assert message.meeting is None
