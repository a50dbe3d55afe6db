"""Security issue #12: payloads sent unencrypted (a plain-JSON client's) are refused by the
workers, on a real Temporal dev server, unless MENTORFLOW_REFUSE_PLAIN_PAYLOADS is off.

With the setting on (the default of `mentorflow worker`), the workers' codec hands the
workflow `{"$plain_payload_refused": true}` in place of each plain payload: a plain signal is
recorded as rejected, a plain update is refused (and so never enters the history), a plain
start fails at once with `invalid_payload` — none of them a failed workflow task — and
nothing of what they carried reaches the event store. Encrypted commands work as always.
With it off (`mentorflow dev`), plain payloads work as they did before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import timedelta
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from events.refusals import RefusalCode
from events.settings import ProgrammeSettings
from events.state import RelationshipState
from mentorflow.codec import EncryptionCodec, plain_payload_events
from mentorflow.config import Settings
from tests.support.session import DATA_CONVERTER, TEST_KEYRING
from tests.support.helpers import RecordingChannel, cmd, failed_workflow_tasks, start_relationship, state_of
from worker import build_worker
from workflows.relationship import Relationship, RelationshipInput

SECRET = f"PLAIN{uuid.uuid4().hex}"
UNENCRYPTED = "arrived unencrypted"


class SendsPlain(EncryptionCodec):
    """A client that sends plain JSON (as one without the keys does) but, for the test's
    sake, reads the workers' encrypted answers and refusals."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


def plain_client(env: WorkflowEnvironment) -> Client:
    converter = dataclasses.replace(DATA_CONVERTER, payload_codec=SendsPlain(TEST_KEYRING))
    return Client(env.client.service_client, namespace=env.client.namespace, data_converter=converter)


def worker_settings(refuse: bool | None) -> Settings:
    """The test suite's settings; None: the default, as `mentorflow worker` runs."""
    return Settings.from_env().model_copy(update={"refuse_plain_payloads": refuse})


async def rejected(handle: WorkflowHandle[Any, Any], count: int) -> RelationshipState:
    for _ in range(200):
        state = await state_of(handle)
        if len(state.rejected_commands) >= count:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {count} rejected commands: {state.rejected_commands}")


async def stored_text(pool: asyncpg.Pool) -> str:
    rows = await pool.fetch("SELECT payload::text FROM events")
    return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize("refuse", [None, True], ids=["default", "on"])
async def test_plain_commands_are_refused_and_encrypted_ones_work(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool, refuse: bool | None
) -> None:
    client, plain = dev_env.client, plain_client(dev_env)
    worker = build_worker(client, pool, f"tq-{uuid.uuid4()}", channels=[RecordingChannel()], settings=worker_settings(refuse))
    async with worker:
        handle = await start_relationship(client, worker)
        by_plain = plain.get_workflow_handle(handle.id)
        proposed = await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
        assert proposed["applied"] is True

        # A plain signal: recorded as rejected (invalid_payload), the relationship goes on.
        await by_plain.signal("accept_match", cmd("mentee-1"))
        state = await rejected(handle, 1)
        [refusal] = state.rejected_commands
        assert (refusal.command_name, refusal.code) == ("accept_match", RefusalCode.INVALID_PAYLOAD)
        assert UNENCRYPTED in refusal.reason and [p.field for p in refusal.problems] == ["payload"]
        assert state.candidate is not None and state.candidate.accepted_by == ()

        # A plain update: refused before it enters the history.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await by_plain.execute_update("accept_match", cmd("mentee-1"))
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == RefusalCode.INVALID_PAYLOAD.value
        assert UNENCRYPTED in cause.message and cause.non_retryable

        # A concern sent in plain: nothing of it reaches the event store.
        await by_plain.signal("raise_concern", cmd("mentee-1", text=SECRET))
        await rejected(handle, 2)

        # Encrypted, the same commands work.
        await handle.signal("accept_match", cmd("mentee-1"))
        accepted = await handle.execute_update("accept_match", cmd("mentor-1"))
        assert accepted["applied"] is True and accepted["phase"] == "agreement"
        state = await state_of(handle)
        assert len(state.rejected_commands) == 2 and state.mentor_id == "mentor-1"

        # A plain start: the workflow fails at once with invalid_payload, no task fails.
        started = await plain.start_workflow(
            Relationship.run,
            RelationshipInput(relationship_id="r-plain", programme_id="prog-1", mentee_id="mentee-1",
                              settings=ProgrammeSettings(coordinator_ids=("coord-1",))),
            id="relationship/prog-1/r-plain", task_queue=worker.task_queue,
        )  # fmt: skip
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(started.result(), timeout=30)
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == RefusalCode.INVALID_PAYLOAD.value
        assert UNENCRYPTED in cause.message
        assert await failed_workflow_tasks(started) == 0
        assert await failed_workflow_tasks(handle) == 0
        # In the history: the plain signals and start as sent; the refused update is not.
        events = (await handle.fetch_history()).events
        assert [what for _, what in plain_payload_events(events)] == ["signal accept_match", "signal raise_concern"]
        assert [what for _, what in plain_payload_events((await started.fetch_history()).events)] == ["start input"]
        await handle.terminate("done")
    text = await stored_text(pool)
    assert SECRET not in text and "mentee_id" in text
    assert not await pool.fetchval("SELECT count(*) FROM events WHERE stream_id = 'r-plain'")


async def test_with_the_setting_off_plain_commands_work_as_before(dev_env: WorkflowEnvironment, pool: asyncpg.Pool) -> None:
    plain = plain_client(dev_env)
    worker = build_worker(dev_env.client, pool, f"tq-{uuid.uuid4()}", channels=[RecordingChannel()],
                          settings=worker_settings(False))  # fmt: skip
    async with worker:
        handle = await start_relationship(plain, worker)
        proposed = await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
        assert proposed["applied"] is True
        await handle.signal("accept_match", cmd("mentee-1"))
        accepted = await handle.execute_update("accept_match", cmd("mentor-1"))
        assert accepted["applied"] is True and accepted["phase"] == "agreement"
        state = await state_of(handle)
        assert state.rejected_commands == () and state.mentor_id == "mentor-1"
        assert await failed_workflow_tasks(handle) == 0
        events = (await handle.fetch_history()).events
        assert [what for _, what in plain_payload_events(events)] == [
            "start input", "update propose_match", "signal accept_match", "update accept_match"
        ]
        await handle.terminate("done")


async def test_a_refusing_worker_runs_under_the_time_skipping_server_too(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    """The worker polls with a client of its own (the same connection, the refusing codec):
    timers, updates and time skipping work through it as through the one it was given."""
    env = time_skipping_env
    worker = build_worker(env.client, pool, f"tq-{uuid.uuid4()}", channels=[RecordingChannel()], settings=worker_settings(None))
    async with worker:
        handle = await start_relationship(env.client, worker)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await plain_client(env).get_workflow_handle(handle.id).execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
        assert UNENCRYPTED in str(refused.value.cause)
        assert (await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1")))["applied"] is True
        await env.sleep(timedelta(days=8))  # the proposal expires unanswered after 7 days
        state = await state_of(handle)
        assert state.candidate is None and state.rejected_commands == ()
        assert await failed_workflow_tasks(handle) == 0
        await handle.terminate("done")


async def test_turning_refusal_on_keeps_what_a_running_relationship_already_accepted(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    """A worker decodes a run's whole history again after a restart: a plain payload accepted
    before refusing began must replay as accepted (the refusal is a patched path)."""
    client, plain = dev_env.client, plain_client(dev_env)
    task_queue = f"tq-{uuid.uuid4()}"
    async with build_worker(client, pool, task_queue, settings=worker_settings(False)):
        handle = await start_relationship(client, type("W", (), {"task_queue": task_queue})())  # type: ignore[arg-type]
        await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
        await plain.get_workflow_handle(handle.id).signal("accept_match", cmd("mentee-1"))
        for _ in range(100):
            if (await state_of(handle)).candidate.accepted_by:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.05)
        before = await state_of(handle)
        assert before.candidate is not None and before.candidate.accepted_by == ("mentee",)
    # A new worker that refuses, with no cache: it replays the history from the start.
    refusing = build_worker(client, pool, task_queue, settings=worker_settings(True))
    async with refusing:
        after = await state_of(handle)
        assert after == before, "replay under refusal changed what the run had accepted"
        # A patch decides once per run (the SDK memoizes it): this run accepted plain payloads,
        # so it goes on accepting them until it continues as new. A new run refuses them.
        await plain.get_workflow_handle(handle.id).signal("accept_match", cmd("mentor-1"))
        for _ in range(100):
            if (await state_of(handle)).phase.value == "agreement":
                break
            await asyncio.sleep(0.05)
        assert (await state_of(handle)).phase.value == "agreement"
        fresh = await start_relationship(client, type("W", (), {"task_queue": task_queue})())  # type: ignore[arg-type]
        await fresh.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
        await plain.get_workflow_handle(fresh.id).signal("accept_match", cmd("mentee-1"))
        state = await rejected(fresh, 1)
        assert UNENCRYPTED in state.rejected_commands[-1].reason
        assert await failed_workflow_tasks(handle) == 0 and await failed_workflow_tasks(fresh) == 0
