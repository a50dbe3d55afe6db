"""What a relationship asks of the mentor pool, and what it gets back.

Plain models shared by the `Relationship` workflow and the matching activities, kept apart
from both so that neither has to import the other.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from pairing.profiles import Identifier

__all__ = [
    "Candidate", "CandidateRequest", "RoundProposalClaim", "SlotOutcome", "SlotRelease", "SlotRequest", "SlotReservation",
]  # fmt: skip


class SlotRequest(BaseModel):
    """Reserve one of `mentor_id`'s slots for a relationship (of `mentee_id`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    programme_id: Identifier
    relationship_id: Identifier
    mentor_id: Identifier
    mentee_id: Identifier


# reserved_without_profile: the mentor has no profile, so no capacity to check; the slot
# is held all the same (it counts once a profile arrives). unknown_mentor: no longer
# returned (before migrations/0009_mentor_load, a mentor without an active profile got no slot); kept
# for the results recorded in workflow histories.
SlotOutcome = Literal["reserved", "already_reserved", "reserved_without_profile", "full", "unknown_mentor"]


class SlotReservation(BaseModel):
    model_config = ConfigDict(frozen=True)

    outcome: SlotOutcome
    mentor_id: str
    # The mentor whose slot the relationship gave up by moving to this one, if any.
    released_mentor_id: str | None = None

    @property
    def reserved(self) -> bool:
        """True when the relationship now holds a slot of the mentor."""
        return self.outcome in ("reserved", "already_reserved", "reserved_without_profile")


class SlotRelease(BaseModel):
    """Give back the relationship's slot (of `mentor_id` only, when given)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    programme_id: Identifier
    relationship_id: Identifier
    mentor_id: Identifier | None = None


class CandidateRequest(BaseModel):
    """Find and reserve the best available mentor for a relationship's mentee."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    programme_id: Identifier
    relationship_id: Identifier
    mentee_id: Identifier
    # Mentors already proposed and declined (or let expire): never again.
    exclude_mentor_ids: tuple[Identifier, ...] = ()


class Candidate(BaseModel):
    """A mentor whose slot is now held for the relationship, and why it fits."""

    model_config = ConfigDict(frozen=True)

    mentor_id: str
    score: float
    points: int
    explanation: str


class RoundProposalClaim(BaseModel):
    """A propose_match sent as a matching round: does a round of the programme hold this pair?"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    programme_id: Identifier
    relationship_id: Identifier
    mentor_id: Identifier
