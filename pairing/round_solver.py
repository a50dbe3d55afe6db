"""A matching round's cohort solved whole: the optimal pairs with their scores and
explanations, and for each mentee left unmatched why, in aggregate.

Two paths to the same optimum (the same total; tests/matching/test_matching_round_tiled.py):

- *dense*, up to `TILED_ABOVE_PAIRS` pairs: the whole score matrix (`score_matrix`) and
  `pairing.solver.solve` on it; fastest while the matrix is small.
- *tiled*, above it: `pairing.tiles.TileScorer` and `pairing.pricing.solve_tiled`, a few
  mentee rows at a time, never the whole matrix (100,000 × 25,000 would be 10 GB of int32),
  optimality proved by a dual certificate over every pair. Why-unmatched counts come from
  the scorer's tables (per rule, the mentors of each code a mentee fails), built for the
  unmatched mentees only; only a score minimum and the allowed count walk their pairs, in
  numpy, a tile at a time.

Both carry the same objectives, mentee quotas, mentor free slots, rules and `has_mentor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from pairing.constraints import excluded_pairs, exclusion_reason
from pairing.pricing import solve_tiled
from pairing.profiles import MenteeProfile, MentorProfile
from pairing.scoring import NOT_ALLOWED, PairScore, exclusion_counts, score_matrix, score_pair
from pairing.settings import MatchingSettings, Objective
from pairing.solver import Assignment, SolveStats, solve
from pairing.tiles import TileScorer

# Pairs (mentees × mentors) above which a round takes the tiled path. Measured on 2 shared
# cores with the benchmark's profiles and the public-sector rules (bench/README.md, "The
# largest cohorts"): the dense path is faster up to a few million pairs, and its matrix
# and the solver's transposed copy cost 8 bytes a pair.
TILED_ABOVE_PAIRS = 6_000_000


@dataclass(frozen=True)
class RoundCohort:
    """What a round solves: its profiles, and what is left of each side's room."""

    mentees: Sequence[MenteeProfile]
    mentors: Sequence[MentorProfile]
    settings: MatchingSettings
    week_of: date
    objective: Objective
    # What is left of each mentee's quota this round, and each mentor's free slots.
    quotas: np.ndarray
    free: np.ndarray
    # The mentee has a mentor already (for `unmatched` rules and score terms).
    has_mentor: list[bool]
    # (mentee, mentor) indices of pairs that are together already: never proposed again.
    together: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Unmatched:
    """Why a mentee got no mentor in the round: mentors ruled out by reason, and how many
    allowed ones all went to others."""

    mentee_id: str
    excluded: dict[str, int]
    allowed: int


@dataclass(frozen=True)
class RoundOutcome:
    pairs: list[PairScore]
    unmatched: list[Unmatched]
    total_points: int
    stats: SolveStats
    tiled: bool


def solve_cohort(cohort: RoundCohort, *, tiled_above_pairs: int = TILED_ABOVE_PAIRS, workers: int = 2) -> RoundOutcome:
    """The round's optimal assignment, its pairs scored and explained, and why the mentees
    it leaves unmatched (with quota left) were left so."""
    tiled = len(cohort.mentees) * len(cohort.mentors) > tiled_above_pairs
    if tiled:
        scorer = TileScorer(cohort.mentees, cohort.mentors, cohort.settings, cohort.week_of,
                            has_mentor=cohort.has_mentor, excluded=cohort.together)  # fmt: skip
        assignment = solve_tiled(scorer, cohort.free, cohort.objective, quotas=cohort.quotas, workers=workers).assignment
        left = _left(cohort, assignment)
        unmatched = why_unmatched_tiled(cohort, left)
    else:
        scores = score_matrix(cohort.mentees, cohort.mentors, cohort.settings, cohort.week_of, has_mentor=cohort.has_mentor)
        for i, j in cohort.together:
            scores[i, j] = NOT_ALLOWED
        assignment = solve(scores, cohort.free, cohort.objective, quotas=cohort.quotas)
        left = _left(cohort, assignment)
        unmatched = why_unmatched_dense(cohort, left, scores[left])
    pairs = [score_pair(cohort.mentees[i], cohort.mentors[j], cohort.settings, cohort.week_of,
                        has_mentor=cohort.has_mentor[i]) for i, j in assignment.pairs()]  # fmt: skip
    return RoundOutcome(pairs, unmatched, assignment.total_points, assignment.stats, tiled)


def _left(cohort: RoundCohort, assignment: Assignment) -> list[int]:
    """Mentees with quota left who got no mentor, in order."""
    return sorted(set(np.flatnonzero(cohort.quotas > 0).tolist()) - set(assignment.mentees.tolist()))


def _allowed_from(objective: Objective) -> int:
    # The points from which a pair counts as allowed: under max_total a pair of 0 adds nothing.
    return 0 if objective == "max_matched" else 1


def why_unmatched_dense(cohort: RoundCohort, left: list[int], scores: np.ndarray) -> list[Unmatched]:
    """Why the mentees `left` were left unmatched, from their rows of the score matrix
    (`scores`) and `pairing.scoring.exclusion_counts`."""
    mentees = [cohort.mentees[i] for i in left]
    counts = exclusion_counts(mentees, cohort.mentors, cohort.settings, cohort.week_of,
                              has_mentor=[cohort.has_mentor[i] for i in left])  # fmt: skip
    allowed = (scores >= _allowed_from(cohort.objective)).sum(axis=1).tolist() if left else []
    return [Unmatched(m.participant_id, c, a) for m, c, a in zip(mentees, counts, allowed, strict=True)]


def why_unmatched_tiled(cohort: RoundCohort, left: list[int]) -> list[Unmatched]:
    """The same counts as `why_unmatched_dense`, without a score matrix: a `TileScorer` of the
    mentees `left` alone gives each rule's count from its tables, and its tiles the allowed
    mentors (and, with a score minimum, those below it)."""
    if not left:
        return []
    mentees = [cohort.mentees[i] for i in left]
    flags = [cohort.has_mentor[i] for i in left]
    position = {i: k for k, i in enumerate(left)}
    together = [(position[i], j) for i, j in cohort.together if i in position]
    scorer = TileScorer(mentees, cohort.mentors, cohort.settings, cohort.week_of, has_mentor=flags, excluded=together)
    by_rule = scorer.exclusion_counts()
    counts: list[dict[str, int]]
    if by_rule is None:  # too many distinct values for tables: the block computation
        counts = exclusion_counts(mentees, cohort.mentors, cohort.settings, cohort.week_of, has_mentor=flags)
    else:
        counts = [{} for _ in mentees]
        for reason, excluded in by_rule:
            for k in np.flatnonzero(excluded).tolist():
                counts[k][reason] = counts[k].get(reason, 0) + int(excluded[k])
        for k, j in set(excluded_pairs(mentees, cohort.mentors)):
            if (relational := exclusion_reason(mentees[k], cohort.mentors[j])) is not None:
                counts[k][relational] = counts[k].get(relational, 0) + 1
    allowed = np.zeros(len(mentees), dtype=np.int64)
    if cohort.mentors:
        step = max(1, (1 << 19) // len(cohort.mentors))
        threshold = _allowed_from(cohort.objective)
        for start in range(0, len(mentees), step):
            allowed[start : start + step] = (scorer.tile(slice(start, start + step)) >= threshold).sum(axis=1)
    return [Unmatched(m.participant_id, c, int(a)) for m, c, a in zip(mentees, counts, allowed, strict=True)]
