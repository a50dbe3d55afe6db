"""Side by side with the PyPI package `mentor-match` (the matcher a large public-sector
mentoring programme runs): `python -m bench.matching_mentor_match` (also run by
`python -m bench.matching --mentor-match`).

Their package installs as the top-level module `matching`, the name of the Gale–Shapley
package bench/matching.py compares against: it gets a virtual environment of its own
(`--venv`, made on first use with `pip install mentor-match`), and runs there in a process
of its own. Ours runs in another process, so that each one's peak memory (VmHWM, Linux) is
its own. Times are the matching alone (their `process_data`; our score matrix and solve),
not reading the files.

One cohort (bench/matching_cohorts.py, attributes only: organisation, grade, profession,
characteristics) is written in both formats: their `mentors.csv` / `mentees.csv`, our
profile CSV with `attr:` columns, read by our importer. The programme's rules, both ways:

- theirs: three rounds of Munkres (each mentor and mentee at most one new pair a round),
  `Disqualify` same organisation and a grade gap outside [1, 2], `Equivalent("profession")`
  +10, a `Generic` shared characteristic +6, and `UnmatchedBonus(6)` in the third round;
- ours: the same rules as settings (bench/matching_cohorts.PUBLIC_SECTOR_RULES), a quota of
  3 mentors per mentee and 3 mentees per mentor (what their three rounds allow), one exact
  solve. Run on their score (our settings with every built-in criterion off, so a pair's
  points are 10 × their score) with max_total and with max_matched, and on our own score
  (the built-in criteria as well); and on their score in two exact rounds (first as many
  mentees as possible get one mentor, then the rest of every quota, largest total).

Every result is scored with both score functions (their score: the rules' points, no round
bonus; ours: `score_pair`'s points) and checked against the rules. Their three rounds are a
feasible answer of our problem, so ours must be at least as good on their score (max_total)
and on pairs (max_matched). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mentorflow-bench" / "mentor-match"
WEEK = date(2027, 1, 11)
QUOTA = 3
UNMATCHED_BONUS = 6
VARIANTS = ("their score, max_total", "their score, max_matched", "their score, two rounds", "ours")

# Runs inside their virtual environment: argv = folder with mentors.csv / mentees.csv.
THEIR_RUNNER = r'''
import csv, json, resource, sys, time
from pathlib import Path
import matching.rules.rule as rl
from matching.mentee import Mentee
from matching.mentor import Mentor
from matching.process import process_data

class WithCharacteristics:
    def __init__(self, **row):
        super().__init__(**row)
        self.characteristics = {c.strip() for c in (row.get("characteristics") or "").split(";") if c.strip()}

class Mentee_(WithCharacteristics, Mentee): pass
class Mentor_(WithCharacteristics, Mentor): pass

folder = Path(sys.argv[1])
read = lambda name, kind: [kind(**row) for row in csv.DictReader(open(folder / name, newline=""))]
mentors, mentees = read("mentors.csv", Mentor_), read("mentees.csv", Mentee_)

def rules():
    return [
        rl.Disqualify(lambda m: m.mentor.organisation == m.mentee.organisation),
        rl.Disqualify(lambda m: not 1 <= m.mentor.grade - m.mentee.grade <= 2),
        rl.Equivalent("profession", {True: 10, False: 0}),
        rl.Generic({True: 6, False: 0}, lambda m: bool(m.mentor.characteristics & m.mentee.characteristics)),
    ]

started = time.perf_counter()
process_data(mentors, mentees, [rules(), rules(), rules() + [rl.UnmatchedBonus(int(sys.argv[2]))]])
seconds = time.perf_counter() - started
pairs = [[mentee.email, mentor.email] for mentee in mentees for mentor in mentee.mentors]
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_mb": peak / 1024, "pairs": pairs}))
'''


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the
    process that started it, which may be a large benchmark)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def ensure_venv(venv: Path) -> Path:
    """Their package in a virtual environment of its own (made once)."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"  making {venv} with mentor-match (once)…", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "mentor-match"],
                       check=True)  # fmt: skip
    return python


def versions(python: Path) -> str:
    done = subprocess.run([str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    found = {p["name"].lower(): p["version"] for p in json.loads(done.stdout or "[]")}
    return f"mentor-match {found.get('mentor-match', '?')}, munkres {found.get('munkres', '?')}"


def write_cohort(folder: Path, n: int, m: int, seed: int) -> None:
    """The cohort in both formats: theirs (mentors.csv, mentees.csv) and ours (profiles.csv)."""
    from bench.matching_cohorts import people

    mentees, mentors = people(n, m, seed, full_profiles=False)
    columns = ["first name", "last name", "email", "role", "organisation", "grade", "profession", "characteristics"]
    for name, rows in (("mentees.csv", mentees), ("mentors.csv", mentors)):
        with open(folder / name, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                a = row["attributes"]
                writer.writerow({"first name": row["participant_id"], "last name": "-", "email": row["participant_id"],
                                 "role": "-", "organisation": a["organisation"], "grade": a["grade"],
                                 "profession": a["profession"], "characteristics": "; ".join(a.get("characteristics", []))})  # fmt: skip
    with open(folder / "profiles.csv", "w", newline="") as handle:
        ours = ["participant_id", "role", "capacity", "mentor_quota", "attr:organisation", "attr:grade",
                "attr:profession", "attr:characteristics"]  # fmt: skip
        writer = csv.DictWriter(handle, fieldnames=ours)
        writer.writeheader()
        for row in (*mentees, *mentors):
            a = row["attributes"]
            mentor = row["role"] == "mentor"
            writer.writerow({"participant_id": row["participant_id"], "role": row["role"],
                             "capacity": QUOTA if mentor else "", "mentor_quota": "" if mentor else QUOTA,
                             "attr:organisation": a["organisation"], "attr:grade": a["grade"],
                             "attr:profession": a["profession"],
                             "attr:characteristics": "; ".join(a.get("characteristics", []))})  # fmt: skip


def _settings(variant: str) -> Any:
    from bench.matching_cohorts import PUBLIC_SECTOR_RULES
    from pairing.settings import MatchingSettings

    extra: dict[str, Any] = {"require_common_language": False, "max_open_relationships_per_mentee": QUOTA,
                             "mentors_per_round": QUOTA}  # fmt: skip
    if variant != "ours":
        # Their score: every built-in criterion off (preferences, which nobody gives, keeps the
        # weights valid), so a pair's points are 10 × the rules' points.
        extra["weights"] = {"goals": 0, "availability": 0, "format": 0, "language": 0, "seniority": 0, "preferences": 1}
        extra["objective"] = "max_matched" if variant == "their score, max_matched" else "max_total"
    return MatchingSettings.model_validate({**PUBLIC_SECTOR_RULES, **extra})


def our_child(folder: str, variant: str) -> None:
    """In a process of its own: read our CSV, score, solve; print timings, peak memory, pairs."""
    from pairing.importing import parse_profiles
    from pairing.profiles import MenteeProfile, MentorProfile
    from pairing.scoring import score_matrix
    from pairing.solver import solve

    settings = _settings(variant)
    started = time.perf_counter()
    parsed = parse_profiles((Path(folder) / "profiles.csv").read_text(), "csv", settings=settings)
    assert not parsed.problems, parsed.problems[:3]
    mentees = [p for _, p in parsed.profiles if isinstance(p, MenteeProfile)]
    mentors = [p for _, p in parsed.profiles if isinstance(p, MentorProfile)]
    read = time.perf_counter()
    scores = score_matrix(mentees, mentors, settings, WEEK)
    scored = time.perf_counter()
    caps = np.array([m.capacity for m in mentors])
    quotas = np.array([QUOTA if e.mentor_quota is None else e.mentor_quota for e in mentees])
    if variant == "their score, two rounds":
        # Round 1: as many mentees as possible get one mentor; round 2: the rest of every
        # quota and capacity, the largest total (each round exact on its own).
        first = solve(scores, caps, "max_matched", quotas=np.minimum(quotas, 1))
        rest = scores.copy()
        rest[first.mentees, first.mentors] = -1
        second = solve(rest, caps - np.bincount(first.mentors, minlength=len(caps)), "max_total",
                       quotas=quotas - np.bincount(first.mentees, minlength=len(quotas)))  # fmt: skip
        chosen = first.pairs() + second.pairs()
        rounds = first.stats.pricing_rounds + second.stats.pricing_rounds
    else:
        assignment = solve(scores, caps, settings.objective, quotas=quotas)
        chosen, rounds = assignment.pairs(), assignment.stats.pricing_rounds
    solved = time.perf_counter()
    print(json.dumps({
        "read_seconds": read - started, "score_seconds": scored - read, "solve_seconds": solved - scored,
        "seconds": solved - read, "pricing_rounds": rounds,
        "peak_mb": peak_mb(),
        "pairs": [[mentees[i].participant_id, mentors[j].participant_id] for i, j in chosen],
    }))  # fmt: skip


def evaluate(folder: Path, pairs: list[list[str]]) -> dict[str, Any]:
    """A result scored both ways, and checked against the rules and the quotas."""
    from pairing.importing import parse_profiles
    from pairing.profiles import MenteeProfile, MentorProfile
    from pairing.scoring import score_pair

    settings = _settings("ours")
    parsed = parse_profiles((folder / "profiles.csv").read_text(), "csv", settings=settings)
    profiles = {(p.role, p.participant_id): p for _, p in parsed.profiles}
    theirs = ours = broken = 0
    per_mentee: dict[str, int] = {}
    per_mentor: dict[str, int] = {}
    for mentee_id, mentor_id in pairs:
        mentee, mentor = profiles["mentee", mentee_id], profiles["mentor", mentor_id]
        assert isinstance(mentee, MenteeProfile) and isinstance(mentor, MentorProfile)
        pair = score_pair(mentee, mentor, settings, WEEK)
        broken += pair.excluded is not None
        theirs += sum(pair.terms.values())
        ours += pair.points
        per_mentee[mentee_id] = per_mentee.get(mentee_id, 0) + 1
        per_mentor[mentor_id] = per_mentor.get(mentor_id, 0) + 1
    return {
        "pairs": len(pairs), "mentees_matched": len(per_mentee), "their_score": theirs,
        "our_score": round(settings.points_to_score(ours), 1), "rules_broken": broken,
        "over_quota": sum(1 for k in (*per_mentee.values(), *per_mentor.values()) if k > QUOTA),
        "repeated_pairs": len(pairs) - len({tuple(p) for p in pairs}),
    }  # fmt: skip


def _run(command: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"skipped": f"no result within {timeout:.0f} s"}
    if done.returncode != 0:
        return {"skipped": f"failed: {done.stderr.strip()[-400:]}"}
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def side_by_side(n: int, m: int, *, seed: int, repeat: int, their_repeat: int, timeout: float, venv: Path) -> dict[str, Any]:
    python = ensure_venv(venv)
    entry: dict[str, Any] = {"mentees": n, "mentors": m, "theirs_version": versions(python)}
    print(f"\nside by side with {entry['theirs_version']}: {n} mentees × {m} mentors, quota {QUOTA} each side", flush=True)
    with tempfile.TemporaryDirectory(prefix="mentorflow-mentor-match-") as name:
        folder = Path(name)
        write_cohort(folder, n, m, seed)
        runner = folder / "their_runner.py"
        runner.write_text(THEIR_RUNNER)
        theirs_runs = [_run([str(python), str(runner), str(folder), str(UNMATCHED_BONUS)], timeout, env={"PATH": os.environ.get("PATH", "")})
                       for _ in range(their_repeat)]  # fmt: skip
        done = [r for r in theirs_runs if "skipped" not in r]
        if done:
            entry["theirs"] = {"seconds": round(statistics.median(r["seconds"] for r in done), 2),
                               "all_seconds": [round(r["seconds"], 2) for r in done],
                               "peak_mb": round(max(r["peak_mb"] for r in done)), **evaluate(folder, done[-1]["pairs"])}  # fmt: skip
        else:
            entry["theirs"] = theirs_runs[-1]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for variant in VARIANTS:
            runs = [_run([sys.executable, "-c", f"from bench.matching_mentor_match import our_child; our_child({str(folder)!r}, {variant!r})"],
                         timeout, env=env) for _ in range(repeat)]  # fmt: skip
            good = [r for r in runs if "skipped" not in r]
            if not good:
                entry[variant] = runs[-1]
                continue
            entry[variant] = {
                "seconds": round(statistics.median(r["seconds"] for r in good), 3),
                "all_seconds": [round(r["seconds"], 3) for r in good],
                "score_seconds": round(statistics.median(r["score_seconds"] for r in good), 3),
                "solve_seconds": round(statistics.median(r["solve_seconds"] for r in good), 3),
                "read_seconds": round(statistics.median(r["read_seconds"] for r in good), 3),
                "pricing_rounds": good[-1]["pricing_rounds"], "peak_mb": round(max(r["peak_mb"] for r in good)),
                **evaluate(folder, good[-1]["pairs"]),
            }  # fmt: skip
    theirs = entry["theirs"]
    for label in ("theirs", *VARIANTS):
        found = entry[label]
        if "skipped" in found:
            print(f"  {label:25} skipped: {found['skipped']}", flush=True)
            continue
        print(f"  {label:25} {found['seconds']:8.2f} s  {found['peak_mb']:6,} MB  pairs {found['pairs']:,} "
              f"(mentees {found['mentees_matched']:,})  their score {found['their_score']:,}  our score "
              f"{found['our_score']:,}  rules broken {found['rules_broken']}, over quota {found['over_quota']}", flush=True)  # fmt: skip
    if "skipped" not in theirs:
        best_total, most_pairs = entry["their score, max_total"], entry["their score, max_matched"]
        entry["at_least_as_good"] = (
            "skipped" not in best_total and best_total["their_score"] >= theirs["their_score"]
            and "skipped" not in most_pairs and most_pairs["pairs"] >= theirs["pairs"]
        )  # fmt: skip
        if "their_score" in best_total:
            entry["their_score_gain"] = round(best_total["their_score"] / max(1, theirs["their_score"]) - 1, 4)
        print(f"  ours at least as good on their score and rules: {entry['at_least_as_good']}"
              f" (their score {entry.get('their_score_gain', 0):+.1%})", flush=True)  # fmt: skip
    return entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="600x200", help="mentees×mentors, comma-separated (3000x1000 takes theirs minutes)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours (the median is reported)")
    parser.add_argument("--their-repeat", type=int, default=3, help="runs of theirs")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one run may take")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="their virtual environment (made if missing)")
    args = parser.parse_args(argv)
    entries = []
    for size in args.sizes.split(","):
        n, m = (int(part) for part in size.lower().split("x"))
        entries.append(side_by_side(n, m, seed=args.seed, repeat=args.repeat, their_repeat=args.their_repeat,
                                    timeout=args.timeout, venv=args.venv))  # fmt: skip
    print(json.dumps({"bench": "matching_mentor_match", "date": date.today().isoformat(), "cohorts": entries},
                     separators=(",", ":")))  # fmt: skip


if __name__ == "__main__":
    main()
