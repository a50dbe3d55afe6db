"""Benchmark of the cohort solver: `python -m bench.matching`.

Cohorts of 2,000 mentees × 500 mentors and 10,000 × 2,500 (capacities 1–5), each in two
shapes: uniform random preferences, and "popular mentors" (most mentees prefer the same
few mentors). On each, in the same run:

- ours: `pairing.solver.solve` (sparse min-cost flow, proved optimal by pricing);
- an exact reference: scipy's linear_sum_assignment on the matrix expanded to one column
  per mentor slot where that finishes in reasonable time (2,000 × 500), the dense
  min-cost flow (every allowed pair an arc) otherwise;
- greedy: best pair first while both sides have room;
- Gale–Shapley hospital–resident (the PyPI `matching` package, mentee-optimal), where it
  finishes: with full preference lists it takes minutes at 2,000 × 500 and is skipped at
  10,000 × 2,500 (`--gale-shapley-all` tries anyway).

Scores are integer points 0–10,000 (about 1% of pairs excluded) and the objective is
max_total, the one every contestant optimises or approximates.

Then, unless `--no-rules`, programme rules (issue #17) on a cohort of profiles
(bench/matching_rules.py): the code before the rules, ours with rules off (the old path)
and on, scored and solved in the same run. With `--mentor-match 600x200[,3000x1000]`, the
side-by-side with the PyPI package `mentor-match` in its own virtual environment
(bench/matching_mentor_match.py).

The last line printed is one JSON object with every time and total, and our optimality gap
against the reference. Needs the `bench` extra (scipy, matching).

`--cohort 100000x25000` runs the largest cohorts instead (issue #16): profiles (uniform and
popular mentors, bench/matching_cohorts.large_people, the public-sector rules) scored a tile
at a time and solved by `pairing.pricing.solve_tiled`, never holding all 2.5 billion pairs,
the optimum proved by the certificate over every pair. Each run is a fresh process (its
peak memory, VmHWM, is its own); times, wall and processor (every thread): building the
scorer, the candidate pass, the flows, the certificate passes; and how many whole passes
over the pairs it took, and how many mentees a later round walked again.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from pairing.solver import Assignment, greedy, solve, solve_dense

EXCLUDED = -1


def uniform_cohort(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 10_001, (n, m), dtype=np.int32)
    scores[rng.random((n, m)) < 0.01] = EXCLUDED
    return scores, rng.integers(1, 6, m)


def popular_cohort(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """80% of mentees prefer the same 1% of mentors far above everyone else."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4_001, (n, m), dtype=np.int32)
    favourites = rng.choice(m, max(2, m // 100), replace=False)
    followers = np.flatnonzero(rng.random(n) < 0.8)
    scores[np.ix_(followers, favourites)] += rng.integers(4_000, 6_001, (len(followers), len(favourites)), dtype=np.int32)
    scores[rng.random((n, m)) < 0.01] = EXCLUDED
    return scores, rng.integers(1, 6, m)


def timed(run: Callable[[], Assignment]) -> tuple[Assignment, float]:
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def scipy_reference(scores: np.ndarray, capacities: np.ndarray) -> tuple[int, int]:
    """Exact max_total by the Hungarian-type solver on one column per mentor slot."""
    from scipy.optimize import linear_sum_assignment

    columns = np.repeat(np.arange(scores.shape[1]), capacities)
    expanded = np.maximum(scores[:, columns], 0).astype(np.int64)
    rows, cols = linear_sum_assignment(expanded, maximize=True)
    # A forced pair of zero points (or an excluded one, counted as zero) is no pair.
    chosen = expanded[rows, cols] > 0
    return int(expanded[rows, cols].sum()), int(chosen.sum())


def _gale_shapley_child(scores: np.ndarray, capacities: np.ndarray, results: Any) -> None:
    # The package deep-copies players whose preference lists reference each other: it
    # needs a deep stack.
    sys.setrecursionlimit(1_000_000)
    threading.stack_size(1 << 30)

    def run() -> None:
        from matching.games import HospitalResident

        started = time.perf_counter()
        allowed = scores > 0
        by_mentee = np.argsort(-scores, axis=1, kind="stable")
        by_mentor = np.argsort(-scores, axis=0, kind="stable")
        mentee_prefs = {f"e{i}": [f"m{j}" for j in by_mentee[i] if allowed[i, j]] for i in range(scores.shape[0])}
        mentor_prefs = {f"m{j}": [f"e{i}" for i in by_mentor[:, j] if allowed[i, j]] for j in range(scores.shape[1])}
        game = HospitalResident.create_from_dictionaries(
            {k: v for k, v in mentee_prefs.items() if v}, {k: v for k, v in mentor_prefs.items() if v},
            {f"m{j}": int(c) for j, c in enumerate(capacities) if mentor_prefs[f"m{j}"]},
        )  # fmt: skip
        outcome = game.solve(optimal="resident")
        pairs = [(int(r.name[1:]), int(h.name[1:])) for h, residents in outcome.items() for r in residents]
        total = int(sum(int(scores[i, j]) for i, j in pairs))
        results.put({"seconds": round(time.perf_counter() - started, 2), "total": total, "matched": len(pairs)})

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()


def gale_shapley(scores: np.ndarray, capacities: np.ndarray, timeout: float) -> dict[str, Any]:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_gale_shapley_child, args=(scores, capacities, results))
    child.start()
    try:
        found: dict[str, Any] = results.get(timeout=timeout)
        return found
    except queue.Empty:
        return {"skipped": f"did not finish within {timeout:.0f} s"}
    finally:
        child.kill()
        child.join()


def bench_cohort(name: str, scores: np.ndarray, capacities: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    n, m = scores.shape
    print(f"\n{name}: {n} mentees × {m} mentors, {int(capacities.sum())} slots", flush=True)
    entry: dict[str, Any] = {"cohort": name, "mentees": n, "mentors": m, "slots": int(capacities.sum())}

    runs = []
    for _ in range(args.repeat):
        ours, seconds = timed(lambda: solve(scores, capacities, "max_total"))
        runs.append(seconds)
    entry["ours"] = {
        "seconds": round(statistics.median(runs), 3), "all_seconds": [round(s, 3) for s in runs],
        "total": ours.total_points, "matched": ours.matched,
        "pricing_rounds": ours.stats.pricing_rounds, "candidate_pairs": ours.stats.candidate_pairs,
        "added_pairs": ours.stats.added_pairs, "dense_fallback": ours.stats.dense_fallback,
    }  # fmt: skip
    print(f"  ours        {statistics.median(runs):8.2f} s  total {ours.total_points:,}  matched {ours.matched:,}  "
          f"(median of {args.repeat}; {ours.stats.pricing_rounds} pricing rounds, "
          f"{ours.stats.candidate_pairs:,}+{ours.stats.added_pairs:,} arcs)", flush=True)  # fmt: skip

    reference: dict[str, Any]
    if n * int(capacities.sum()) <= args.scipy_max_cells:
        started = time.perf_counter()
        total, matched = scipy_reference(scores, capacities)
        reference = {"method": "scipy linear_sum_assignment, expanded", "seconds": round(time.perf_counter() - started, 2),
                     "total": total, "matched": matched}  # fmt: skip
    else:
        dense, seconds = timed(lambda: solve_dense(scores, capacities, "max_total"))
        reference = {"method": "dense min-cost flow (OR-Tools)", "seconds": round(seconds, 2),
                     "total": dense.total_points, "matched": dense.matched}  # fmt: skip
    entry["reference"] = reference
    print(f"  reference   {reference['seconds']:8.2f} s  total {reference['total']:,}  ({reference['method']})", flush=True)

    baseline, seconds = timed(lambda: greedy(scores, capacities))
    entry["greedy"] = {"seconds": round(seconds, 2), "total": baseline.total_points, "matched": baseline.matched}
    print(f"  greedy      {seconds:8.2f} s  total {baseline.total_points:,}", flush=True)

    if args.gale_shapley_all or n <= args.gale_shapley_max_mentees:
        found = gale_shapley(scores, capacities, args.gale_shapley_timeout)
    else:
        found = {"skipped": "full preference lists: minutes at 2,000 × 500, far longer here (--gale-shapley-all)"}
    entry["gale_shapley"] = found
    if "total" in found:
        print(f"  gale–shapley{found['seconds']:8.2f} s  total {found['total']:,}", flush=True)
    else:
        print(f"  gale–shapley skipped: {found['skipped']}", flush=True)

    entry["gap"] = (reference["total"] - ours.total_points) / reference["total"] if reference["total"] else 0.0
    entry["not_below_greedy"] = ours.total_points >= baseline.total_points
    return entry


def _vmhwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def large_child(n: int, m: int, shape: str, seed: int, workers: int) -> dict[str, Any]:
    """One largest-cohort run, in this (fresh) process."""
    from bench.matching_cohorts import PUBLIC_SECTOR_RULES, large_people
    from pairing.pricing import solve_tiled
    from pairing.profiles import MenteeProfile, MentorProfile
    from pairing.settings import MatchingSettings
    from pairing.tiles import TileScorer

    started = time.perf_counter()
    mentee_rows, mentor_rows = large_people(n, m, seed, popular=shape == "popular")
    mentees = [MenteeProfile.model_validate(row) for row in mentee_rows]
    mentors = [MentorProfile.model_validate(row) for row in mentor_rows]
    del mentee_rows, mentor_rows
    profiles = time.perf_counter() - started
    load_before = os.getloadavg()
    started, cpu = time.perf_counter(), time.process_time()
    scorer = TileScorer(mentees, mentors, MatchingSettings.model_validate(PUBLIC_SECTOR_RULES), date(2027, 1, 11))
    built, built_cpu = time.perf_counter() - started, time.process_time() - cpu
    found = solve_tiled(scorer, np.array([p.capacity for p in mentors]), "max_total", workers=workers)
    total, total_cpu = time.perf_counter() - started, time.process_time() - cpu
    stats, certificate = found.assignment.stats, found.certificate
    return {
        "cohort": f"{n}x{m}-{shape}", "mentees": n, "mentors": m, "slots": sum(p.capacity for p in mentors),
        "workers": workers, "profiles_seconds": round(profiles, 2),
        "score_seconds": round(built + found.candidate_seconds, 2), "scorer_build_seconds": round(built, 2),
        "candidate_pass_seconds": round(found.candidate_seconds, 2), "solve_seconds": round(found.solve_seconds, 2),
        "certificate_seconds": round(found.certify_seconds, 2), "seconds": round(total, 2),
        "cpu_seconds": round(total_cpu, 2), "score_cpu_seconds": round(built_cpu + found.candidate_cpu, 2),
        "solve_cpu_seconds": round(found.solve_cpu, 2), "certificate_cpu_seconds": round(found.certify_cpu, 2),
        "passes": found.passes, "rows_rescanned": found.rows_rescanned,
        "pricing_rounds": stats.pricing_rounds, "candidate_pairs": stats.candidate_pairs, "added_pairs": stats.added_pairs,
        "matched": found.assignment.matched, "total": found.assignment.total_points,
        "certificate": {"valid": certificate.valid, "primal": certificate.primal, "dual": certificate.dual,
                        "pairs_checked": certificate.pairs_checked},
        "peak_memory_mb": _vmhwm_mb(), "load_before": load_before, "load_after": os.getloadavg(),
    }  # fmt: skip


def run_large(size: str, shapes: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each shape `--repeat` times, each run in a fresh process (BLAS on one thread: the
    tiles are spread over `--workers` threads already)."""
    import subprocess

    n, m = (int(part) for part in size.lower().split("x"))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    entries = []
    for shape in shapes:
        runs = []
        for _ in range(args.repeat):
            done = subprocess.run(
                [sys.executable, "-m", "bench.matching", "--large-child", f"{n}x{m}", "--shapes", shape,
                 "--seed", str(args.seed), "--workers", str(args.workers)],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            last = runs[-1]
            print(f"  {last['cohort']}: {last['seconds']:.1f} s, CPU {last['cpu_seconds']:.1f} s (score "
                  f"{last['score_seconds']:.1f}/{last['score_cpu_seconds']:.1f}, solve {last['solve_seconds']:.1f}/"
                  f"{last['solve_cpu_seconds']:.1f}, certificate {last['certificate_seconds']:.1f}/"
                  f"{last['certificate_cpu_seconds']:.1f}; {last['pricing_rounds']} pricing rounds, {last['passes']} "
                  f"passes, {last['rows_rescanned']:,} rows again), peak {last['peak_memory_mb']:,.0f} MB, "
                  f"certified {last['certificate']['valid']}, total {last['total']:,}, load {last['load_before'][0]:.1f}",
                  flush=True)  # fmt: skip
        timing = ("seconds", "score_seconds", "solve_seconds", "certificate_seconds", "cpu_seconds", "score_cpu_seconds",
                  "solve_cpu_seconds", "certificate_cpu_seconds", "peak_memory_mb")
        entries.append({**runs[-1], **{key: statistics.median(r[key] for r in runs) for key in timing},
                        "runs": [{key: r[key] for key in (*timing, "load_before")} for r in runs],
                        "same_result": len({(r["total"], r["matched"]) for r in runs}) == 1})  # fmt: skip
    return entries


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="2000x500,10000x2500", help="mentees×mentors, comma-separated")
    parser.add_argument("--shapes", default="uniform,popular")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--repeat", type=int, default=3, help="runs of our solver per cohort (the median is reported)")
    parser.add_argument("--scipy-max-cells", type=int, default=5_000_000,
                        help="largest expanded matrix (mentees × slots) given to scipy; denser ones use the dense flow")
    parser.add_argument("--gale-shapley-max-mentees", type=int, default=2000)
    parser.add_argument("--gale-shapley-timeout", type=float, default=300)
    parser.add_argument("--gale-shapley-all", action="store_true")
    parser.add_argument("--no-rules", action="store_true", help="skip programme rules on profiles (bench/matching_rules.py)")
    parser.add_argument("--rules-size", default="10000x2500", help="mentees×mentors of the profile cohort")
    parser.add_argument("--mentor-match", default="", help="sizes for the side-by-side with mentor-match, e.g. 600x200")
    parser.add_argument("--mentor-match-venv", type=Path, default=None, help="its virtual environment (made if missing)")
    parser.add_argument("--cohort", default="", help="the largest cohorts instead, e.g. 100000x25000 (issue #16)")
    parser.add_argument("--workers", type=int, default=2, help="threads walking the tiles (--cohort)")
    parser.add_argument("--large-child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.large_child:
        n, m = (int(part) for part in args.large_child.lower().split("x"))
        print(json.dumps(large_child(n, m, args.shapes, args.seed, args.workers), separators=(",", ":")))
        return
    if args.cohort:
        print(f"largest cohorts {args.cohort}, {args.repeat} runs each, each in a fresh process", flush=True)
        cohorts = run_large(args.cohort, args.shapes.split(","), args)
        large: dict[str, Any] = {"bench": "matching-large", "date": date.today().isoformat(), "machine": f"{multiprocessing.cpu_count()} cores",
                  "cohorts": cohorts, "goal_seconds": 60, "goal_memory_mb": 4096,
                  "goal_met": all(c["seconds"] < 60 and c["peak_memory_mb"] < 4096 and c["certificate"]["valid"]
                                  for c in cohorts)}  # fmt: skip
        print()
        print(json.dumps(large, separators=(",", ":")))
        return

    # Warm up imports and allocators outside the timings.
    solve(*uniform_cohort(200, 50, 0))
    cohorts = []
    for size in args.sizes.split(","):
        n, m = (int(part) for part in size.lower().split("x"))
        for shape in args.shapes.split(","):
            make = uniform_cohort if shape == "uniform" else popular_cohort
            scores, capacities = make(n, m, args.seed)
            cohorts.append(bench_cohort(f"{n}x{m}-{shape}", scores, capacities, args))
    report: dict[str, Any] = {
        "bench": "matching",
        "date": date.today().isoformat(),
        "machine": f"{multiprocessing.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "load_before": os.getloadavg(),
        "cohorts": cohorts,
        "max_gap": max(entry["gap"] for entry in cohorts),
    }
    if not args.no_rules:
        from bench.matching_rules import BASE_REV, bench_rules

        n, m = (int(part) for part in args.rules_size.lower().split("x"))
        report["rules"] = bench_rules(n, m, args.repeat, args.seed, BASE_REV)
    if args.mentor_match:
        from bench.matching_mentor_match import DEFAULT_VENV, side_by_side

        report["mentor_match"] = []
        for size in args.mentor_match.split(","):
            n, m = (int(part) for part in size.lower().split("x"))
            report["mentor_match"].append(side_by_side(n, m, seed=args.seed, repeat=args.repeat, their_repeat=args.repeat,
                                                       timeout=900, venv=args.mentor_match_venv or DEFAULT_VENV))  # fmt: skip
    report["load_after"] = os.getloadavg()
    print()
    print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()
