"""An early closure reaches the coordinators at once (issue #11), tested on the pure rules.

Before, only the two parties heard of it (the reflection request) and the coordinators
learnt of it from the final summary days later — or, if nobody reflected, only at the
reflection deadline — although the default exit plan itself says to tell the coordinator.
Now every early closure tells each coordinator, in the decision that closes it, with the
reason and who closed it; the confidential `note` the closer wrote never leaves the event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from activities.templates import render
from events.commands import (
    DIRECTORY_ACTOR,
    CloseRelationship,
    DeclineMatch,
    ReportParticipantLeft,
    RequestReview,
    SubmitReview,
)
from events.model import AnyEvent, ClosureBegun, ClosureReason, RelationshipClosed
from events.notifications import EARLY_CLOSURE_REASONS, Notification
from events.people import Participant
from events.settings import ProgrammeSettings
from events.state import Phase
from tests.support.relationship_phases import (
    COORDINATOR,
    MENTEE,
    MENTOR,
    STREAM,
    Relationship,
    active,
    agreeing,
    matching,
)

# Planted in the note of every closure; it must never reach a notification.
NOTE = "NOTE-early-exit-9b2e"
SECOND_COORDINATOR = "coord-p2"
TWO_COORDINATORS = ProgrammeSettings(coordinator_ids=(COORDINATOR, SECOND_COORDINATOR))

PEOPLE = {
    MENTEE: Participant(participant_id=MENTEE, display_name="Priya Raman", email="priya@example.org"),
    MENTOR: Participant(participant_id=MENTOR, display_name="Marcus Webb", email="marcus@example.org"),
    COORDINATOR: Participant(
        participant_id=COORDINATOR, display_name="Lena Ortiz", email="lena@example.org", timezone="Europe/Berlin"
    ),
}


def early_notices(notifications: list[Notification]) -> list[Notification]:
    return [n for n in notifications if n.template == "relationship_closed_early"]


def the_closure(events: list[AnyEvent]) -> ClosureBegun | RelationshipClosed:
    [closure] = [e for e in events if isinstance(e, (ClosureBegun, RelationshipClosed))]
    return closure


def told_of_the_closure(relationship: Relationship, events: list[AnyEvent], reason: ClosureReason) -> list[tuple[str, str]]:
    """Who the closure among `events` (for `reason`) tells, and with which template."""
    closure = the_closure(events)
    assert closure.reason is reason
    return [(n.recipient_id, n.template) for n in relationship.notifications_of([closure])]


def assert_no_note(notifications: list[Notification]) -> None:
    for notification in notifications:
        assert NOTE not in notification.model_dump_json(), notification.template


# -- which closures are early ------------------------------------------------------------


def test_which_closure_reasons_count_as_early() -> None:
    # term_completed is the planned end; unmatched and agreement_expired end a relationship
    # that never got under way and close at once, so the summary tells the coordinators then.
    assert set(ClosureReason) - EARLY_CLOSURE_REASONS == {
        ClosureReason.TERM_COMPLETED,
        ClosureReason.UNMATCHED,
        ClosureReason.AGREEMENT_EXPIRED,
    }


# -- an active relationship closing early: every way it happens --------------------------


def closed_by(actor: str) -> tuple[Relationship, list[AnyEvent]]:
    relationship = active(TWO_COORDINATORS)
    relationship.meet()
    return relationship, relationship.do(CloseRelationship, actor, note=f"{NOTE} it is not working")


def participant_left() -> tuple[Relationship, list[AnyEvent]]:
    relationship = active(TWO_COORDINATORS)
    return relationship, relationship.do(ReportParticipantLeft, DIRECTORY_ACTOR, participant_id=MENTOR)


def stalled() -> tuple[Relationship, list[AnyEvent]]:
    settings = TWO_COORDINATORS.model_copy(update={"close_stalled_after_days": 20})
    relationship = active(settings, term_months=12, meeting_frequency="monthly")
    return relationship, relationship.advance(timedelta(days=90))


def review_decided_close() -> tuple[Relationship, list[AnyEvent]]:
    relationship = active(TWO_COORDINATORS)
    relationship.do(RequestReview, MENTOR)
    relationship.do(SubmitReview, MENTEE, outcome="continue")
    return relationship, relationship.do(SubmitReview, MENTOR, outcome="close", comment=f"{NOTE} not for me")


EARLY_WAYS: dict[ClosureReason, tuple[Callable[[], tuple[Relationship, list[AnyEvent]]], str | None]] = {
    ClosureReason.CLOSED_BY_MENTEE: (lambda: closed_by(MENTEE), MENTEE),
    ClosureReason.CLOSED_BY_MENTOR: (lambda: closed_by(MENTOR), MENTOR),
    ClosureReason.CLOSED_BY_COORDINATOR: (lambda: closed_by(COORDINATOR), COORDINATOR),
    ClosureReason.PARTICIPANT_LEFT: (participant_left, DIRECTORY_ACTOR),
    ClosureReason.STALLED: (stalled, None),
    ClosureReason.REVIEW_DECIDED_CLOSE: (review_decided_close, None),
}


def test_every_early_reason_is_tried() -> None:
    assert set(EARLY_WAYS) == EARLY_CLOSURE_REASONS


@pytest.mark.parametrize("reason", list(EARLY_WAYS), ids=str)
def test_an_early_closure_tells_every_coordinator_at_once_with_reason_and_closer(reason: ClosureReason) -> None:
    close, closer = EARLY_WAYS[reason]
    relationship, events = close()
    begun = the_closure(events)
    assert isinstance(begun, ClosureBegun) and begun.reason is reason
    assert relationship.state.phase is Phase.CLOSING

    # Told by the very event that begins the closure, not by the summary days later.
    told = relationship.notifications_of([begun])
    notices = early_notices(told)
    assert [n.recipient_id for n in notices] == [COORDINATOR, SECOND_COORDINATOR]
    expected = {
        "reason": reason.value,
        "mentee_id": MENTEE,
        "mentor_id": MENTOR,
        "respond_by": begun.reflections_due_at.isoformat(),
    }
    if closer is not None:
        expected["closed_by_id"] = closer
    assert all(n.data == expected for n in notices)
    assert {n.notification_id for n in notices} == {
        f"{begun.event_id}:relationship_closed_early:{c}" for c in (COORDINATOR, SECOND_COORDINATOR)
    }
    # The parties are asked to reflect as before, and are not sent the coordinators' notice.
    assert {n.recipient_id for n in told if n.template == "reflection_request"} == {MENTEE, MENTOR}
    assert len(told) == len({n.notification_id for n in told})
    assert_no_note(relationship.notifications_of(relationship.history[1:]))

    # The summary still reaches everyone when it closes; the coordinators are not told the
    # closure a second time then.
    finished = relationship.advance(timedelta(days=30))
    closed = the_closure(finished)
    assert isinstance(closed, RelationshipClosed) and relationship.state.is_closed
    at_the_end = relationship.notifications_of([closed])
    assert [(n.recipient_id, n.template) for n in at_the_end] == [
        (MENTEE, "relationship_summary"),
        (MENTOR, "relationship_summary"),
        (COORDINATOR, "relationship_summary"),
        (SECOND_COORDINATOR, "relationship_summary"),
    ]


def test_the_note_is_in_the_event_and_in_no_notification_nor_message() -> None:
    relationship, events = closed_by(MENTEE)
    begun = the_closure(events)
    assert isinstance(begun, ClosureBegun) and NOTE in begun.note  # the event store keeps (encrypts) it
    relationship.advance(timedelta(days=30))
    told = relationship.notifications_of(relationship.history[1:])
    assert_no_note(told)
    for notification in told:
        recipient = PEOPLE.get(notification.recipient_id, PEOPLE[COORDINATOR])
        message = render(notification, recipient, PEOPLE)
        assert NOTE not in message.subject + message.body, notification.template


def test_the_coordinators_message_says_why_who_and_until_when_in_plain_text() -> None:
    relationship, events = closed_by(MENTOR)
    begun = the_closure(events)
    assert isinstance(begun, ClosureBegun)
    [notice, _] = early_notices(relationship.notifications_of([begun]))
    message = render(notice, PEOPLE[COORDINATOR], PEOPLE)
    assert message.from_template
    assert message.subject == "Mentoring relationship closed early"
    body = message.body
    assert body.startswith("Hello Lena Ortiz,\n\n")
    assert f"The mentoring relationship {STREAM} of Priya Raman has been closed early (closed by mentor)." in body
    assert "Mentor: Marcus Webb." in body
    assert "Closed by: Marcus Webb." in body
    # The reflection deadline, in the coordinator's own zone (14 days after the closure).
    due = begun.reflections_due_at.astimezone(ZoneInfo(PEOPLE[COORDINATOR].timezone))
    assert f"closing reflection by {due:%A} {due.day} {due:%B %Y}, {due:%H:%M} {due.tzname()}" in body
    assert "Summary:" not in body  # the summary follows when it has closed
    assert "$" not in message.subject + body
    assert message.meeting is None


# -- closing before the relationship got going: closed at once ---------------------------


@pytest.mark.parametrize("phase", ["matching", "agreement"])
def test_closing_before_the_start_tells_the_coordinator_once_with_the_closer_and_the_summary(phase: str) -> None:
    relationship = matching() if phase == "matching" else agreeing()
    events = relationship.do(CloseRelationship, MENTEE, note=f"{NOTE} changed my mind")
    closed = the_closure(events)
    assert isinstance(closed, RelationshipClosed) and closed.reason is ClosureReason.CLOSED_BY_MENTEE
    assert NOTE in closed.note
    told = relationship.notifications_of([closed])
    # One message each: the parties their summary, the coordinator the early-closure notice,
    # which carries the summary's figures too.
    assert [(n.recipient_id, n.template) for n in told] == [
        (MENTEE, "relationship_summary"),
        (MENTOR, "relationship_summary"),
        (COORDINATOR, "relationship_closed_early"),
    ]
    notice = told[-1]
    assert notice.data["closed_by_id"] == MENTEE and notice.data["reason"] == "closed_by_mentee"
    assert notice.data["meetings_held"] == "0" and "respond_by" not in notice.data
    # A proposed mentor is not named as the mentor; a matched one is.
    assert notice.data.get("mentor_id") == (None if phase == "matching" else MENTOR)
    assert_no_note(told)
    body = render(notice, PEOPLE[COORDINATOR], PEOPLE).body
    assert "closed early (closed by mentee)" in body and "Closed by: Priya Raman." in body
    assert "Summary: 0 meetings held and 0 of" in body and "closing reflection" not in body


def test_a_coordinator_who_is_also_a_party_is_told_once_as_a_party() -> None:
    relationship = active(ProgrammeSettings(coordinator_ids=(COORDINATOR, MENTOR)))
    [begun] = [e for e in relationship.do(CloseRelationship, MENTEE, note=NOTE) if isinstance(e, ClosureBegun)]
    told = relationship.notifications_of([begun])
    assert [n.recipient_id for n in early_notices(told)] == [COORDINATOR]
    assert {n.template for n in told if n.recipient_id == MENTOR} == {"reflection_request", "meeting_withdrawn"}


def test_a_programme_without_coordinators_sends_no_notice() -> None:
    relationship = active(ProgrammeSettings())
    events = relationship.do(CloseRelationship, MENTEE)
    assert early_notices(relationship.notifications_of(events)) == []


# -- closures that are not early ---------------------------------------------------------


def test_the_planned_end_is_no_early_closure() -> None:
    settings = ProgrammeSettings(coordinator_ids=(COORDINATOR,), midpoint_review=False)
    relationship = active(settings, term_months=1)
    while relationship.state.review is None:
        # Meeting as agreed until the final review opens (no meeting is due after the last one).
        if relationship.state.next_meeting is not None:
            relationship.meet()
        else:
            relationship.advance(timedelta(days=1))
    assert relationship.state.review.kind == "final"
    relationship.do(SubmitReview, MENTEE, outcome="close")
    events = relationship.do(SubmitReview, MENTOR, outcome="close")
    begun = the_closure(events)
    assert isinstance(begun, ClosureBegun) and begun.reason is ClosureReason.TERM_COMPLETED
    assert early_notices(relationship.notifications_of(events)) == []


def test_no_match_and_an_unsigned_agreement_reach_the_coordinator_as_the_summary_at_once() -> None:
    unmatched = matching(ProgrammeSettings(coordinator_ids=(COORDINATOR,), max_match_attempts=1))
    told = told_of_the_closure(unmatched, unmatched.do(DeclineMatch, MENTOR, reason=NOTE), ClosureReason.UNMATCHED)
    assert told == [(MENTEE, "relationship_summary"), (COORDINATOR, "relationship_summary")]

    expired = agreeing()
    told = told_of_the_closure(expired, expired.advance(timedelta(days=15)), ClosureReason.AGREEMENT_EXPIRED)
    assert told == [
        (MENTEE, "relationship_summary"),
        (MENTOR, "relationship_summary"),
        (COORDINATOR, "relationship_summary"),
    ]
