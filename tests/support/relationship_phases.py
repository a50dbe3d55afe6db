"""A relationship brought into each phase by the real core, for pure tests (no Temporal, no
database): commands go through `decide`, events through `evolve`, time through
`next_deadline` / `decide_deadline`, the way the workflow shell drives one.

A helper module, not a test module: test modules import it, never each other. The driver
is tests/support/domain_story.py's `Story`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from events.commands import AcceptMatch, AgreementTerms, CloseRelationship, ProposeAgreement, ProposeMatch, SignAgreement
from events.settings import ProgrammeSettings
from events.state import Phase
from tests.support.domain_story import Story, terms

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)  # a Monday
STREAM = "rel-phases-1"
PROGRAMME = "prog-phases"
MENTEE = "mentee-p1"
MENTOR = "mentor-p1"
COORDINATOR = "coord-p1"
SETTINGS = ProgrammeSettings(coordinator_ids=(COORDINATOR,))


def agreement_terms(**changes: Any) -> AgreementTerms:
    """tests/support/domain_story.py's terms, weekly, with goals g1 (one milestone, m1) and g2."""
    goals = (
        {"goal_id": "g1", "title": "Run a design review", "milestones": ({"milestone_id": "m1", "title": "First draft"},)},
        {"goal_id": "g2", "title": "Mentor a junior engineer"},
    )
    return terms(**({"goals": goals, "meeting_frequency": "weekly"} | changes))


class Relationship(Story):
    """A `Story` with this module's ids."""

    def __init__(self, settings: ProgrammeSettings = SETTINGS, now: datetime = T0):
        super().__init__(settings, now, stream=STREAM, programme_id=PROGRAMME, mentee=MENTEE, command_ids="setup-")


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
