"""A programme matching round's messages and ids: what the `MatchingRound` workflow hands its
activities and gets back. Plain models, shared by both (and the CLI) without either
importing the other.
"""

from __future__ import annotations

import hashlib
from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from events.settings import ProgrammeSettings
from pairing.profiles import Identifier
from pairing.settings import Objective, RuleName

__all__ = [
    "ProposalOptions", "ProposeBatch", "ProposeRequest", "RoundMembers", "RoundRequest", "RoundScope", "RoundSolution",
    "round_command_id", "round_relationship_id", "round_workflow_id",
]  # fmt: skip

class RoundScope(BaseModel):
    """Who a round matches and by which rules: what starting a round says (the workflow's
    input) and what its activities are asked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    programme_id: Identifier
    round_id: Identifier
    # Only these mentees (default: every active mentee with fewer open relationships than
    # their quota, who has not left the directory).
    mentee_ids: tuple[Identifier, ...] | None = None
    # Overrides the programme's stored objective for this round.
    objective: Objective | None = None
    # One of the programme's rule sets (pairing.settings.RuleSet); None: its rules as they are.
    rule_set: RuleName | None = None


class RoundRequest(RoundScope):
    # The week whose calendar availability is compared in (daylight saving differs).
    week_of: date


class RoundMembers(BaseModel):
    model_config = ConfigDict(frozen=True)

    mentees: int
    mentors: int
    # False when the round had already collected them (a re-run): the first list stands.
    collected_now: bool


class RoundSolution(BaseModel):
    model_config = ConfigDict(frozen=True)

    mentees: int
    mentors: int
    matched: int
    total_points: int
    # Mean score (0–100) of the matched pairs.
    mean_score: float
    objective: Objective
    solver_seconds: float
    pricing_rounds: int
    # False when the round had already been solved (a re-run): the stored pairs stand.
    solved_now: bool
    # Mentees with at least one mentor (`matched` counts pairs: a mentee with a quota above
    # one may have several). None in rounds solved before quotas.
    mentees_matched: int | None = None
    rule_set: str | None = None


class ProposalOptions(BaseModel):
    """How a round's pairs are proposed (part of the workflow's input, and of each batch's request)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Who the proposals come from (must be a coordinator if the programme names any).
    coordinator_id: Identifier = "matching-round"
    # The rules each new relationship copies. None: each relationship reads its
    # programme's settings as it starts.
    relationship_settings: ProgrammeSettings | None = None
    batch_size: int = Field(default=200, ge=1, le=2000)


class ProposeRequest(ProposalOptions):
    """Propose the next batch of a solved round's pairs to their relationships."""

    programme_id: Identifier
    round_id: Identifier


class ProposeBatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    proposed: int
    already_proposed: int
    not_proposed: int
    remaining: int


# -- ids -----------------------------------------------------------------------------------


def round_relationship_id(programme_id: str, round_id: str, mentee_id: str, mentor_id: str | None = None) -> str:
    """The relationship a round opens for a pair: the same on every run of the round. A
    mentee's first pair of the round has the id without the mentor (the id every round gave
    before mentees could have several mentors); further pairs name their mentor."""
    parts = [programme_id, round_id, mentee_id] + ([mentor_id] if mentor_id is not None else [])
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]
    return f"round-{digest}"


def round_command_id(relationship_id: str) -> str:
    return f"{relationship_id}-propose"


def round_workflow_id(programme_id: str, round_id: str) -> str:
    return f"matching-round/{programme_id}/{round_id}"
