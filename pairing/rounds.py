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
from pairing.settings import Objective

__all__ = [
    "ProposeBatch", "ProposeRequest", "RoundMembers", "RoundRequest", "RoundSolution",
    "round_command_id", "round_relationship_id", "round_workflow_id",
]  # fmt: skip

class RoundRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    programme_id: Identifier
    round_id: Identifier
    # The week whose calendar availability is compared in (daylight saving differs).
    week_of: date
    # Only these mentees (default: every active mentee with fewer open relationships than
    # the programme allows, who has not left).
    mentee_ids: tuple[Identifier, ...] | None = None
    # Overrides the programme's stored objective for this round.
    objective: Objective | None = None


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


class ProposeRequest(BaseModel):
    """Propose the next batch of a solved round's pairs to their relationships."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    programme_id: Identifier
    round_id: Identifier
    # Who the proposals come from (must be a coordinator if the programme names any).
    coordinator_id: Identifier
    # None: each relationship reads its programme's settings as it starts.
    relationship_settings: ProgrammeSettings | None = None
    batch_size: int = Field(default=200, ge=1, le=2000)


class ProposeBatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    proposed: int
    already_proposed: int
    not_proposed: int
    remaining: int


# -- ids -----------------------------------------------------------------------------------


def round_relationship_id(programme_id: str, round_id: str, mentee_id: str) -> str:
    """The relationship a round opens for a mentee: the same on every run of the round."""
    digest = hashlib.sha256(f"{programme_id}\x00{round_id}\x00{mentee_id}".encode()).hexdigest()[:24]
    return f"round-{digest}"


def round_command_id(relationship_id: str) -> str:
    return f"{relationship_id}-propose"


def round_workflow_id(programme_id: str, round_id: str) -> str:
    return f"matching-round/{programme_id}/{round_id}"
