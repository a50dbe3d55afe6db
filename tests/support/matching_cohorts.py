"""Random matching cohorts (hypothesis strategies) and a brute-force reference, for the
matching tests: `cohorts` exercises the profiles' criteria, `ruled_cohorts` the programme's
rules (each rule kind with the predicate that defines it), `brute_assignment` tries every
set of allowed pairs."""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

import numpy as np
from hypothesis import strategies as st

from pairing.profiles import MenteeProfile, MentorProfile
from pairing.settings import CriterionWeights, MatchingSettings, Objective

# The Monday of a week in winter (time zones at their standard offsets).
WINTER = date(2027, 1, 11)
WEEK = WINTER


# -- the profiles' criteria ------------------------------------------------------------------

TOPICS = ["python", "sql", "go", "design", "speaking", "leadership"]
IDS = [f"p-{k}" for k in range(8)]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Adelaide"]


@st.composite
def windows_strategy(draw: st.DrawFn) -> list[dict[str, str]]:
    result = []
    for _ in range(draw(st.integers(0, 3))):
        start = draw(st.integers(0, 95)) * 15
        length = draw(st.integers(1, 40)) * 15
        end = (start + length) % (24 * 60)
        day = draw(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]))
        if end == start:
            continue
        result.append({"day": day, "start": f"{start // 60:02d}:{start % 60:02d}", "end": f"{end // 60:02d}:{end % 60:02d}"})
    return result


def _common(draw: st.DrawFn, participant_id: str) -> dict[str, object]:
    return {
        "participant_id": participant_id,
        "timezone": draw(st.sampled_from(ZONES)),
        "seniority": draw(st.none() | st.integers(0, 10)),
        "languages": draw(st.lists(st.sampled_from(["en", "de", "fr"]), max_size=2)),
        "formats": draw(st.lists(st.sampled_from(["video", "phone", "in_person"]), max_size=2)),
        "availability": draw(windows_strategy()),
        "reports_to": draw(st.lists(st.sampled_from(IDS), max_size=2)),
        "previous_partners": draw(st.lists(st.sampled_from(IDS), max_size=1)),
        "opt_out": draw(st.lists(st.sampled_from(IDS), max_size=1)),
        "preferred": draw(st.lists(st.sampled_from(IDS), max_size=2)),
    }


@st.composite
def cohorts(draw: st.DrawFn) -> tuple[list[MenteeProfile], list[MentorProfile], MatchingSettings]:
    ids = draw(st.permutations(IDS))
    n = draw(st.integers(1, 4))
    m = draw(st.integers(1, 4))
    mentees = [
        MenteeProfile.model_validate({**_common(draw, ids[i]), "goals": [
            {"topic": t, "priority": draw(st.integers(1, 3))} for t in draw(st.lists(st.sampled_from(TOPICS), max_size=3))]})
        for i in range(n)
    ]  # fmt: skip
    mentors = [
        # Ids are unique on each side (the store's key); a mentor may also be mentee j.
        MentorProfile.model_validate({**_common(draw, ids[j] if j < n and draw(st.booleans()) else ids[4 + j]), "strengths": [
            {"topic": t, "level": draw(st.integers(1, 5))} for t in draw(st.lists(st.sampled_from(TOPICS), max_size=4))],
            "capacity": draw(st.integers(0, 3))})
        for j in range(m)
    ]  # fmt: skip
    weights = CriterionWeights(**{c: draw(st.integers(0, 30)) for c in ("goals", "availability", "format", "language")},
                               seniority=draw(st.integers(1, 30)), preferences=draw(st.integers(0, 30)))  # fmt: skip
    matching = MatchingSettings(
        weights=weights,
        min_score=draw(st.sampled_from([0, 0, 30, 55.5])),
        min_overlap_hours=draw(st.sampled_from([0, 0, 1])),
        require_common_language=draw(st.booleans()),
        require_common_format=draw(st.booleans()),
        seniority_mode=draw(st.sampled_from(["senior", "peer"])),
        min_seniority_gap=draw(st.sampled_from([None, 0, 2])),
    )
    return mentees, mentors, matching


# -- the programme's rules ---------------------------------------------------------------------

ORGS = ["hmrc", "dwp", "moj"]
PROFESSIONS = ["policy", "digital", "finance"]
TRAITS = ["carer", "lgbt+", "disabled", "first generation"]

ATTRIBUTES = {
    "organisation": {"kind": "text", "confidential": False},
    "grade": {"kind": "number", "confidential": False},
    "profession": {"kind": "text"},
    "characteristics": {"kind": "set"},
}

# Each rule kind, written out on its own, as the brute force judges it: (condition on the
# two values) with values None when not given.


def _gap_in(low: float | None, high: float | None) -> Any:
    return lambda a, b: (low is None or b - a >= low) and (high is None or b - a <= high)


RULE_KINDS: list[tuple[dict[str, Any], Any]] = [
    ({"require": "same", "attribute": "profession"}, lambda a, b: a == b),
    ({"require": "different", "attribute": "organisation"}, lambda a, b: a != b),
    ({"require": "different", "attribute": "grade"}, lambda a, b: a != b),
    ({"require": "shared", "attribute": "characteristics"}, lambda a, b: bool(set(a) & set(b))),
    ({"require": "different", "attribute": "characteristics"}, lambda a, b: not set(a) & set(b)),
    ({"require": "same", "attribute": "characteristics"}, lambda a, b: set(a) == set(b)),
    ({"require": "window", "attribute": "grade", "min": 1, "max": 2}, _gap_in(1, 2)),
    ({"require": "window", "attribute": "grade", "min": 0}, _gap_in(0, None)),
    ({"require": "window", "attribute": "grade", "max": -1}, _gap_in(None, -1)),
    ({"score": "same", "attribute": "profession", "points": 10}, lambda a, b: a == b),
    ({"score": "shared", "attribute": "characteristics", "points": 6}, lambda a, b: bool(set(a) & set(b))),
    ({"score": "different", "attribute": "organisation", "points": -7}, lambda a, b: a != b),
    ({"score": "window", "attribute": "grade", "min": 1, "max": 1, "points": 5}, _gap_in(1, 1)),
    ({"score": "shared", "attribute": "profession", "points": 3}, lambda a, b: a == b),
]


def _attributes(draw: st.DrawFn) -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    if draw(st.booleans()) or draw(st.booleans()):
        chosen["organisation"] = draw(st.sampled_from(ORGS))
    if draw(st.integers(0, 3)):
        chosen["grade"] = draw(st.integers(1, 7))
    if draw(st.integers(0, 3)):
        chosen["profession"] = draw(st.sampled_from(PROFESSIONS))
    if draw(st.integers(0, 3)):
        chosen["characteristics"] = draw(st.lists(st.sampled_from(TRAITS), min_size=1, max_size=3))
    return chosen


@st.composite
def ruled_cohorts(draw: st.DrawFn) -> tuple[list[MenteeProfile], list[MentorProfile], MatchingSettings, list[Any]]:
    n, m = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    mentees = [MenteeProfile.model_validate({
        "participant_id": f"e-{i}", "attributes": _attributes(draw), "seniority": draw(st.none() | st.integers(0, 6)),
        "goals": [{"topic": t} for t in draw(st.lists(st.sampled_from(["python", "sql"]), max_size=2))],
    }) for i in range(n)]  # fmt: skip
    mentors = [MentorProfile.model_validate({
        "participant_id": f"m-{j}", "attributes": _attributes(draw), "seniority": draw(st.none() | st.integers(0, 6)),
        "strengths": [{"topic": t, "level": 4} for t in draw(st.lists(st.sampled_from(["python", "sql"]), max_size=2))],
        "capacity": draw(st.integers(0, 2)),
    }) for j in range(m)]  # fmt: skip
    picked = draw(st.lists(st.sampled_from(range(len(RULE_KINDS))), min_size=1, max_size=4, unique=True))
    rules, predicates = [], []
    for k in picked:
        fields, predicate = RULE_KINDS[k]
        missing = draw(st.sampled_from(["allow", "exclude"])) if "require" in fields else "allow"
        rules.append({"name": f"rule {k}", **fields, **({"missing": missing} if "require" in fields else {})})
        predicates.append((rules[-1], predicate))
    if draw(st.booleans()):
        rules.append({"name": "still unmatched", "score": "unmatched", "points": 4})
        predicates.append((rules[-1], None))
    matching = MatchingSettings.model_validate({
        "attributes": ATTRIBUTES, "rules": rules, "min_score": draw(st.sampled_from([0, 0, 40])),
        "require_common_language": False,
    })  # fmt: skip
    return mentees, mentors, matching, predicates


def brute_assignment(scores: np.ndarray, caps: list[int], quotas: list[int], objective: Objective) -> tuple[int, int]:
    """(pairs, total) of the best assignment by trying every set of allowed pairs."""
    threshold = 0 if objective == "max_matched" else 1
    n, m = scores.shape
    pairs = [(i, j) for i in range(n) for j in range(m) if scores[i, j] >= threshold]
    best = (-1, -1)
    for size in range(len(pairs) + 1):
        for chosen in itertools.combinations(pairs, size):
            if any(sum(1 for a, _ in chosen if a == i) > quotas[i] for i in range(n)):
                continue
            if any(sum(1 for _, b in chosen if b == j) > caps[j] for j in range(m)):
                continue
            total = sum(int(scores[i, j]) for i, j in chosen)
            key = (size, total) if objective == "max_matched" else (0, total)
            best = max(best, key)
    return best
