"""A relationship brought into each phase by the real core, for pure tests (no Temporal, no
database): commands go through `decide`, events through `evolve`, time through
`next_deadline` / `decide_deadline`, the way the workflow shell drives one.

A helper module, not a test module: test modules import it, never each other.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from events.commands import (
    AcceptMatch,
    AgreementTerms,
    CloseRelationship,
    Command,
    ProposeAgreement,
    ProposeMatch,
    RecordMeeting,
    SignAgreement,
)
from events.deadlines import next_deadline
from events.decider import decide, decide_deadline, start_relationship
from events.model import AnyEvent
from events.notifications import Notification, notifications_for
from events.refusals import Rejection
from events.settings import ProgrammeSettings
from events.state import Phase, RelationshipState, evolve, fold

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)  # a Monday
STREAM = "rel-phases-1"
PROGRAMME = "prog-phases"
MENTEE = "mentee-p1"
MENTOR = "mentor-p1"
COORDINATOR = "coord-p1"
SETTINGS = ProgrammeSettings(coordinator_ids=(COORDINATOR,))


def agreement_terms(**changes: Any) -> AgreementTerms:
    fields: dict[str, Any] = {
        "objective": "Grow into a tech lead",
        "goals": (
            {
                "goal_id": "g1",
                "title": "Run a design review",
                "milestones": ({"milestone_id": "m1", "title": "First draft"},),
            },
            {"goal_id": "g2", "title": "Mentor a junior engineer"},
        ),
        "meeting_frequency": "weekly",
        "meeting_minutes": 60,
        "term_months": 6,
    }
    return AgreementTerms.model_validate(fields | changes)


class Relationship:
    """One relationship under test and everything it went through."""

    def __init__(self, settings: ProgrammeSettings = SETTINGS, now: datetime = T0):
        self.now = now
        self.history: list[AnyEvent] = start_relationship(STREAM, PROGRAMME, MENTEE, settings, now)
        state = fold(self.history)
        assert state is not None
        self.state: RelationshipState = state
        # The state after each event of `history`.
        self.states: list[RelationshipState] = [state]
        self._ids = itertools.count(1)

    def do(self, command_type: type[Command], actor: str, **fields: Any) -> list[AnyEvent]:
        """Send a command that must be accepted; returns (and applies) its events."""
        command = command_type.model_validate(
            {"command_id": f"setup-{next(self._ids)}", "actor_id": actor, **fields}
        )
        decision = decide(self.state, command, self.now)
        assert not isinstance(decision, Rejection), f"{command.message_name}: {decision.reason}"
        return self.apply(decision)

    def apply(self, events: list[AnyEvent]) -> list[AnyEvent]:
        for event in events:
            self.state = evolve(self.state, event)
            self.states.append(self.state)
        self.history.extend(events)
        return events

    def advance(self, by: timedelta | None = None, *, to: datetime | None = None) -> list[AnyEvent]:
        """Let time pass, firing every deadline that falls due on the way, at its own moment."""
        target = to if to is not None else self.now + (by or timedelta())
        fired: list[AnyEvent] = []
        while (deadline := next_deadline(self.state)) is not None and deadline.at <= target:
            self.now = max(self.now, deadline.at)
            fired += self.apply(decide_deadline(self.state, self.now))
        self.now = max(self.now, target)
        return fired

    def meet(self, actor: str = MENTEE) -> list[AnyEvent]:
        """Wait for the scheduled meeting and report it held."""
        meeting = self.state.next_meeting
        assert meeting is not None, f"no meeting scheduled in phase {self.state.phase}"
        self.advance(to=meeting.starts_at)
        return self.do(RecordMeeting, actor, held_at=meeting.starts_at, duration_minutes=60)

    def notifications_of(self, events: list[AnyEvent]) -> list[Notification]:
        """What these (already applied) events told, computed as the workflow does: with the
        state before and after each."""
        told: list[Notification] = []
        for event in events:
            index = self.history.index(event)
            told += notifications_for(event, self.states[index], self.states[index - 1])
        return told


def matching(settings: ProgrammeSettings = SETTINGS) -> Relationship:
    """A mentor proposed, nobody has answered yet."""
    relationship = Relationship(settings)
    relationship.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR, explanation="shares 3 of 4 goals")
    return relationship


def agreeing(settings: ProgrammeSettings = SETTINGS) -> Relationship:
    """Matched: writing the agreement."""
    relationship = matching(settings)
    relationship.do(AcceptMatch, MENTEE)
    relationship.do(AcceptMatch, MENTOR)
    assert relationship.state.phase is Phase.AGREEMENT
    return relationship


def proposed(settings: ProgrammeSettings = SETTINGS, **terms: Any) -> Relationship:
    """Agreement version 1 proposed by the mentee, nobody has signed yet."""
    relationship = agreeing(settings)
    relationship.do(ProposeAgreement, MENTEE, terms=agreement_terms(**terms))
    return relationship


def active(settings: ProgrammeSettings = SETTINGS, **terms: Any) -> Relationship:
    """Both signed: meeting weekly, the first meeting scheduled."""
    relationship = proposed(settings, **terms)
    relationship.do(SignAgreement, MENTEE, agreement_version=1)
    relationship.do(SignAgreement, MENTOR, agreement_version=1)
    assert relationship.state.phase is Phase.ACTIVE
    return relationship


def in_review(settings: ProgrammeSettings = SETTINGS) -> Relationship:
    """Active and meeting every week until time opens the midpoint review."""
    relationship = active(settings)
    while relationship.state.phase is Phase.ACTIVE:
        if relationship.state.next_meeting is not None:
            relationship.meet()
        else:
            relationship.advance(timedelta(days=1))
    assert relationship.state.review is not None and relationship.state.review.kind == "midpoint"
    return relationship


def closing(actor: str = MENTEE, settings: ProgrammeSettings = SETTINGS) -> Relationship:
    """Active, one meeting held, then closed early: waiting for the closing reflections."""
    relationship = active(settings)
    relationship.meet()
    relationship.do(CloseRelationship, actor)
    assert relationship.state.phase is Phase.CLOSING
    return relationship
