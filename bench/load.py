"""Load: N relationships at once on the dev server, against Temporal's own ceiling.

For each contestant, on a fresh `temporal server start-dev` (its own database file)
with the worker in a separate process:

- **ours**: `mentorflow worker` (the production command, with the encrypting converter and
  whatever else it runs) and N `Relationship` workflows, each driven through matching,
  agreement and `--meetings` meetings by the same sequence of commands, alternately
  updates and signals: propose_match (update), accept_match by the mentee (signal), by the
  mentor (update), propose_agreement (signal), sign_agreement by the mentee (update), by the
  mentor (signal), then record_meeting (update, signal, …);
- **ceiling**: a trivial workflow (`LoadCeiling`, bench/load_ceilings.py) that only counts
  what it receives, served by a worker process of the same kind (same SDK, same converter
  and keys), driven with exactly the same messages (names, payloads, signal/update order)
  at the same concurrency: what this machine's Temporal can do with no work in the
  workflow. `--with-upserting-ceiling` and `--with-storing-ceiling` add the ceilings that
  also upsert a search attribute, and also store each message before answering (that
  module says what each does).

`--concurrency` drivers each take a relationship, start it and send its commands one after
the other, then take the next one. Command-to-state latency: for an update, from the call
until it returns (ours returns once the command's events are in the event store); for a
signal, from sending it until a `state` query (ceiling: `count`) shows it applied, polled
after `--poll-ms`, then at doubling intervals of at most `--poll-max-ms`. Throughput: commands over the wall time from the first command to the
last. Worker CPU seconds and RSS are read from /proc for the worker process: CPU over the
whole run (starts and commands), RSS at the end with all N workflows open (and before the
first start, idle). Afterwards every workflow's history is read for failed (and timed-out)
workflow tasks, and for ours the event store must hold an event for every command sent.

Last stdout line: one JSON object. Progress on stderr. Run: `python -m bench.load`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import Client

from bench.load_ceilings import serve_ceiling
from bench.stage import (
    command_line, cpu_seconds, memory_mb, progress, scratch_database, worker_command, worker_on_dev_server,
)

# The programme every bench relationship belongs to: created in the database before the
# drive (a relationship takes its rules from its programme and refuses to start without one).
PROGRAMME = "load"
# The agreement every bench relationship signs (bench/api.py and bench/history_cost.py too).
AGREEMENT = {
    "objective": "Become confident leading technical design",
    "goals": [{"title": "Lead two design reviews"}, {"title": "Meet three staff engineers"}],
    "meeting_frequency": "biweekly",
    "meeting_minutes": 60,
    "term_months": 12,
}


# -- what the database costs --------------------------------------------------------------------


class PostgresCpu:
    """CPU seconds of a local PostgreSQL: the postmaster, its exited children and its live
    backends (None when the database is not on this machine or not ours to read)."""

    def __init__(self, postmaster_pid: int | None) -> None:
        self._postmaster_pid = postmaster_pid
        self._start = self._snapshot()

    @staticmethod
    async def of(database_url: str) -> PostgresCpu:
        import asyncpg
        import psutil

        connection = await asyncpg.connect(database_url)
        try:
            backend = await connection.fetchval("SELECT pg_backend_pid()")
        finally:
            await connection.close()
        try:
            parent = psutil.Process(backend).parent()
        except psutil.Error:
            parent = None
        return PostgresCpu(parent.pid if parent is not None else None)

    def _snapshot(self) -> dict[int, float] | None:
        import psutil

        if self._postmaster_pid is None:
            return None
        try:
            postmaster = psutil.Process(self._postmaster_pid)
            times = postmaster.cpu_times()
            snapshot = {0: times.user + times.system + times.children_user + times.children_system}
            for child in postmaster.children():
                try:
                    child_times = child.cpu_times()
                except psutil.Error:
                    continue
                snapshot[child.pid] = child_times.user + child_times.system
        except psutil.Error:
            return None
        return snapshot

    def seconds(self) -> float | None:
        end = self._snapshot()
        if end is None or self._start is None:
            return None
        start = self._start
        return sum(value - start.get(pid, 0.0) for pid, value in end.items() if value >= start.get(pid, 0.0))


# -- the workload ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    kind: str  # "update" or "signal"
    name: str
    payload: dict[str, Any]

    @property
    def command_id(self) -> str:
        return str(self.payload["command_id"])


def to_active(
    coordinator: str, mentee: str, mentor: str, terms: dict[str, Any] = AGREEMENT
) -> list[tuple[str, str, dict[str, Any]]]:
    """The commands that take a new relationship to the active phase, as (message name,
    actor, fields): `coordinator` proposes `mentor`, both accept, the mentee proposes
    `terms`, both sign (bench/api.py and bench/storm.py send them too)."""
    return [
        ("propose_match", coordinator, {"mentor_id": mentor}),
        ("accept_match", mentee, {}),
        ("accept_match", mentor, {}),
        ("propose_agreement", mentee, {"terms": terms}),
        ("sign_agreement", mentee, {"agreement_version": 1}),
        ("sign_agreement", mentor, {"agreement_version": 1}),
    ]


def plan(index: int, meetings: int) -> tuple[str, str, list[Callable[[], Command]]]:
    """A relationship's id, its mentee and its commands (each built when it is sent: a
    meeting is held `now`), alternately updates and signals."""
    relationship_id = f"load-{index}-{uuid.uuid4().hex[:8]}"
    mentee, mentor = f"mentee-{index}", f"mentor-{index}"
    steps = to_active("coord-1", mentee, mentor)
    builders = [
        _builder("update" if position % 2 == 0 else "signal", name, actor, fields)
        for position, (name, actor, fields) in enumerate(steps)
    ]
    for meeting in range(meetings):
        kind = "update" if (len(steps) + meeting) % 2 == 0 else "signal"
        builders.append(_meeting_builder(kind, mentee if meeting % 2 == 0 else mentor, meeting + 1))
    return relationship_id, mentee, builders


def _builder(kind: str, name: str, actor: str, fields: dict[str, Any]) -> Callable[[], Command]:
    return lambda: Command(kind, name, {"command_id": f"c-{uuid.uuid4().hex[:16]}", "actor_id": actor, **fields})


def _meeting_builder(kind: str, actor: str, number: int) -> Callable[[], Command]:
    """Meeting `number` of the schedule, held now: without its number a meeting held now
    would be taken for the first one again, and refused as already recorded."""

    def build() -> Command:
        held_at = datetime.now(timezone.utc).isoformat()
        payload = {
            "command_id": f"c-{uuid.uuid4().hex[:16]}", "actor_id": actor, "held_at": held_at,
            "duration_minutes": 45, "meeting_number": number,
        }  # fmt: skip
        return Command(kind, "record_meeting", payload)

    return build


@dataclass
class Tally:
    update_ms: list[float] = field(default_factory=list)
    signal_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    command_ids: dict[str, list[str]] = field(default_factory=dict)  # workflow id -> command ids
    first_command: float | None = None
    last_command: float = 0.0

    @property
    def commands(self) -> int:
        return len(self.update_ms) + len(self.signal_ms)


class Contestant:
    """How one contestant starts its workflows and tells that a signal was applied."""

    name: str
    workflow_type: str

    def __init__(self, task_queue: str) -> None:
        self.task_queue = task_queue

    def start_input(self, relationship_id: str, mentee: str) -> Any:
        from events.settings import ProgrammeSettings
        from workflows.relationship import RelationshipInput

        return RelationshipInput(
            relationship_id=relationship_id,
            programme_id=PROGRAMME,
            mentee_id=mentee,
            settings=ProgrammeSettings(coordinator_ids=("coord-1",)),
        )

    def workflow_id(self, relationship_id: str) -> str:
        return f"{self.name}/{relationship_id}"

    async def applied(self, handle: Any, command: Command, sent_so_far: int) -> bool:
        raise NotImplementedError


class Ours(Contestant):
    name, workflow_type = "ours", "Relationship"

    def workflow_id(self, relationship_id: str) -> str:
        # A relationship refuses any other workflow id (workflows/patches.py, CHECK_WORKFLOW_ID).
        from events.relationship_io import relationship_workflow_id

        return relationship_workflow_id(PROGRAMME, relationship_id)

    async def applied(self, handle: Any, command: Command, sent_so_far: int) -> bool:
        from events.state import RelationshipState

        state = await handle.query("state", result_type=RelationshipState)
        if state is None or command.command_id not in state.processed_command_ids:
            return False
        if any(r.command_id == command.command_id for r in state.rejected_commands):
            raise RuntimeError(f"{command.name} rejected: {state.rejected_commands[-1].reason}")
        return True


class Ceiling(Contestant):
    name, workflow_type = "ceiling", "LoadCeiling"

    async def applied(self, handle: Any, command: Command, sent_so_far: int) -> bool:
        count: int = await handle.query("count", result_type=int)
        return count >= sent_so_far


class UpsertingCeiling(Ceiling):
    name, workflow_type = "ceiling_upserting", "LoadCeilingUpserting"


class StoringCeiling(Ceiling):
    name, workflow_type = "ceiling_storing", "LoadCeilingStoring"


async def drive(
    client: Client,
    contestant: Contestant,
    relationships: int,
    meetings: int,
    concurrency: int,
    poll_seconds: float,
    poll_max_seconds: float,
) -> Tally:
    tally = Tally()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(relationships):
        queue.put_nowait(index)
    done = 0

    async def one(index: int) -> None:
        nonlocal done
        relationship_id, mentee, builders = plan(index, meetings)
        workflow_id = contestant.workflow_id(relationship_id)
        handle = await client.start_workflow(
            contestant.workflow_type,
            contestant.start_input(relationship_id, mentee),
            id=workflow_id,
            task_queue=contestant.task_queue,
        )
        sent: list[str] = tally.command_ids.setdefault(workflow_id, [])
        for build in builders:
            command = build()
            started = time.perf_counter()
            tally.first_command = started if tally.first_command is None else tally.first_command
            if command.kind == "update":
                await handle.execute_update(command.name, command.payload)
                sent.append(command.command_id)
                tally.update_ms.append((time.perf_counter() - started) * 1000)
            else:
                await handle.signal(command.name, command.payload)
                sent.append(command.command_id)
                # Polling backs off (5, 10, 20 … ms, at most --poll-max-ms apart) so that
                # the queries of waiting drivers do not become the load themselves.
                wait = poll_seconds
                while not await contestant.applied(handle, command, len(sent)):
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, max(poll_seconds, poll_max_seconds))
                tally.signal_ms.append((time.perf_counter() - started) * 1000)
            tally.last_command = time.perf_counter()
        done += 1
        if done % max(1, relationships // 10) == 0:
            progress(f"{contestant.name}: {done}/{relationships} relationships driven, {tally.commands} commands")

    async def driver() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            try:
                await one(index)
            except Exception as error:  # counted and reported: a load test must not stop at one
                tally.errors.append(f"{type(error).__name__}: {error}"[:300])

    await asyncio.gather(*(driver() for _ in range(concurrency)))
    return tally


async def failed_tasks(client: Client, workflow_ids: list[str], concurrency: int = 16) -> dict[str, Any]:
    """Failed and timed-out workflow tasks, and every history's events counted by type."""
    counts: dict[str, Any] = {"failed_workflow_tasks": 0, "timed_out_workflow_tasks": 0, "workflows_with_failed_tasks": 0}
    by_type: dict[str, int] = {}
    queue = list(workflow_ids)

    async def reader() -> None:
        while queue:
            history = await client.get_workflow_handle(queue.pop()).fetch_history()
            failed = sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
            timed_out = sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT)
            counts["failed_workflow_tasks"] += failed
            counts["timed_out_workflow_tasks"] += timed_out
            counts["workflows_with_failed_tasks"] += failed > 0
            for event in history.events:
                name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_").lower()
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                    kind = event.workflow_task_timed_out_event_attributes.timeout_type
                    name += "_" + TimeoutType.Name(kind).removeprefix("TIMEOUT_TYPE_").lower()
                by_type[name] = by_type.get(name, 0) + 1

    await asyncio.gather(*(reader() for _ in range(concurrency)))
    counts["history_events"] = sum(by_type.values())
    counts["history_events_by_type"] = dict(sorted(by_type.items(), key=lambda item: -item[1]))
    return counts


async def lost_commands(database_url: str, tally: Tally) -> dict[str, int]:
    """Commands sent whose event is not in the event store, or is only a rejection."""
    import asyncpg

    stream_of = {command_id: wid.rsplit("/", 1)[1] for wid, ids in tally.command_ids.items() for command_id in ids}
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT command_id, bool_or(event_type <> 'CommandRejected') AS applied FROM events "
            "WHERE stream_id = ANY($1::text[]) AND command_id = ANY($2::text[]) GROUP BY command_id",
            sorted(set(stream_of.values())),
            sorted(stream_of),
        )
    finally:
        await connection.close()
    found = {row["command_id"]: row["applied"] for row in rows}
    return {
        "commands_without_event": sum(1 for c in stream_of if c not in found),
        "commands_rejected": sum(1 for c in stream_of if c in found and not found[c]),
    }


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1)


# -- one contestant on its own server --------------------------------------------------------------


async def run_contestant(
    contestant_class: type[Contestant],
    args: argparse.Namespace,
    base_env: dict[str, str],
    scratch: Path,
    label: str | None = None,
) -> dict[str, Any]:
    directory = scratch / (label or contestant_class.name)
    directory.mkdir()
    task_queue = f"load-{contestant_class.name}"
    contestant = contestant_class(task_queue)
    command = worker_command(contestant.name, "bench.load")
    async with worker_on_dev_server(directory, base_env, task_queue, f"{contestant.name} worker", command) as stage:
        client, server, worker = stage.client, stage.server, stage.worker
        await asyncio.sleep(1)  # let start-up work (migrations, followers) settle
        idle_rss, _ = memory_mb(worker.pid)
        cpu_before, server_cpu_before = cpu_seconds(worker.pid), cpu_seconds(server.pid)
        database_cpu = await PostgresCpu.of(base_env["MENTORFLOW_DATABASE_URL"])
        driver_cpu_before = time.process_time()
        progress(f"{contestant.name}: worker ready (RSS {idle_rss:.0f} MiB); driving {args.relationships} relationships")
        started = time.perf_counter()
        polling = (args.poll_ms / 1000, args.poll_max_ms / 1000)
        tally = await drive(client, contestant, args.relationships, args.meetings, args.concurrency, *polling)
        wall = time.perf_counter() - started
        worker.check_alive()
        await asyncio.sleep(1)  # notifications and appends still in flight
        worker_cpu = cpu_seconds(worker.pid) - cpu_before
        server_cpu = cpu_seconds(server.pid) - server_cpu_before
        driver_cpu = time.process_time() - driver_cpu_before
        postgres_cpu = database_cpu.seconds()
        rss, peak_rss = memory_mb(worker.pid)
        open_workflows = sum(1 for ids in tally.command_ids.values() if ids)
        progress(f"{contestant.name}: {tally.commands} commands in {wall:.1f} s; reading {len(tally.command_ids)} histories")
        tasks = await failed_tasks(client, list(tally.command_ids))
        lost = (
            await lost_commands(base_env["MENTORFLOW_DATABASE_URL"], tally)
            if contestant.name == "ours"
            else await ceiling_lost(client, tally)
        )
    command_seconds = (tally.last_command - tally.first_command) if tally.first_command else 0.0
    everything = tally.update_ms + tally.signal_ms
    per_thousand = 1000 / max(1, args.relationships)
    return {
        "relationships": args.relationships,
        "open_workflows": open_workflows,
        "commands": tally.commands,
        "updates": len(tally.update_ms),
        "signals": len(tally.signal_ms),
        "commands_per_s": round(tally.commands / command_seconds, 1) if command_seconds else None,
        "wall_seconds": round(wall, 1),
        "latency_ms": {
            "p50": percentile(everything, 0.5),
            "p99": percentile(everything, 0.99),
            "update_p50": percentile(tally.update_ms, 0.5),
            "update_p99": percentile(tally.update_ms, 0.99),
            "signal_p50": percentile(tally.signal_ms, 0.5),
            "signal_p99": percentile(tally.signal_ms, 0.99),
            "mean": round(statistics.fmean(everything), 1) if everything else None,
        },
        "worker_cpu_seconds": round(worker_cpu, 1),
        "worker_cpu_seconds_per_1000": round(worker_cpu * per_thousand, 1),
        "worker_cpu_ms_per_command": round(worker_cpu * 1000 / max(1, tally.commands), 2),
        "server_cpu_ms_per_command": round(server_cpu * 1000 / max(1, tally.commands), 2),
        "worker_rss_mb": round(rss, 1),
        "worker_rss_mb_per_1000_open": round(rss * 1000 / max(1, open_workflows), 1),
        "worker_rss_idle_mb": round(idle_rss, 1),
        "worker_rss_growth_mb_per_1000_open": round((rss - idle_rss) * 1000 / max(1, open_workflows), 1),
        "worker_peak_rss_mb": round(peak_rss, 1),
        "server_cpu_seconds": round(server_cpu, 1),
        # The driver (this process: the client's encoding and decoding, the polls) and the
        # database (None when MENTORFLOW_DATABASE_URL is not on this machine) share the CPUs.
        "driver_cpu_ms_per_command": round(driver_cpu * 1000 / max(1, tally.commands), 2),
        "postgres_cpu_ms_per_command": (
            round(postgres_cpu * 1000 / max(1, tally.commands), 2) if postgres_cpu is not None else None
        ),
        **tasks,
        "history_events_per_command": round(tasks["history_events"] / max(1, tally.commands), 2),
        "workflow_tasks_per_command": round(
            tasks["history_events_by_type"].get("workflow_task_completed", 0) / max(1, tally.commands), 2
        ),
        **lost,
        "errors": len(tally.errors),
        "first_errors": tally.errors[:5],
    }


async def ceiling_lost(client: Client, tally: Tally) -> dict[str, int]:
    """Signals and updates the counting workflow did not count."""
    missing = 0
    for workflow_id, ids in tally.command_ids.items():
        count: int = await client.get_workflow_handle(workflow_id).query("count", result_type=int)
        missing += max(0, len(ids) - count)
    return {"commands_without_event": missing, "commands_rejected": 0}


async def create_programme(database_url: str, people: int = 0) -> None:
    """The programme `load` with the settings the relationships are started with; with
    `people`, the mentees and mentors of that many relationships and the coordinator in the
    directory with email addresses (`--mail-delay`: their notifications go out by SMTP)."""
    from activities.database import create_pool, migrate
    from activities.directory import Directory
    from events.people import Participant, Programme
    from events.settings import ProgrammeSettings

    pool = await create_pool(database_url, max_size=2)
    try:
        await migrate(pool)
        settings = ProgrammeSettings(coordinator_ids=("coord-1",))
        directory = Directory(pool)
        await directory.create_or_update_programme(Programme(programme_id=PROGRAMME, name="Load", settings=settings))
        ids = ["coord-1", *(f"{role}-{index}" for index in range(people) for role in ("mentee", "mentor"))]
        if people:  # in UTC, so inside the default delivery window while the bench runs by day
            await directory.upsert_participants(
                [Participant(participant_id=pid, display_name=pid, email=f"{pid}@example.org", timezone="UTC") for pid in ids]
            )
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def slow_mail_server(delay: float | None) -> AsyncIterator[tuple[dict[str, str], Any]]:
    """`--mail-delay`: an SMTP server on loopback that takes `delay` seconds to accept each
    message, and ours' mail settings for it; with None, no server and no settings."""
    if delay is None:
        yield {}, None
        return
    from bench.storm import sink_settings, timed_sink

    sink = timed_sink(delay)
    await sink.start()
    try:
        yield sink_settings(sink), sink
    finally:
        await sink.stop()


async def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--relationships", type=int, default=1000, help="N: relationships, and ceiling workflows (1000)")
    parser.add_argument("--meetings", type=int, default=4, help="meetings recorded per relationship (4)")
    parser.add_argument("--concurrency", type=int, default=100, help="drivers sending commands at once (100)")
    parser.add_argument(
        "--poll-ms", type=float, default=5, help="first query interval while waiting for a signal, doubling to 100 (5)"
    )
    parser.add_argument("--poll-max-ms", type=float, default=100, help="longest query interval (100)")
    parser.add_argument(
        "--only", choices=("ours", "ceiling", "ceiling_upserting", "ceiling_storing"), help="run one contestant"
    )
    parser.add_argument(
        "--ours-variants",
        help="ours' worker settings, e.g. 'workflow_task_slots=100;workflow_task_slots=10,sticky_schedule_to_start_seconds=30':"
        " ours runs once per variant (;), as ours, ours_2 … (MENTORFLOW_<NAME>=VALUE, comma-separated)",
    )
    parser.add_argument(
        "--with-upserting-ceiling",
        action="store_true",
        help="also run the ceiling with one search-attribute upsert per message (what an upsert costs)",
    )
    parser.add_argument(
        "--with-storing-ceiling",
        action="store_true",
        help="also run the upserting ceiling that stores each message in PostgreSQL before counting it",
    )
    parser.add_argument(
        "--mail-delay",
        type=float,
        help="people get email, through an SMTP server on loopback that takes this many seconds per message",
    )
    args = parser.parse_args(argv)
    optional = {UpsertingCeiling: args.with_upserting_ceiling, StoringCeiling: args.with_storing_ceiling}

    async with scratch_database("load") as (scratch, base_env), slow_mail_server(args.mail_delay) as (mail, sink):
        await create_programme(base_env["MENTORFLOW_DATABASE_URL"], args.relationships if sink else 0)
        base_env.update(mail)  # only ours' worker reads them
        result: dict[str, Any] = {}
        for contestant in (Ceiling, UpsertingCeiling, StoringCeiling, Ours):
            if args.only and contestant.name != args.only:
                continue
            if not optional.get(contestant, True) and args.only != contestant.name:
                continue
            if contestant is Ours and args.ours_variants:
                # Ours once per variant, each on a fresh server: "ours" is the first one.
                for position, variant in enumerate(args.ours_variants.split(";")):
                    settings = dict(item.split("=", 1) for item in variant.split(",") if item)
                    key = "ours" if position == 0 else f"ours_{position + 1}"
                    progress(f"{key}: starting a fresh dev server and worker with {settings}")
                    env = {**base_env, **{f"MENTORFLOW_{name.upper()}": value for name, value in settings.items()}}
                    arrived = len(sink.inbox.arrived) if sink else 0
                    result[key] = await run_contestant(contestant, args, env, scratch, label=key)
                    result[key]["settings"] = settings
                    if sink:
                        result[key]["emails_arrived"] = len(sink.inbox.arrived) - arrived
                continue
            progress(f"{contestant.name}: starting a fresh dev server and worker")
            result[contestant.name] = await run_contestant(contestant, args, base_env, scratch)
            if sink and contestant is Ours:
                result[contestant.name]["emails_arrived"] = len(sink.inbox.arrived)
    ours, ceiling = result.get("ours"), result.get("ceiling")
    if ours and ceiling and ours["commands_per_s"] and ceiling["commands_per_s"]:
        result["throughput_ratio"] = round(ours["commands_per_s"] / ceiling["commands_per_s"], 3)
        result["p99_ratio"] = round(ours["latency_ms"]["p99"] / ceiling["latency_ms"]["p99"], 2)
        # Worker + server CPU per command, ceiling over ours: what the throughput ratio comes
        # to when the CPUs are saturated, and far less disturbed by other load than wall time.
        cost = {
            name: figures["worker_cpu_ms_per_command"] + figures["server_cpu_ms_per_command"]
            for name, figures in (("ours", ours), ("ceiling", ceiling))
        }
        result["cpu_cost_ratio"] = round(cost["ceiling"] / cost["ours"], 3)
        upserting = result.get("ceiling_upserting")
        if upserting and upserting["commands_per_s"]:
            result["upserting_ceiling_throughput_ratio"] = round(upserting["commands_per_s"] / ceiling["commands_per_s"], 3)
        # Issue #16's goals, against the ceiling that upserts once per message, per run of ours;
        # and the same ratios against the ceiling that also stores each message before answering.
        for name in ("upserting", "storing"):
            if reference := result.get(f"ceiling_{name}"):
                result[f"against_the_{name}_ceiling"] = against(result, reference, ceiling)
        result["goal_met"] = (
            result["throughput_ratio"] >= 0.7
            and result["p99_ratio"] < 2
            and ours["failed_workflow_tasks"] == 0
            and ours["commands_without_event"] == 0
            and ours["commands_rejected"] == 0
            and ours["errors"] == 0
        )
    result.update(
        {name: getattr(args, name) for name in ("relationships", "meetings", "concurrency", "poll_ms", "poll_max_ms", "mail_delay")}
    )
    return result


def against(result: dict[str, Any], reference: dict[str, Any], ceiling: dict[str, Any]) -> dict[str, Any]:
    """Each run of ours over `reference` (a ceiling that does more than count): issue #16's ratios."""
    if not reference["commands_per_s"]:
        return {}
    return {
        key: {
            "settings": figures.get("settings"),
            "throughput_ratio": round(figures["commands_per_s"] / reference["commands_per_s"], 3),
            "p99_ratio": round(figures["latency_ms"]["p99"] / reference["latency_ms"]["p99"], 2),
            "signal_p99_ratio": round(figures["latency_ms"]["signal_p99"] / reference["latency_ms"]["signal_p99"], 2),
            "worker_cpu_ratio": round(figures["worker_cpu_ms_per_command"] / reference["worker_cpu_ms_per_command"], 2),
            "worker_cpu_ratio_to_ceiling": round(
                figures["worker_cpu_ms_per_command"] / ceiling["worker_cpu_ms_per_command"], 2
            ),
            "timed_out_workflow_tasks": figures["timed_out_workflow_tasks"],
        }
        for key, figures in result.items()
        if key.startswith("ours") and figures["commands_per_s"]
    }


def report(outcome: dict[str, Any]) -> None:
    """Each contestant's figures in one line on stderr."""
    for name in ("ceiling", "ceiling_upserting", "ceiling_storing", *(key for key in outcome if key.startswith("ours"))):
        if name in outcome and isinstance(outcome[name], dict) and "commands_per_s" in outcome[name]:
            figures = outcome[name]
            progress(
                f"{name:>8}: {figures['commands_per_s']} commands/s, p50 {figures['latency_ms']['p50']} ms, "
                f"p99 {figures['latency_ms']['p99']} ms, worker {figures['worker_cpu_seconds']} CPU s, "
                f"RSS {figures['worker_rss_mb']} MiB, failed tasks {figures['failed_workflow_tasks']}, "
                f"lost {figures['commands_without_event']}, errors {figures['errors']}"
            )


if __name__ == "__main__":
    command_line(main, serve_ceiling, report)
