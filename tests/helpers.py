"""Helpers shared by the workflow tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from events.notifications import Notification
from events.settings import ProgrammeSettings
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
    client: Client, worker: Worker, *, mentee_id: str = "mentee-1", **fields: Any
) -> WorkflowHandle[Relationship, Any]:
    relationship_id = f"rel-{uuid.uuid4().hex[:10]}"
    fields.setdefault("settings", ProgrammeSettings(coordinator_ids=("coord-1",)))
    relationship_input = RelationshipInput(
        relationship_id=relationship_id, programme_id="prog-1", mentee_id=mentee_id, **fields
    )
    return await client.start_workflow(
        Relationship.run,
        relationship_input,
        id=f"relationship/prog-1/{relationship_id}",
        task_queue=worker.task_queue,
        **relationship_start_options(relationship_input, started_by="a test"),
    )


async def history_event_types(handle: WorkflowHandle[Any, Any]) -> Sequence[int]:
    history = await handle.fetch_history()
    return [event.event_type for event in history.events]


async def failed_workflow_tasks(handle: WorkflowHandle[Any, Any]) -> int:
    return sum(1 for t in await history_event_types(handle) if t == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
