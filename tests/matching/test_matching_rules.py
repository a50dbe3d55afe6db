"""A programme's own matching rules (issue #17), pure: every rule kind judged pair by pair
equals the whole-cohort matrix and an independent brute force, the solver stays exact under
rules and mentee quotas, rule sets per round, why a mentee is left unmatched, and
validation errors that name the rule."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pairing.importing import describe_errors, parse_profiles
from pairing.profiles import MenteeProfile, MentorProfile
from pairing.scoring import NOT_ALLOWED, exclusion_counts, score_matrix, score_pair
from pairing.settings import MatchingRule, MatchingSettings, Objective
from pairing.solver import greedy, solve, solve_dense
from tests.support.matching_cohorts import ATTRIBUTES, WEEK, brute_assignment, ruled_cohorts


def _value(profile: MenteeProfile | MentorProfile, name: str) -> Any:
    value = profile.attributes.get(name)
    return tuple(value) if isinstance(value, tuple) else value


def brute_pair(
    mentee: MenteeProfile, mentor: MentorProfile, matching: MatchingSettings, predicates: list[Any], has_mentor: bool
) -> int:
    """The pair's points by the rules' definitions (RULE_KINDS in tests/support/matching_cohorts.py; NOT_ALLOWED when a rule excludes it)."""
    base = MatchingSettings.model_validate({**matching.model_dump(), "rules": [], "min_score": 0})
    points = score_pair(mentee, mentor, base, WEEK).points
    for rule, predicate in predicates:
        if predicate is None:
            points += 0 if has_mentor else matching.term_points(rule["points"])
            continue
        a, b = _value(mentee, rule["attribute"]), _value(mentor, rule["attribute"])
        if a is None or b is None:
            if "require" in rule and rule["missing"] == "exclude":
                return NOT_ALLOWED
            continue
        held = predicate(a, b)
        if "require" in rule and not held:
            return NOT_ALLOWED
        if "score" in rule and held:
            points += matching.term_points(rule["points"])
    points = max(0, points)
    return points if points >= matching.min_points else NOT_ALLOWED


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ruled_cohorts(), st.lists(st.booleans(), min_size=4, max_size=4))
def test_every_rule_kind_scores_as_its_definition_pair_by_pair_and_for_the_cohort(
    cohort: tuple[list[MenteeProfile], list[MentorProfile], MatchingSettings, list[Any]], has_mentor: list[bool]
) -> None:
    mentees, mentors, matching, predicates = cohort
    flags = has_mentor[: len(mentees)]
    matrix = score_matrix(mentees, mentors, matching, WEEK, has_mentor=flags, block_rows=2)
    for (i, mentee), (j, mentor) in itertools.product(enumerate(mentees), enumerate(mentors)):
        expected = brute_pair(mentee, mentor, matching, predicates, flags[i])
        pair = score_pair(mentee, mentor, matching, WEEK, has_mentor=flags[i])
        assert (NOT_ALLOWED if pair.excluded else pair.points) == expected, (i, j, pair, matching.rules)
        assert matrix[i, j] == expected, (i, j, pair)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ruled_cohorts(), st.sampled_from(["max_total", "max_matched"]), st.lists(st.integers(0, 3), min_size=4, max_size=4))
def test_the_solver_is_optimal_under_every_rule_kind_and_quota_against_brute_force(
    cohort: tuple[list[MenteeProfile], list[MentorProfile], MatchingSettings, list[Any]],
    objective: Objective,
    quotas: list[int],
) -> None:
    mentees, mentors, matching, predicates = cohort
    quotas = quotas[: len(mentees)]
    brute = np.array([[brute_pair(e, m, matching, predicates, False) for m in mentors] for e in mentees], dtype=np.int32)
    caps = [m.capacity for m in mentors]
    scores = score_matrix(mentees, mentors, matching, WEEK)
    assignment = solve(scores, caps, objective, quotas=quotas, mentee_candidates=1, mentor_candidates_per_slot=1)
    pairs = assignment.pairs()
    assert all(brute[i, j] >= 0 for i, j in pairs), "a pair a rule excludes was chosen"
    assert len(set(pairs)) == len(pairs), "a pair was chosen twice"
    assert all(sum(1 for a, _ in pairs if a == i) <= quotas[i] for i in range(len(mentees))), "quota exceeded"
    assert all(sum(1 for _, b in pairs if b == j) <= caps[j] for j in range(len(mentors))), "capacity exceeded"
    size, total = brute_assignment(brute, caps, quotas, objective)
    assert assignment.total_points == total
    if objective == "max_matched":
        assert assignment.matched == size


@st.composite
def quota_instances(draw: st.DrawFn) -> tuple[np.ndarray, list[int], list[int]]:
    n, m = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    values = draw(st.lists(st.integers(-1, 20), min_size=n * m, max_size=n * m))
    return (np.array(values, dtype=np.int32).reshape(n, m), draw(st.lists(st.integers(0, 3), min_size=m, max_size=m)),
            draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(quota_instances(), st.sampled_from(["max_total", "max_matched"]))
def test_quotas_stay_exact_and_never_exceed_a_capacity(instance: tuple[np.ndarray, list[int], list[int]], objective: Objective) -> None:
    scores, caps, quotas = instance
    assignment = solve(scores, caps, objective, quotas=quotas, mentee_candidates=1, mentor_candidates_per_slot=1)
    size, total = brute_assignment(scores, caps, quotas, objective)
    assert assignment.total_points == total
    assert solve_dense(scores, caps, objective, quotas=quotas).total_points == total
    if objective == "max_matched":
        assert assignment.matched == size
    baseline = greedy(scores, caps, quotas=quotas)
    assert baseline.total_points <= total or objective == "max_matched"
    load = np.bincount(assignment.mentors, minlength=len(caps))
    assert (load <= np.array(caps)).all()


@pytest.mark.parametrize(("n", "m", "seed"), [(300, 60, 1), (120, 200, 2)])
def test_quotas_on_a_larger_cohort_equal_the_dense_reference(n: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(-1, 1000, (n, m)).astype(np.int32)
    caps, quotas = rng.integers(1, 5, m), rng.integers(0, 4, n)
    for objective in ("max_total", "max_matched"):
        reference = solve_dense(scores, caps, objective, quotas=quotas)
        starved = solve(scores, caps, objective, quotas=quotas, mentee_candidates=1, mentor_candidates_per_slot=1)
        assert (starved.total_points, starved.matched) == (reference.total_points, reference.matched)
        assert not starved.stats.dense_fallback


# -- the public-sector rule set, per-round rules, why unmatched -------------------------------

PUBLIC_SECTOR = {
    "attributes": ATTRIBUTES,
    "rules": [
        {"name": "other organisation", "require": "different", "attribute": "organisation"},
        {"name": "one or two grades above", "require": "window", "attribute": "grade", "min": 1, "max": 2},
        {"name": "same profession", "score": "same", "attribute": "profession", "points": 10},
        {"name": "shared characteristic", "score": "shared", "attribute": "characteristics", "points": 6},
    ],
    "rule_sets": {
        "last round": {"rules": [{"name": "still unmatched", "score": "unmatched", "points": 6}],
                       "without": ["one or two grades above"], "mentors_per_round": 2},
    },
}


def person(kind: type[MenteeProfile] | type[MentorProfile], participant_id: str, **attributes: Any) -> Any:
    return kind.model_validate({"participant_id": participant_id, "attributes": attributes})


def test_explanations_name_each_rule_and_term_that_applied_and_never_a_value() -> None:
    matching = MatchingSettings.model_validate(PUBLIC_SECTOR)
    mentee = person(MenteeProfile, "e-1", organisation="HMRC", grade=3, profession="policy", characteristics=["carer"])
    mentor = person(MentorProfile, "m-1", organisation="DWP", grade=5, profession="Policy", characteristics=["carer", "lgbt+"])
    pair = score_pair(mentee, mentor, matching, WEEK)
    assert pair.excluded is None
    assert pair.rules == {"other organisation": "met", "one or two grades above": "met", "same profession": "met",
                          "shared characteristic": "met"}  # fmt: skip
    assert pair.terms == {"same profession": 10, "shared characteristic": 6}
    assert pair.explanation.endswith("; same profession +10; shared characteristic +6")
    plain = score_pair(mentee, mentor, MatchingSettings(), WEEK)
    assert pair.score == pytest.approx(plain.score + 16)
    for value in ("hmrc", "dwp", "policy", "carer", "lgbt"):
        assert value not in pair.explanation.lower()

    same_org = person(MentorProfile, "m-2", organisation="hmrc", grade=4)
    assert score_pair(mentee, same_org, matching, WEEK).excluded == "rule 'other organisation'"
    too_senior = person(MentorProfile, "m-3", organisation="moj", grade=6)
    assert score_pair(mentee, too_senior, matching, WEEK).excluded == "rule 'one or two grades above'"
    unknown = person(MentorProfile, "m-4", grade=4)
    assert score_pair(mentee, unknown, matching, WEEK).rules["other organisation"] == "not applied: attribute not given"


def test_a_rule_set_changes_the_rules_of_one_round_only() -> None:
    matching = MatchingSettings.model_validate(PUBLIC_SECTOR)
    last = matching.for_round("last round")
    assert [r.name for r in last.rules] == ["other organisation", "same profession", "shared characteristic",
                                            "still unmatched"]  # fmt: skip
    assert last.mentors_per_round == 2 and matching.mentors_per_round == 1
    assert matching.for_round(None) is matching
    with pytest.raises(KeyError, match="no rule set 'nope'"):
        matching.for_round("nope")
    mentee = person(MenteeProfile, "e-1", organisation="hmrc", grade=3)
    too_senior = person(MentorProfile, "m-3", organisation="moj", grade=6)
    assert score_pair(mentee, too_senior, matching, WEEK).excluded is not None
    later = score_pair(mentee, too_senior, last, WEEK)
    assert later.excluded is None and later.terms == {"still unmatched": 6}
    assert score_pair(mentee, too_senior, last, WEEK, has_mentor=True).terms == {}


def test_an_unmatched_mentee_is_told_how_many_mentors_each_reason_ruled_out() -> None:
    matching = MatchingSettings.model_validate({**PUBLIC_SECTOR, "require_common_language": True})
    mentee = MenteeProfile.model_validate({"participant_id": "e-1", "languages": ["en"], "reports_to": ["m-0"],
                                           "attributes": {"organisation": "hmrc", "grade": 3}})  # fmt: skip
    mentors = [
        person(MentorProfile, "m-0", organisation="moj", grade=4),  # their manager
        person(MentorProfile, "m-1", organisation="hmrc", grade=4),  # same organisation
        person(MentorProfile, "m-2", organisation="hmrc", grade=9),  # same organisation, too senior
        person(MentorProfile, "m-3", organisation="dwp", grade=3),  # too junior
        MentorProfile.model_validate({"participant_id": "m-4", "languages": ["de"],
                                      "attributes": {"organisation": "dwp", "grade": 5}}),  # fmt: skip
        person(MentorProfile, "m-5", organisation="dwp", grade=5),  # allowed
    ]
    [counts] = exclusion_counts([mentee], mentors, matching, WEEK)
    assert counts == {"rule 'other organisation'": 2, "rule 'one or two grades above'": 2, "no common language": 1,
                      "same reporting line": 1}  # fmt: skip
    # The same as judging every pair on its own, counting each reason a mentor breaks.
    assert (score_matrix([mentee], mentors, matching, WEEK) >= 0).sum() == 1


def test_validation_errors_name_the_rule() -> None:
    def problem(document: dict[str, Any]) -> str:
        with pytest.raises(ValidationError) as caught:
            MatchingSettings.model_validate(document)
        return describe_errors(caught.value)

    attributes = {"attributes": ATTRIBUTES}
    window = {"name": "grade gap", "require": "window", "attribute": "grade"}
    assert problem({"rules": [window]}) == "rules.0: rule 'grade gap': a window needs min, max or both"
    assert problem({"rules": [{**window, "min": 3, "max": 1}]}) == "rules.0: rule 'grade gap': min (3) is above max (1)"
    assert "rule 'grade gap': attribute 'grade' is not declared" in problem({"rules": [{**window, "min": 1}]})
    assert problem({**attributes, "rules": [{**window, "attribute": "profession", "min": 1}]}) == (
        "row: rule 'grade gap': a window needs a number attribute; 'profession' is text")
    assert problem({"rules": [{"name": "x", "score": "same", "attribute": "grade"}]}) == (
        "rules.0: rule 'x': a score term needs points")
    assert problem({"rules": [{"name": "x", "require": "same", "score": "same", "attribute": "grade"}]}) == (
        "rules.0: rule 'x': give exactly one of require (a hard rule) or score (a score term)")
    assert problem({"rules": [{"name": "x", "require": "same", "attribute": "grade", "points": 3}]}) == (
        "rules.0: rule 'x': points belong to score terms; a require rule excludes pairs")
    assert problem({"rules": [{"name": "x", "score": "unmatched", "attribute": "grade", "points": 3}]}) == (
        "rules.0: rule 'x': score: unmatched is about the mentee, it takes no attribute")
    twice = {"name": "same", "require": "same", "attribute": "grade"}
    assert problem({**attributes, "rules": [twice, twice]}) == "row: rule 'same' is named twice; names must be unique"
    assert problem({**attributes, "rule_sets": {"late": {"without": ["nope"]}}}) == (
        "row: rule set 'late': without names no rule of the programme: 'nope'")
    assert problem({**attributes, "rule_sets": {"late": {"rules": [{**window, "attribute": "organisation", "min": 1}]}}}) == (
        "row: rule set 'late': rule 'grade gap': a window needs a number attribute; 'organisation' is text")
    assert "rules.0.points" in problem({**attributes, "rules": [{"name": "x", "score": "same", "attribute": "grade",
                                                                 "points": 500}]})  # fmt: skip
    with pytest.raises(ValidationError):
        MatchingRule.model_validate({"name": "no; values", "require": "same", "attribute": "grade"})


def test_attributes_import_from_csv_columns_and_json_and_are_checked_against_their_declarations() -> None:
    matching = MatchingSettings.model_validate(PUBLIC_SECTOR)
    text = """participant_id,role,mentor_quota,attr:organisation,attr:grade,attr:characteristics,attr:profession
e-1,mentee,2,HMRC,3,"carer; LGBT+",policy
e-2,mentee,,dwp,three,,
e-3,mentee,,dwp,4,,
m-1,mentor,,moj,5,,digital
e-4,mentee,,,,,
"""
    parsed = parse_profiles(text, "csv", settings=matching)
    assert [p.participant_id for _, p in parsed.profiles] == ["e-1", "e-3", "m-1", "e-4"]
    first = parsed.profiles[0][1]
    assert isinstance(first, MenteeProfile) and first.mentor_quota == 2
    assert first.attributes == {"characteristics": ("carer", "lgbt+"), "grade": 3.0, "organisation": "hmrc",
                                "profession": "policy"}  # fmt: skip
    assert parsed.profiles[3][1].attributes == {}
    assert [str(p) for p in parsed.problems] == ["line 3 (e-2): attributes.grade: must be a number (a number attribute)"]
    assert parsed.ignored_columns == []

    json_text = '[{"participant_id": "e-9", "role": "mentee", "attributes": {"grade": 2, "shoe_size": 9}}]'
    rejected = parse_profiles(json_text, "json", settings=matching)
    assert [p.reason for p in rejected.problems] == [
        "attributes.shoe_size: not declared in the programme's matching settings "
        "(declared: characteristics, grade, organisation, profession)"]  # fmt: skip
    # Without the programme's settings, attributes come through as given (checked when scored).
    loose = parse_profiles(json_text, "json")
    assert loose.profiles[0][1].attributes == {"grade": 2.0, "shoe_size": 9.0}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ruled_cohorts())
def test_exclusion_counts_agree_with_each_pair_on_every_rule(
    cohort: tuple[list[MenteeProfile], list[MentorProfile], MatchingSettings, list[Any]],
) -> None:
    mentees, mentors, matching, _ = cohort
    counts = exclusion_counts(mentees, mentors, matching, WEEK, block_rows=2)
    matrix = score_matrix(mentees, mentors, matching, WEEK)
    for i, mentee in enumerate(mentees):
        pairs = [score_pair(mentee, mentor, matching, WEEK) for mentor in mentors]
        for rule in matching.rules:
            if rule.require is not None:
                broken = sum(1 for p in pairs if p.rules[rule.name] == "broken")
                assert counts[i].get(f"rule {rule.name!r}", 0) == broken, (i, rule.name, counts[i])
        # A mentor no reason rules out is allowed.
        if not counts[i]:
            assert (matrix[i] >= 0).all()
