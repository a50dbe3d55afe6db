"""What a programme configures about matching."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# max_total: the largest total compatibility (a mentee whose only candidates are poor may
# stay unmatched). max_matched: as many mentees matched as possible, then the largest
# total compatibility among those assignments.
Objective = Literal["max_total", "max_matched"]
# senior: mentors should be `seniority_gap` levels above their mentees; peer: same level.
SeniorityMode = Literal["senior", "peer"]

CRITERIA: tuple[str, ...] = ("goals", "availability", "format", "language", "seniority", "preferences")


class CriterionWeights(BaseModel):
    """Relative weights of the criteria; a score is their weighted mean, 0–100."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    goals: int = Field(default=40, ge=0, le=100)
    availability: int = Field(default=20, ge=0, le=100)
    format: int = Field(default=10, ge=0, le=100)
    language: int = Field(default=10, ge=0, le=100)
    seniority: int = Field(default=10, ge=0, le=100)
    preferences: int = Field(default=10, ge=0, le=100)

    @model_validator(mode="after")
    def _not_all_zero(self) -> CriterionWeights:
        if self.total == 0:
            raise ValueError("at least one criterion weight must be positive")
        return self

    @property
    def total(self) -> int:
        return sum(getattr(self, name) for name in CRITERIA)


class MatchingSettings(BaseModel):
    """A programme's matching rules. Stored per programme; every field has a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights: CriterionWeights = CriterionWeights()
    objective: Objective = "max_total"
    # Pairs scoring below this (0–100) are never proposed.
    min_score: float = Field(default=0, ge=0, le=100)
    # Weekly overlap that earns the full availability score.
    target_overlap_hours: float = Field(default=2, gt=0, le=168)
    # Hard constraints. Each applies only when both sides gave the information.
    min_overlap_hours: float = Field(default=0, ge=0, le=168)
    require_common_language: bool = True
    require_common_format: bool = False
    seniority_mode: SeniorityMode = "senior"
    seniority_gap: int = Field(default=2, ge=0, le=20)
    # Levels away from the wanted gap at which the seniority score reaches zero.
    seniority_tolerance: int = Field(default=3, ge=1, le=20)
    # A mentor must be at least this many levels above the mentee (None: no rule).
    min_seniority_gap: int | None = Field(default=None, ge=-20, le=20)
    # Open relationships a mentee may have in the programme at once, however matched: the
    # pool finds nobody for, and a round leaves out, a mentee who has as many already.
    max_open_relationships_per_mentee: int = Field(default=1, ge=1, le=20)

    @property
    def max_points(self) -> int:
        """The score of a perfect pair in points (scores are integers internally)."""
        return 1000 * self.weights.total

    def points_to_score(self, points: int) -> float:
        return round(100 * points / self.max_points, 1)

    @property
    def min_points(self) -> int:
        # The smallest integer number of points whose score is at least min_score.
        return -(-int(round(self.min_score * 1000)) * self.max_points // 100_000)
