"""A round above `TILED_ABOVE_PAIRS` is scored and solved a tile at a time (pairing/round_solver.py):
the same total as the dense path, the same why-unmatched counts, with quotas, rules,
`has_mentor` and pairs already together; and one round end to end on Temporal that takes
that path (the threshold lowered), its pairs written and proposed."""

from __future__ import annotations

import os
import uuid
from typing import Any

import asyncpg
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.testing import WorkflowEnvironment

import pairing.pricing
import pairing.round_solver
import pairing.tiles
from activities.directory import Directory
from activities.event_store import PostgresEventStore
from activities.matching import ProfileStore, relationship_workflow_id, round_workflow_id
from activities.matching_round import RoundActivities
from bench.matching_cohorts import PUBLIC_SECTOR_RULES, large_people
from events.model import MatchProposed
from events.people import Programme
from events.settings import ProgrammeSettings
from pairing.profiles import MenteeProfile, MentorProfile
from pairing.round_solver import RoundCohort, RoundOutcome, solve_cohort, why_unmatched_dense, why_unmatched_tiled
from pairing.scoring import score_matrix
from pairing.settings import MatchingSettings, Objective
from mentorflow.config import ConfigurationError, Settings
from tests.support.helpers import new_worker
from worker import build_worker
from tests.support.matching_cohorts import WEEK, cohorts, ruled_cohorts
from tests.support.session import TEST_KEYRING
from workflows.matching_round import MatchingRound, MatchingRoundInput

DENSE, TILED = 10**12, 0  # thresholds that force each path


def round_cohort(
    mentees: list[MenteeProfile], mentors: list[MentorProfile], matching: MatchingSettings, objective: Objective,
    draw: Any,
) -> RoundCohort:  # fmt: skip
    """The cohort with drawn quotas left (0–2), mentees with a mentor already, and pairs
    that are together already (`draw(strategy)`: hypothesis's, or a seeded stand-in)."""
    n, m = len(mentees), len(mentors)
    together = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, m - 1)), max_size=3, unique=True))
    return RoundCohort(
        mentees, mentors, matching, WEEK, objective,
        quotas=np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=np.int64),
        free=np.array([p.capacity for p in mentors], dtype=np.int64),
        has_mentor=draw(st.lists(st.booleans(), min_size=n, max_size=n)), together=together,
    )  # fmt: skip


def both_paths(cohort: RoundCohort) -> tuple[RoundOutcome, RoundOutcome]:
    dense, tiled = solve_cohort(cohort, tiled_above_pairs=DENSE), solve_cohort(cohort, tiled_above_pairs=TILED)
    assert (dense.tiled, tiled.tiled) == (False, True)
    return dense, tiled


def assert_feasible(cohort: RoundCohort, outcome: RoundOutcome, scores: np.ndarray) -> None:
    mentee_at = {p.participant_id: i for i, p in enumerate(cohort.mentees)}
    mentor_at = {p.participant_id: j for j, p in enumerate(cohort.mentors)}
    at = [(mentee_at[p.mentee_id], mentor_at[p.mentor_id]) for p in outcome.pairs]
    assert len(set(at)) == len(at)
    assert all(scores[i, j] >= (0 if cohort.objective == "max_matched" else 1) for i, j in at)
    assert sum(p.points for p in outcome.pairs) == outcome.total_points
    assert (np.bincount([i for i, _ in at], minlength=len(cohort.mentees)) <= cohort.quotas).all()
    assert (np.bincount([j for _, j in at], minlength=len(cohort.mentors)) <= cohort.free).all()


def dense_scores(cohort: RoundCohort) -> np.ndarray:
    scores = score_matrix(cohort.mentees, cohort.mentors, cohort.settings, cohort.week_of, has_mentor=cohort.has_mentor)
    for i, j in cohort.together:
        scores[i, j] = -1
    return scores


def check_the_paths_agree(cohort: RoundCohort) -> None:
    dense, tiled = both_paths(cohort)
    scores = dense_scores(cohort)
    assert tiled.total_points == dense.total_points
    if cohort.objective == "max_matched":  # the most pairs first: their number is the optimum's
        assert len(tiled.pairs) == len(dense.pairs)
    for outcome in (dense, tiled):
        assert_feasible(cohort, outcome, scores)
    # The same mentees left unmatched get the same counts on either path (which ones are
    # left may differ between optima of equal total).
    everyone = list(range(len(cohort.mentees)))
    assert why_unmatched_tiled(cohort, everyone) == why_unmatched_dense(cohort, everyone, scores)
    for outcome in (dense, tiled):
        left = [i for i, p in enumerate(cohort.mentees) if p.participant_id in {u.mentee_id for u in outcome.unmatched}]
        assert outcome.unmatched == why_unmatched_dense(cohort, left, scores[left])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohorts(), st.sampled_from(["max_total", "max_matched"]), st.booleans(), st.data())
def test_both_paths_agree_on_profile_cohorts(
    cohort: tuple[list[MenteeProfile], list[MentorProfile], MatchingSettings], objective: Objective, fallback: bool,
    data: st.DataObject,
) -> None:  # fmt: skip
    mentees, mentors, matching = cohort
    limit = pairing.tiles._FACTOR_LIMIT
    pairing.tiles._FACTOR_LIMIT = 0 if fallback else limit  # too many distinct values: the block path
    try:
        check_the_paths_agree(round_cohort(mentees, mentors, matching, objective, data.draw))
    finally:
        pairing.tiles._FACTOR_LIMIT = limit


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ruled_cohorts(), st.sampled_from(["max_total", "max_matched"]), st.data())
def test_both_paths_agree_under_every_rule_kind(
    cohort: tuple[list[MenteeProfile], list[MentorProfile], MatchingSettings, list[Any]], objective: Objective,
    data: st.DataObject,
) -> None:  # fmt: skip
    mentees, mentors, matching, _ = cohort
    check_the_paths_agree(round_cohort(mentees, mentors, matching, objective, data.draw))


@pytest.mark.parametrize("objective", ["max_total", "max_matched"])
@pytest.mark.parametrize(("popular", "seed"), [(False, 1), (True, 2)])
def test_both_paths_agree_on_benchmark_cohorts_with_rules_and_quotas(objective: Objective, popular: bool, seed: int) -> None:
    mentee_rows, mentor_rows = large_people(300, 80, seed, popular=popular)
    mentees = [MenteeProfile.model_validate(r) for r in mentee_rows]
    mentors = [MentorProfile.model_validate(r) for r in mentor_rows]
    matching = MatchingSettings.model_validate({**PUBLIC_SECTOR_RULES, "min_score": 30,
                                                "rules": [*PUBLIC_SECTOR_RULES["rules"],
                                                          {"name": "still unmatched", "score": "unmatched", "points": 4}]})  # fmt: skip
    rng = np.random.default_rng(seed)
    n = len(mentees)
    cohort = RoundCohort(
        mentees, mentors, matching, WEEK, objective, quotas=rng.integers(0, 3, n), free=rng.integers(0, 3, len(mentors)),
        has_mentor=(rng.random(n) < 0.3).tolist(), together=[(0, 1), (3, 4), (3, 7)],
    )  # fmt: skip
    check_the_paths_agree(cohort)
    assert pairing.tiles.TileScorer(mentees, mentors, matching, WEEK)._fallback is None  # the tables, not the block path


async def test_the_threshold_is_a_worker_setting(time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool) -> None:
    def threshold(variables: dict[str, str]) -> int:
        environ = {k: v for k, v in os.environ.items() if k != "MENTORFLOW_ROUND_TILED_ABOVE_PAIRS"} | variables
        worker = build_worker(time_skipping_env.client, pool, f"tq-{uuid.uuid4()}", settings=Settings.from_env(environ))
        owners = {getattr(a, "__self__", None) for a in worker.config().get("activities", [])}
        [activities] = [owner for owner in owners if isinstance(owner, RoundActivities)]
        return activities.tiled_above_pairs

    assert threshold({}) == pairing.round_solver.TILED_ABOVE_PAIRS
    assert threshold({"MENTORFLOW_ROUND_TILED_ABOVE_PAIRS": "250000"}) == 250_000
    for bad in ("-1", "many", "2.5"):
        with pytest.raises(ConfigurationError, match="MENTORFLOW_ROUND_TILED_ABOVE_PAIRS"):
            Settings.from_env({"MENTORFLOW_ROUND_TILED_ABOVE_PAIRS": bad})


# A round of 2 × 3 pairs with the lowest threshold: the public-sector rules, two mentors a mentee.
SETTINGS = MatchingSettings.model_validate({**PUBLIC_SECTOR_RULES, "max_open_relationships_per_mentee": 2,
                                            "rule_sets": {"two at once": {"mentors_per_round": 2}}})  # fmt: skip
PEOPLE = [  # role, id, organisation, grade; e-2 is at every mentor's grade and in m-0's organisation
    ("mentor", "m-0", "org-1", 5), ("mentor", "m-1", "org-2", 5), ("mentor", "m-2", "org-3", 5),
    ("mentee", "e-1", "org-3", 3), ("mentee", "e-2", "org-1", 5),
]  # fmt: skip


async def test_a_round_above_the_threshold_is_solved_tiled_and_proposed(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = time_skipping_env
    programme = f"cohort-tiled-{uuid.uuid4().hex[:6]}"
    # The worker setting, read from the environment as `mentorflow worker` reads it.
    monkeypatch.setenv("MENTORFLOW_ROUND_TILED_ABOVE_PAIRS", "0")
    solved_tiled: list[tuple[int, int]] = []
    solve_tiled = pairing.pricing.solve_tiled

    def spy(source: Any, *args: Any, **kwargs: Any) -> Any:
        solved_tiled.append(source.shape)
        return solve_tiled(source, *args, **kwargs)

    monkeypatch.setattr(pairing.round_solver, "solve_tiled", spy)
    store = ProfileStore(pool, TEST_KEYRING)
    await store.save_settings(programme, SETTINGS)
    await store.save_profiles(programme, [
        MentorProfile.model_validate({**common, "strengths": [{"topic": "python", "level": 5 - k}]}) if role == "mentor"
        else MenteeProfile.model_validate({**common, "goals": [{"topic": "python"}]})
        for k, (role, pid, org, grade) in enumerate(PEOPLE)
        for common in [{"participant_id": pid, "languages": ["en"], "attributes": {"organisation": org, "grade": grade}}]
    ])  # fmt: skip
    await Directory(pool).create_or_update_programme(
        Programme(programme_id=programme, name="Tiled", settings=ProgrammeSettings(coordinator_ids=("coord-1",)))
    )
    round_id = f"r-{uuid.uuid4().hex[:8]}"
    round_input = MatchingRoundInput(programme_id=programme, round_id=round_id, coordinator_id="coord-1",
                                     rule_set="two at once")  # fmt: skip
    async with new_worker(env.client, pool) as worker:
        result = await env.client.execute_workflow(
            MatchingRound.run, round_input, id=round_workflow_id(programme, round_id), task_queue=worker.task_queue
        )
        assert solved_tiled == [(2, 3)]
        assert (result.mentees, result.mentors, result.matched, result.proposed) == (2, 3, 2, 2)
        rows = await pool.fetch(
            """SELECT mentee_id, mentor_id, relationship_id FROM matching_round_pairs
                WHERE programme_id = $1 AND round_id = $2 ORDER BY mentor_id""",
            programme, round_id,
        )  # fmt: skip
        assert [(r["mentee_id"], r["mentor_id"]) for r in rows] == [("e-1", "m-0"), ("e-1", "m-1")]
        assert await RoundActivities(pool).round_unmatched(programme, round_id) == [{
            "mentee_id": "e-2", "allowed": 0, "mentors": 3,
            "excluded": {"rule 'one or two grades above'": 3, "rule 'other organisation'": 1},
        }]  # fmt: skip
        # Each pair's relationship got its proposal. All are read before any is awaited: the
        # time-skipping server skips time while a result is awaited, and a proposal still open
        # would expire and be followed by the pool's.
        events = PostgresEventStore(pool, keyring=TEST_KEYRING)
        for row in rows:
            stream = await events.read_stream(row["relationship_id"])
            assert [e.mentor_id for e in stream if isinstance(e, MatchProposed)] == [row["mentor_id"]]
        # Closed again, so that nothing is left running.
        handles = [env.client.get_workflow_handle(relationship_workflow_id(programme, row["relationship_id"])) for row in rows]
        for row, handle in zip(rows, handles, strict=True):
            await handle.execute_update("close_relationship", {"command_id": f"close-{row['mentor_id']}", "actor_id": "e-1"})
        for handle in handles:
            await handle.result()
