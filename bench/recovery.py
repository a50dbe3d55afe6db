"""Recovery: a cold worker after a restart, N relationships with a year of history each.

For each contestant, on a fresh `temporal server start-dev` (its own database file) with the
worker in a separate process:

- **ours**: `mentorflow worker` and N `Relationship` workflows, each driven (updates, one
  after the other: matching, agreement, then `record_meeting` again and again) until its
  history holds at least `--events` events (600: about a year of a real relationship,
  `bench.history_cost`);
- **ceiling**: `RecoveryCeiling` (below), a trivial workflow that grows a history of the same
  length by itself (steps of six local activities and one activity, all doing nothing: twelve events each) and then
  answers any update with a count, served by a worker process of the same kind
  (`python -m bench.recovery --serve-ceiling`: same SDK, settings, converter and keys).

Then, for every `--slots` value and `--rounds` times: the worker is stopped (SIGTERM, or
SIGKILL with `--kill`) and a cold one started with MENTORFLOW_WORKFLOW_TASK_SLOTS set to the
value (the ceiling's worker applies it too); once it polls, one update goes to every
workflow at once (ours: `share_resource`; the ceiling: any update). **Time to answer**: from
sending the update until it returns (p50, p99, max). **Workflow-task timeouts**: read from
every history afterwards (new in the round, by kind). Worker CPU over the round.

Last stdout line: one JSON object. Progress on stderr. Run: `python -m bench.recovery`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import RawValue
from temporalio.service import RPCError, RPCStatusCode

from bench.load import Command, Ours, _meeting_builder, create_programme, percentile, plan
from bench.stage import (
    command_line, cpu_seconds, memory_mb, progress, scratch_database, serve_ceiling_worker, spawn,
    wait_for_poller, worker_command, worker_on_dev_server,
)
from tests.support.runs import every_run

# What the server answers when it gave up waiting for an update, or refuses it for now
# ("Workflow Task in failed state": until a task of the workflow completes): sent again.
RETRIED = {
    RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED, RPCStatusCode.UNAVAILABLE, RPCStatusCode.NOT_FOUND,
    RPCStatusCode.ABORTED, RPCStatusCode.FAILED_PRECONDITION,
}  # fmt: skip

# Each step of the ceiling's growth: local activities that do nothing, one after the other
# (a marker each), then an activity that does nothing (scheduled, started, completed), which
# ends the workflow task (three events): twelve events per workflow task, against about nine
# for ours. The markers cost the server next to nothing: on this busy machine timers (155
# events in 4 minutes) and two activities per step (131 events in 7 minutes) were too slow.
LOCAL_PER_STEP = 6
EVENTS_PER_STEP = 3 + 3 + LOCAL_PER_STEP


@activity.defn(name="recovery_nothing")
async def nothing() -> None:
    return None


@workflow.defn(name="RecoveryCeiling", sandboxed=False)
class RecoveryCeiling:
    """Grows its history in `grow` steps of activities that do nothing, then answers any
    update with the number received; never ends by itself."""

    def __init__(self) -> None:
        self.count = 0

    @workflow.run
    async def run(self, grow: int) -> None:
        for _ in range(grow):
            for _ in range(LOCAL_PER_STEP):
                await workflow.execute_local_activity("recovery_nothing", start_to_close_timeout=timedelta(seconds=30))
            await workflow.execute_activity("recovery_nothing", start_to_close_timeout=timedelta(seconds=30))
        await workflow.wait_condition(lambda: False)

    @workflow.update(dynamic=True)
    def any_update(self, _name: str, _args: Sequence[RawValue]) -> int:
        self.count += 1
        return self.count


async def serve_ceiling() -> None:
    """The ceiling's worker process, with `mentorflow worker`'s workflow-task slots too."""
    from mentorflow.config import Settings

    slots = Settings.from_env().workflow_task_slots
    await serve_ceiling_worker([RecoveryCeiling], [nothing], max_concurrent_workflow_tasks=slots)


# -- building the histories ---------------------------------------------------------------------


MEETINGS = 24


async def update(handle: Any, name: str, payload: dict[str, Any], timeout: float = 600) -> int:
    """Send update `name` until answered, again with the same update id whenever the server
    gave up waiting for it (its RPC deadline, or the update aborted with a workflow task
    that timed out) or refused it for now (a workflow task in failed state), half a second
    later, as a caller would; the number of calls sent again."""
    update_id = f"recovery-{uuid.uuid4().hex}"
    started = time.perf_counter()
    again = 0
    while True:
        left = timeout - (time.perf_counter() - started)
        try:
            await asyncio.wait_for(handle.execute_update(name, payload, id=update_id), max(1.0, left))
            return again
        except (WorkflowUpdateRPCTimeoutOrCancelledError, RPCError) as error:
            if left <= 0 or (isinstance(error, RPCError) and error.status not in RETRIED):
                raise
            again += 1
            await asyncio.sleep(0.5)


def resource(actor: str, step: int) -> Command:
    return Command("update", "share_resource", {"command_id": f"c-{uuid.uuid4().hex[:16]}", "actor_id": actor, "title": f"Reading {step}"})


class RunsHistory:
    """The history events of a workflow over all its runs: the current run's, plus each
    run before it that continued as new (asked often enough that at most one run ended
    between two calls: a run holds at least 100 events)."""

    def __init__(self, client: Client, workflow_id: str) -> None:
        self._client, self._workflow_id = client, workflow_id
        self._earlier = 0
        self._run: tuple[str, int] | None = None  # the current run's id and last length seen

    async def length(self) -> int:
        described = await self._client.get_workflow_handle(self._workflow_id).describe()
        if self._run is not None and self._run[0] != described.run_id:
            earlier = self._client.get_workflow_handle(self._workflow_id, run_id=self._run[0])
            self._earlier += (await earlier.describe()).history_length
        self._run = (described.run_id, described.history_length)
        return self._earlier + described.history_length


async def build_ours(
    client: Client, task_queue: str, relationships: int, events: int, concurrency: int, limit: int | None = None,
    spread: int = 0,
) -> list[str]:
    contestant = Ours(task_queue)
    queue = list(range(relationships))
    ids: list[str] = []
    done = 0

    async def one(index: int) -> None:
        nonlocal done
        target = events + (random.Random(index).randrange(spread) if spread else 0)
        relationship_id, mentee, builders = plan(index, 0)
        workflow_id = contestant.workflow_id(relationship_id)
        start = contestant.start_input(relationship_id, mentee)
        if limit is not None:
            start = start.model_copy(update={"history_event_limit": limit})
        handle = await client.start_workflow("Relationship", start, id=workflow_id, task_queue=task_queue)
        for build in builders:
            command = build()
            try:
                await update(handle, command.name, command.payload)
            except WorkflowUpdateFailedError as error:
                raise RuntimeError(f"{command.name}: {error.cause}") from error
        # A year: the schedule's meetings (the default biweekly one has 26), then resources
        # shared until the history is long enough.
        step, history = 0, RunsHistory(client, workflow_id)
        while True:
            if step % 4 == 0 and await history.length() >= target:
                break
            actor = mentee if step % 2 == 0 else f"mentor-{index}"
            if step < MEETINGS:
                command = _meeting_builder("update", actor, step + 1)()
            else:
                command = resource(actor, step)
            await update(handle, command.name, command.payload)
            step += 1
        ids.append(workflow_id)
        done += 1
        if done % max(1, relationships // 10) == 0:
            progress(f"ours: {done}/{relationships} histories built")

    async def driver() -> None:
        while queue:
            await one(queue.pop())

    await asyncio.gather(*(driver() for _ in range(concurrency)))
    return ids


async def build_ceiling(client: Client, task_queue: str, relationships: int, events: int) -> list[str]:
    ids = [f"ceiling/recovery-{index}-{uuid.uuid4().hex[:8]}" for index in range(relationships)]
    grow = max(1, -(-events // EVENTS_PER_STEP))
    for start in range(0, relationships, 50):
        await asyncio.gather(
            *(client.start_workflow("RecoveryCeiling", grow, id=wid, task_queue=task_queue) for wid in ids[start : start + 50])
        )
    pending = list(ids)
    limit = asyncio.Semaphore(16)

    async def grown(workflow_id: str) -> bool:
        async with limit:  # the server's own count: no query, which would wait for the busy worker
            return (await client.get_workflow_handle(workflow_id).describe()).history_length >= events

    while pending:
        await asyncio.sleep(5)
        done = await asyncio.gather(*(grown(w) for w in pending))
        pending = [w for w, finished in zip(pending, done, strict=True) if not finished]
        progress(f"ceiling: {len(ids) - len(pending)}/{len(ids)} histories grown")
    return ids


# -- a restart ------------------------------------------------------------------------------------


async def task_timeouts(client: Client, workflow_ids: list[str], concurrency: int = 16) -> dict[str, Any]:
    """Workflow-task timeouts and failures over every history (each run of a workflow that
    continued as new), by kind; the history lengths over all runs, and the current run's
    (what a cold worker replays)."""
    counts: dict[str, int] = {}
    totals: list[int] = []
    current: list[int] = []
    queue = list(workflow_ids)

    async def reader() -> None:
        while queue:
            runs = await every_run(client, queue.pop())
            current.append(len(runs[0][1].events))
            totals.append(sum(len(history.events) for _, history in runs))
            for event in (event for _, history in runs for event in history.events):
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                    kind = event.workflow_task_timed_out_event_attributes.timeout_type
                    name = "timed_out_" + TimeoutType.Name(kind).removeprefix("TIMEOUT_TYPE_").lower()
                elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                    name = "failed"
                else:
                    continue
                counts[name] = counts.get(name, 0) + 1

    await asyncio.gather(*(reader() for _ in range(concurrency)))
    return {
        "by_kind": counts,
        "history_events_mean": round(sum(totals) / max(1, len(totals)), 1),
        "history_events_max": max(totals, default=0),
        "current_run_events_mean": round(sum(current) / max(1, len(current)), 1),
        "current_run_events_max": max(current, default=0),
    }


async def answer_all(
    client: Client, name: str, workflow_ids: list[str], timeout: float
) -> tuple[list[float], list[str], int]:
    """One update to every workflow at once; each one's time to answer (s), the errors, and
    how many calls were sent again: a call that the server gave up waiting on (its RPC
    deadline, or the update aborted with a workflow task that timed out) is sent again with
    the same update id, as a caller would, and the time to answer runs on."""
    times: list[float] = []
    errors: list[str] = []
    again = 0

    async def one(workflow_id: str, index: int) -> None:
        handle = client.get_workflow_handle(workflow_id)
        if name == "ours":
            actor = f"mentee-{workflow_id.rsplit('/', 1)[1].split('-')[1]}"
            command = resource(actor, index)
            name_of_update, payload = command.name, command.payload
        else:
            name_of_update, payload = "ping", {"index": index}
        nonlocal again
        started = time.perf_counter()
        try:
            again += await update(handle, name_of_update, payload, timeout)
            times.append(time.perf_counter() - started)
        except Exception as error:  # noqa: BLE001 - counted
            errors.append(f"{type(error).__name__}: {error}"[:200])

    await asyncio.gather(*(one(w, i) for i, w in enumerate(workflow_ids)))
    return times, errors, again


async def run_contestant(
    name: str, label: str, args: argparse.Namespace, base_env: dict[str, str], scratch: Path, limit: int | None = None
) -> dict[str, Any]:
    """`name` is "ceiling" or "ours", `label` its key in the result; ours' relationships
    start with `limit` as their history limit (None: the product's default)."""
    directory = scratch / label
    directory.mkdir()
    task_queue = f"recovery-{label}"
    command = worker_command(name, "bench.recovery")
    result: dict[str, Any] = {"rounds": []}
    async with worker_on_dev_server(
        directory, base_env, task_queue, f"{name} worker", command, log="worker-build.log", its_own=True
    ) as stage:
        client, env = stage.client, stage.env
        progress(f"{name}: building {args.relationships} histories of at least {args.events} events")
        started = time.perf_counter()
        if name == "ours":
            ids = await build_ours(client, task_queue, args.relationships, args.events, args.concurrency, limit, args.spread)
        else:
            ids = await build_ceiling(client, task_queue, args.relationships, args.events)
        result["build_seconds"] = round(time.perf_counter() - started, 1)
        before = await task_timeouts(client, ids)
        result["history_events_mean"] = before["history_events_mean"]
        result["current_run_events_mean"] = before["current_run_events_mean"]
        result["timeouts_while_building"] = before["by_kind"]
        seen = dict(before["by_kind"])
        for number in range(args.rounds):
            for slots in args.slots:
                if args.kill:
                    stage.worker.process.kill()
                    stage.worker.process.wait()
                else:
                    stage.worker.stop()
                env["MENTORFLOW_WORKFLOW_TASK_SLOTS"] = str(slots)
                worker = stage.worker = spawn(f"{name} worker", command, env, directory / f"worker-{number}-{slots}.log")
                await wait_for_poller(client, task_queue, worker, its_own=True)
                cpu_before = cpu_seconds(worker.pid)
                load = round(os.getloadavg()[0], 2)
                progress(f"{name}: round {number + 1}, {slots} slots: a cold worker; one update to each of {len(ids)} (load {load})")
                started = time.perf_counter()
                times, errors, again = await answer_all(client, name, ids, args.answer_timeout)
                wall = time.perf_counter() - started
                worker_cpu = cpu_seconds(worker.pid) - cpu_before
                rss, _ = memory_mb(worker.pid)
                after = await task_timeouts(client, ids)
                new = {k: v - seen.get(k, 0) for k, v in after["by_kind"].items() if v - seen.get(k, 0)}
                seen = dict(after["by_kind"])
                figures = {
                    "round": number + 1,
                    "workflow_task_slots": slots,
                    "load_average_1m_at_start": load,
                    "answered": len(times),
                    "p50_s": percentile(times, 0.5),
                    "p99_s": percentile(times, 0.99),
                    "max_s": round(max(times), 2) if times else None,
                    "all_answered_s": round(wall, 1),
                    "workflow_task_timeouts": sum(v for k, v in new.items() if k.startswith("timed_out")),
                    "workflow_task_problems_by_kind": new,
                    "errors": len(errors),
                    "first_errors": errors[:3],
                    "calls_sent_again": again,
                    "worker_cpu_seconds": round(worker_cpu, 1),
                    "worker_rss_mb": round(rss, 1),
                    "history_events_mean": after["history_events_mean"],
                    "current_run_events_mean": after["current_run_events_mean"],
                }
                result["rounds"].append(figures)
                progress(
                    f"{name}: {slots} slots: p50 {figures['p50_s']} s, p99 {figures['p99_s']} s, max {figures['max_s']} s, "
                    f"timeouts {figures['workflow_task_timeouts']} {new}, errors {len(errors)}, worker CPU {worker_cpu:.1f} s"
                )
    return result


def summary(result: dict[str, Any], slots: list[int]) -> dict[str, Any]:
    """Per slots value: the median p99 and the timeouts over the rounds."""
    import statistics

    by_slots: dict[str, Any] = {}
    for value in slots:
        rounds = [r for r in result["rounds"] if r["workflow_task_slots"] == value and r["p99_s"] is not None]
        if rounds:
            by_slots[str(value)] = {
                "p99_s_median": round(statistics.median(r["p99_s"] for r in rounds), 2),
                "p50_s_median": round(statistics.median(r["p50_s"] for r in rounds), 2),
                "workflow_task_timeouts": [r["workflow_task_timeouts"] for r in rounds],
                "errors": [r["errors"] for r in rounds],
            }
    return by_slots


async def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--relationships", type=int, default=200, help="N: relationships, and ceiling workflows (200)")
    parser.add_argument("--events", type=int, default=600, help="history events each before the restarts (600)")
    parser.add_argument("--concurrency", type=int, default=100, help="drivers building ours' histories at once (100)")
    parser.add_argument("--slots", default="100", help="MENTORFLOW_WORKFLOW_TASK_SLOTS of the cold workers, comma-separated (100)")
    parser.add_argument("--rounds", type=int, default=1, help="restarts per slots value (1)")
    parser.add_argument("--kill", action="store_true", help="stop the worker with SIGKILL instead of SIGTERM")
    parser.add_argument("--answer-timeout", type=float, default=600, help="longest wait for one answer, s (600)")
    parser.add_argument("--only", choices=("ours", "ceiling"), help="run one contestant")
    parser.add_argument(
        "--spread", type=int, default=0,
        help="ours: each relationship grows to --events plus a random 0..SPREAD-1 more, so that "
        "runs that continue as new are caught at different points of their run (0)",
    )  # fmt: skip
    parser.add_argument(
        "--history-event-limit", default="",
        help="ours once per value, comma-separated: the relationships' history_event_limit (default: the product's)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.slots = [int(value) for value in args.slots.split(",")]
    limits: list[int | None] = [int(value) for value in args.history_event_limit.split(",") if value] or [None]

    result: dict[str, Any] = {}
    async with scratch_database("recovery") as (scratch, base_env):
        await create_programme(base_env["MENTORFLOW_DATABASE_URL"])
        contestants = [("ceiling", None)] + [("ours", limit) for limit in limits]
        for name, limit in contestants:
            if args.only and name != args.only:
                continue
            label = name if limit is None else f"{name}_limit_{limit}"
            progress(f"{label}: a fresh dev server and worker")
            result[label] = await run_contestant(name, label, args, base_env, scratch, limit)
            result[label]["by_slots"] = summary(result[label], args.slots)
    goal = {}
    for label in [key for key in result if key.startswith("ours")]:
        for value, figures in result[label]["by_slots"].items():
            met = figures["p99_s_median"] <= 10 and not any(figures["workflow_task_timeouts"]) and not any(figures["errors"])
            goal[value if label == "ours" else f"{label}:{value}"] = met
    result.update(
        relationships=args.relationships,
        events=args.events,
        slots=args.slots,
        rounds=args.rounds,
        stop="SIGKILL" if args.kill else "SIGTERM",
        goal_met_by_slots=goal,
    )
    return result


if __name__ == "__main__":
    command_line(main, serve_ceiling)
