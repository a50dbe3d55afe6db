"""The state's models share pydantic's set of given fields between equal ones (events/state.py,
issue #16): what each model reports stays its own, and changing a copy changes no other."""

from __future__ import annotations

from datetime import UTC, datetime

from events.state import AppliedCommand, Phase, PastMeeting

WHEN = datetime(2026, 12, 5, 9, tzinfo=UTC)


def test_models_given_the_same_fields_share_one_set_and_report_their_own_fields() -> None:
    first = AppliedCommand(message="record_meeting", events=("MeetingHeld",), version=7, phase=Phase.ACTIVE)
    second = AppliedCommand(message="sign_agreement", events=("AgreementSigned",), version=3, phase=Phase.AGREEMENT)
    fewer = AppliedCommand(version=2, phase=Phase.MATCHING)
    assert first.model_fields_set is second.model_fields_set
    assert first.model_fields_set == {"message", "events", "version", "phase"}
    assert fewer.model_fields_set == {"version", "phase"}
    assert fewer.model_dump(exclude_unset=True) == {"version": 2, "phase": Phase.MATCHING}


def test_a_copy_with_changes_leaves_every_model_that_shared_its_set_as_it_was() -> None:
    held = PastMeeting(meeting_number=1, starts_at=WHEN, outcome="missed")
    other = PastMeeting(meeting_number=2, starts_at=WHEN, outcome="missed")
    assert held.model_fields_set is other.model_fields_set

    reported = held.model_copy(update={"outcome": "held", "held_at": WHEN, "duration_minutes": 45})
    assert reported.model_fields_set == {"meeting_number", "starts_at", "outcome", "held_at", "duration_minutes"}
    assert held.model_fields_set == other.model_fields_set == {"meeting_number", "starts_at", "outcome"}
    assert other.model_dump(exclude_unset=True) == {"meeting_number": 2, "starts_at": WHEN, "outcome": "missed"}
    # An equal copy made again shares the first copy's set.
    again = other.model_copy(update={"outcome": "held", "held_at": WHEN, "duration_minutes": 30})
    assert again.model_fields_set is reported.model_fields_set
