"""Programme rules and quotas against the code before them: `python -m bench.matching_rules`
(also run by `python -m bench.matching`).

One cohort of profiles (bench/matching_cohorts.py: goals, strengths, availability in four
time zones, languages, formats, seniority, and the public-sector attributes), 10,000 ×
2,500 by default, scored and solved exactly, in the same run:

- base: the code before issue #17 (`pairing/` of `--base-rev`, taken from git into a
  temporary folder and run in a process of its own, attributes left out);
- rules off: today's code with the programme's rules off (the old path);
- rules on: the public-sector rule set (other organisation, grade gap in [1, 2], same
  profession +10, shared characteristic +6);
- rules on, quota 2: the same with every mentee wanting two mentors in the round.

Each is timed (score matrix, solver) `--repeat` times; medians are reported, with the
solver's pricing rounds (its proof of optimality) and the totals. Goal: rules on at most 2×
the base. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WEEK = date(2027, 1, 11)
# The last commit before issue #17's matching rules.
BASE_REV = "b8e9e4b"

# Runs in a process whose `pairing` is the base revision's: reads the cohort, times the path.
_BASE_RUNNER = """
import json, sys, time
from datetime import date
import numpy as np
from pairing.profiles import MenteeProfile, MentorProfile
from pairing.scoring import score_matrix
from pairing.settings import MatchingSettings
from pairing.solver import solve
cohort = json.load(open(sys.argv[1]))
strip = lambda row: {k: v for k, v in row.items() if k not in ("attributes", "mentor_quota")}
mentees = [MenteeProfile.model_validate(strip(r)) for r in cohort["mentees"]]
mentors = [MentorProfile.model_validate(strip(r)) for r in cohort["mentors"]]
caps = np.array([m.capacity for m in mentors])
runs = []
for _ in range(int(sys.argv[2])):
    started = time.perf_counter()
    scores = score_matrix(mentees, mentors, MatchingSettings(), date(2027, 1, 11))
    scored = time.perf_counter()
    assignment = solve(scores, caps)
    runs.append({"score_seconds": scored - started, "solve_seconds": time.perf_counter() - scored,
                 "matched": assignment.matched, "total": assignment.total_points,
                 "pricing_rounds": assignment.stats.pricing_rounds})
print(json.dumps(runs))
"""


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(run[key] for run in runs)), 3)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    last = runs[-1]
    return {
        "score_seconds": _median(runs, "score_seconds"), "solve_seconds": _median(runs, "solve_seconds"),
        "seconds": round(statistics.median(r["score_seconds"] + r["solve_seconds"] for r in runs), 3),
        "all_seconds": [round(r["score_seconds"] + r["solve_seconds"], 2) for r in runs],
        "matched": last["matched"], "total": last["total"], "pricing_rounds": last["pricing_rounds"],
    }  # fmt: skip


def run_base(cohort_file: Path, repeat: int, rev: str) -> dict[str, Any]:
    """The base revision's path, in a process of its own."""
    archive = subprocess.run(["git", "archive", rev, "pairing"], cwd=ROOT, capture_output=True, check=False)
    if archive.returncode != 0:
        return {"skipped": f"git archive {rev}: {archive.stderr.decode().strip()[:200]}"}
    with tempfile.TemporaryDirectory(prefix="mentorflow-base-") as folder:
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(folder, filter="data")
        env = {**os.environ, "PYTHONPATH": folder}
        done = subprocess.run([sys.executable, "-c", _BASE_RUNNER, str(cohort_file), str(repeat)], env=env,
                              capture_output=True, text=True, check=False, cwd=folder)  # fmt: skip
        if done.returncode != 0:
            return {"skipped": f"the base revision failed: {done.stderr.strip()[-300:]}"}
        return {"rev": rev, **_summary(json.loads(done.stdout.strip().splitlines()[-1]))}


def run_ours(mentees: list[Any], mentors: list[Any], settings: Any, repeat: int, quota: int = 1) -> dict[str, Any]:
    from pairing.scoring import score_matrix
    from pairing.solver import solve

    caps = np.array([m.capacity for m in mentors])
    quotas = np.full(len(mentees), quota) if quota != 1 else None
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        scores = score_matrix(mentees, mentors, settings, WEEK)
        scored = time.perf_counter()
        assignment = solve(scores, caps, quotas=quotas)
        runs.append({"score_seconds": scored - started, "solve_seconds": time.perf_counter() - scored,
                     "matched": assignment.matched, "total": assignment.total_points,
                     "pricing_rounds": assignment.stats.pricing_rounds})  # fmt: skip
    return {**_summary(runs), "allowed_pairs": float(round((scores >= 0).mean(), 3))}


def bench_rules(n: int, m: int, repeat: int, seed: int, base_rev: str | None) -> dict[str, Any]:
    from bench.matching_cohorts import PUBLIC_SECTOR_RULES, people
    from pairing.profiles import MenteeProfile, MentorProfile
    from pairing.settings import MatchingSettings

    rows_e, rows_m = people(n, m, seed)
    mentees = [MenteeProfile.model_validate(r) for r in rows_e]
    mentors = [MentorProfile.model_validate(r) for r in rows_m]
    print(f"\nprofiles {n} mentees × {m} mentors ({sum(x.capacity for x in mentors)} slots), "
          f"score matrix and exact solve, median of {repeat}:", flush=True)  # fmt: skip
    entry: dict[str, Any] = {"mentees": n, "mentors": m}
    if base_rev:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump({"mentees": rows_e, "mentors": rows_m}, handle)
        try:
            entry["base"] = run_base(Path(handle.name), repeat, base_rev)
        finally:
            os.unlink(handle.name)
    rules = MatchingSettings.model_validate(PUBLIC_SECTOR_RULES)
    entry["rules_off"] = run_ours(mentees, mentors, MatchingSettings(), repeat)
    entry["rules_on"] = run_ours(mentees, mentors, rules, repeat)
    entry["rules_on_quota_2"] = run_ours(mentees, mentors, rules, repeat, quota=2)
    for name in ("base", "rules_off", "rules_on", "rules_on_quota_2"):
        found = entry.get(name)
        if not found:
            continue
        if "skipped" in found:
            print(f"  {name:17} skipped: {found['skipped']}", flush=True)
            continue
        print(f"  {name:17} {found['seconds']:7.2f} s (score {found['score_seconds']:.2f} + solve "
              f"{found['solve_seconds']:.2f}; {found['pricing_rounds']} pricing rounds)  "
              f"pairs {found['matched']:,}  total {found['total']:,}", flush=True)  # fmt: skip
    base = entry.get("base") or {}
    reference: dict[str, Any] = base if "seconds" in base else entry["rules_off"]
    entry["rules_on_ratio"] = round(entry["rules_on"]["seconds"] / reference["seconds"], 2)
    entry["rules_on_solver_ratio"] = round(entry["rules_on"]["solve_seconds"] / reference["solve_seconds"], 2)
    entry["goal_met"] = entry["rules_on_ratio"] <= 2
    if "base" in entry and "total" in entry["base"]:
        entry["rules_off_equals_base"] = (entry["base"]["total"], entry["base"]["matched"]) == (
            entry["rules_off"]["total"], entry["rules_off"]["matched"])  # fmt: skip
    print(f"  rules on / {'base' if reference is base else 'rules off'}: {entry['rules_on_ratio']}× "
          f"(solver alone {entry['rules_on_solver_ratio']}×; goal ≤ 2×)", flush=True)  # fmt: skip
    return entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", default="10000x2500", help="mentees×mentors")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--base-rev", default=BASE_REV, help="git revision of the code before the rules ('' to skip)")
    args = parser.parse_args(argv)
    n, m = (int(part) for part in args.size.lower().split("x"))
    print(json.dumps({"bench": "matching_rules", "date": date.today().isoformat(),
                      **bench_rules(n, m, args.repeat, args.seed, args.base_rev or None)}, separators=(",", ":")))  # fmt: skip


if __name__ == "__main__":
    main()
