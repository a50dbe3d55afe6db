"""Every field of every command lands in an event, or the command is refused (issue #11).

`close_relationship` accepted a `note` and stored it nowhere: the sender was told the
command was applied, and what they wrote was gone. This test walks every command model in
`COMMAND_TYPES` and each of its fields, nested ones too (the agreement's goals,
milestones, availability and windows, a goal revision's goal, a review's goal
assessments), sends it to a relationship in a phase that accepts it, with a distinctive
value in every field, and proves each value reaches the events `decide` returns, as they
are stored (`event.model_dump(mode="json")`):

1. **Presence**: each value is found in the events, at some place (its *places*). Times
   are compared as times (`"07:13"` is stored as `"07:13:00"`, an offset as given).
2. **Cause**: the same command with only that value changed (to another value the schema
   accepts) is either refused because of it, or stores the new value in one of those
   places. A value that happens to occur in the events anyway (a small number, a boolean,
   an enum word) thus cannot pass for stored: if the field were dropped, changing it would
   change nothing.

`command_id` and `actor_id` are the envelope of every command and land transformed; how,
is the explicit allow-list below. So are the fields whose other values are refused:
references to something the relationship has (a goal, a meeting, a revision, …) and one
value another field depends on.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel

from events.commands import (
    COMMAND_TYPES,
    DIRECTORY_ACTOR,
    Command,
    PauseRelationship,
    ProposeGoalRevision,
    RaiseConcern,
    read_command,
)
from events.decider import decide
from events.model import AnyEvent
from events.refusals import RefusalCode, Rejection
from events.settings import ProgrammeSettings
from tests.support.contract_schemas import message_schemas, subschema
from tests.support.relationship_phases import (
    COORDINATOR,
    MENTEE,
    MENTOR,
    Relationship,
    active,
    agreeing,
    closing,
    matching,
    proposed,
)

JSON = dict[str, Any]
Path = tuple[str | int, ...]

# -- the allow-list: values that legitimately land transformed ------------------------------

# `command_id` is the envelope `command_id` of every event the command causes; a command that
# creates something also names it after itself (the id to refer to it by later).
COMMAND_ID_ALSO_AS = {"raise_concern": "concern_id", "propose_goal_revision": "revision_id"}
# `actor_id` lands in a `*_by` field of an event (proposed_by, signed_by, closed_by, …), but
# these events record which side acted, `party` ("mentee"/"mentor"), and the state maps the
# side to its id.
ACTOR_AS_PARTY = {"submit_feedback", "submit_review", "submit_reflection"}
# Fields that refer to something the relationship already has (or must match it): another
# value is refused (not_found), and the value stored is that very thing.
REFERENCES = {
    ("sign_agreement", "agreement_version"),
    ("record_meeting", "meeting_number"),
    ("cancel_meeting", "meeting_number"),
    ("reschedule_meeting", "meeting_number"),
    ("report_meeting_not_held", "meeting_number"),
    ("correct_meeting_report", "meeting_number"),
    ("record_goal_progress", "goal_id"),
    ("record_goal_progress", "milestones_reached.*"),
    ("acknowledge_goal_revision", "revision_id"),
    ("submit_feedback", "feedback_round"),
    ("resolve_concern", "concern_id"),
    ("submit_review", "goal_assessments.*.goal_id"),
    ("participant_left", "participant_id"),
}
# Values another field depends on: any other value is refused with this reason.
COUPLED = {
    ("submit_review", "outcome"): "extension_months only goes with outcome extend",
    ("correct_meeting_report", "outcome"): "held_at only goes with outcome held",
}
# A changed value the schema accepts but a generic rule cannot make (a time zone).
ALTERNATIVES = {"timezone": "Asia/Kolkata"}


# -- the cases: a phase that accepts each command, and a payload with every field --------------


@dataclass
class Case:
    message: str
    # The relationship in a phase that accepts the command.
    setup: Callable[[], Relationship]
    # The actor and every other field (values may depend on the relationship's state).
    payload: Callable[[Relationship], JSON]
    name: str = ""
    marks: tuple[Any, ...] = field(default=())


def at(relationship: Relationship, **delta: float) -> str:
    return (relationship.now + timedelta(**delta)).isoformat()


def agreement_terms() -> JSON:
    # Unique strings and numbers within the programme's bounds, every optional field given.
    return {
        "objective": "objective-7q1",
        "goals": [
            {
                "goal_id": "goal-7q2",
                "title": "goal-title-7q3",
                "measure": "goal-measure-7q4",
                "target_date": "2027-08-19",
                "milestones": [{"milestone_id": "milestone-7q5", "title": "milestone-title-7q6"}],
            }
        ],
        "formats": ["in_person", "phone"],
        "meeting_frequency": "biweekly",
        "meeting_minutes": 47,
        "term_months": 7,
        "availability": [
            {
                "party": "mentor",
                "timezone": "Europe/Berlin",
                "windows": [{"weekday": 3, "start": "07:13", "end": "19:47"}],
            }
        ],
        "cancellation_notice_hours": 29,
        "agenda_policy": "both_share",
        "confidentiality": {"private_by_default": False, "not_private": ["not-private-7q7", "not-private-7q8"]},
        "early_exit_plan": "exit-plan-7q9",
    }


def with_feedback_every_meeting() -> Relationship:
    relationship = active(ProgrammeSettings(coordinator_ids=(COORDINATOR,), feedback_every_sessions=1))
    relationship.meet()
    assert relationship.state.feedback_round == 1
    return relationship


def with_open_concern() -> Relationship:
    relationship = active()
    relationship.do(RaiseConcern, MENTEE, text="a concern")
    return relationship


def with_goal_revision() -> Relationship:
    relationship = active()
    relationship.do(ProposeGoalRevision, MENTEE, goal={"goal_id": "g2", "title": "Coach a junior"})
    return relationship


def paused() -> Relationship:
    relationship = active()
    relationship.do(PauseRelationship, MENTEE, until=at(relationship, days=5))
    return relationship


def meeting_time(relationship: Relationship) -> Relationship:
    meeting = relationship.state.next_meeting
    assert meeting is not None
    relationship.advance(to=meeting.starts_at + timedelta(minutes=90))
    return relationship


def in_on_demand_review() -> Relationship:
    relationship = active()
    relationship.do(COMMAND_TYPES["request_review"], MENTOR)
    return relationship


def missed_meeting(relationship: Relationship) -> Relationship:
    """The first meeting counted missed: nobody reported it in time."""
    meeting = relationship.state.next_meeting
    assert meeting is not None
    grace = timedelta(hours=relationship.state.settings.missed_meeting_grace_hours, minutes=1)
    relationship.advance(to=meeting.ends_at + grace)
    assert relationship.state.missed_meeting_numbers == (meeting.meeting_number,)
    return relationship


def next_meeting_number(relationship: Relationship) -> int:
    assert relationship.state.next_meeting is not None
    return relationship.state.next_meeting.meeting_number


def only(mapping: Any) -> str:
    [key] = list(mapping)
    return str(key)


CASES = [
    Case("propose_match", Relationship, lambda r: {
        "actor_id": COORDINATOR, "mentor_id": "mentor-5a1", "explanation": "explanation-5a2", "score": 0.8137,
    }),
    Case("accept_match", matching, lambda r: {"actor_id": MENTEE}),
    Case("decline_match", matching, lambda r: {"actor_id": MENTOR, "reason": "decline-reason-5a3"}),
    Case("propose_agreement", agreeing, lambda r: {"actor_id": MENTOR, "terms": agreement_terms()}),
    Case("sign_agreement", proposed, lambda r: {"actor_id": MENTOR, "agreement_version": 1}),
    Case("record_meeting", lambda: meeting_time(active()), lambda r: {
        "actor_id": MENTOR,
        # With an offset of its own: stored as given (compared as an instant).
        "held_at": (r.state.next_meeting.starts_at + timedelta(minutes=7))  # type: ignore[union-attr]
        .astimezone(ZoneInfo("Asia/Kolkata")).isoformat(),
        "duration_minutes": 53,
        "notes": "meeting-notes-5a4",
        "meeting_number": next_meeting_number(r),
    }),
    Case("cancel_meeting", active, lambda r: {
        "actor_id": MENTOR, "meeting_number": next_meeting_number(r), "reason": "cancel-reason-5a5",
    }),
    Case("reschedule_meeting", active, lambda r: {
        "actor_id": MENTEE, "meeting_number": next_meeting_number(r), "starts_at": at(r, days=3, minutes=17),
    }),
    Case("report_meeting_not_held", lambda: meeting_time(active()), lambda r: {
        "actor_id": MENTOR, "meeting_number": next_meeting_number(r), "reason": "not-held-reason-5c6",
    }),
    Case("correct_meeting_report", lambda: missed_meeting(active()), lambda r: {
        "actor_id": MENTEE,
        "meeting_number": r.state.missed_meeting_numbers[0],
        "outcome": "held",
        "held_at": (r.state.past_meetings[0].starts_at + timedelta(minutes=9)).astimezone(ZoneInfo("Asia/Tokyo")).isoformat(),
        "duration_minutes": 43,
        "reason": "correction-reason-5c7",
    }),
    Case("record_goal_progress", active, lambda r: {
        "actor_id": MENTOR, "goal_id": "g1", "progress_percent": 37, "milestones_reached": ["m1"],
    }),
    Case("propose_goal_revision", active, lambda r: {
        "actor_id": MENTOR,
        "goal": {
            "goal_id": "goal-5a6",
            "title": "goal-title-5a7",
            "measure": "goal-measure-5a8",
            "target_date": "2027-09-23",
            "milestones": [{"milestone_id": "milestone-5a9", "title": "milestone-title-5b1"}],
        },
        "rationale": "rationale-5b2",
    }),
    Case("acknowledge_goal_revision", with_goal_revision, lambda r: {
        "actor_id": MENTOR, "revision_id": only(r.state.pending_goal_revisions),
    }),
    Case("submit_feedback", with_feedback_every_meeting, lambda r: {
        "actor_id": MENTOR, "feedback_round": 1, "score": 4, "comment": "feedback-comment-5b3",
    }),
    Case("raise_concern", active, lambda r: {"actor_id": MENTOR, "text": "concern-text-5b4"}),
    Case("resolve_concern", with_open_concern, lambda r: {
        "actor_id": COORDINATOR, "concern_id": only(r.state.open_concerns), "resolution": "resolution-5b5",
    }),
    Case("record_introduction", active, lambda r: {
        "actor_id": MENTOR, "introduced_to": "introduced-to-5b6", "note": "introduction-note-5b7",
    }),
    Case("share_resource", active, lambda r: {
        "actor_id": MENTOR, "title": "resource-title-5b8", "url": "https://example.org/resource-5b9",
    }),
    Case("pause_relationship", active, lambda r: {
        "actor_id": MENTEE, "until": at(r, days=10, hours=3, minutes=11), "reason": "pause-reason-5c1",
    }),
    Case("resume_relationship", paused, lambda r: {"actor_id": MENTOR}),
    Case("request_review", active, lambda r: {"actor_id": COORDINATOR}),
    Case("submit_review", in_on_demand_review, lambda r: {
        "actor_id": MENTEE,
        "outcome": "extend",
        "goal_assessments": [{"goal_id": "g1", "progress_percent": 41, "comment": "assessment-comment-5c2"}],
        "extension_months": 2,
        "comment": "review-comment-5c3",
    }),
    Case("nudge_relationship", active, lambda r: {"actor_id": COORDINATOR}),
    Case("close_relationship", active, lambda r: {"actor_id": MENTOR, "note": "close-note-5c4"}),
    # Someone who was only proposed leaves: the proposal is declined on their behalf.
    Case("participant_left", matching, lambda r: {"actor_id": DIRECTORY_ACTOR, "participant_id": MENTOR},
         name="participant_left-proposed-mentor"),
    # A party leaves a relationship under way: it closes (reason participant_left).
    Case("participant_left", active, lambda r: {"actor_id": DIRECTORY_ACTOR, "participant_id": MENTOR},
         name="participant_left-party"),
    Case("submit_reflection", closing, lambda r: {"actor_id": MENTOR, "text": "reflection-5c5"}),
]  # fmt: skip


def params() -> list[Any]:
    return [pytest.param(case, id=case.name or case.message, marks=case.marks) for case in CASES]


def test_every_command_has_a_case() -> None:
    assert {case.message for case in CASES} == set(COMMAND_TYPES)


# -- walking fields and values -------------------------------------------------------------


def model_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> set[str]:
    """Every field of a model, nested models' fields too, as dotted paths ("*": each item)."""
    paths: set[str] = set()

    def walk(annotation: Any, path: tuple[str, ...]) -> None:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is typing.Annotated:
            walk(args[0], path)
        elif origin in (typing.Union, types.UnionType):
            for arg in args:
                if arg is not type(None):
                    walk(arg, path)
        elif origin is tuple:
            walk(args[0], (*path, "*"))
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for name, info in annotation.model_fields.items():
                paths.add(".".join((*path, name)))
                walk(info.annotation, (*path, name))
        else:
            paths.add(".".join(path))

    walk(model, prefix)
    return paths


def leaves(value: Any, path: Path = ()) -> list[tuple[Path, Any]]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in leaves(item, (*path, key))]
    if isinstance(value, list):
        return [leaf for index, item in enumerate(value) for leaf in leaves(item, (*path, index))]
    return [(path, value)]


def dotted(path: Path, *, wildcard: bool = True) -> str:
    return ".".join("*" if isinstance(step, int) and wildcard else str(step) for step in path)


def all_paths(value: Any, path: Path = ()) -> set[str]:
    """Every place in a payload, leaves and the objects and lists above them."""
    found = {dotted(path)} if path else set()
    if isinstance(value, dict):
        for key, item in value.items():
            found |= all_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found |= all_paths(item, (*path, index))
    return found


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2})?$")


def normal(value: Any) -> tuple[str, Any]:
    """A value as compared: times as times, booleans apart from numbers."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, str):
        if _DATE_TIME.match(value):
            return ("datetime", datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC))
        if _DATE.match(value):
            return ("date", date.fromisoformat(value))
        if _TIME.match(value):
            return ("time", time.fromisoformat(value))
    return (type(value).__name__, value)


def stored(events: list[AnyEvent]) -> list[JSON]:
    """The events as the store keeps them, without the command's digest (which changes with
    any field, stored or not)."""
    dumped = [event.model_dump(mode="json") for event in events]
    for event in dumped:
        event.pop("caused_by", None)
    copied: list[JSON] = json.loads(json.dumps(dumped))
    return copied


def places(events: list[JSON], value: Any) -> list[Path]:
    return [path for path, found in leaves(events) if normal(found) == normal(value)]


def value_at(events: list[JSON], path: Path) -> Any:
    current: Any = events
    for step in path:
        try:
            current = current[step]
        except (KeyError, IndexError, TypeError):
            return None
    return current


def alternative(message: str, path: Path, value: Any, payload: JSON) -> Any:
    """Another value of one field that the schema accepts."""
    name = next(str(step) for step in reversed(path) if isinstance(step, str))
    if name in ALTERNATIVES:
        return ALTERNATIVES[name]
    schema = subschema(message_schemas()[message], path)
    if "enum" in schema:
        siblings = value_at([payload], (0, *path[:-1])) if isinstance(path[-1], int) else []
        return next(v for v in schema["enum"] if v != value and v not in (siblings or []))
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1 if value + 1 <= schema.get("maximum", value + 1) else value - 1
    if isinstance(value, float):
        return round(value + 0.001, 4)
    kind, parsed = normal(value)
    if kind == "datetime":
        original = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (original - timedelta(minutes=1)).isoformat()
    if kind == "date":
        return (parsed + timedelta(days=1)).isoformat()
    if kind == "time":
        return (datetime.combine(date(2027, 1, 1), parsed) + timedelta(minutes=1)).strftime("%H:%M")
    return f"{value}-other"


def replaced(payload: JSON, path: Path, new: Any) -> JSON:
    copy: JSON = json.loads(json.dumps(payload))
    target: Any = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


def decided(case: Case, relationship: Relationship, payload: JSON) -> list[AnyEvent] | Rejection:
    command = read_command(COMMAND_TYPES[case.message], payload)
    assert isinstance(command, Command), f"{case.message}: the payload is not valid: {command}"
    return decide(relationship.state, command, relationship.now)


# -- the test ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", params())
def test_every_field_of_the_command_lands_in_an_event_or_is_refused(case: Case) -> None:
    model = COMMAND_TYPES[case.message]
    relationship = case.setup()
    command_id = f"under-test-{case.message}"
    payload = {"command_id": command_id, **case.payload(relationship)}

    # Every field of the model (recursively) has a value here, and none is null: a field
    # added to a command without a value in this test fails it.
    missing = model_fields(model) - all_paths(payload)
    assert not missing, f"{case.message}: give these fields a distinctive value: {sorted(missing)}"
    assert all(value is not None for _, value in leaves(payload)), case.message

    decision = decided(case, relationship, payload)
    assert not isinstance(decision, Rejection), f"{case.message} was refused: {decision.reason}"
    assert decision, f"{case.message} decided nothing"
    events = stored(decision)
    lost: list[str] = []

    for path, value in leaves(payload):
        where = dotted(path)
        if where == "command_id":
            assert all(event["command_id"] == command_id for event in events)
            if case.message in COMMAND_ID_ALSO_AS:
                assert any(event.get(COMMAND_ID_ALSO_AS[case.message]) == command_id for event in events)
            continue
        if where == "actor_id":
            if case.message in ACTOR_AS_PARTY:
                party = relationship.state.party_of(value)
                assert party is not None and any(event.get("party") == party for event in events), case.message
            else:
                by = {key: v for event in events for key, v in event.items() if key.endswith("_by")}
                assert value in by.values(), f"{case.message}: actor_id is in no *_by field: {by}"
            continue

        # 1. Presence.
        found = places(events, value)
        if not found:
            lost.append(f"{where} ({value!r}) is in no event")
            continue

        # 2. Cause: another value is refused because of this field, or lands in one of those places.
        other = alternative(case.message, path, value, payload)
        variant = decided(case, relationship, replaced(payload, path, other))
        if isinstance(variant, Rejection):
            if (case.message, where) in REFERENCES:
                assert variant.code is RefusalCode.NOT_FOUND, f"{where}: {variant.reason}"
            elif (case.message, where) in COUPLED:
                assert COUPLED[(case.message, where)] in variant.reason, f"{where}: {variant.reason}"
            else:
                lost.append(f"{where}: another value ({other!r}) was refused: {variant.reason}")
            continue
        assert (case.message, where) not in REFERENCES, f"{where}: another value was accepted; not a reference"
        changed = stored(variant)
        if not any(normal(value_at(changed, place)) == normal(other) for place in found):
            places_text = ", ".join(dotted(place, wildcard=False) for place in found)
            lost.append(f"{where} ({value!r}) is not stored: changing it changed nothing at {places_text}")

    assert not lost, f"{case.message}: " + "; ".join(lost)
