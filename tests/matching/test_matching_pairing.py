"""The pure matching core: profile files, scores and their explanations, constraints, and
the solver's optimality (against brute force and the dense graph)."""

from __future__ import annotations

import itertools
from datetime import date

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pairing.importing import parse_profiles
from pairing.profiles import AvailabilityWindow, GoalTopic, MenteeProfile, MentorProfile, Strength
from pairing.scoring import NOT_ALLOWED, score_matrix, score_pair
from pairing.settings import MatchingSettings, Objective
from pairing.solver import greedy, solve, solve_dense
from tests.support.matching_cohorts import WINTER, cohorts

SUMMER = date(2027, 7, 12)

# -- profile files -------------------------------------------------------------------------

CSV = """participant_id,role,name,timezone,seniority,capacity,strengths,goals,availability,languages,formats,reports_to
m-1,mentor,Ann,Europe/Berlin,8,2,"python:5; System  Design:4",,mon-fri 09:00-10:00,en;de,video;in person,
e-1,mentee,Bo,America/New_York,3,,,"python:3; public speaking","tue 08:00-11:00; sat 22:00-01:00",en,video,m-9
e-2,mentee,Cy,Mars/Olympus,3,,,,,en,,
m-3,mentor,Di,UTC,3,99,,,,en,,
e-1,mentee,Bo,UTC,3,,,,,en,,
e-4,mentee,Ed,UTC,x,,,,,en,,,one too many
e-5,mentee,Fa,UTC,3,,,python,mon 9-10,en,,
e-6,mentor,Gu,UTC,3,1,,python,,en,,
"""


def test_a_csv_import_reports_each_bad_row_by_line_and_keeps_the_good_ones() -> None:
    parsed = parse_profiles(CSV, "csv")
    assert [(line, p.participant_id) for line, p in parsed.profiles] == [(2, "m-1"), (3, "e-1")]
    problems = {p.line: p.reason for p in parsed.problems}
    assert problems == {
        4: "timezone: not a time zone of the IANA database (e.g. Europe/Berlin)",
        5: "capacity: Input should be less than or equal to 50",
        6: "mentee e-1 already appears on line 3",
        7: "more cells than the 12 columns",
        8: "availability 'mon 9-10' is not like 'mon 09:00-12:00' or 'mon-fri 18:00-19:00'",
        9: "a mentor has no goals",
    }
    assert parsed.ignored_columns == ["name"]  # a name never reaches a profile
    mentor = parsed.profiles[0][1]
    assert isinstance(mentor, MentorProfile)
    assert mentor.strengths == (Strength(topic="python", level=5), Strength(topic="system design", level=4))
    assert [str(w) for w in mentor.availability][:2] == ["mon 09:00-10:00", "tue 09:00-10:00"]
    assert mentor.formats == ("in_person", "video") and mentor.languages == ("de", "en")
    mentee = parsed.profiles[1][1]
    assert isinstance(mentee, MenteeProfile)
    assert mentee.goals == (GoalTopic(topic="python", priority=3), GoalTopic(topic="public speaking", priority=1))
    assert mentee.availability[1] == AvailabilityWindow(day="sat", start="22:00", end="01:00")
    # The same file makes the same profiles: a re-import is recognised as unchanged.
    again = parse_profiles(CSV, "csv")
    assert [p.model_dump_json() for _, p in again.profiles] == [p.model_dump_json() for _, p in parsed.profiles]


def test_a_json_import_names_the_line_each_bad_object_starts_on() -> None:
    text = """[
  {"participant_id": "e-1", "role": "mentee", "goals": ["python", {"topic": "sql", "priority": 2}]},
  {"participant_id": "m-1", "role": "mentor",
   "strengths": {"python": 9}},
  {"participant_id": "m-2", "role": "mentor", "strengths": "go:4", "capacity": 3, "email": "x@y.z"},
  7
]"""
    parsed = parse_profiles(text, "json")
    assert [(line, p.participant_id) for line, p in parsed.profiles] == [(2, "e-1"), (5, "m-2")]
    assert [str(p) for p in parsed.problems] == [
        "line 3 (m-1): strengths.0.level: Input should be less than or equal to 5",
        "line 6: expected an object with the profile's fields",
    ]
    assert parsed.ignored_columns == ["email"]
    lines = parse_profiles('{"participant_id": "a", "role": "mentee"}\n{"participant_id": "b"}\n', "json")
    assert [p.participant_id for _, p in lines.profiles] == ["a"]
    assert [str(p) for p in lines.problems] == ["line 2 (b): role must be mentor or mentee"]
    broken = parse_profiles('[{"participant_id": "a", "role": "mentee"},\n {"participant_id": ', "json")
    assert broken.profiles == [] and broken.problems[0].line == 2


# -- scores and explanations --------------------------------------------------------------


def _mentee(participant_id: str = "e-1", **fields: object) -> MenteeProfile:
    return MenteeProfile.model_validate({"participant_id": participant_id, **fields})


def _mentor(participant_id: str = "m-1", **fields: object) -> MentorProfile:
    return MentorProfile.model_validate({"participant_id": participant_id, **fields})


def test_an_explanation_says_which_goals_are_shared_and_how_much_time_overlaps_across_time_zones() -> None:
    mentee = _mentee(
        timezone="America/New_York", seniority=2, languages=["en", "es"], formats=["video"],
        goals=[{"topic": "python", "priority": 3}, {"topic": "sql"}, {"topic": "public speaking"}, {"topic": "go"}],
        availability=[{"day": "mon", "start": "09:00", "end": "12:00"}, {"day": "wed", "start": "09:00", "end": "11:00"}],
    )  # fmt: skip
    mentor = _mentor(
        timezone="Europe/Berlin", seniority=4, languages=["en", "de"], formats=["video", "in_person"],
        strengths=[{"topic": "python", "level": 5}, {"topic": "sql", "level": 3}, {"topic": "go", "level": 4}],
        availability=[{"day": "mon", "start": "16:00", "end": "20:00"}, {"day": "wed", "start": "15:00", "end": "17:00"}],
    )  # fmt: skip
    # January: New York is UTC−5, Berlin UTC+1: Monday 14–17 vs 15–19 UTC (2 h), Wednesday
    # 14–16 vs 14–16 UTC (2 h).
    pair = score_pair(mentee, mentor, MatchingSettings(), WINTER)
    assert pair.excluded is None
    assert pair.explanation == (
        f"score {pair.score:g}/100: shares 3 of 4 goals: python, go, sql; 4 h/week overlap; meets by video; "
        "common language: en; mentor 2 levels more senior"
    )
    assert pair.criteria == {"goals": 1000 * (3 * 5 + 3 + 4) // (5 * 6), "availability": 1000, "format": 1000,
                             "language": 1000, "seniority": 1000, "preferences": 0}  # fmt: skip
    # July: both sides on summer time, Berlin changes first in spring; the overlap holds.
    assert "4 h/week overlap" in score_pair(mentee, mentor, MatchingSettings(), SUMMER).explanation
    # In the weeks between the two changes of clock (US on summer time, Europe not yet),
    # Monday is 13–16 vs 15–19 UTC: one hour, Wednesday 13–15 vs 14–16: one hour.
    assert "2 h/week overlap" in score_pair(mentee, mentor, MatchingSettings(), date(2027, 3, 17)).explanation
    assert "Ann" not in pair.explanation and "e-1" not in pair.explanation


def test_peer_mentoring_prefers_the_same_level_and_preferences_count_both_ways() -> None:
    mentee = _mentee(seniority=5, preferred=["m-1"])
    peer, senior = _mentor("m-1", seniority=5), _mentor("m-2", seniority=7, preferred=["e-1"])
    peers = MatchingSettings(seniority_mode="peer")
    assert score_pair(mentee, peer, peers, WINTER).criteria["seniority"] == 1000
    assert score_pair(mentee, senior, peers, WINTER).criteria["seniority"] == 1000 * 1 // 3
    assert score_pair(mentee, senior, MatchingSettings(), WINTER).criteria["seniority"] == 1000
    assert "mentee asked for this mentor" in score_pair(mentee, peer, peers, WINTER).explanation
    assert "mentor asked for this mentee" in score_pair(mentee, senior, peers, WINTER).explanation


@pytest.mark.parametrize(
    ("mentee_fields", "mentor_fields", "settings", "reason"),
    [
        ({"participant_id": "x-1"}, {"participant_id": "x-1"}, MatchingSettings(), "same person"),
        ({"reports_to": ["m-1", "boss"]}, {}, MatchingSettings(), "same reporting line"),
        ({}, {"reports_to": ["e-1"]}, MatchingSettings(), "same reporting line"),
        ({"previous_partners": ["m-1"]}, {}, MatchingSettings(), "previous pair"),
        ({}, {"previous_partners": ["e-1"]}, MatchingSettings(), "previous pair"),
        ({"opt_out": ["m-1"]}, {}, MatchingSettings(), "opted out"),
        ({}, {"opt_out": ["e-1"]}, MatchingSettings(), "opted out"),
        ({"languages": ["fr"]}, {"languages": ["de"]}, MatchingSettings(), "no common language"),
        ({"seniority": 5}, {"seniority": 5}, MatchingSettings(min_seniority_gap=1), "seniority gap too small"),
        ({"availability": ["mon 09:00-10:00"]}, {"availability": ["mon 09:30-11:00"]},
         MatchingSettings(min_overlap_hours=1), "too little common time"),
        ({"formats": ["phone"]}, {"formats": ["video"]}, MatchingSettings(require_common_format=True),
         "no common meeting format"),
        ({}, {}, MatchingSettings(min_score=60), "score below the programme's minimum"),
    ],
)
def test_hard_constraints_exclude_a_pair_with_a_reason(
    mentee_fields: dict[str, object], mentor_fields: dict[str, object], settings: MatchingSettings, reason: str
) -> None:
    def windows(fields: dict[str, object]) -> dict[str, object]:
        if "availability" in fields:
            fields = {**fields, "availability": [_window(text) for text in fields["availability"]]}  # type: ignore[attr-defined]
        return fields

    mentee = _mentee(**{"participant_id": "e-1", **windows(mentee_fields)})
    mentor = _mentor(**{"participant_id": "m-1", **windows(mentor_fields)})
    assert score_pair(mentee, mentor, settings, WINTER).excluded == reason
    assert score_matrix([mentee], [mentor], settings, WINTER)[0, 0] == NOT_ALLOWED


def _window(text: str) -> dict[str, str]:
    day, hours = text.split()
    start, end = hours.split("-")
    return {"day": day, "start": start, "end": end}


# -- the cohort path equals the single-pair path --------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohorts(), st.sampled_from([WINTER, SUMMER, date(2027, 3, 17)]))
def test_the_cohort_scores_equal_the_single_pair_scores(
    cohort: tuple[list[MenteeProfile], list[MentorProfile], MatchingSettings], week_of: date
) -> None:
    mentees, mentors, matching = cohort
    matrix = score_matrix(mentees, mentors, matching, week_of, block_rows=2)
    for (i, mentee), (j, mentor) in itertools.product(enumerate(mentees), enumerate(mentors)):
        pair = score_pair(mentee, mentor, matching, week_of)
        assert matrix[i, j] == (NOT_ALLOWED if pair.excluded else pair.points), (i, j, pair)


# -- the solver ----------------------------------------------------------------------------


def brute_force(scores: np.ndarray, caps: list[int], objective: Objective) -> tuple[int, int]:
    """(matched, total) of the best assignment, by trying every one."""
    n, m = scores.shape
    best = (-1, -1)
    for choice in itertools.product(range(-1, m), repeat=n):
        load = [0] * m
        matched = total = 0
        feasible = True
        for i, j in enumerate(choice):
            if j < 0:
                continue
            if scores[i, j] < 0 or (objective == "max_total" and scores[i, j] == 0):
                feasible = False
                break
            load[j] += 1
            matched += 1
            total += int(scores[i, j])
        if not feasible or any(load[j] > caps[j] for j in range(m)):
            continue
        key = (matched, total) if objective == "max_matched" else (0, total)
        if key > best:
            best = key
    return best


@st.composite
def instances(draw: st.DrawFn) -> tuple[np.ndarray, list[int]]:
    n, m = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    values = draw(st.lists(st.integers(-1, 20), min_size=n * m, max_size=n * m))
    caps = draw(st.lists(st.integers(0, 3), min_size=m, max_size=m))
    return np.array(values, dtype=np.int32).reshape(n, m), caps


@settings(max_examples=300, deadline=None)
@given(instances(), st.sampled_from(["max_total", "max_matched"]), st.integers(1, 3))
def test_the_solver_is_optimal_against_brute_force(
    instance: tuple[np.ndarray, list[int]], objective: Objective, candidates: int
) -> None:
    scores, caps = instance
    assignment = solve(scores, caps, objective, mentee_candidates=candidates, mentor_candidates_per_slot=1)
    pairs = assignment.pairs()
    assert all(scores[i, j] >= 0 for i, j in pairs), "an excluded pair was proposed"
    assert all(sum(1 for _, b in pairs if b == j) <= caps[j] for j in range(len(caps))), "capacity exceeded"
    assert len({i for i, _ in pairs}) == len(pairs), "a mentee was matched twice"
    matched, total = brute_force(scores, caps, objective)
    assert assignment.total_points == total
    if objective == "max_matched":
        assert assignment.matched == matched
        assert greedy(scores, caps).matched <= matched
    else:
        assert greedy(scores, caps).total_points <= total


def cohort_scores(n: int, m: int, seed: int, popular: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 1000, (n, m))
    if popular:
        favourites = rng.choice(m, max(1, m // 20), replace=False)
        followers = rng.random(n) < 0.8
        scores[np.ix_(followers, favourites)] += 2000
    scores[rng.random((n, m)) < 0.05] = NOT_ALLOWED
    return scores.astype(np.int32), rng.integers(1, 6, m)


@pytest.mark.parametrize("objective", ["max_total", "max_matched"])
@pytest.mark.parametrize("popular", [False, True])
@pytest.mark.parametrize(("n", "m", "seed"), [(300, 60, 1), (200, 120, 2), (40, 200, 3)])
def test_the_sparse_solver_equals_the_dense_reference(n: int, m: int, seed: int, popular: bool, objective: Objective) -> None:
    scores, caps = cohort_scores(n, m, seed, popular)
    reference = solve_dense(scores, caps, objective)
    # Deliberately starved candidate lists: the pricing rounds must find what is missing.
    starved = solve(scores, caps, objective, mentee_candidates=1, mentor_candidates_per_slot=1)
    assert (starved.total_points, starved.matched) == (reference.total_points, reference.matched)
    assert not starved.stats.dense_fallback
    assert solve(scores, caps, objective).total_points == reference.total_points
    # With too few rounds allowed it falls back to the dense graph: still exact.
    capped = solve(scores, caps, objective, mentee_candidates=1, mentor_candidates_per_slot=0, max_rounds=1)
    assert capped.total_points == reference.total_points
    baseline = greedy(scores, caps)
    if objective == "max_total":
        assert baseline.total_points <= reference.total_points
    else:
        assert baseline.matched <= reference.matched


def test_max_matched_trades_score_for_matching_one_more_mentee() -> None:
    # Mentee 0 scores 10 with mentor 0, 8 with mentor 1; mentee 1 only fits mentor 0 (1).
    scores = np.array([[10, 8], [1, NOT_ALLOWED]], dtype=np.int32)
    best = solve(scores, [1, 1], "max_total")
    assert best.pairs() == [(0, 0)] and best.total_points == 10
    both = solve(scores, [1, 1], "max_matched")
    assert both.pairs() == [(0, 1), (1, 0)] and both.total_points == 9
