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
