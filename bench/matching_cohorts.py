"""Synthetic cohorts for the matching benchmarks, as plain rows (JSON-able dicts in the
import format of `pairing.importing`), so that other code — an older revision of `pairing`,
another package in its own virtual environment — can read the very same people.

Attributes follow the public-sector programme of issue #17: an organisation (one of 12),
a grade (1–7), a profession (one of 8) and 0–2 protected characteristics (of 6).
"""

from __future__ import annotations

from typing import Any

import numpy as np

TOPICS = [f"topic {k}" for k in range(40)]
ORGANISATIONS = [f"org-{k}" for k in range(12)]
PROFESSIONS = [f"profession-{k}" for k in range(8)]
CHARACTERISTICS = ["carer", "lgbt+", "disabled", "ethnic minority", "first generation", "neurodivergent"]
DAYS = ["mon", "tue", "wed", "thu", "fri"]
ZONES = ["Europe/London", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]

# The rule set of issue #17 in our settings; `attributes` declares the kinds.
PUBLIC_SECTOR_RULES: dict[str, Any] = {
    "attributes": {
        "organisation": {"kind": "text", "confidential": False},
        "grade": {"kind": "number", "confidential": False},
        "profession": {"kind": "text"},
        "characteristics": {"kind": "set"},
    },
    "rules": [
        {"name": "other organisation", "require": "different", "attribute": "organisation"},
        {"name": "one or two grades above", "require": "window", "attribute": "grade", "min": 1, "max": 2},
        {"name": "same profession", "score": "same", "attribute": "profession", "points": 10},
        {"name": "shared characteristic", "score": "shared", "attribute": "characteristics", "points": 6},
    ],
}


def _attributes(rng: np.random.Generator, mentor: bool) -> dict[str, Any]:
    grade = int(rng.integers(3, 8) if mentor else rng.integers(1, 6))
    traits = rng.choice(CHARACTERISTICS, size=int(rng.integers(0, 3)), replace=False).tolist()
    found: dict[str, Any] = {"organisation": str(rng.choice(ORGANISATIONS)), "grade": grade,
                             "profession": str(rng.choice(PROFESSIONS))}  # fmt: skip
    if traits:
        found["characteristics"] = traits
    return found


def people(n: int, m: int, seed: int, *, full_profiles: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(mentee rows, mentor rows). `full_profiles`: goals, strengths, availability, languages
    and seniority as well as attributes (the public-sector comparison has attributes only)."""
    rng = np.random.default_rng(seed)
    mentees, mentors = [], []
    for i in range(n):
        row: dict[str, Any] = {"participant_id": f"e-{i}", "role": "mentee", "attributes": _attributes(rng, False)}
        if full_profiles:
            row.update(_profile(rng), goals=[{"topic": str(t), "priority": int(rng.integers(1, 4))}
                                             for t in rng.choice(TOPICS, size=3, replace=False)])  # fmt: skip
            row["seniority"] = int(row["attributes"]["grade"])
        mentees.append(row)
    for j in range(m):
        row = {"participant_id": f"m-{j}", "role": "mentor", "capacity": int(rng.integers(1, 6)),
               "attributes": _attributes(rng, True)}  # fmt: skip
        if full_profiles:
            row.update(_profile(rng), strengths=[{"topic": str(t), "level": int(rng.integers(1, 6))}
                                                 for t in rng.choice(TOPICS, size=5, replace=False)])  # fmt: skip
            row["seniority"] = int(row["attributes"]["grade"])
        mentors.append(row)
    return mentees, mentors


def _profile(rng: np.random.Generator) -> dict[str, Any]:
    start = int(rng.integers(8, 18))
    return {
        "timezone": str(rng.choice(ZONES)),
        "languages": ["en"] if rng.random() < 0.9 else ["de"],
        "formats": rng.choice(["video", "phone", "in_person"], size=int(rng.integers(1, 3)), replace=False).tolist(),
        "availability": [{"day": str(day), "start": f"{start:02d}:00", "end": f"{start + 2:02d}:00"}
                         for day in rng.choice(DAYS, size=2, replace=False)],  # fmt: skip
    }


def _distinct(rng: np.random.Generator, rows: int, pool: int, k: int) -> np.ndarray:
    """`rows` × k distinct indices below `pool`, drawn at once."""
    return np.argsort(rng.random((rows, pool)), axis=1)[:, :k]


def large_people(n: int, m: int, seed: int, *, popular: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The people of `people()` (full profiles and the public-sector attributes), drawn a
    column at a time so that 100,000 × 25,000 takes seconds. `popular`: 1 % of mentors are
    experts (level 5) in the 5 topics that 80 % of mentees want and no other mentor offers,
    and those mentees ask for 2 of them by name: everybody wants the same few mentors."""
    rng = np.random.default_rng(seed)
    hot = 5 if popular else 0

    def common(count: int, prefix: str, mentor: bool) -> list[dict[str, Any]]:
        zones = rng.integers(0, len(ZONES), count)
        german = rng.random(count) < 0.1
        formats = _distinct(rng, count, 3, 2)
        two_formats = rng.random(count) < 0.5
        days = _distinct(rng, count, len(DAYS), 2)
        starts = rng.integers(8, 18, count)
        grades = rng.integers(3, 8, count) if mentor else rng.integers(1, 6, count)
        organisations = rng.integers(0, len(ORGANISATIONS), count)
        professions = rng.integers(0, len(PROFESSIONS), count)
        traits = _distinct(rng, count, len(CHARACTERISTICS), 2)
        trait_count = rng.integers(0, 3, count)
        names = ["video", "phone", "in_person"]
        rows = []
        for k in range(count):
            attributes: dict[str, Any] = {"organisation": ORGANISATIONS[organisations[k]], "grade": int(grades[k]),
                                          "profession": PROFESSIONS[professions[k]]}  # fmt: skip
            if trait_count[k]:
                attributes["characteristics"] = [CHARACTERISTICS[t] for t in traits[k, : trait_count[k]]]
            rows.append({
                "participant_id": f"{prefix}-{k}", "role": "mentor" if mentor else "mentee", "attributes": attributes,
                "timezone": ZONES[zones[k]], "languages": ["de"] if german[k] else ["en"],
                "formats": [names[f] for f in formats[k, : 1 + two_formats[k]]], "seniority": int(grades[k]),
                "availability": [{"day": DAYS[d], "start": f"{starts[k]:02d}:00", "end": f"{starts[k] + 2:02d}:00"}
                                 for d in days[k]],
            })  # fmt: skip
        return rows

    mentees, mentors = common(n, "e", False), common(m, "m", True)
    stars = rng.choice(m, max(1, m // 100), replace=False) if popular else np.zeros(0, dtype=np.int64)
    followers = rng.random(n) < (0.8 if popular else 0.0)
    goals = _distinct(rng, n, len(TOPICS) - hot, 3) + hot
    hot_goals = _distinct(rng, n, max(hot, 3), 3)
    priorities = rng.integers(1, 4, (n, 3))
    asked = rng.integers(0, max(1, len(stars)), (n, 2))
    for i, row in enumerate(mentees):
        topics = hot_goals[i] if followers[i] else goals[i]
        row["goals"] = [{"topic": TOPICS[t], "priority": int(p)} for t, p in zip(topics, priorities[i], strict=True)]
        if followers[i]:
            row["preferred"] = sorted({f"m-{stars[a]}" for a in asked[i]})
    strengths = _distinct(rng, m, len(TOPICS) - hot, 5) + hot
    levels = rng.integers(1, 6, (m, 5))
    capacities = rng.integers(1, 6, m)
    is_star = np.zeros(m, dtype=bool)
    is_star[stars] = True
    for j, row in enumerate(mentors):
        if is_star[j]:
            row["strengths"] = [{"topic": TOPICS[t], "level": 5} for t in range(hot)]
        else:
            row["strengths"] = [{"topic": TOPICS[t], "level": int(v)} for t, v in zip(strengths[j], levels[j], strict=True)]
        row["capacity"] = int(capacities[j])
    return mentees, mentors
