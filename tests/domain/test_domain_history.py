"""The history itself: idempotent commands, stored events and their upcasting, event ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.commands import (
    AcceptMatch, CloseRelationship, Goal, GoalAssessment, PauseRelationship, ProposeAgreement, ProposeGoalRevision,
    ProposeMatch, RaiseConcern, RecordGoalProgress, RescheduleMeeting, SubmitFeedback, SubmitReflection, SubmitReview,
)
from events.decider import Rejection, decide, decide_deadline, reject, start_relationship
from events.model import CommandRejected, MatchAccepted, MatchDeclined, MeetingHeld
from events.store import UPCASTERS, load_event
from events.refusals import RefusalCode, refuse
from events.state import REJECTIONS_KEPT, Phase, RelationshipState
from events.decider import evolve, fold
from tests.support.domain_story import (
    COORDINATOR, MENTEE, MENTOR, PROGRAMME, PROGRAMME_SETTINGS, STREAM, Story, T0, active, in_review, matched,
    programme, reviewed, terms,
)

# --- idempotency --------------------------------------------------------------------------


def test_a_command_id_already_applied_decides_nothing() -> None:
    story = Story()
    first = ProposeMatch(command_id="cmd-retried", actor_id=COORDINATOR, mentor_id=MENTOR)
    story.apply(decide(story.state, first, story.now))  # type: ignore[arg-type]
    assert "cmd-retried" in story.state.processed_command_ids

    assert decide(story.state, first, story.now) == []
    assert story.state.applied_commands["cmd-retried"].events == ("MatchProposed",)


def test_a_command_id_reused_for_other_content_is_refused_not_answered_as_a_retry() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR, command_id="cmd-1")
    other_message = AcceptMatch(command_id="cmd-1", actor_id=MENTEE)
    other_content = ProposeMatch(command_id="cmd-1", actor_id=COORDINATOR, mentor_id="someone-else")
    for reused in (other_message, other_content):
        decision = decide(story.state, reused, story.now)
        assert isinstance(decision, Rejection) and decision.code is RefusalCode.COMMAND_ID_REUSED
        assert "propose_match" in decision.reason


def test_a_retried_command_while_closing_or_closed_is_still_a_no_op_not_a_rejection() -> None:
    story = active()
    close = CloseRelationship(command_id="close-1", actor_id=MENTOR)
    story.apply(decide(story.state, close, story.now))  # type: ignore[arg-type]
    assert story.state.phase is Phase.CLOSING
    assert decide(story.state, close, story.now) == []
    reflection = SubmitReflection(command_id="reflect-1", actor_id=MENTOR, text="x")
    story.apply(decide(story.state, reflection, story.now))  # type: ignore[arg-type]
    story.advance(timedelta(days=30))
    assert story.state.is_closed
    assert decide(story.state, close, story.now) == [] and decide(story.state, reflection, story.now) == []


def test_a_rejected_command_does_not_use_its_id_up() -> None:
    story = Story()
    premature = AcceptMatch(command_id="early-accept", actor_id=MENTEE)
    decision = decide(story.state, premature, story.now)
    assert isinstance(decision, Rejection)

    rejected = reject(story.state, premature.message_name, premature.command_id, decision, story.now)
    assert isinstance(rejected, CommandRejected)
    assert (rejected.version, rejected.command_id) == (2, "early-accept")
    story.apply([rejected])
    assert "early-accept" not in story.state.processed_command_ids
    [kept] = story.state.rejected_commands
    assert (kept.command_id, kept.command_name, kept.code, kept.reason) == (
        "early-accept",
        "accept_match",
        RefusalCode.NOT_FOUND,
        decision.reason,
    )

    # Sent again once a proposal exists, the command is decided afresh (a corrected resend).
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    [accepted] = decide(story.state, premature, story.now)  # type: ignore[misc]
    assert isinstance(accepted, MatchAccepted)


def test_only_the_most_recent_rejections_are_kept_in_state() -> None:
    story = Story()
    for number in range(REJECTIONS_KEPT + 5):
        story.apply([reject(story.state, "accept_match", f"bad-{number}", refuse(RefusalCode.NOT_ALLOWED, "no proposal"), story.now)])
    kept = story.state.rejected_commands
    assert len(kept) == REJECTIONS_KEPT
    assert kept[0].command_id == "bad-5" and kept[-1].command_id == f"bad-{REJECTIONS_KEPT + 4}"
    # …and no rejected id is used up.
    assert not {f"bad-{number}" for number in range(REJECTIONS_KEPT + 5)} & story.state.processed_command_ids


def test_a_rejection_without_a_command_id_still_gets_a_unique_event_id() -> None:
    story = Story()
    first = reject(story.state, "accept_match", None, refuse(RefusalCode.NOT_ALLOWED, "malformed"), story.now)
    story.apply([first])
    second = reject(story.state, "accept_match", None, refuse(RefusalCode.NOT_ALLOWED, "malformed"), story.now)
    assert first.event_id != second.event_id
    assert story.state.processed_command_ids == frozenset()


# --- stored events ------------------------------------------------------------------------


def test_every_event_of_a_history_round_trips_through_its_stored_json_form() -> None:
    story = in_review(programme(feedback_every_sessions=2))
    story.do(SubmitFeedback, MENTEE, feedback_round=1, score=2, comment="meh")
    story.do(RaiseConcern, MENTOR, text="worry")
    story.do(RecordGoalProgress, MENTEE, goal_id="g1", progress_percent=100, milestones_reached=("m1",))
    story.do(ProposeGoalRevision, MENTOR, goal=Goal(goal_id="g3", title="New"))
    story.do(SubmitReview, MENTEE, outcome="extend", goal_assessments=(GoalAssessment(goal_id="g1", progress_percent=100),))
    story.do(SubmitReview, MENTOR, outcome="extend", extension_months=1)
    story.do(RescheduleMeeting, MENTEE, meeting_number=story.meeting.meeting_number, starts_at=story.now + timedelta(days=3))
    story.do(PauseRelationship, MENTOR, until=story.now + timedelta(days=4))
    story.advance(timedelta(days=5))
    story.apply([reject(story.state, "submit_review", "late-1", refuse(RefusalCode.NOT_ALLOWED, "already submitted"), story.now)])
    story.do(CloseRelationship, COORDINATOR)
    story.do(SubmitReflection, MENTEE, text="bye")
    story.advance(timedelta(days=20))
    assert story.state.is_closed
    assert len({event.type for event in story.history}) >= 30
    stored = [event.model_dump(mode="json") for event in story.history]
    loaded = [load_event(data) for data in stored]
    assert loaded == story.history
    assert fold(loaded) == story.state
    # The state the workflow carries across continue-as-new survives JSON as well.
    for state in story.states[::7] + [story.state]:
        assert RelationshipState.model_validate_json(state.model_dump_json()) == state


def test_load_event_lifts_an_older_stored_schema_with_the_registered_upcaster(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend MatchDeclined v1 stored "who" instead of "party"/"declined_by" and had no reason.
    def upcast_match_declined_v1_v2(data: dict[str, Any]) -> dict[str, Any]:
        who = data.pop("who")
        return data | {"party": who["party"], "declined_by": who["id"], "reason": ""}

    monkeypatch.setitem(UPCASTERS, ("MatchDeclined", 1), upcast_match_declined_v1_v2)
    stored = {
        "type": "MatchDeclined",
        "schema_version": 1,
        "stream_id": STREAM,
        "version": 3,
        "event_id": "evt-3",
        "occurred_at": "2025-01-07T09:00:00Z",
        "command_id": "cmd-3",
        "mentor_id": MENTOR,
        "who": {"party": "mentor", "id": MENTOR},
    }
    snapshot = dict(stored)

    event = load_event(stored)

    assert isinstance(event, MatchDeclined)
    assert (event.party, event.declined_by, event.reason, event.schema_version) == ("mentor", MENTOR, "", 2)
    assert event.occurred_at == datetime(2025, 1, 7, 9, 0, tzinfo=UTC)
    assert stored == snapshot, "a stored event is never rewritten"


def test_load_event_applies_a_chain_of_upcasters_from_the_stored_version_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        return data | {"duration": data.pop("hours") * 60}

    def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
        calls.append(2)
        return data | {"duration_minutes": data.pop("duration")}

    monkeypatch.setitem(UPCASTERS, ("MeetingHeld", 1), v1_to_v2)
    monkeypatch.setitem(UPCASTERS, ("MeetingHeld", 2), v2_to_v3)
    envelope = {
        "type": "MeetingHeld",
        "stream_id": STREAM,
        "version": 9,
        "event_id": "evt-9",
        "occurred_at": "2025-02-01T10:00:00+00:00",
        "meeting_number": 1,
        "held_at": "2025-02-01T09:00:00+00:00",
        "recorded_by": MENTEE,
    }

    oldest = load_event(envelope | {"hours": 2})  # no schema_version stored means version 1
    assert isinstance(oldest, MeetingHeld)
    assert (oldest.duration_minutes, oldest.schema_version) == (120, 3)
    assert calls == [1, 2]

    calls.clear()
    middle = load_event(envelope | {"schema_version": 2, "duration": 45})
    assert isinstance(middle, MeetingHeld) and middle.duration_minutes == 45
    assert calls == [2]

    calls.clear()
    current = load_event(envelope | {"schema_version": 3, "duration_minutes": 30})
    assert isinstance(current, MeetingHeld) and current.duration_minutes == 30
    assert calls == []


def test_load_event_without_an_upcaster_rejects_an_unknown_old_shape() -> None:
    with pytest.raises(ValueError):
        load_event({"type": "MatchDeclined", "stream_id": STREAM, "version": 3, "event_id": "e",
                    "occurred_at": "2025-01-07T09:00:00Z", "mentor_id": MENTOR, "who": "mentor"})  # fmt: skip


def test_a_stream_must_begin_with_relationship_started_and_versions_must_follow() -> None:
    story = Story()
    decision = decide(story.state, story.command(ProposeMatch, COORDINATOR, mentor_id=MENTOR), story.now)
    assert isinstance(decision, list)
    [proposed] = decision
    with pytest.raises(ValueError, match="must begin with RelationshipStarted"):
        evolve(None, proposed)
    with pytest.raises(ValueError, match="does not follow"):
        evolve(evolve(story.state, proposed), proposed)
    with pytest.raises(ValueError, match="may only begin a stream"):
        evolve(story.state, story.history[0].model_copy(update={"version": 2}))


# --- event ids ----------------------------------------------------------------------------


def test_deciding_the_same_thing_twice_yields_identical_events() -> None:
    story = matched()
    command = ProposeAgreement(command_id="agree-1", actor_id=MENTEE, terms=terms())
    assert decide(story.state, command, story.now) == decide(story.state, command, story.now)

    later = story.now + timedelta(days=30)
    first, second = decide_deadline(story.state, later), decide_deadline(story.state, later)
    assert first and first == second
    assert [event.event_id for event in first] == [event.event_id for event in second]

    assert start_relationship(STREAM, PROGRAMME, MENTEE, PROGRAMME_SETTINGS, T0) == start_relationship(
        STREAM, PROGRAMME, MENTEE, PROGRAMME_SETTINGS, T0
    )


def test_different_causes_at_the_same_version_get_different_event_ids() -> None:
    story = matched()
    by_mentee = decide(story.state, ProposeAgreement(command_id="a", actor_id=MENTEE, terms=terms()), story.now)
    by_mentor = decide(story.state, ProposeAgreement(command_id="b", actor_id=MENTOR, terms=terms()), story.now)
    assert isinstance(by_mentee, list) and isinstance(by_mentor, list)
    assert by_mentee[0].version == by_mentor[0].version
    assert by_mentee[0].event_id != by_mentor[0].event_id
    other_stream = start_relationship("rel-2", PROGRAMME, MENTEE, PROGRAMME_SETTINGS, T0)
    assert other_stream[0].event_id != story.history[0].event_id


def test_event_ids_are_unique_and_versions_contiguous_across_a_whole_history() -> None:
    story = reviewed("continue")
    story.advance(timedelta(days=400))
    assert story.state.is_closed
    assert [event.version for event in story.history] == list(range(1, len(story.history) + 1))
    ids = [event.event_id for event in story.history]
    assert len(ids) == len(set(ids))
    assert all(event.stream_id == STREAM for event in story.history)
