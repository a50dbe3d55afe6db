"""A cohort launch (issue #16): one matching round of a whole cohort, from `round run` to
every proposal delivered, against Temporal's own ceiling for starting as many workflows.

Two contestants, each on a fresh `temporal server start-dev` with its worker in a separate
process, the same PostgreSQL (embedded unless MENTORFLOW_DATABASE_URL is set), in this order:

- **ceiling**: N trivial workflows (`CohortCeiling`, below) started from this process, 16 at
  a time (the round proposes 16 at a time), each running one activity that only returns
  the time: N / (first start → last activity done).
- **ours**: `mentorflow worker` (the production command) and `mentorflow round run` (the
  CLI, in a process of its own) for a programme of `--mentees` mentees and `--mentors`
  mentors (profiles and directory entries made here, capacities adding up to the mentees,
  so the round matches nearly everyone). The round collects, solves and proposes every
  pair to a new `Relationship` (update-with-start); each proposal emails the mentee and
  the mentor (`match_proposed`) through a real SMTP server on loopback (aiosmtpd,
  `tests/support/peers.py`, no rate limit). Rate: pairs / (`round run` started → the last
  proposal's email arrived). While it runs, this process asks the round's `progress`
  query every `--progress-every` seconds and counts the answers.

Checked afterwards: relationships started (Temporal's count) = pairs, each relationship has
exactly one `MatchProposed` in the event store, every pair's two emails arrived exactly
once, the CLI's result agrees, and the round's and every relationship's history are read
for workflow-task timeouts and failures.

Last stdout line: one JSON object. Progress on stderr. Run: `python -m bench.cohort`
(`--mentees 10000 --mentors 2500`, the issue's size, are the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import subprocess
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import workflow

from bench.stage import (
    ceiling_clock, ceiling_then_ours, command_line, cpu_seconds, mentorflow_command, progress, serve_ceiling_worker,
    worker_command, worker_on_dev_server,
)
from bench.storm import arrivals, in_parallel, mail_counts, read_histories, results, sink_settings, timed_sink

PROGRAMME = "cohort"
COORDINATOR = "coord-1"
TOPICS = [f"topic-{k}" for k in range(12)]
DAYS = ["mon", "tue", "wed", "thu", "fri"]


# -- the ceiling --------------------------------------------------------------------------------


@workflow.defn(name="CohortCeiling", sandboxed=False)
class CohortCeiling:
    @workflow.run
    async def run(self) -> float:
        ran: float = await workflow.execute_activity(ceiling_clock, start_to_close_timeout=timedelta(minutes=1))
        return ran


async def serve_ceiling() -> None:
    await serve_ceiling_worker([CohortCeiling], [ceiling_clock])


async def run_ceiling(args: argparse.Namespace, base_env: dict[str, str], scratch: Path) -> dict[str, Any]:
    directory = scratch / "ceiling"
    directory.mkdir()
    task_queue = "cohort-ceiling"
    n = args.mentees
    command = worker_command("ceiling", "bench.cohort")
    async with worker_on_dev_server(directory, base_env, task_queue, "ceiling worker", command) as stage:
        client, server, worker = stage.client, stage.server, stage.worker
        await asyncio.sleep(1)
        ids = [f"cohort-ceiling-{k}" for k in range(n)]
        progress(f"ceiling: starting {n} workflows, 16 at a time")
        cpu_before, server_before = cpu_seconds(worker.pid), cpu_seconds(server.pid)
        started = time.time()

        async def start(index: int) -> None:
            await client.start_workflow(CohortCeiling.run, id=ids[index], task_queue=task_queue)

        await in_parallel(n, 16, start)
        ran = await results(client, ids)
        worker_cpu, server_cpu = cpu_seconds(worker.pid) - cpu_before, cpu_seconds(server.pid) - server_before
        histories = await read_histories(client, ids)
    seconds = max(ran) - started
    return {
        "workflows": n,
        "seconds": round(seconds, 1),
        "per_s": round(n / seconds, 1),
        "worker_cpu_ms_per_workflow": round(worker_cpu * 1000 / n, 2),
        "server_cpu_ms_per_workflow": round(server_cpu * 1000 / n, 2),
        **histories,
    }


# -- ours -----------------------------------------------------------------------------------------


def profiles(mentees: int, mentors: int, seed: int) -> list[Any]:
    """A cohort that matches: a few of twelve topics each, overlapping weekday hours, and
    mentor capacities that add up to the mentees (1 to 7, evened out)."""
    from pairing.profiles import MenteeProfile, MentorProfile

    rng = random.Random(seed)
    capacities = [mentees // mentors + (1 if j < mentees % mentors else 0) for j in range(mentors)]
    found: list[Any] = []
    for j, capacity in enumerate(capacities):
        found.append(MentorProfile.model_validate({
            "participant_id": f"m-{j}", "capacity": capacity, "languages": ["en"], "seniority": rng.randint(5, 9),
            "strengths": [{"topic": t, "level": rng.randint(2, 5)} for t in rng.sample(TOPICS, 4)],
            "availability": [{"day": d, "start": "09:00", "end": "12:00"} for d in rng.sample(DAYS, 2)],
            "timezone": "Europe/London",
        }))  # fmt: skip
    for i in range(mentees):
        found.append(MenteeProfile.model_validate({
            "participant_id": f"e-{i}", "languages": ["en"], "seniority": rng.randint(1, 5),
            "goals": [{"topic": t, "priority": rng.randint(1, 3)} for t in rng.sample(TOPICS, 2)],
            "availability": [{"day": d, "start": "10:00", "end": "11:30"} for d in rng.sample(DAYS, 3)],
            "timezone": "Europe/London",
        }))  # fmt: skip
    return found


async def prepare(pool: Any, args: argparse.Namespace) -> None:
    from activities.directory import Directory
    from activities.matching import ProfileStore
    from events.people import Participant, Programme
    from events.settings import ProgrammeSettings

    settings = ProgrammeSettings(coordinator_ids=(COORDINATOR,), digest_every_days=None)
    directory = Directory(pool)
    await directory.create_or_update_programme(Programme(programme_id=PROGRAMME, name="Cohort launch", settings=settings))
    ids = [f"e-{i}" for i in range(args.mentees)] + [f"m-{j}" for j in range(args.mentors)]
    await directory.upsert_participants(
        [Participant(participant_id=pid, display_name=f"Person {pid}", email=f"{pid}@example.org") for pid in ids]
    )
    await ProfileStore(pool).save_profiles(PROGRAMME, profiles(args.mentees, args.mentors, args.seed))


async def run_ours(args: argparse.Namespace, base_env: dict[str, str], scratch: Path) -> dict[str, Any]:
    from activities.database import create_pool, migrate
    from activities.matching import round_workflow_id
    from workflows.matching_round import MatchingRound

    directory = scratch / "ours"
    directory.mkdir()
    task_queue = "cohort-ours"
    round_id = "launch-1"
    sink = timed_sink()
    await sink.start()
    pool = await create_pool(base_env["MENTORFLOW_DATABASE_URL"], max_size=4)
    samples: list[tuple[float, str, int]] = []
    query_failures = 0
    try:
        await migrate(pool)
        progress(f"ours: {args.mentees} mentees and {args.mentors} mentors into the directory and profiles")
        await prepare(pool, args)
        async with worker_on_dev_server(
            directory, base_env, task_queue, "ours worker", worker_command("ours", "bench.cohort"), settings=sink_settings(sink)
        ) as ready:
            client, server, worker, env = ready.client, ready.server, ready.worker, ready.env
            await asyncio.sleep(1)
            progress(f"ours: `round run --programme {PROGRAMME} --round {round_id}`")
            cpu_before, server_before = cpu_seconds(worker.pid), cpu_seconds(server.pid)
            started = time.time()
            with open(directory / "round-run.out", "wb") as out, open(directory / "round-run.err", "wb") as err:  # noqa: ASYNC230 (a child process writes them)
                cli = subprocess.Popen(  # noqa: ASYNC220 (started, not waited for)
                    mentorflow_command() + ["round", "run", "--programme", PROGRAMME, "--round", round_id,
                                            "--coordinator", COORDINATOR, "--json"],
                    env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                )  # fmt: skip
            handle = client.get_workflow_handle(round_workflow_id(PROGRAMME, round_id))
            last_report = 0.0
            while cli.poll() is None:
                worker.check_alive()
                try:
                    answer = await asyncio.wait_for(handle.query(MatchingRound.progress), 10)
                    done = answer.proposed + answer.already_proposed + answer.not_proposed
                    samples.append((time.time() - started, answer.stage, done))
                    if time.monotonic() - last_report > 15:
                        total = answer.solution.matched if answer.solution else "?"
                        progress(f"ours: +{time.time() - started:.0f} s: {answer.stage}, {done} of {total} pairs done")
                        last_report = time.monotonic()
                except Exception:  # noqa: BLE001 -- not started yet, or a query that timed out: counted once it has answered
                    query_failures += bool(samples)
                await asyncio.sleep(args.progress_every)
            round_done = time.time() - started
            output = (directory / "round-run.out").read_text()
            if cli.returncode != 0:
                raise RuntimeError(f"round run exited {cli.returncode}: {(directory / 'round-run.err').read_text()[-2000:]}")
            result = json.loads(output.strip().splitlines()[-1])["result"]
            matched = result["matched"]
            progress(f"ours: round done in {round_done:.0f} s ({matched} pairs); waiting for every proposal's emails")
            deadline = time.monotonic() + 300 + matched * 0.05
            while time.monotonic() < deadline:
                arrived = {nid for _, nid in arrivals(sink, "match_proposed")}
                if len(arrived) >= 2 * matched:
                    break
                worker.check_alive()
                await asyncio.sleep(0.5)
            worker_cpu, server_cpu = cpu_seconds(worker.pid) - cpu_before, cpu_seconds(server.pid) - server_before
            await asyncio.sleep(2)  # anything arriving twice arrives now
            started_relationships = (await client.count_workflows("WorkflowType = 'Relationship'")).count
            proposals = await pool.fetch(
                "SELECT stream_id, count(*) AS n FROM events WHERE event_type = 'MatchProposed' GROUP BY stream_id"
            )
            pairs = await pool.fetch(
                "SELECT mentee_id, mentor_id, relationship_id FROM matching_round_pairs WHERE round_id = $1", round_id
            )
            relationship_ids = [
                f"relationship/{PROGRAMME}/{row['relationship_id']}" for row in pairs
            ]
            progress(f"ours: reading {len(relationship_ids) + 1} histories")
            round_history = await read_histories(client, [handle.id])
            histories = await read_histories(client, relationship_ids)
    finally:
        await pool.close()
        await sink.stop()

    proposal_mail = arrivals(sink, "match_proposed")
    recipients = Counter(str(m.message["To"]).split("<")[-1].rstrip(">") for m in sink.inbox.messages
                         if m.message["X-Mentorflow-Template"] == "match_proposed")  # fmt: skip
    pairs_mailed = sum(
        1 for row in pairs if recipients[f"{row['mentee_id']}@example.org"] >= 1 and recipients[f"{row['mentor_id']}@example.org"] >= 1
    )
    last_mail = max((t for t, _ in proposal_mail), default=started) - started
    stages: dict[str, float] = {}
    for at, stage, _ in samples:
        stages.setdefault(stage, round(at, 1))
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(samples)]
    return {
        "mentees": args.mentees,
        "mentors": args.mentors,
        "pairs": matched,
        "cli_result": result,
        "round_seconds": round(round_done, 1),
        "all_delivered_seconds": round(last_mail, 1),
        "per_s": round(matched / last_mail, 1) if last_mail > 0 else None,
        "stage_first_seen_s": stages,
        "progress_answers": len(samples),
        "progress_query_failures_after_the_first_answer": query_failures,
        "progress_longest_gap_s": round(max(gaps), 2) if gaps else None,
        "relationships_started": started_relationships,
        "relationships_with_a_proposal": len(proposals),
        "relationships_proposed_more_than_once": sum(1 for row in proposals if row["n"] > 1),
        "pairs_in_the_round": len(pairs),
        **mail_counts(proposal_mail, 2 * matched),
        "pairs_both_emailed": pairs_mailed,
        "worker_cpu_ms_per_pair": round(worker_cpu * 1000 / max(1, matched), 2),
        "server_cpu_ms_per_pair": round(server_cpu * 1000 / max(1, matched), 2),
        "round_history": round_history,
        **histories,
    }


async def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mentees", type=int, default=10000, help="mentees, and ceiling workflows (10000)")
    parser.add_argument("--mentors", type=int, default=2500, help="mentors (2500)")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--progress-every", type=float, default=1.0, help="seconds between progress queries (1)")
    args, result = await ceiling_then_ours("cohort", parser, argv, run_ceiling, run_ours, ("rate_ratio", "per_s", "per_s"))
    ours = result.get("ours")
    if ours:
        result["nothing_twice_or_lost"] = (
            ours["relationships_started"] == ours["pairs"] == ours["pairs_in_the_round"]
            == ours["relationships_with_a_proposal"] == ours["pairs_both_emailed"]
            and ours["relationships_proposed_more_than_once"] == 0
            and ours["emails_distinct"] == ours["emails_expected"]
            and ours["emails_duplicated"] == 0
        )
        result["progress_visible"] = (
            ours["progress_answers"] > 0 and ours["progress_query_failures_after_the_first_answer"] == 0
        )
        result["goal_met"] = (
            result["nothing_twice_or_lost"] and result["progress_visible"] and result.get("rate_ratio", 0) >= 0.7
            and ours["workflow_task_timeouts"] == 0
        )  # fmt: skip
    result.update(mentees=args.mentees, mentors=args.mentors)
    return result


if __name__ == "__main__":
    command_line(main, serve_ceiling)
