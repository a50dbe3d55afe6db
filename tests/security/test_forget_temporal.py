"""Security issue #12: `forget` also deletes the relationship's workflow from Temporal — every
run of its workflow id, the continue-as-new chain included — on a real Temporal dev server.

Before, the closed relationship's history kept every command and the state, encrypted with
MENTORFLOW_ENCRYPTION_KEYS (a key that is never deleted), until the namespace's retention.
Now forget deletes each run, waits until Temporal answers "not found" for its description
and its history, and only then deletes the data key; the event store, the projections and the
reports stay as they were. The dev server here runs with a 1 s transfer-queue ack interval
(30 s by default), so that deleting a just-closed run takes seconds, not half a minute.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.data_keys import FORGOTTEN
from activities.event_store import PostgresEventStore
from activities.projections import ProjectionFollower
from mentorflow.forgetting import ForgetRefused, TemporalRuns, forget_relationship
from mentorflow.reports import load_programme_report
from tests.support.session import TEST_KEYRING, start_dev_server
from tests.support.helpers import (
    AGREEMENT,
    closed_by_mentee,
    cmd,
    confidential_history,
    failed_workflow_tasks,
    new_worker,
    start_relationship,
    state_of,
    what_temporal_has,
)
from tests.support.owners import owner
from tests.support.runs import every_run

SECRET = f"FORGET{uuid.uuid4().hex}"
# Deleting a closed run waits until the server's transfer queue has acknowledged its close.
FAST_DELETION = ["--dynamic-config-value", 'history.transferProcessorUpdateAckInterval="1s"']


@pytest.fixture(scope="module")
async def env(temporal_binary: str) -> AsyncIterator[WorkflowEnvironment]:
    environment = await start_dev_server(temporal_binary, ui=False, dev_server_extra_args=FAST_DELETION)
    yield environment
    await environment.shutdown()


def without_codec(env: WorkflowEnvironment) -> Client:
    """forget needs no keys: it never decodes a payload."""
    return Client(env.client.service_client, namespace=env.client.namespace)


async def run_ids(client: Client, workflow_id: str) -> list[str]:
    """The latest run and every run it continued as new from, newest first."""
    return [run_id for run_id, _ in await every_run(client, workflow_id)]


async def listed(client: Client, workflow_id: str) -> list[str]:
    return [run.run_id async for run in client.list_workflows(f"WorkflowId = '{workflow_id}'")]


async def grow_past_the_limit(handle: WorkflowHandle[Any, Any], limit: int) -> None:
    while (await handle.describe()).raw_description.workflow_execution_info.history_length <= limit:
        shared = await handle.execute_update("share_resource", cmd("mentor-1", title=f"{SECRET} reading"))
        assert shared["applied"] is True


async def not_paused(handle: WorkflowHandle[Any, Any]) -> None:
    """A new run resumes at once (the pause's end has passed) as it catches up."""
    for _ in range(100):
        if (await state_of(handle)).paused_until is None:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("still paused")


async def continue_as_new(client: Client, handle: WorkflowHandle[Any, Any], limit: int) -> None:
    """A short pause: its end is a timer, and a timer that fires past the limit switches runs."""
    latest = client.get_workflow_handle(handle.id)
    before = (await latest.describe()).run_id
    await not_paused(latest)
    await grow_past_the_limit(latest, limit)
    until = datetime.now(UTC) + timedelta(seconds=2)
    paused = await client.get_workflow_handle(handle.id).execute_update(
        "pause_relationship", cmd("mentee-1", until=until.isoformat(), reason=f"{SECRET} pause")
    )
    assert paused["applied"] is True
    for _ in range(300):
        if (await client.get_workflow_handle(handle.id).describe()).run_id != before:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the relationship did not continue as new")


async def report_of(pool: asyncpg.Pool) -> Any:
    await ProjectionFollower(pool).catch_up()
    return await load_programme_report(pool, "prog-1")


async def test_forget_deletes_every_run_of_the_chain_and_changes_nothing_else(
    env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    client, limit = env.client, 100
    async with new_worker(client, pool) as worker:
        handle = await start_relationship(client, worker, history_event_limit=limit)
        relationship_id = handle.id.rsplit("/", 1)[-1]
        for actor, name, fields in (
            ("coord-1", "propose_match", {"mentor_id": "mentor-1", "explanation": f"{SECRET} why"}),
            ("mentee-1", "accept_match", {}), ("mentor-1", "accept_match", {}),
            ("mentee-1", "propose_agreement", {"terms": AGREEMENT}),
            ("mentee-1", "sign_agreement", {"agreement_version": 1}),
            ("mentor-1", "sign_agreement", {"agreement_version": 1}),
        ):  # fmt: skip
            assert (await handle.execute_update(name, cmd(actor, **fields)))["applied"] is True
        await continue_as_new(client, handle, limit)
        await continue_as_new(client, handle, limit)
        latest = client.get_workflow_handle(handle.id)
        await not_paused(latest)
        await latest.execute_update("close_relationship", cmd("mentee-1", note=f"{SECRET} closing"))
        await latest.execute_update("submit_reflection", cmd("mentee-1", text=f"{SECRET} mentee reflection"))
        await latest.execute_update("submit_reflection", cmd("mentor-1", text=f"{SECRET} mentor reflection"))
        await latest.result()
        runs = await run_ids(client, handle.id)
        assert len(runs) == 3
        for run_id in runs:
            assert await failed_workflow_tasks(client.get_workflow_handle(handle.id, run_id=run_id)) == 0
            assert await what_temporal_has(client, handle.id, run_id) == ["description", "history"]

    store = PostgresEventStore(pool, TEST_KEYRING)
    before = await store.read_stream(relationship_id)
    assert SECRET in json.dumps([e.model_dump(mode="json") for e in before])
    report = await report_of(pool)
    assert report is not None and report.relationships == 1

    temporal = TemporalRuns(without_codec(env), wait=60, poll_interval=0.1)
    done = await forget_relationship(pool, relationship_id, forgotten_by="ops-7", temporal=temporal)
    assert (done.now, done.workflow_runs_deleted, done.workflow_id) == (True, 3, handle.id)
    for run_id in runs:
        assert await what_temporal_has(client, handle.id, run_id) == [], run_id
    for _ in range(100):  # the listing (visibility) follows a moment behind
        if not await listed(client, handle.id):
            break
        await asyncio.sleep(0.1)
    assert await listed(client, handle.id) == []

    # The event store: the text forgotten, everything else as it was; the report unchanged.
    after = await store.read_stream(relationship_id)
    assert SECRET not in json.dumps([e.model_dump(mode="json") for e in after]) and FORGOTTEN in json.dumps(
        [e.model_dump(mode="json") for e in after]
    )
    assert [(e.type, e.version, e.occurred_at) for e in after] == [(e.type, e.version, e.occurred_at) for e in before]
    assert await report_of(pool) == report
    await ProjectionFollower(pool).rebuild()
    assert await load_programme_report(pool, "prog-1") == report

    # Again: nothing left to delete, nothing changed.
    again = await forget_relationship(pool, handle.id, forgotten_by="ops-8", temporal=temporal)
    assert (again.now, again.workflow_runs_deleted, again.forgotten_by) == (False, 0, "ops-7")


async def test_forget_refuses_a_running_workflow_and_deletes_a_terminated_one(
    env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    client = env.client
    temporal = TemporalRuns(without_codec(env), wait=60, poll_interval=0.1)
    async with new_worker(client, pool) as worker:
        handle = await start_relationship(client, worker)
        relationship_id = handle.id.rsplit("/", 1)[-1]
        await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1", explanation=f"{SECRET} why"))
        with pytest.raises(ForgetRefused, match="still running"):
            await forget_relationship(pool, relationship_id, forgotten_by="ops-7", temporal=temporal)
        assert await what_temporal_has(client, handle.id, (await handle.describe()).run_id) == ["description", "history"]
        assert await pool.fetchval("SELECT forgotten_at FROM data_keys WHERE stream_id = $1", relationship_id) is None
        await handle.terminate("the programme was cancelled")
    run_id = (await handle.describe()).run_id
    done = await forget_relationship(pool, handle.id, forgotten_by="ops-7", temporal=temporal)
    assert (done.now, done.workflow_runs_deleted) == (True, 1)
    assert await what_temporal_has(client, handle.id, run_id) == []


async def test_a_relationship_forgotten_before_has_its_runs_deleted_by_the_next_forget(
    env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    """Forgotten with the event store alone (as before this change): the history stayed."""
    client = env.client
    async with new_worker(client, pool) as worker:
        handle = await start_relationship(client, worker)
        relationship_id = handle.id.rsplit("/", 1)[-1]
        await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1", explanation=f"{SECRET} why"))
        await handle.terminate("done")

    async def never_running(programme_id: str, relationship_id: str) -> bool:
        return False

    earlier = await forget_relationship(pool, relationship_id, forgotten_by="ops-1", still_running=never_running)
    assert (earlier.now, earlier.workflow_runs_deleted, earlier.workflow_id) == (True, None, None)
    run_id = (await handle.describe()).run_id
    temporal = TemporalRuns(without_codec(env), wait=60, poll_interval=0.1)
    again = await forget_relationship(pool, relationship_id, forgotten_by="ops-2", temporal=temporal)
    assert (again.now, again.workflow_runs_deleted, again.forgotten_by) == (False, 1, "ops-1")
    assert await what_temporal_has(client, handle.id, run_id) == []


# -- what forget does when Temporal is slow, fails or still runs the workflow (no server) -----


class StubRuns(TemporalRuns):
    """Temporal as forget sees it, scripted: `running` answers still_running in turn (then
    False); `failure` is raised by delete_all. Connecting is an error: nothing here needs it."""

    def __init__(self, running: list[bool] | None = None, failure: BaseException | None = None) -> None:
        super().__init__(self._must_not_connect, wait=0.3, poll_interval=0.01)
        self.running = list(running or [])
        self.failure = failure
        self.asked = 0
        self.deleted: list[str] = []

    async def _must_not_connect(self) -> Client:
        raise AssertionError("connected to Temporal")

    async def still_running(self, workflow_id: str) -> bool:
        self.asked += 1
        return self.running.pop(0) if self.running else False

    async def delete_all(self, workflow_id: str) -> int:
        if self.failure is not None:
            raise self.failure
        self.deleted.append(workflow_id)
        return 2


async def stored(pool: asyncpg.Pool, stream_id: str, *, closed: bool) -> None:
    events = confidential_history(stream_id, SECRET)
    if closed:
        events.append(closed_by_mentee(stream_id, len(events) + 1))
    await PostgresEventStore(pool, TEST_KEYRING).append(stream_id, 0, events, owner=owner(stream_id))


async def key_forgotten(pool: asyncpg.Pool, stream_id: str) -> bool:
    return bool(await pool.fetchval("SELECT forgotten_at IS NOT NULL FROM data_keys WHERE stream_id = $1", stream_id))


async def test_an_unknown_relationship_is_refused_without_asking_temporal(pool: asyncpg.Pool) -> None:
    temporal = StubRuns()
    with pytest.raises(ForgetRefused, match="no relationship 'rel-404'"):
        await forget_relationship(pool, "rel-404", forgotten_by="ops-1", temporal=temporal)
    assert temporal.asked == 0
    with pytest.raises(TypeError, match="temporal"):
        await forget_relationship(pool, "rel-404", forgotten_by="ops-1")


async def test_a_closed_relationship_whose_workflow_is_still_finishing_is_waited_for(pool: asyncpg.Pool) -> None:
    await stored(pool, "rel-1", closed=True)
    temporal = StubRuns(running=[True, True, False])
    done = await forget_relationship(pool, "rel-1", forgotten_by="ops-1", temporal=temporal)
    assert (done.now, done.workflow_runs_deleted, temporal.deleted) == (True, 2, ["relationship/prog-1/rel-1"])

    await stored(pool, "rel-2", closed=True)
    stuck = StubRuns(running=[True] * 1000)
    with pytest.raises(ForgetRefused, match="is closed, but its workflow .* has not ended within 0.3 s") as refused:
        await forget_relationship(pool, "rel-2", forgotten_by="ops-1", temporal=stuck)
    assert "the data key is kept" in str(refused.value)
    assert stuck.asked > 2 and stuck.deleted == [] and not await key_forgotten(pool, "rel-2")


async def test_an_open_relationship_that_runs_is_refused_at_once(pool: asyncpg.Pool) -> None:
    await stored(pool, "rel-1", closed=False)
    temporal = StubRuns(running=[True, True])
    with pytest.raises(ForgetRefused, match="still running"):
        await forget_relationship(pool, "relationship/prog-1/rel-1", forgotten_by="ops-1", temporal=temporal)
    assert (temporal.asked, temporal.deleted) == (1, [])
    assert not await key_forgotten(pool, "rel-1")


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (TimeoutError("Temporal has not finished deleting 1 of the 3 runs"), "not finished deleting 1 of the 3 runs"),
        (RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b""), "cannot delete the workflow runs of rel-1"),
    ],
    ids=["slow", "unavailable"],
)
async def test_when_temporal_cannot_delete_the_runs_the_key_is_kept(
    pool: asyncpg.Pool, failure: BaseException, message: str
) -> None:
    await stored(pool, "rel-1", closed=True)
    with pytest.raises(ForgetRefused, match=message) as refused:
        await forget_relationship(pool, "rel-1", forgotten_by="ops-1", temporal=StubRuns(failure=failure))
    assert "the data key is kept: run forget again" in str(refused.value)
    assert not await key_forgotten(pool, "rel-1")
    # Run again once Temporal has done it: forgotten now.
    done = await forget_relationship(pool, "rel-1", forgotten_by="ops-1", temporal=StubRuns())
    assert done.now and await key_forgotten(pool, "rel-1")
    # Forgotten before, runs left: the same refusal says the key is already gone.
    with pytest.raises(ForgetRefused, match="its data key was deleted before: run forget again"):
        await forget_relationship(pool, "rel-1", forgotten_by="ops-1", temporal=StubRuns(failure=failure))
