"""Faults, with real processes: the worker is `mentorflow worker` in a process of its own (so a
SIGKILL is a real crash), Temporal a `temporal server start-dev` process on its persistence
file, PostgreSQL and the SMTP and webhook peers real servers too (tests/support/processes.py).

What each test proves, and how it reaches its fault exactly, without hooks in product code:

- *A worker killed just before an event-store commit*: a trigger the test adds to `events`
  makes the worker's append wait inside its transaction (for an advisory lock the test
  holds); the test kills the worker there. Either PostgreSQL notices the dead client and
  rolls the append back, or (its default) it never looks and commits the orphaned append
  anyway once the lock is free; both are tested.
- *Just after the commit*: the same kind of trigger on the delivery log stops the worker at
  its first step after the append returned (claiming the notifications it caused), before
  the workflow task that ran the append was completed; the test kills it there.
- *In the middle of sending a notification*: the webhook receiver reads the request in full
  and does not answer; the test kills the worker while it waits for the answer.
- *Temporal killed and restarted* with relationships mid-cadence: a pause's timer, an
  accepted update and a signal in history outlive the server process.
- *PostgreSQL stopped (immediate shutdown) during appends and started again.*
- *The SMTP server down for hours* (the time-skipping server makes them seconds).

After every fault a worker (a new one where the old was killed) lets the relationship
finish, and the test checks the guarantees (docs/resilience.md): the event store is
exactly what the domain core decides for the commands sent, each applied once (versions
1..n, event ids derived from their cause, unique); every notification the stored events
cause reached each of its recipient's channels exactly once (the webhook receiver accepted
one request per `webhook-id`; a request cut off by the crash may be sent again with the
same id, at most once per crash); no workflow task failed.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateStage
from temporalio.testing import WorkflowEnvironment

from activities.database import create_pool, migrate
from activities.directory import Directory
from activities.event_store import PostgresEventStore
from events.commands import COMMAND_TYPES
from events.decider import Rejection, decide, decide_deadline, evolve, fold, reject
from events.model import AnyEvent
from events.notifications import notifications_for
from events.people import ChannelAddress, Participant
from events.settings import ProgrammeSettings
from events.state import RelationshipState
from mentorflow.dev import ensure_database
from tests.support.db_gate import Gate, until
from tests.support.session import DATA_CONVERTER, TEST_KEYRING
from tests.support.helpers import AGREEMENT, cmd, failed_workflow_tasks, sleep_until
from tests.support.peers import SmtpServer, WebhookReceiver, eventually
from tests.support.processes import StoppablePostgres, TemporalServer, WorkerProcess
from workflows.relationship import Relationship, RelationshipInput

# Short, so that a killed worker's workflow task is handed to the next worker soon (the
# server waits this long for an answer from the dead one). Production keeps the default 10 s.
TASK_TIMEOUT = timedelta(seconds=3)
SECRET = "whsec_" + base64.b64encode(b"faults-test-webhook-signing-key!").decode()
SENDER = "Mentoring programme <mentoring@example.org>"
PROGRAMME = "faults"
MENTEE, MENTOR, COORDINATOR = "emp-1", "emp-2", "coord-1"
MENTOR_HOOK, COORDINATOR_HOOK = "/hooks/mentor", "/hooks/office"
# The longest any update may take here, faults included: a bound instead of a hung test.
UPDATE_TIMEOUT = 60
# Advisory lock keys of the gates the tests put into the worker's transactions.
EVENTS_GATE, CLAIMS_GATE = 7_110_001, 7_110_002


# -- the cast and the script -------------------------------------------------------------


def people(receiver: WebhookReceiver) -> list[Participant]:
    return [
        Participant(participant_id=MENTEE, display_name="Ada Mentee", email="ada@example.org"),
        Participant(
            participant_id=MENTOR,
            display_name="Ben Mentor",
            email="ben@example.org",
            channels=(ChannelAddress(kind="email"), ChannelAddress(kind="webhook", address=receiver.url_for(MENTOR_HOOK))),
        ),
        Participant(
            participant_id=COORDINATOR,
            display_name="Cleo Coordinator",
            email="cleo@example.org",
            channels=(ChannelAddress(kind="webhook", address=receiver.url_for(COORDINATOR_HOOK)),),
        ),
    ]


def lifecycle() -> Iterator[tuple[str, dict[str, Any]]]:
    """Match → agreement → a meeting → closed by the mentee → both reflect: every phase,
    and notifications to every channel. A generator: the meeting's time is taken when due."""
    yield "propose_match", cmd(COORDINATOR, mentor_id=MENTOR, explanation="both build compilers")
    yield "accept_match", cmd(MENTEE)
    yield "accept_match", cmd(MENTOR)
    yield "propose_agreement", cmd(MENTEE, terms=AGREEMENT)
    yield "sign_agreement", cmd(MENTEE, agreement_version=1)
    yield "sign_agreement", cmd(MENTOR, agreement_version=1)
    yield "record_meeting", cmd(MENTOR, held_at=datetime.now(UTC).isoformat(), duration_minutes=45)
    yield "close_relationship", cmd(MENTEE, note="moving teams")
    yield "submit_reflection", cmd(MENTEE, text="I learnt a lot")
    yield "submit_reflection", cmd(MENTOR, text="So did I")


@dataclass
class Scene:
    """One test's world: a Temporal server, a database, the peers, and the worker processes
    it starts (all on one task queue). Records every command it sends."""

    client: Client
    temporal_address: str
    pool: asyncpg.Pool
    database_url: str
    smtp: SmtpServer
    receiver: WebhookReceiver
    directory: Path
    task_queue: str = field(default_factory=lambda: f"faults-{uuid.uuid4().hex[:8]}")
    # Per workflow id: command id → (message name, payload).
    sent: defaultdict[str, dict[str, tuple[str, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(dict))
    workers: list[WorkerProcess] = field(default_factory=list)
    # Crashes while a delivery was in flight: how often one webhook may have been sent again.
    crashes: int = 0

    def worker_settings(self) -> dict[str, str]:
        return {
            "MENTORFLOW_DATABASE_URL": self.database_url,
            "MENTORFLOW_TEMPORAL_ADDRESS": self.temporal_address,
            "MENTORFLOW_TEMPORAL_NAMESPACE": self.client.namespace,
            "MENTORFLOW_TASK_QUEUE": self.task_queue,
            "MENTORFLOW_ENCRYPTION_KEYS": TEST_KEYRING.format(),
            "MENTORFLOW_SMTP_HOST": "127.0.0.1",
            "MENTORFLOW_SMTP_PORT": str(self.smtp.port),
            "MENTORFLOW_SMTP_SECURITY": "none",
            "MENTORFLOW_SMTP_FROM": SENDER,
            "MENTORFLOW_SMTP_TIMEOUT": "5",
            "MENTORFLOW_WEBHOOK_SECRET": SECRET,
            "MENTORFLOW_WEBHOOK_TIMEOUT": "5",
        }

    async def worker(self) -> WorkerProcess:
        """A new worker process, once it polls."""
        worker = WorkerProcess(self.worker_settings(), self.directory / f"worker-{len(self.workers) + 1}.log")
        self.workers.append(worker)
        return await worker.started()

    def kill_workers(self) -> None:
        for worker in self.workers:
            worker.kill()

    async def start_relationship(self, **settings: Any) -> WorkflowHandle[Relationship, Any]:
        relationship_id = f"rel-{uuid.uuid4().hex[:10]}"
        return await self.client.start_workflow(
            Relationship.run,
            RelationshipInput(
                relationship_id=relationship_id,
                programme_id=PROGRAMME,
                mentee_id=MENTEE,
                settings=ProgrammeSettings(coordinator_ids=(COORDINATOR,), **settings),
            ),
            id=f"relationship/{PROGRAMME}/{relationship_id}",
            task_queue=self.task_queue,
            task_timeout=TASK_TIMEOUT,
        )

    async def update(self, handle: WorkflowHandle[Any, Any], name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a command as an update (its update id is its command id) and return the result."""
        self.sent[handle.id][payload["command_id"]] = (name, payload)
        result: dict[str, Any] = await asyncio.wait_for(
            handle.execute_update(name, payload, id=payload["command_id"]), UPDATE_TIMEOUT
        )
        return result

    async def signal(self, handle: WorkflowHandle[Any, Any], name: str, payload: dict[str, Any]) -> None:
        self.sent[handle.id][payload["command_id"]] = (name, payload)
        await handle.signal(name, payload)


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def temporal(temporal_binary: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TemporalServer]:
    """A dev server for the tests that kill workers; the test that kills Temporal has its own."""
    server = TemporalServer(temporal_binary, tmp_path_factory.mktemp("temporal"))
    server.start()
    yield server
    server.stop()


@asynccontextmanager
async def scene_on(
    client: Client, address: str, pool: asyncpg.Pool, database_url: str, smtp: SmtpServer, receiver: WebhookReceiver, directory: Path
) -> AsyncIterator[Scene]:
    await Directory(pool).upsert_participants(people(receiver))
    scene = Scene(client, address, pool, database_url, smtp, receiver, directory)
    try:
        yield scene
    finally:
        scene.kill_workers()


SceneOn = Callable[[Client, str], AbstractAsyncContextManager[Scene]]


@pytest.fixture
def scene_on_temporal(
    pool: asyncpg.Pool, database_url: str, smtp_server: SmtpServer, receiver: WebhookReceiver, tmp_path: Path
) -> SceneOn:
    """`scene_on` with this test's database, peers and directory, on the Temporal (a client
    and its address) the test brings."""

    def on(client: Client, address: str) -> AbstractAsyncContextManager[Scene]:
        return scene_on(client, address, pool, database_url, smtp_server, receiver, tmp_path)

    return on


@pytest.fixture
async def scene(temporal: TemporalServer, scene_on_temporal: SceneOn) -> AsyncIterator[Scene]:
    client = await temporal.client(DATA_CONVERTER)
    async with scene_on_temporal(client, temporal.address) as scene:
        yield scene


# -- gates: a statement of the worker's held inside its transaction -------------------------

@asynccontextmanager
async def gates(pool: asyncpg.Pool) -> AsyncIterator[tuple[Gate, Gate]]:
    """The events gate and the claims gate (tests/support/db_gate.py), both open: while one is
    closed, a worker's insert into its table waits inside its transaction. The triggers stay
    for the test (its database is its own)."""
    async with pool.acquire() as connection:
        events = await Gate.install(connection, "events", EVENTS_GATE)
        claims = await Gate.install(connection, "notification_deliveries", CLAIMS_GATE)
        try:
            yield events, claims
        finally:
            await connection.execute("SELECT pg_advisory_unlock_all()")


async def waiter_at(gate: Gate, what: str) -> int:
    """The backend of the first statement that waits at `gate`."""

    async def first() -> int | None:
        waiting = await gate.waiting()
        return waiting[0] if waiting else None

    pid: int = await until_true(first, f"{what} waiting at the gate", poll=0.01)
    return pid


# tests/support/db_gate.py's `until`, given longer: after a kill, the dead worker's task is
# handed on only once its timeout has passed.
until_true = functools.partial(until, timeout=90, poll=0.05)


# -- the guarantees ----------------------------------------------------------------------


def _key(event: AnyEvent) -> tuple[str, int, str, str | None]:
    return event.type, event.version, str(event.event_id), event.command_id


def assert_each_command_decided_once(stored: list[AnyEvent], sent: Mapping[str, tuple[str, dict[str, Any]]]) -> None:
    """The stream is exactly what the domain core decides for the commands sent (and the
    deadlines that came due), in order, each command once: no gap, no duplicate, nothing else."""
    assert [event.version for event in stored] == list(range(1, len(stored) + 1)), "versions are not 1..n"
    assert len({event.event_id for event in stored}) == len(stored), "an event id is stored twice"
    assert stored and stored[0].type == "RelationshipStarted"
    state: RelationshipState | None = evolve(None, stored[0])
    applied: list[str] = []
    position = 1
    while position < len(stored):
        assert state is not None
        event = stored[position]
        if event.command_id is None:
            expected = decide_deadline(state, event.occurred_at)
        else:
            assert event.command_id in sent, f"version {event.version}: a command nobody sent ({event.command_id})"
            name, payload = sent[event.command_id]
            command = COMMAND_TYPES[name].model_validate(payload)
            decision = decide(state, command, event.occurred_at)
            if isinstance(decision, Rejection):
                expected = [reject(state, name, command.command_id, decision, event.occurred_at)]
            else:
                expected = decision
            applied.append(event.command_id)
        assert expected, f"version {event.version} ({event.type}): the core decides nothing here"
        batch = stored[position : position + len(expected)]
        assert [_key(e) for e in batch] == [_key(e) for e in expected], f"at version {event.version}"
        state = fold(batch, state)
        position += len(expected)
    assert Counter(applied) == Counter(list(sent)), "a command was applied twice, or not at all"


def expected_deliveries(stored: list[AnyEvent], cast: list[Participant]) -> Counter[tuple[str, str, str]]:
    """(notification id, channel, email address or webhook path) for every message the
    stored events call for, per the domain's notification rules and the directory."""
    by_id = {person.participant_id: person for person in cast}
    expected: Counter[tuple[str, str, str]] = Counter()
    state: RelationshipState | None = None
    for event in stored:
        before, state = state, evolve(state, event)
        for notification in notifications_for(event, state, before):
            person = by_id[notification.recipient_id]
            for channel in person.channels:
                where = person.email if channel.kind == "email" else urlsplit(channel.address or "").path
                expected[(notification.notification_id, channel.kind, where)] += 1
    return expected


def arrived(scene: Scene) -> Counter[tuple[str, str, str]]:
    got: Counter[tuple[str, str, str]] = Counter()
    for received in scene.smtp.inbox.messages:
        for address in received.rcpt_tos:
            got[(str(received.message["X-Mentorflow-Notification"]).strip(), "email", address)] += 1
    for request in scene.receiver.accepted():
        got[(json.loads(request.body)["data"]["notification_id"], "webhook", request.path)] += 1
    return got


async def assert_everything_once(scene: Scene, handle: WorkflowHandle[Any, Any]) -> list[AnyEvent]:
    """The guarantees, for one relationship; returns its stored events."""
    relationship_id = handle.id.rpartition("/")[2]
    stored = await PostgresEventStore(scene.pool, TEST_KEYRING).read_stream(relationship_id)
    assert_each_command_decided_once(stored, scene.sent[handle.id])
    state = await handle.query(Relationship.state)
    assert state == fold(stored), "the workflow and the event store disagree"

    expected = expected_deliveries(stored, people(scene.receiver))
    relevant = {key[0] for key in expected}
    await eventually(
        lambda: sum(v for k, v in arrived(scene).items() if k[0] in relevant) >= sum(expected.values()),
        "every notification",
    )
    got = Counter({k: v for k, v in arrived(scene).items() if k[0] in relevant})
    assert got == expected, f"missing: {expected - got}, extra: {got - expected}"
    # Webhooks: one accepted request per webhook-id; a request the crash cut off may have
    # been sent again with the same id and body, at most once per crash.
    by_webhook_id: defaultdict[str, list[Any]] = defaultdict(list)
    for request in scene.receiver.requests:
        by_webhook_id[request.headers["webhook-id"]].append(request)
    for webhook_id, requests in by_webhook_id.items():
        assert len({(r.body, r.path) for r in requests}) == 1, webhook_id
        assert sum(1 for r in requests if 200 <= r.status < 300) == 1, webhook_id
        assert len(requests) <= 1 + scene.crashes, webhook_id
    message_ids = [str(m.message["Message-ID"]) for m in scene.smtp.inbox.messages]
    assert len(message_ids) == len(set(message_ids)), "an email went out twice"
    assert await failed_workflow_tasks(handle) == 0
    return stored


async def delivered_so_far(scene: Scene, *handles: WorkflowHandle[Any, Any]) -> None:
    """Until every message the relationships' stored events call for has arrived and been
    recorded: a fault injected after this hits only what the test aims at, not a delivery
    still in flight from an earlier step."""

    async def settled() -> bool:
        expected: Counter[tuple[str, str, str]] = Counter()
        for handle in handles:
            stored = await PostgresEventStore(scene.pool, TEST_KEYRING).read_stream(handle.id.rpartition("/")[2])
            expected.update(expected_deliveries(stored, people(scene.receiver)))
        got = arrived(scene)
        if any(got[key] < count for key, count in expected.items()):
            return False
        return not await scene.pool.fetchval("SELECT count(*) FROM notification_deliveries WHERE status <> 'delivered'")

    await until_true(settled, "the notifications of the steps so far")


async def accepted_in_history(handle: WorkflowHandle[Any, Any], update_id: str) -> bool:
    history = await handle.fetch_history()
    return any(
        event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        and event.workflow_execution_update_accepted_event_attributes.accepted_request.meta.update_id == update_id
        for event in history.events
    )


async def run_steps(scene: Scene, handle: WorkflowHandle[Any, Any], steps: Iterator[tuple[str, dict[str, Any]]], count: int | None = None) -> None:
    for index, (name, payload) in enumerate(steps):
        result = await scene.update(handle, name, payload)
        assert result["applied"], (name, result)
        if count is not None and index + 1 == count:
            return


async def to_the_end(scene: Scene, handle: WorkflowHandle[Any, Any], steps: Iterator[tuple[str, dict[str, Any]]]) -> None:
    """The rest of the lifecycle, the relationship's end, and the guarantees."""
    await run_steps(scene, handle, steps)
    await asyncio.wait_for(handle.result(), UPDATE_TIMEOUT)
    await assert_everything_once(scene, handle)


# -- a worker killed around the event store's commit ---------------------------------------


@dataclass
class Held:
    """A relationship whose worker is held at a closed gate in the middle of a command."""

    worker: WorkerProcess
    handle: WorkflowHandle[Any, Any]
    steps: Iterator[tuple[str, dict[str, Any]]]
    store: PostgresEventStore
    version: int  # the stream's length before the held command
    command_id: str
    sent: asyncio.Task[dict[str, Any]]  # the held command's update
    backend: int  # the worker's backend, waiting at the gate

    async def stored(self) -> list[AnyEvent]:
        return await self.store.read_stream(self.handle.id.rpartition("/")[2])


async def held_at(scene: Scene, gate: Gate, steps_before: int, what: str) -> Held:
    """A new worker takes a new relationship through the lifecycle's first `steps_before`
    steps (their notifications all delivered); the next one is sent with `gate` closed, until
    the worker's statement (`what`) waits at the gate."""
    worker = await scene.worker()
    handle = await scene.start_relationship()
    steps = lifecycle()
    await run_steps(scene, handle, steps, count=steps_before)
    store = PostgresEventStore(scene.pool, TEST_KEYRING)
    version = len(await store.read_stream(handle.id.rpartition("/")[2]))
    await delivered_so_far(scene, handle)
    await gate.close()
    name, payload = next(steps)
    sent = asyncio.create_task(scene.update(handle, name, payload))
    backend = await waiter_at(gate, what)
    return Held(worker, handle, steps, store, version, payload["command_id"], sent, backend)


@pytest.mark.parametrize("postgres_notices", [True, False], ids=["append-rolled-back", "append-committed-by-orphan"])
async def test_a_worker_killed_before_its_append_commits(scene: Scene, postgres_notices: bool) -> None:
    async with gates(scene.pool) as (events_gate, _):
        if postgres_notices:
            # Off by default: then PostgreSQL finds out about a dead client only when it
            # next talks to it, after the append has run and committed.
            database = await scene.pool.fetchval("SELECT current_database()")
            await scene.pool.execute(f'ALTER DATABASE "{database}" SET client_connection_check_interval = 100')
        # Held: the mentor's acceptance, which confirms the match.
        held = await held_at(scene, events_gate, 2, "the append of the mentor's acceptance")
        held.worker.kill()
        if postgres_notices:
            await until_true(lambda: _gone(events_gate, held.backend), "the dead worker's transaction to end")
        await events_gate.open()
        if postgres_notices:
            assert len(await held.stored()) == held.version, "an append of a dead worker was committed"
        else:
            await until_true(lambda: _longer(held), "the orphaned append to commit")
        assert not held.sent.done()

        replacement = await scene.worker()
        result = await asyncio.wait_for(held.sent, UPDATE_TIMEOUT)
        assert result["applied"] and result["events"] == ["MatchAccepted", "MatchConfirmed"], result
        # Orphaned, the append's events are in the store but not in history: the workflow
        # adopts them (its own decision of the same command conflicts with them).
        assert (f"adopting 2 stored events after version {held.version}" in replacement.output()) is not postgres_notices
        await to_the_end(scene, held.handle, held.steps)


async def _gone(gate: Gate, pid: int) -> bool:
    return not await gate.backend_alive(pid)


async def _longer(held: Held) -> bool:
    return len(await held.stored()) > held.version


async def test_a_worker_killed_right_after_its_append_committed(scene: Scene) -> None:
    async with gates(scene.pool) as (_, claims_gate):
        # Held: the mentor's signature, which activates the relationship, at the worker's
        # next step after the append returned: claiming the first notification.
        held = await held_at(scene, claims_gate, 5, "the first notification of the activation")
        held.worker.kill()
        stored = await held.stored()
        assert [e.type for e in stored[held.version:]] == ["AgreementSigned", "RelationshipActivated", "MeetingScheduled"]
        # Normally the workflow task that ran the append has not completed (it waits for its
        # local activities): then history does not know the events.
        task_completed = await accepted_in_history(held.handle, held.command_id)
        await claims_gate.open()
        await until_true(lambda: _gone(claims_gate, held.backend), "the dead worker's claim to roll back")
        assert await scene.pool.fetchval("SELECT count(*) FROM notification_deliveries WHERE template = 'relationship_activated'") == 0

        replacement = await scene.worker()
        result = await asyncio.wait_for(held.sent, UPDATE_TIMEOUT)
        assert result["applied"] and result["phase"] == "active", result
        if not task_completed:
            assert f"adopting 3 stored events after version {held.version}" in replacement.output()
        await to_the_end(scene, held.handle, held.steps)


async def test_a_worker_killed_while_a_webhook_waits_for_its_answer(scene: Scene) -> None:
    def the_first_proposal_to_the_mentor(request: Any) -> bool:
        return json.loads(request.body)["type"] == "mentoring.match_proposed" and len(scene.receiver.requests) == 1

    scene.receiver.hang = the_first_proposal_to_the_mentor
    worker = await scene.worker()
    handle = await scene.start_relationship()
    steps = lifecycle()
    name, payload = next(steps)  # the coordinator proposes the mentor: webhook and emails
    proposing = asyncio.create_task(scene.update(handle, name, payload))
    [held] = await eventually(lambda: scene.receiver.requests, "the proposal's webhook")
    # The emails of the same batch have gone out and are recorded: only the webhook is in flight.
    await until_true(
        lambda: _count(scene.pool, "SELECT count(*) FROM notification_deliveries WHERE channel = 'email' AND status = 'delivered'", 2),
        "both proposal emails",
    )
    worker.kill()
    scene.crashes += 1
    scene.receiver.hang = False
    sending = await scene.pool.fetch("SELECT template, channel FROM notification_deliveries WHERE status = 'sending'")
    assert [tuple(row) for row in sending] == [("match_proposed", "webhook")]
    # The claim's lease (2 minutes) runs out: shortened here rather than waited for.
    await scene.pool.execute("UPDATE notification_deliveries SET claimed_until = clock_timestamp() WHERE status = 'sending'")
    task_completed = await accepted_in_history(handle, payload["command_id"])

    replacement = await scene.worker()
    result = await asyncio.wait_for(proposing, UPDATE_TIMEOUT)
    assert result["applied"], result
    if not task_completed:  # the proposal's task (the start's too, if they were one) was lost
        assert re.search(r"adopting (1 stored events after version 1|2 stored events after version 0)", replacement.output())
    await to_the_end(scene, handle, steps)
    # The receiver saw that webhook twice, with the same id and body: it may deduplicate.
    again = [r for r in scene.receiver.requests if r.headers["webhook-id"] == held.headers["webhook-id"]]
    assert len(again) == 2 and again[0] is held and again[1].status == 200 and held.status == 0
    assert "was interrupted while sending (attempt 1); sending again, it may arrive twice" in replacement.output()


async def _has(events: Awaitable[list[AnyEvent]], test: Callable[[AnyEvent], bool]) -> bool:
    return any(test(event) for event in await events)


async def _count(pool: asyncpg.Pool, query: str, expected: int) -> bool:
    return bool(await pool.fetchval(query) == expected)


# -- Temporal killed and restarted -------------------------------------------------------------

# From the pause to the kill: an update accepted (a workflow task, at most a task timeout,
# 3 s) and a signal. The restart need not fit: a timer that comes due while the server is
# down fires once it is back, which tests the same. Checked before the kill (the timer has
# not fired), not assumed.
PAUSE = timedelta(seconds=9)


async def test_temporal_killed_mid_cadence_keeps_timers_signals_and_accepted_updates(
    temporal_binary: str, scene_on_temporal: SceneOn, tmp_path: Path
) -> None:
    server = TemporalServer(temporal_binary, tmp_path)
    server.start()
    try:
        client = await server.client(DATA_CONVERTER)
        async with scene_on_temporal(client, server.address) as scene:
            async with gates(scene.pool) as (events_gate, _):
                await scene.worker()
                paused, busy = await scene.start_relationship(), await scene.start_relationship()
                steps = {handle.id: lifecycle() for handle in (paused, busy)}
                await asyncio.gather(*(run_steps(scene, h, steps[h.id], count=6) for h in (paused, busy)))

                # `paused`: a timer (the pause's end) that comes due after the restart.
                fired_before_pause = await timers_fired(paused)
                until = datetime.now(UTC) + PAUSE
                await scene.update(paused, "pause_relationship", cmd(MENTEE, until=until.isoformat()))
                # `busy`: an update the worker accepted and is still storing the events of
                # (held at the gate; a workflow task completes while a local activity runs
                # long, and that accepts the update), and a signal in history that no
                # workflow task has seen yet.
                await events_gate.close()
                shared = cmd(MENTOR, title="Crafting Interpreters", url="https://craftinginterpreters.com/")
                scene.sent[busy.id][shared["command_id"]] = ("share_resource", shared)
                await asyncio.wait_for(
                    busy.start_update(
                        "share_resource", shared, id=shared["command_id"], wait_for_stage=WorkflowUpdateStage.ACCEPTED
                    ),
                    30,
                )
                await waiter_at(events_gate, "the accepted update's append")
                introduced = cmd(MENTOR, introduced_to="a staff engineer")
                await scene.signal(busy, "record_introduction", introduced)

                # The pause's timer is still pending when the server dies: it must outlive it.
                assert await timers_fired(paused) == fired_before_pause, f"the pause ended before the kill (in {PAUSE})"
                server.kill()
                server.start()
                client = await server.client(DATA_CONVERTER)
                await events_gate.open()

            busy = client.get_workflow_handle_for(Relationship.run, busy.id)
            paused = client.get_workflow_handle_for(Relationship.run, paused.id)
            result = await asyncio.wait_for(busy.get_update_handle(shared["command_id"]).result(), UPDATE_TIMEOUT)
            assert result["applied"] and result["events"] == ["ResourceShared"], result
            store = PostgresEventStore(scene.pool, TEST_KEYRING)

            async def stored(handle: WorkflowHandle[Any, Any]) -> list[AnyEvent]:
                return await store.read_stream(handle.id.rpartition("/")[2])

            async def finish_busy() -> None:
                await until_true(
                    lambda: _has(stored(busy), lambda e: e.command_id == introduced["command_id"]),
                    "the signal from before the crash handled",
                )
                await run_steps(scene, busy, steps[busy.id])

            async def finish_paused() -> None:
                await until_true(lambda: _has(stored(paused), lambda e: e.type == "RelationshipResumed"), "the pause's end")
                [resumed] = [e for e in await stored(paused) if e.type == "RelationshipResumed"]
                assert resumed.occurred_at >= until and resumed.command_id is None  # by the timer, not a command
                await run_steps(scene, paused, steps[paused.id])

            await asyncio.gather(finish_busy(), finish_paused())
            for handle in (paused, busy):
                await asyncio.wait_for(handle.result(), UPDATE_TIMEOUT)
                await assert_everything_once(scene, handle)
    finally:
        server.stop()


async def timers_fired(handle: WorkflowHandle[Any, Any]) -> int:
    history = await handle.fetch_history()
    return sum(1 for event in history.events if event.event_type == EventType.EVENT_TYPE_TIMER_FIRED)


# -- PostgreSQL stopped during appends ---------------------------------------------------------

FAILED_ATTEMPT = re.compile(
    r"^(\S+ \S+) WARNING temporalio\.activity: Completing activity as failed \(\{'activity_id': '(\w+)', "
    r"'activity_type': 'append_events(?:_and_notify)?', 'attempt': (\d+),.*'workflow_id': '([^']+)'",
    re.MULTILINE,
)


def failed_appends(log: str) -> dict[tuple[str, str], list[tuple[int, datetime]]]:
    """Per append (workflow, activity id): its failed attempts, numbered, with their times."""
    attempts: defaultdict[tuple[str, str], list[tuple[int, datetime]]] = defaultdict(list)
    for when, activity_id, attempt, workflow_id in FAILED_ATTEMPT.findall(log):
        attempts[(workflow_id, activity_id)].append((int(attempt), datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f")))
    return attempts


async def test_postgres_stopped_during_appends_and_started_again(
    temporal: TemporalServer, smtp_server: SmtpServer, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    # A PostgreSQL of this test's own: the session's serves every other test.
    postgres = StoppablePostgres(tmp_path / "postgres")
    admin_url = await asyncio.to_thread(postgres.start)
    try:
        database_url = await ensure_database(admin_url, "faults")
        pool = await create_pool(database_url, max_size=4)
        await migrate(pool)
        client = await temporal.client(DATA_CONVERTER)
        async with scene_on(client, temporal.address, pool, database_url, smtp_server, receiver, tmp_path) as scene:
            worker = await scene.worker()
            handles = [await scene.start_relationship() for _ in range(2)]
            steps = {handle.id: lifecycle() for handle in handles}
            await asyncio.gather(*(run_steps(scene, h, steps[h.id], count=6) for h in handles))
            # Only appends in flight when PostgreSQL goes (a shared resource notifies nobody).
            await delivered_so_far(scene, *handles)
            store = PostgresEventStore(pool, TEST_KEYRING)

            async def share(handle: WorkflowHandle[Any, Any], count: int) -> None:
                for number in range(count):
                    await scene.update(handle, "share_resource", cmd(MENTOR, title=f"Resource {number}"))

            async def some_shared() -> bool:
                streams = [await store.read_stream(h.id.rpartition("/")[2]) for h in handles]
                return all(any(e.type == "ResourceShared" for e in stream) for stream in streams)

            sharing = asyncio.gather(*(share(handle, 8) for handle in handles))
            await until_true(some_shared, "the first resources stored")
            await asyncio.to_thread(postgres.stop)  # immediate: every backend killed, as in a crash
            # Down until some append has failed three times (its retries back off: 1 s, 2 s).
            await eventually(
                lambda: any(len(attempts) >= 3 for attempts in failed_appends(worker.output()).values()),
                "three failed attempts of one append",
                timeout=90,
            )
            assert await asyncio.to_thread(postgres.start) == admin_url
            await asyncio.wait_for(sharing, UPDATE_TIMEOUT)

            # The same worker process, its pool reconnected, carries on to the end.
            await asyncio.gather(*(run_steps(scene, h, steps[h.id]) for h in handles))
            for handle in handles:
                await asyncio.wait_for(handle.result(), UPDATE_TIMEOUT)
                await assert_everything_once(scene, handle)
            assert worker.running and len(scene.workers) == 1
            [retried, *_] = [a for a in failed_appends(worker.output()).values() if len(a) >= 3]
            (first, at_1), (second, at_2), (third, at_3) = retried[:3]
            assert (first, second, third) == (1, 2, 3)
            # Each gap is the retry interval (1 s, then 2 s) plus the next attempt: a busy
            # machine only makes it longer, so lower bounds hold however slow the run.
            assert at_2 - at_1 >= timedelta(seconds=0.9), "the first retry did not wait its interval (1 s)"
            assert at_3 - at_2 >= timedelta(seconds=1.8), "the retries did not back off (1 s, then 2 s)"
        await pool.close()
    finally:
        await asyncio.to_thread(postgres.stop, "fast")


# -- the SMTP server down for hours --------------------------------------------------------------


async def test_an_smtp_server_down_for_hours_makes_reminders_late_and_holds_nothing_up(
    time_skipping_env: WorkflowEnvironment, scene_on_temporal: SceneOn
) -> None:
    env = time_skipping_env  # hours in seconds: the worker process polls it like any server
    address = env.client.service_client.config.target_host
    async with scene_on_temporal(env.client, address) as scene:
        await scene.worker()
        # Reminders 6 hours ahead: the first meeting is a day after signing at the earliest,
        # so its reminders come due well after the mail server went down. Any time of day: not
        # held for the recipients' daytime (tests/notifications/test_daytime_delivery.py), whatever the clock.
        handle = await scene.start_relationship(
            meeting_reminder_lead_hours=6, agenda_request_lead_hours=6, delivery_window=None
        )
        steps = lifecycle()
        await run_steps(scene, handle, steps, count=6)
        state = await handle.query(Relationship.state)
        meeting = state.next_meeting if state else None
        assert meeting is not None
        await eventually(lambda: len(_emails(scene, "meeting_scheduled")) == 2, "the meeting invites")
        await scene.smtp.stop()

        # The reminders come due (6 hours before the meeting) while the mail server is down.
        await sleep_until(env, meeting.starts_at - timedelta(hours=5))
        store = PostgresEventStore(scene.pool, TEST_KEYRING)
        relationship_id = handle.id.rpartition("/")[2]

        async def reminded() -> bool:
            return any(e.type == "MeetingReminderIssued" for e in await store.read_stream(relationship_id))

        await until_true(reminded, "the reminder, stored on time")
        # Its messages: the webhook (the mentor's) went out on time; the emails fail, and are
        # retried with backoff.
        reminder_rows = """SELECT channel, status, attempts, delivered_at FROM notification_deliveries
                            WHERE template IN ('meeting_reminder', 'agenda_request')"""

        def emails_failing_webhook_delivered(rows: list[asyncpg.Record]) -> bool:
            by_channel = Counter((row["channel"], row["status"]) for row in rows)
            return set(by_channel) == {("email", "failed"), ("webhook", "delivered")}

        await until_true(
            lambda: _rows(scene.pool, reminder_rows, emails_failing_webhook_delivered), "the reminder's emails failing"
        )
        late = [row for row in await scene.pool.fetch(reminder_rows) if row["channel"] == "email"]
        assert not _emails(scene, "meeting_reminder") and not _emails(scene, "agenda_request")
        # Nothing else waits for the mail server: a command is applied at once.
        result = await scene.update(handle, "share_resource", cmd(MENTEE, title="Notes for our first meeting"))
        assert result["applied"]

        await sleep_until(env, meeting.starts_at - timedelta(hours=3))  # two hours later
        up_again = datetime.now(UTC)
        await scene.smtp.start()  # the same port, the same inbox
        await env.sleep(timedelta(minutes=11))  # the longest retry interval is 10 minutes

        async def delivered() -> list[asyncpg.Record]:
            rows = [row for row in await scene.pool.fetch(reminder_rows) if row["channel"] == "email"]
            return rows if {row["status"] for row in rows} == {"delivered"} else []

        rows = await until_true(delivered, "the late reminders")
        # Late: tried again and again while the server was down, delivered once it was back
        # (and exactly once: assert_everything_once below).
        assert len([row for row in rows if row["attempts"] >= 3 and row["delivered_at"] >= up_again]) == len(late)

        # The meeting is held and the relationship goes on to its end.
        await sleep_until(env, meeting.starts_at + timedelta(hours=1))
        next(steps)  # instead of the script's meeting, this one, held at its time
        held = cmd(MENTOR, held_at=meeting.starts_at.isoformat(), duration_minutes=60)
        assert (await scene.update(handle, "record_meeting", held))["applied"]
        await to_the_end(scene, handle, steps)


def _emails(scene: Scene, template: str) -> list[Any]:
    return [m for m in scene.smtp.inbox.messages if m.message["X-Mentorflow-Template"] == template]


async def _rows(pool: asyncpg.Pool, query: str, check: Any) -> bool:
    return bool(check(await pool.fetch(query)))
