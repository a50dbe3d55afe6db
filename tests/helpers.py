"""Helpers shared by the test modules (the place for them, rather than a test module that
others import): workers and relationships to drive, stored histories with confidential text,
matching profiles."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from events.commands import GoalAssessment
from events.decider import start_relationship as relationship_started
from events.model import AnyEvent, ConcernRaised, MeetingHeld, RelationshipClosed, ReviewSubmitted
from events.notifications import Notification
from events.settings import ProgrammeSettings
from pairing.profiles import MenteeProfile, MentorProfile
from worker import build_worker
from workflows.relationship import Relationship, RelationshipInput
from mentorflow.start_options import relationship_start_options


class RecordingChannel:
    """A notification channel that keeps what it was given, for assertions."""

    name = "recording"

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        self.sent.append(notification)

    def templates_for(self, recipient_id: str) -> list[str]:
        return [n.template for n in self.sent if n.recipient_id == recipient_id]

    async def wait_for(self, recipient_id: str, template: str, timeout: float = 10) -> None:
        """Notifications go out in the background, after the update that caused them returns."""
        deadline = asyncio.get_running_loop().time() + timeout
        while template not in self.templates_for(recipient_id):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{recipient_id} got no {template}: {self.templates_for(recipient_id)}")
            await asyncio.sleep(0.02)


def new_worker(
    client: Client, pool: asyncpg.Pool, channel: RecordingChannel | None = None, *, task_queue: str | None = None
) -> Worker:
    return build_worker(
        client, pool, task_queue or f"tq-{uuid.uuid4()}", channels=[channel or RecordingChannel()]
    )


async def start_relationship(
    client: Client,
    worker: Worker | str,
    *,
    mentee_id: str = "mentee-1",
    programme_id: str = "prog-1",
    relationship_id: str | None = None,
    **fields: Any,
) -> WorkflowHandle[Relationship, Any]:
    """A new relationship on the worker's task queue (or the task queue named), with its own
    settings unless `settings=None` is given (then it reads its programme's)."""
    relationship_id = relationship_id or f"rel-{uuid.uuid4().hex[:10]}"
    fields.setdefault("settings", ProgrammeSettings(coordinator_ids=("coord-1",)))
    relationship_input = RelationshipInput(
        relationship_id=relationship_id, programme_id=programme_id, mentee_id=mentee_id, **fields
    )
    return await client.start_workflow(
        Relationship.run,
        relationship_input,
        id=f"relationship/{programme_id}/{relationship_id}",
        task_queue=worker if isinstance(worker, str) else worker.task_queue,
        **relationship_start_options(relationship_input, started_by="a test"),
    )


@asynccontextmanager
async def running_relationship(
    env: WorkflowEnvironment, pool: asyncpg.Pool, **fields: Any
) -> AsyncIterator[WorkflowHandle[Relationship, Any]]:
    """A relationship (`start_relationship`) on a new worker, which runs while the block does."""
    async with new_worker(env.client, pool) as worker:
        yield await start_relationship(env.client, worker, **fields)


def cmd(actor: str, command_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A command's payload from `actor`, with a fresh command id unless one is given."""
    return {"command_id": command_id or f"cmd-{uuid.uuid4().hex[:12]}", "actor_id": actor, **fields}


async def matched(handle: WorkflowHandle[Any, Any], mentor: str = "mentor-1", mentee: str = "mentee-1") -> None:
    """coord-1 proposes `mentor` and both accept (by update): the relationship moves on to its agreement."""
    await handle.execute_update("propose_match", cmd("coord-1", mentor_id=mentor))
    await handle.execute_update("accept_match", cmd(mentee))
    await handle.execute_update("accept_match", cmd(mentor))


async def history_event_types(handle: WorkflowHandle[Any, Any]) -> Sequence[int]:
    history = await handle.fetch_history()
    return [event.event_type for event in history.events]


async def failed_workflow_tasks(handle: WorkflowHandle[Any, Any]) -> int:
    return sum(1 for t in await history_event_types(handle) if t == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)


async def what_temporal_has(client: Client, workflow_id: str, run_id: str) -> list[str]:
    """What Temporal still answers for a run: its description, its history (nothing once deleted)."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    found = []
    for what, ask in (("description", handle.describe), ("history", handle.fetch_history)):
        try:
            await ask()
            found.append(what)
        except RPCError as error:
            assert error.status == RPCStatusCode.NOT_FOUND, error
    return found


# -- stored histories with confidential text (the store's encryption, forgetting, owners) ----

HISTORY_START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def envelope(stream_id: str, version: int) -> dict[str, Any]:
    """An event's envelope fields: `version` hours after HISTORY_START, command id c-VERSION."""
    return {"stream_id": stream_id, "version": version, "event_id": str(uuid.uuid4()),
            "occurred_at": HISTORY_START + timedelta(hours=version), "command_id": f"c-{version}"}  # fmt: skip


def confidential_history(stream_id: str, text: str) -> list[AnyEvent]:
    """A relationship of prog-1 started, a meeting with notes, a concern and a review with nested
    comments: `text` in each confidential field."""
    now = HISTORY_START
    events: list[AnyEvent] = relationship_started(stream_id, "prog-1", "mentee-1", ProgrammeSettings(), now)
    version = len(events)
    events.append(MeetingHeld(**envelope(stream_id, version + 1), meeting_number=1, held_at=now,
                              duration_minutes=45, recorded_by="mentor-1", notes=f"notes: {text}"))  # fmt: skip
    events.append(ConcernRaised(**envelope(stream_id, version + 2), concern_id="c-9", party="mentee",
                                raised_by="mentee-1", text=f"concern: {text}"))  # fmt: skip
    events.append(ReviewSubmitted(**envelope(stream_id, version + 3), kind="midpoint", party="mentee",
                                  outcome="continue", comment=f"review: {text}", goal_assessments=(
                                      GoalAssessment(goal_id="g1", progress_percent=40, comment=f"goal: {text}"),
                                      GoalAssessment(goal_id="g2", progress_percent=90),
                                  )))  # fmt: skip
    return events


def closed_by_mentee(stream_id: str, version: int) -> RelationshipClosed:
    """The closing event of a `confidential_history` (at `version`)."""
    now = HISTORY_START
    return RelationshipClosed.model_validate(
        {**envelope(stream_id, version), "reason": "closed_by_mentee", "closed_by": "mentee-1",
         "summary": {"relationship_id": stream_id, "programme_id": "prog-1", "mentee_id": "mentee-1",
                     "mentor_id": "mentor-1", "closure_reason": "closed_by_mentee", "started_at": now,
                     "activated_at": now, "closed_at": now, "duration_days": 0, "meetings_held": 1,
                     "meetings_missed": 0, "meetings_cancelled": 0, "late_cancellations": 0,
                     "meeting_minutes_total": 45, "goals_total": 2, "goals_achieved": 0, "goal_progress": {},
                     "feedback_trend": [], "concerns_raised": 1, "reviews_completed": [], "extensions": 0,
                     "reflections_from": []}})  # fmt: skip


# -- matching profiles (a relationship's mentor pool, mentor load) -------------------------


def mentor_profile(participant_id: str, capacity: int = 1, level: int = 5) -> MentorProfile:
    """A mentor of python and sql at `level`, in English, for `capacity` mentees."""
    return MentorProfile.model_validate(
        {"participant_id": participant_id, "capacity": capacity, "languages": ["en"],
         "strengths": [{"topic": "python", "level": level}, {"topic": "sql", "level": level}]}
    )  # fmt: skip


def mentee_profile(participant_id: str) -> MenteeProfile:
    """A mentee who wants python and sql, in English."""
    return MenteeProfile.model_validate(
        {"participant_id": participant_id, "languages": ["en"], "goals": [{"topic": "python"}, {"topic": "sql"}]}
    )


async def mentor_slots(pool: asyncpg.Pool, programme_id: str = "prog-1") -> dict[str, str]:
    """Each relationship of the programme that holds a mentor's slot, and that mentor."""
    rows = await pool.fetch("SELECT relationship_id, mentor_id FROM mentor_slots WHERE programme_id = $1", programme_id)
    return {row["relationship_id"]: row["mentor_id"] for row in rows}


async def stored_notifications_delivered(
    channel: RecordingChannel, pool: asyncpg.Pool, relationship_id: str, *, timeout: float = 60
) -> list[Notification]:
    """Wait until `channel` has got every notification the relationship's stored events call
    for (deliveries go out in the background, after the events are stored), and return
    those. A count taken afterwards has no delivery in flight behind it."""
    from activities.event_store import PostgresEventStore
    from events.decider import evolve
    from events.notifications import notifications_for
    from events.state import RelationshipState

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        state: RelationshipState | None = None
        wanted: list[Notification] = []
        for event in await PostgresEventStore(pool).read_stream(relationship_id):
            before, state = state, evolve(state, event)
            wanted.extend(notifications_for(event, state, before))
        missing = {n.notification_id for n in wanted} - {n.notification_id for n in channel.sent}
        if not missing:
            return wanted
        if loop.time() > deadline:
            raise AssertionError(f"not delivered within {timeout:g} s: {sorted(n.template for n in wanted if n.notification_id in missing)}")
        await asyncio.sleep(0.05)
