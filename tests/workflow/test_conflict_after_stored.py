"""A conflict with the store is resolved from the state the store holds.

Once everything a run decided is stored, the run keeps one state object as both its own and
the store's (`Outbox._flush`, issue #16: a second, equal copy per cached run cost memory).
These tests put events in the store behind the run's back, as the local activity of a
workflow task that was never completed does, and check that the run's next append
conflicts, adopts exactly those events on top of the state it had stored, and decides the
pending command again: had the shared object been the run's newer state, folding the
adopted events onto it would fail the workflow task (their versions would not follow)."""

from __future__ import annotations

from typing import Any

import asyncpg
from temporalio.testing import WorkflowEnvironment

from activities.event_store import PostgresEventStore
from events.commands import Command, ProposeAgreement, RecordIntroduction, read_command
from events.decider import decide, fold
from events.model import AnyEvent
from events.refusals import Rejection
from events.state import Phase
from events.store import StreamOwner
from tests.support.helpers import (
    AGREEMENT,
    activate,
    close,
    cmd,
    failed_workflow_tasks,
    matched,
    running_relationship,
    state_of,
)
from tests.support.session import TEST_KEYRING


async def _store_behind_the_runs_back(
    env: WorkflowEnvironment, pool: asyncpg.Pool, workflow_id: str, model: type[Command], payload: dict[str, Any]
) -> int:
    """Decide the command `payload` on the stored state and append its events as the run's
    stream owner would; the store's version afterwards."""
    command = read_command(model, payload)
    assert not isinstance(command, Rejection), command
    stored = await _stored(pool, workflow_id)
    state = fold(stored)
    assert state is not None
    events = decide(state, command, await env.get_current_time())
    assert not isinstance(events, Rejection) and events, events
    owner = StreamOwner(programme_id=state.programme_id, workflow_id=workflow_id)
    await PostgresEventStore(pool, TEST_KEYRING).append(state.relationship_id, len(stored), events, owner=owner)
    return len(stored) + len(events)


async def _stored(pool: asyncpg.Pool, workflow_id: str) -> list[AnyEvent]:
    return await PostgresEventStore(pool, TEST_KEYRING).read_stream(workflow_id.rpartition("/")[2])


async def test_a_command_already_stored_by_a_lost_task_is_adopted_not_repeated(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with running_relationship(time_skipping_env, pool) as handle:
        await matched(handle)
        payload = cmd("mentee-1", terms=AGREEMENT)
        version = await _store_behind_the_runs_back(time_skipping_env, pool, handle.id, ProposeAgreement, payload)

        # The run does not know those events: it decides the command itself, its append
        # conflicts, and it adopts the stored decision instead of storing a second one.
        result = await handle.execute_update("propose_agreement", payload)
        assert result["applied"] and result["phase"] == "agreement", result

        stored = await _stored(pool, handle.id)
        assert len(stored) == version, "the run stored the command a second time"
        assert sum(1 for event in stored if event.command_id == payload["command_id"]) == 1
        assert await state_of(handle) == fold(stored)

        # And it goes on from there.
        await handle.execute_update("sign_agreement", cmd("mentee-1", agreement_version=1))
        await handle.execute_update("sign_agreement", cmd("mentor-1", agreement_version=1))
        state = await state_of(handle)
        assert state.phase is Phase.ACTIVE and state == fold(await _stored(pool, handle.id))
        assert await failed_workflow_tasks(handle) == 0
        await close(handle)


async def test_another_command_is_decided_again_on_the_adopted_events(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with running_relationship(time_skipping_env, pool) as handle:
        await activate(handle)
        first = cmd("mentor-1", introduced_to="a staff engineer")
        version = await _store_behind_the_runs_back(time_skipping_env, pool, handle.id, RecordIntroduction, first)

        # A second introduction: decided on a state without the first, refused by the
        # store, decided again after the first is adopted.
        second = cmd("mentor-1", introduced_to="the platform lead")
        result = await handle.execute_update("record_introduction", second)
        assert result["applied"] and result["events"] == ["IntroductionRecorded"], result

        stored = await _stored(pool, handle.id)
        assert [(event.type, event.command_id) for event in stored[version - 1 :]] == [
            ("IntroductionRecorded", first["command_id"]),
            ("IntroductionRecorded", second["command_id"]),
        ]
        state = await state_of(handle)
        assert state == fold(stored) and state.introductions == 2
        assert await failed_workflow_tasks(handle) == 0
        await close(handle)
