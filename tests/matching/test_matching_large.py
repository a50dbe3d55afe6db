"""The largest cohorts (issue #16): scores a tile at a time equal the score matrix, the
sparse solver priced over every pair finds the optimum (against the dense graph and brute
force, also where its first candidate graph misses it), and the certificate — a check over
every pair, independent of the solver — accepts the optimum and rejects anything less."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pairing.tiles
from bench.matching_cohorts import PUBLIC_SECTOR_RULES, large_people
from pairing.pricing import MatrixSource, certify, solve_tiled
from pairing.profiles import MenteeProfile, MentorProfile
from pairing.scoring import score_matrix
from pairing.settings import MatchingSettings, Objective
from pairing.solver import greedy, solve, solve_dense
from pairing.tiles import TileScorer
from tests.support.matching_cohorts import WEEK, WINTER, brute_assignment, cohorts, ruled_cohorts


def tiled(scorer: TileScorer, rows: int) -> np.ndarray:
    n, m = scorer.shape
    return np.concatenate([scorer.tile(slice(s, s + rows)) for s in range(0, n, rows)] or [np.zeros((0, m), np.int32)])


# -- scores a tile at a time -------------------------------------------------------------------


# Each way a tile can be scored: goals as gathered rows or a product, each group as rows
# gathered whole or looked up pair by pair, a tile in chunks of one row or all at once, and
# the block computation of pairing.scoring (too many distinct values).
PATHS = {
    "gathered": {},
    "product": {"_GATHERED_GOALS": 0, "_EXPANDED_LIMIT": 0},
    "gathered, a row at a time": {"_CHUNK_PAIRS": 1},
    "product, a row at a time": {"_GATHERED_GOALS": 0, "_EXPANDED_LIMIT": 0, "_CHUNK_PAIRS": 1},
    "fallback": {"_FACTOR_LIMIT": 0},
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohorts(), st.sampled_from(sorted(PATHS)), st.integers(1, 3))
def test_tiles_equal_the_score_matrix(
    cohort: tuple[list[MenteeProfile], list[MentorProfile], MatchingSettings], path: str, rows: int
) -> None:
    mentees, mentors, matching = cohort
    saved = {name: getattr(pairing.tiles, name) for name in PATHS[path]}
    for name, value in PATHS[path].items():
        setattr(pairing.tiles, name, value)
    # Mentees named one by one (a certificate walks a few again): every other, and the last.
    picked = np.unique(np.append(np.arange(0, len(mentees), 2), len(mentees) - 1)) if mentees else np.zeros(0, int)
    try:
        scorer = TileScorer(mentees, mentors, matching, WINTER)
        tiles, picked_tile = tiled(scorer, rows), scorer.tile(picked)
    finally:
        for name, value in saved.items():
            setattr(pairing.tiles, name, value)
    matrix = score_matrix(mentees, mentors, matching, WINTER)
    assert np.array_equal(tiles, matrix)
    assert np.array_equal(picked_tile, matrix[picked])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ruled_cohorts(), st.lists(st.booleans(), min_size=4, max_size=4))
def test_tiles_equal_the_score_matrix_under_every_rule_kind(
    cohort: tuple[list[MenteeProfile], list[MentorProfile], MatchingSettings, list[Any]], has_mentor: list[bool]
) -> None:
    mentees, mentors, matching, _ = cohort
    flags = has_mentor[: len(mentees)]
    scorer = TileScorer(mentees, mentors, matching, WEEK, has_mentor=flags)
    assert np.array_equal(tiled(scorer, 2), score_matrix(mentees, mentors, matching, WEEK, has_mentor=flags))


def bench_cohort(n: int, m: int, popular: bool) -> tuple[list[MenteeProfile], list[MentorProfile], np.ndarray]:
    mentee_rows, mentor_rows = large_people(n, m, 7, popular=popular)
    mentees = [MenteeProfile.model_validate(r) for r in mentee_rows]
    mentors = [MentorProfile.model_validate(r) for r in mentor_rows]
    return mentees, mentors, np.array([p.capacity for p in mentors])


@pytest.mark.parametrize("popular", [False, True])
@pytest.mark.parametrize("rules", [False, True])
def test_the_benchmark_cohort_tiled_scores_and_solves_as_the_matrix_does(popular: bool, rules: bool) -> None:
    mentees, mentors, caps = bench_cohort(400, 100, popular)
    matching = MatchingSettings.model_validate({**(PUBLIC_SECTOR_RULES if rules else {}), "min_score": 30 if rules else 0})
    excluded = [(0, 0), (5, 3)]
    scorer = TileScorer(mentees, mentors, matching, WEEK, excluded=excluded)
    matrix = score_matrix(mentees, mentors, matching, WEEK)
    matrix[tuple(zip(*excluded, strict=True))] = -1
    assert np.array_equal(tiled(scorer, 7), matrix)
    assert np.array_equal(scorer.tile(np.array([0, 5, 6, 399])), matrix[[0, 5, 6, 399]])  # excluded and asked pairs
    assert scorer._fallback is None  # the fast tables, not the block path
    for objective in ("max_total", "max_matched"):
        found = solve_tiled(scorer, caps, objective, quotas=np.full(len(mentees), 2), workers=2)
        reference = solve(matrix, caps, objective, quotas=np.full(len(mentees), 2))
        assert found.certificate.valid
        assert (found.assignment.total_points, found.assignment.matched) == (reference.total_points, reference.matched)


# -- the solver priced over every pair ---------------------------------------------------------


@st.composite
def instances(draw: st.DrawFn) -> tuple[np.ndarray, list[int], list[int]]:
    n, m = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    values = draw(st.lists(st.integers(-1, 20), min_size=n * m, max_size=n * m))
    caps = draw(st.lists(st.integers(0, 3), min_size=m, max_size=m))
    quotas = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    return np.array(values, dtype=np.int32).reshape(n, m), caps, quotas


@settings(max_examples=300, deadline=None)
@given(instances(), st.sampled_from(["max_total", "max_matched"]), st.integers(1, 3), st.integers(1, 2))
def test_the_tiled_solver_is_optimal_against_brute_force(
    instance: tuple[np.ndarray, list[int], list[int]], objective: Objective, candidates: int, workers: int
) -> None:
    scores, caps, quotas = instance
    found = solve_tiled(MatrixSource(scores), caps, objective, quotas=quotas, mentee_candidates=candidates,
                        mentor_candidates_per_slot=0, workers=workers)  # fmt: skip
    pairs = found.assignment.pairs()
    assert len(set(pairs)) == len(pairs) and all(scores[i, j] >= 0 for i, j in pairs)
    assert all(sum(1 for _, b in pairs if b == j) <= caps[j] for j in range(len(caps)))
    assert all(sum(1 for a, _ in pairs if a == i) <= quotas[i] for i in range(len(quotas)))
    assert found.certificate.valid
    matched, total = brute_assignment(scores, caps, quotas, objective)
    assert found.assignment.total_points == total
    if objective == "max_matched":
        assert found.assignment.matched == matched


def cohort_scores(n: int, m: int, seed: int, popular: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 1000, (n, m))
    if popular:
        favourites = rng.choice(m, max(1, m // 20), replace=False)
        scores[np.ix_(rng.random(n) < 0.8, favourites)] += 2000
    scores[rng.random((n, m)) < 0.05] = -1
    return scores.astype(np.int32), rng.integers(0, 4, m)


@pytest.mark.parametrize("objective", ["max_total", "max_matched"])
@pytest.mark.parametrize("popular", [False, True])
@pytest.mark.parametrize(("n", "m", "seed"), [(300, 60, 1), (200, 120, 2), (60, 200, 3)])
def test_a_starved_candidate_graph_is_priced_up_to_the_dense_optimum(
    n: int, m: int, seed: int, popular: bool, objective: Objective
) -> None:
    scores, caps = cohort_scores(n, m, seed, popular)
    quotas = np.random.default_rng(seed).integers(0, 3, n)
    reference = solve_dense(scores, caps, objective, quotas=quotas)
    # One mentor per mentee and none per mentor: the first graph misses the optimum.
    starved = solve_tiled(MatrixSource(scores), caps, objective, quotas=quotas, mentee_candidates=1,
                          mentor_candidates_per_slot=0)  # fmt: skip
    if popular or n > m:  # (with mentors to spare, each mentee's own best is the optimum)
        assert starved.assignment.stats.pricing_rounds > 1 and starved.assignment.stats.added_pairs > 0
    assert (starved.assignment.total_points, starved.assignment.matched) == (reference.total_points, reference.matched)
    assert starved.certificate.valid and starved.certificate.pairs_checked == n * m
    roomy = solve_tiled(MatrixSource(scores), caps, objective, quotas=quotas)
    assert roomy.assignment.total_points == reference.total_points


# -- the certificate -----------------------------------------------------------------------------


def test_the_certificate_rejects_a_suboptimal_solution_and_broken_prices() -> None:
    scores, caps = cohort_scores(200, 50, 4, True)
    source = MatrixSource(scores)
    best = solve_tiled(source, caps)
    a, u, v = best.assignment, best.u, best.v

    def check(mentees: np.ndarray, mentors: np.ndarray, u: np.ndarray = u, v: np.ndarray = v, **options: Any) -> Any:
        return certify(source, caps, options.pop("objective", "max_total"), mentees, mentors, u, v, **options)

    assert check(a.mentees, a.mentors).valid
    # The same pairs found another way certify with the same prices.
    dense = solve_dense(scores, caps)
    assert dense.total_points == a.total_points and check(dense.mentees, dense.mentors).valid
    # Greedy's pairs: feasible, but below the optimum, so below the dual bound whatever the prices.
    worse = greedy(scores, caps)
    assert worse.total_points < a.total_points
    rejected = check(worse.mentees, worse.mentors)
    assert not rejected.valid and not rejected.problems and rejected.dual > rejected.primal
    assert len(rejected.violations[0]) > 0
    # One pair dropped: still feasible, not optimal.
    assert not check(a.mentees[1:], a.mentors[1:]).valid
    # Prices lowered: the bound no longer holds the solution (or is no bound at all).
    lowered = check(a.mentees, a.mentors, u=np.maximum(u - 50, 0))
    assert not lowered.valid and lowered.dual != lowered.primal or lowered.problems
    assert "dual prices" in " ".join(check(a.mentees, a.mentors, u=u - 10**9).problems)
    # Infeasible pairs are named.
    full = int(np.argmax(np.bincount(a.mentors, minlength=len(caps)) == caps))
    spare = int(np.setdiff1d(np.arange(len(scores)), a.mentees)[0])
    crowded = check(np.append(a.mentees, spare), np.append(a.mentors, full))
    assert "over capacity" in " ".join(crowded.problems)
    twice = check(np.append(a.mentees, a.mentees[0]), np.append(a.mentors, a.mentors[0]))
    assert "used twice" in " ".join(twice.problems)
    excluded = np.argwhere(scores < 0)[0]
    assert "not allowed" in " ".join(check(np.array([excluded[0]]), np.array([excluded[1]])).problems)
    # max_matched: a bonus too small to put one more pair above any total is refused.
    matched = solve_tiled(source, caps, "max_matched")
    assert check(matched.assignment.mentees, matched.assignment.mentors, matched.u, matched.v,
                 objective="max_matched", bonus=matched.certificate.bonus).valid  # fmt: skip
    small = check(matched.assignment.mentees, matched.assignment.mentors, matched.u, matched.v,
                  objective="max_matched", bonus=5)  # fmt: skip
    assert not small.valid


@settings(max_examples=400, deadline=None)
@given(instances(), st.sampled_from(["max_total", "max_matched"]), st.integers(1, 30), st.integers(1, 3), st.data())
def test_recertifying_from_an_earlier_walk_gives_what_a_whole_walk_gives(
    instance: tuple[np.ndarray, list[int], list[int]], objective: Objective, near: int, listed: int, data: st.DataObject
) -> None:
    # Any earlier walk (its pairs and prices drawn, optimal or not), any later pairs and prices:
    # the bound certify computes from the earlier walk, without walking every row again, is the
    # whole walk's, exactly.
    scores, caps, quotas = instance
    n, m = scores.shape
    source = MatrixSource(scores)
    bonus = data.draw(st.integers(1, 500)) if objective == "max_matched" else 0

    def drawn(near_to: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
        pairs = [(i, j) for i in range(n) for j in range(m) if scores[i, j] >= 0 and caps[j] and quotas[i]]
        chosen = data.draw(st.lists(st.sampled_from(pairs), unique=True) if pairs else st.just([]))
        kept: list[tuple[int, int]] = []
        for i, j in chosen:  # as many as quotas and capacities allow
            if sum(a == i for a, _ in kept) < quotas[i] and sum(b == j for _, b in kept) < caps[j]:
                kept.append((i, j))
        # Prices of their own, or a few points from the earlier ones (most rows then stay bounded).
        uv = np.array(data.draw(st.lists(st.integers(0, 30), min_size=n + m, max_size=n + m)), dtype=np.int64)
        if near_to is not None and data.draw(st.booleans()):
            uv = np.maximum(np.concatenate(near_to) + uv % 7 - 3, 0)
        return (np.array([i for i, _ in kept], dtype=np.int64), np.array([j for _, j in kept], dtype=np.int64),
                uv[:n], uv[n:])  # fmt: skip

    base = certify(source, caps, objective, *drawn(), quotas=quotas, bonus=bonus, near=near, violations_per_mentee=listed)
    assert base.prices is not None
    mentees, mentors, u, v = drawn(base.prices)
    again = certify(source, caps, objective, mentees, mentors, u, v, quotas=quotas, bonus=bonus, near=near,
                    violations_per_mentee=listed, base=base)  # fmt: skip
    whole = certify(source, caps, objective, mentees, mentors, u, v, quotas=quotas, bonus=bonus)
    assert (again.primal, again.dual, again.problems, again.valid) == (whole.primal, whole.dual, whole.problems, whole.valid)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(60, 300), st.integers(0, 2**31), st.integers(1, 400), st.integers(1, 20),
       st.sampled_from(["max_total", "max_matched"]))  # fmt: skip
def test_the_dual_bound_and_the_listed_pairs_are_those_of_every_pair(
    n: int, m: int, seed: int, near: int, listed: int, objective: Objective
) -> None:
    # Rows wider than the walk's column blocks (it lists from each row's block maxima): the
    # bound is still Σ qu + Σ cv + Σ max(0, w' − u − v) over every allowed pair, and each
    # row lists exactly its largest excesses above −near.
    rng = np.random.default_rng(seed)
    scores = rng.integers(-1, 1000, (n, m)).astype(np.int32)
    scores[:, rng.random(m) < 0.1] += 2000  # popular mentors: many pairs of a row near a violation
    caps, quotas = rng.integers(0, 3, m), rng.integers(0, 3, n)
    u, v = rng.integers(0, 3000, n), rng.integers(0, 3000, m)
    bonus = 10**6 if objective == "max_matched" else 0
    empty = np.zeros(0, dtype=np.int64)
    found = certify(MatrixSource(scores), caps, objective, empty, empty, u, v, quotas=quotas, bonus=bonus, near=near,
                    violations_per_mentee=listed, workers=1)  # fmt: skip
    allowed = (scores >= (0 if bonus else 1)) & (quotas[:, None] > 0) & (caps[None, :] > 0)
    excess = np.where(allowed, scores.astype(np.int64) + bonus - u[:, None] - v[None, :], -(2**40))
    assert found.dual == int((quotas * u).sum() + (caps * v).sum() + np.maximum(excess, 0).sum())
    mentees, _, _, listed_excess = found.violations
    for i in range(n):
        row = np.sort(excess[i][excess[i] > -near])[::-1][:listed]
        assert np.array_equal(np.sort(listed_excess[mentees == i])[::-1], row)


def test_empty_and_one_sided_cohorts() -> None:
    for shape in ((0, 3), (3, 0), (2, 2)):
        scores = np.full(shape, -1, dtype=np.int32)
        found = solve_tiled(MatrixSource(scores), np.ones(shape[1], dtype=int))
        assert found.assignment.matched == 0 and found.certificate.valid
    assert TileScorer([], [], MatchingSettings(), date(2027, 1, 11)).shape == (0, 0)
