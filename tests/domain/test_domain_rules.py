"""Who may send each command in which phase: the declared rules, as the decider enforces them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from events.commands import (
    COMMAND_TYPES, DIRECTORY_ACTOR, AcceptMatch, AcknowledgeGoalRevision, CancelMeeting, CloseRelationship, Command,
    CorrectMeetingReport, DeclineMatch, Goal, NudgeRelationship, PauseRelationship, ReportMeetingNotHeld, ProposeAgreement, ProposeGoalRevision, ProposeMatch, RaiseConcern,
    RecordGoalProgress, RecordIntroduction, RecordMeeting, ReportParticipantLeft, RequestReview, RescheduleMeeting,
    ResolveConcern, ResumeRelationship, ShareResource, SignAgreement, SubmitFeedback, SubmitReflection, SubmitReview,
)
from events import decider
from events.decider import COMMANDS, SPECS, Rejection, decide, decide_deadline, missing_pieces
from events.decision import CommandSpec, Pause, Sender
from events.model import MeetingHeld
from events.refusals import RefusalCode
from events.state import Phase
from events.settings import ProgrammeSettings
from tests.support.domain_story import (
    COORDINATOR, MENTEE, MENTOR, OTHER_MENTOR, SECRET, STRANGER, Story, T0, active, closed, closing, in_review, matched,
    terms,
)

# --- rejections ---------------------------------------------------------------------------

# A valid payload of every command.
ALL_COMMANDS: list[tuple[type[Command], dict[str, Any]]] = [
    (ProposeMatch, {"mentor_id": OTHER_MENTOR}),
    (AcceptMatch, {}),
    (DeclineMatch, {}),
    (ProposeAgreement, {"terms": terms()}),
    (SignAgreement, {"agreement_version": 1}),
    (RecordMeeting, {"held_at": T0 + timedelta(days=6), "duration_minutes": 60}),
    (CancelMeeting, {"meeting_number": 2}),
    (RescheduleMeeting, {"meeting_number": 2, "starts_at": T0 + timedelta(days=400)}),
    (ReportMeetingNotHeld, {"meeting_number": 1, "reason": f"{SECRET} no show"}),
    (CorrectMeetingReport, {"meeting_number": 1, "outcome": "not_held", "reason": f"{SECRET} mixed up"}),
    (RecordGoalProgress, {"goal_id": "g1", "progress_percent": 10}),
    (ProposeGoalRevision, {"goal": Goal(goal_id="g1", title="x")}),
    (AcknowledgeGoalRevision, {"revision_id": "r1"}),
    (SubmitFeedback, {"feedback_round": 1, "score": 3}),
    (RaiseConcern, {"text": f"{SECRET} worry"}),
    (ResolveConcern, {"concern_id": "c1"}),
    (RecordIntroduction, {"introduced_to": "a staff engineer"}),
    (ShareResource, {"title": "a book"}),
    (PauseRelationship, {"until": T0 + timedelta(days=400)}),
    (ResumeRelationship, {}),
    (RequestReview, {}),
    (SubmitReview, {"outcome": "continue"}),
    (NudgeRelationship, {}),
    (CloseRelationship, {}),
    (ReportParticipantLeft, {"participant_id": MENTOR}),
    (SubmitReflection, {"text": f"{SECRET} more"}),
]


# The commands a relationship only takes once it is matched (resume_relationship aside: it
# answers that nothing is paused).
LATER_COMMANDS = [
    (command_type, fields)
    for command_type, fields in ALL_COMMANDS
    if Phase.MATCHING not in COMMANDS[command_type].phases and COMMANDS[command_type].pause is not Pause.ONLY_PAUSED
]


@pytest.mark.parametrize(("command_type", "fields"), LATER_COMMANDS, ids=[c.message_name for c, _ in LATER_COMMANDS])
def test_commands_of_later_phases_are_rejected_while_matching(command_type: type[Command], fields: dict[str, Any]) -> None:
    phases = " or ".join(phase.value for phase in COMMANDS[command_type].phases)
    assert Story().refuse(command_type, MENTEE, **fields) == (
        f"{command_type.message_name} is only allowed in the {phases} phase; the relationship is in matching"
    )


def test_matching_commands_are_rejected_once_matched() -> None:
    story = matched()
    assert "only allowed in the matching phase" in story.refuse(ProposeMatch, COORDINATOR, mentor_id=OTHER_MENTOR)
    assert "only allowed in the matching phase" in story.refuse(AcceptMatch, MENTEE)
    assert "only allowed in the matching phase" in story.refuse(DeclineMatch, MENTOR)


def test_agreement_commands_are_rejected_once_active() -> None:
    story = active()
    assert "in active" in story.refuse(ProposeAgreement, MENTEE, terms=terms())
    assert "in active" in story.refuse(SignAgreement, MENTOR, agreement_version=1)
    assert "only allowed in the review phase" in story.refuse(SubmitReview, MENTEE, outcome="continue")
    assert "only allowed in the closing phase" in story.refuse(SubmitReflection, MENTEE, text="too early")


def test_people_outside_the_relationship_cannot_act_for_it() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    not_a_party = f"actor {STRANGER} is not a party to this relationship"
    assert story.refuse(AcceptMatch, STRANGER) == not_a_party
    assert story.refuse(DeclineMatch, STRANGER) == not_a_party

    story = matched()
    assert story.refuse(ProposeAgreement, STRANGER, terms=terms()) == not_a_party
    story.do(ProposeAgreement, MENTEE, terms=terms())
    assert story.refuse(SignAgreement, STRANGER, agreement_version=1) == not_a_party
    # Coordinating the programme does not make someone a party to the agreement.
    assert "is not a party" in story.refuse(SignAgreement, COORDINATOR, agreement_version=1)

    story = in_review()
    number = story.meeting.meeting_number
    party_commands: list[tuple[type[Command], dict[str, Any]]] = [
        (RecordMeeting, {"held_at": story.now, "duration_minutes": 60}),
        (CancelMeeting, {"meeting_number": number}),
        (RescheduleMeeting, {"meeting_number": number, "starts_at": story.now + timedelta(days=2)}),
        (RecordGoalProgress, {"goal_id": "g1", "progress_percent": 10}),
        (ProposeGoalRevision, {"goal": Goal(goal_id="g1", title="x")}),
        (AcknowledgeGoalRevision, {"revision_id": "r1"}),
        (SubmitFeedback, {"feedback_round": 1, "score": 3}),
        (RecordIntroduction, {"introduced_to": "a staff engineer"}),
        (ShareResource, {"title": "a book"}),
        (SubmitReview, {"outcome": "close"}),
    ]
    for command_type, fields in party_commands:
        assert story.refuse(command_type, STRANGER, **fields) == not_a_party
        # Nor may a coordinator speak for the parties.
        assert story.refuse(command_type, COORDINATOR, **fields) == f"actor {COORDINATOR} is not a party to this relationship"

    neither = f"actor {STRANGER} is neither a party nor a coordinator of this relationship"
    story = active()
    assert story.refuse(RaiseConcern, STRANGER, text=f"{SECRET} worry") == neither
    assert story.refuse(PauseRelationship, STRANGER, until=story.now + timedelta(days=3)) == neither
    assert story.refuse(RequestReview, STRANGER) == neither
    assert story.refuse(SubmitReflection, MENTEE, text="x").startswith("submit_reflection is only allowed")


def test_only_coordinators_propose_matches_and_never_the_mentee_or_to_themselves() -> None:
    story = Story()
    assert "not a coordinator" in story.refuse(ProposeMatch, STRANGER, mentor_id=MENTOR)
    assert "not a coordinator" in story.refuse(ProposeMatch, MENTEE, mentor_id=MENTOR)
    assert "must differ from the mentee" in story.refuse(ProposeMatch, COORDINATOR, mentor_id=MENTEE)

    without_coordinators = Story(ProgrammeSettings())
    assert "cannot propose their own mentor" in without_coordinators.refuse(ProposeMatch, MENTEE, mentor_id=MENTOR)
    without_coordinators.do(ProposeMatch, "matching-engine", mentor_id=MENTOR)


def test_a_second_proposal_waits_for_the_first_to_be_answered() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    assert "already proposed; wait" in story.refuse(ProposeMatch, COORDINATOR, mentor_id=OTHER_MENTOR)
    assert "no match proposal to accept" in Story().refuse(AcceptMatch, MENTEE)
    assert "no match proposal to decline" in Story().refuse(DeclineMatch, MENTEE)




@pytest.mark.parametrize(("command_type", "fields"), ALL_COMMANDS, ids=[c.message_name for c, _ in ALL_COMMANDS])
def test_nothing_is_allowed_on_a_closed_relationship(command_type: type[Command], fields: dict[str, Any]) -> None:
    story = closed(MENTEE)
    for actor in (MENTEE, MENTOR, COORDINATOR, DIRECTORY_ACTOR):
        assert story.refuse(command_type, actor, **fields) == "the relationship is closed (closed_by_mentee)"
    assert decide_deadline(story.state, story.now + timedelta(days=3650)) == []


@pytest.mark.parametrize(
    ("command_type", "fields"),
    [(c, f) for c, f in ALL_COMMANDS if c not in (SubmitReflection, NudgeRelationship)],
    ids=[c.message_name for c, _ in ALL_COMMANDS if c not in (SubmitReflection, NudgeRelationship)],
)
def test_only_reflections_are_accepted_while_closing(command_type: type[Command], fields: dict[str, Any]) -> None:
    story = closing(MENTOR)
    for actor in (MENTEE, MENTOR, COORDINATOR, DIRECTORY_ACTOR):
        assert story.refuse(command_type, actor, **fields) == (
            "the relationship is closing; only nudge_relationship and submit_reflection are accepted"
        )


def test_every_command_type_is_covered_here() -> None:
    # A new command needs its own rules tested; this fails until the tests above know it.
    assert set(COMMAND_TYPES) == {command_type.message_name for command_type, _ in ALL_COMMANDS}


# --- the declarations -----------------------------------------------------------------------


def test_every_command_event_and_deadline_has_its_rules() -> None:
    assert missing_pieces() == []
    assert list(SPECS) == list(COMMAND_TYPES)


def test_a_missing_piece_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(decider.COMMANDS, ProposeMatch)
    monkeypatch.delitem(decider._CHANGES, MeetingHeld)
    monkeypatch.delitem(decider._DEADLINES, "nudge")
    assert missing_pieces() == [
        "command propose_match has no rules in any stage",
        "event MeetingHeld has no state change in any stage",
        "deadline nudge has no handler in any stage",
    ]


def in_each_phase() -> dict[str, Story]:
    """A relationship in each phase, with what the commands there are about: a pending
    proposal, an open concern (`c1`), a pause."""
    proposed = Story()
    proposed.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    concerned = active()
    concerned.do(RaiseConcern, MENTEE, text="worried", command_id="c1")
    paused = active()
    paused.do(PauseRelationship, MENTEE, until=paused.now + timedelta(days=3))
    return {"matching": proposed, "agreement": matched(), "active": concerned, "paused": paused,
            "review": in_review(), "closing": closing()}  # fmt: skip


def entitled_sender(spec: CommandSpec) -> str:
    return MENTEE if Sender.MENTEE in spec.senders else COORDINATOR


@pytest.fixture(scope="module")
def phases() -> dict[str, Story]:
    return in_each_phase()


@pytest.mark.parametrize(("command_type", "fields"), ALL_COMMANDS, ids=[c.message_name for c, _ in ALL_COMMANDS])
def test_a_command_is_refused_in_every_phase_but_its_declared_ones(
    phases: dict[str, Story], command_type: type[Command], fields: dict[str, Any]
) -> None:
    spec = COMMANDS[command_type]
    for name, story in phases.items():
        decision = decide(story.state, story.command(command_type, entitled_sender(spec), **fields), story.now)
        wrong_phase = isinstance(decision, Rejection) and decision.code is RefusalCode.WRONG_PHASE
        paused_rule = {Pause.ANY: True, Pause.NOT_PAUSED: name != "paused", Pause.ONLY_PAUSED: name == "paused"}
        declared = story.state.phase in spec.phases and paused_rule[spec.pause]
        assert wrong_phase is not declared, f"{spec.name} in {name}: {decision}"


@pytest.mark.parametrize(("command_type", "fields"), ALL_COMMANDS, ids=[c.message_name for c, _ in ALL_COMMANDS])
def test_a_sender_outside_the_declared_ones_is_refused_in_the_declared_words(
    phases: dict[str, Story], command_type: type[Command], fields: dict[str, Any]
) -> None:
    spec = COMMANDS[command_type]
    story = phases["paused" if spec.pause is Pause.ONLY_PAUSED else "active" if Phase.ACTIVE in spec.phases else spec.phases[0].value]
    refused = decide(story.state, story.command(command_type, STRANGER, **fields), story.now)
    assert isinstance(refused, Rejection) and refused.code is RefusalCode.NOT_ALLOWED, refused
    assert refused.reason == spec.refusal.format(actor=STRANGER)
    admitted = decide(story.state, story.command(command_type, entitled_sender(spec), **fields), story.now)
    assert not (isinstance(admitted, Rejection) and admitted.code is RefusalCode.NOT_ALLOWED), admitted
