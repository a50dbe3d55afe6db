"""`mentorflow forget`: make a relationship's confidential text unreadable for good.

Deletes the relationship's data key (activities/data_keys.py) and keeps a tombstone row
saying when and on whose request: every note, concern, comment and reflection of that
relationship, its agreement and goals, match explanations, introductions and resources, then
read as "[forgotten]", while everything else — ids, dates, scores, counts, the phase history,
the reports — stays as it was. Confidential text stored in plain (before migration 0007, or
under the classification before security issue #12 and not re-encrypted since by
mentorflow/reencrypt.py) is overwritten with "[forgotten]" in the same transaction.

Before the key, every run of the relationship's workflow (`relationship/PROGRAMME/ID`, the
whole continue-as-new chain and any earlier run of that id) is deleted from Temporal, whose
histories hold the same text encrypted with MENTORFLOW_ENCRYPTION_KEYS, a key that is never
deleted (`TemporalRuns`). Temporal deletes asynchronously: forget waits, within a bound, until
it no longer finds them, and only then deletes the key, so a tombstone means both are done.

Only a relationship that has ended may be forgotten. A running one still holds its text in
its Temporal workflow (state, history) and would go on writing new text; close it first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import asyncpg
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, WorkflowExecutionStatus
from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.api.workflowservice.v1 import (
    DeleteWorkflowExecutionRequest,
    DescribeWorkflowExecutionRequest,
    GetWorkflowExecutionHistoryRequest,
    GetWorkflowExecutionHistoryResponse,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.data_keys import ENCRYPTED, seal_payload
from events.model import CONFIDENTIAL_PATHS
from mentorflow.start_options import relationship_id_of, relationship_workflow_id

log = logging.getLogger("mentorflow.forget")

T = TypeVar("T")

# Who asked: an operator or system id, like the actor ids of commands (never free text).
_REQUESTER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


class ForgetRefused(Exception):
    """The relationship cannot be forgotten (unknown, still running, bad requester id)."""


@dataclass(frozen=True)
class Forgotten:
    relationship_id: str
    programme_id: str | None
    forgotten_at: datetime
    forgotten_by: str
    # False when it had been forgotten before (nothing changed this time).
    now: bool
    events: int
    # Encrypted values that can no longer be read; events whose text had been stored in
    # plain (before migration 0007) and was overwritten.
    sealed_values: int
    scrubbed_events: int
    # The runs of its workflow deleted from Temporal this time (also when it had been
    # forgotten before: runs left from then); None when Temporal was not asked (store only).
    workflow_runs_deleted: int | None = None
    workflow_id: str | None = None


StillRunning = Callable[[str, str], Awaitable[bool]]


class TemporalRuns:
    """A relationship's workflow runs in Temporal: whether the latest still runs, and deleting
    every run of the workflow id.

    `client`: a Temporal client, or a function that connects one (called once, on first use,
    so that a refusal that needs no Temporal does not connect). No payload is decoded: the
    client needs no keys. `wait`: how long, at most, to wait for the server to finish
    deleting (it does so asynchronously: a run closed in the last half minute waits for the
    server's transfer queue, history.transferProcessorUpdateAckInterval, 30 s by default),
    and for a workflow that the event store shows closed to end."""

    def __init__(
        self, client: Client | Callable[[], Awaitable[Client]], *, wait: float = 120, poll_interval: float = 0.5
    ) -> None:
        self._client_or_connect = client
        self._client: Client | None = client if isinstance(client, Client) else None
        self.wait = wait
        self.poll_interval = poll_interval

    async def client(self) -> Client:
        if self._client is None:
            assert not isinstance(self._client_or_connect, Client)
            self._client = await self._client_or_connect()
        return self._client

    async def _info(self, workflow_id: str, run_id: str = "") -> WorkflowExecutionInfo | None:
        """The run's description (the latest run's without a run id); None when Temporal has no such run."""
        client = await self.client()
        execution = WorkflowExecution(workflow_id=workflow_id, run_id=run_id)
        described = await _unless_not_found(
            client.workflow_service.describe_workflow_execution(
                DescribeWorkflowExecutionRequest(namespace=client.namespace, execution=execution)
            )
        )
        return described.workflow_execution_info if described is not None else None

    async def _first_page(self, workflow_id: str, run_id: str) -> GetWorkflowExecutionHistoryResponse | None:
        """The first page (one event) of the run's history; None when Temporal has no such history."""
        client = await self.client()
        execution = WorkflowExecution(workflow_id=workflow_id, run_id=run_id)
        return await _unless_not_found(
            client.workflow_service.get_workflow_execution_history(
                GetWorkflowExecutionHistoryRequest(namespace=client.namespace, execution=execution, maximum_page_size=1)
            )
        )

    async def still_running(self, workflow_id: str) -> bool:
        info = await self._info(workflow_id)
        return info is not None and info.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING

    async def wait_until_ended(self, workflow_id: str) -> bool:
        """Whether the workflow's latest run has ended (or is gone), waiting up to `wait` seconds."""
        deadline = asyncio.get_running_loop().time() + self.wait
        while await self.still_running(workflow_id):
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(self.poll_interval)
        return True

    async def run_ids(self, workflow_id: str) -> set[str]:
        """Every run of the workflow id Temporal still has: those its visibility lists, and the
        continue-as-new chain walked back from the latest run through each run's first event
        (visibility follows the history a moment behind; the chain does not)."""
        client = await self.client()
        if "'" in workflow_id or "\\" in workflow_id:  # ids never have them; the query could not quote them
            raise ForgetRefused(f"not a relationship workflow id: {workflow_id!r}")
        found = {run.run_id async for run in client.list_workflows(f"WorkflowId = '{workflow_id}'") if run.run_id}
        latest = await self._info(workflow_id)
        run_id = latest.execution.run_id if latest is not None else None
        while run_id and run_id not in found:
            found.add(run_id)
            run_id = await self._continued_from(workflow_id, run_id)
        return found

    async def _continued_from(self, workflow_id: str, run_id: str) -> str | None:
        """The run that `run_id` continued as new from, if Temporal still has its history."""
        page = await self._first_page(workflow_id, run_id)
        for event in page.history.events if page is not None else ():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                return event.workflow_execution_started_event_attributes.continued_execution_run_id or None
        return None

    async def delete_all(self, workflow_id: str) -> int:
        """Delete every run of the workflow id and wait until Temporal has none of them any more
        (its description and its history both answer "not found"); returns how many runs were
        deleted. TimeoutError after `wait` seconds, saying how many are left."""
        client = await self.client()
        deadline = asyncio.get_running_loop().time() + self.wait
        deleted = 0
        waiting: set[str] = set()  # asked to delete, not yet gone
        gone: set[str] = set()  # a listing that lags behind may still show these
        while True:
            for run_id in sorted(await self.run_ids(workflow_id) - waiting - gone):
                execution = WorkflowExecution(workflow_id=workflow_id, run_id=run_id)
                request = DeleteWorkflowExecutionRequest(namespace=client.namespace, workflow_execution=execution)
                if await _unless_not_found(client.workflow_service.delete_workflow_execution(request)) is not None:
                    deleted += 1
                waiting.add(run_id)
            for run_id in sorted(waiting):
                if await self._info(workflow_id, run_id) is None and await self._first_page(workflow_id, run_id) is None:
                    waiting.discard(run_id)
                    gone.add(run_id)
            if not waiting:
                return deleted
            if asyncio.get_running_loop().time() >= deadline:
                raise TimeoutError(
                    f"Temporal has not finished deleting {len(waiting)} of the {len(waiting) + len(gone)} runs of "
                    f"{workflow_id} within {self.wait:g} s (it deletes asynchronously and goes on)"
                )
            await asyncio.sleep(self.poll_interval)


async def _unless_not_found(call: Awaitable[T]) -> T | None:
    """Temporal's answer, or None when it has no such workflow run (any other error is raised)."""
    try:
        return await call
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def forget_relationship(
    pool: asyncpg.Pool,
    reference: str,
    *,
    forgotten_by: str,
    temporal: TemporalRuns | None = None,
    still_running: StillRunning | None = None,
) -> Forgotten:
    """Delete every run of the relationship's workflow from Temporal, then its data key.

    `temporal`: the Temporal side (`mentorflow forget` passes one). Without it only the
    event store is changed and `still_running(programme_id, relationship_id)` says whether
    the workflow runs; it is asked only when the event store does not show the relationship
    closed."""
    if temporal is None and still_running is None:
        raise TypeError("forget_relationship needs `temporal` (or, for the event store alone, `still_running`)")
    if not _REQUESTER.match(forgotten_by):
        raise ForgetRefused(f"--by must be an id (letters, digits, . _ : @ -), not {forgotten_by[:40]!r}")
    try:
        relationship_id = relationship_id_of(reference)
    except ValueError as error:
        raise ForgetRefused(str(error)) from None
    found = await pool.fetchrow(
        """SELECT count(*) AS events,
                  coalesce(bool_or(event_type = 'RelationshipClosed'), false) AS closed,
                  max(payload->>'programme_id') FILTER (WHERE event_type = 'RelationshipStarted') AS programme_id
             FROM events WHERE stream_id = $1""",
        relationship_id,
    )
    if found is None or found["events"] == 0:
        raise ForgetRefused(
            f"no relationship {relationship_id!r} in the event store "
            "(give its id, or its workflow id relationship/PROGRAMME/ID)"
        )
    programme_id: str | None = found["programme_id"]
    earlier = await pool.fetchrow("SELECT forgotten_at, forgotten_by FROM data_keys WHERE stream_id = $1", relationship_id)
    already = earlier is not None and earlier["forgotten_at"] is not None
    if temporal is None:
        assert still_running is not None
        if already:
            return Forgotten(relationship_id, programme_id, earlier["forgotten_at"], earlier["forgotten_by"], False,
                             found["events"], 0, 0)  # fmt: skip
        if not found["closed"] and await still_running(programme_id or "", relationship_id):
            raise _still_running(relationship_id)
        runs_deleted, workflow_id = None, None
    else:
        workflow_id = _workflow_id(reference, programme_id, relationship_id)
        runs_deleted = await _delete_workflow_runs(
            temporal, workflow_id, relationship_id, closed=found["closed"], key_deleted=already
        )
        if already:
            if runs_deleted:
                log.info("relationship %s (forgotten before): %d workflow runs deleted from Temporal", relationship_id, runs_deleted)
            return Forgotten(relationship_id, programme_id, earlier["forgotten_at"], earlier["forgotten_by"], False,
                             found["events"], 0, 0, runs_deleted, workflow_id)  # fmt: skip
    async with pool.acquire() as connection, connection.transaction():
        forgotten_at: datetime = await connection.fetchval(
            """INSERT INTO data_keys (stream_id, forgotten_at, forgotten_by) VALUES ($1, now(), $2)
               ON CONFLICT (stream_id) DO UPDATE
                  SET wrapped_key = NULL, kek_id = NULL, forgotten_at = now(), forgotten_by = $2
               RETURNING forgotten_at""",
            relationship_id,
            forgotten_by,
        )
        sealed, scrubbed = await _scrub_plain_text(connection, relationship_id)
    log.info("relationship %s: data key deleted on request of %s%s", relationship_id, forgotten_by,
             "" if runs_deleted is None else f"; {runs_deleted} workflow runs deleted from Temporal")  # fmt: skip
    return Forgotten(relationship_id, programme_id, forgotten_at, forgotten_by, True, found["events"], sealed, scrubbed,
                     runs_deleted, workflow_id)  # fmt: skip


def _still_running(relationship_id: str) -> ForgetRefused:
    return ForgetRefused(
        f"relationship {relationship_id} is still running: its workflow holds the text too and would "
        "go on writing more; close it first (relationship send … close_relationship), then forget it"
    )


def _workflow_id(reference: str, programme_id: str | None, relationship_id: str) -> str:
    """The relationship's workflow id, from the programme its start names in the event store
    (the reference's only when the store has no start)."""
    if programme_id:
        return relationship_workflow_id(programme_id, relationship_id)
    if reference.startswith("relationship/"):
        return reference
    raise ForgetRefused(
        f"the event store has no start of {relationship_id}, so its workflow id is unknown: "
        "give its workflow id relationship/PROGRAMME/ID"
    )


async def _delete_workflow_runs(
    temporal: TemporalRuns, workflow_id: str, relationship_id: str, *, closed: bool, key_deleted: bool
) -> int:
    """Refuse while the workflow runs; else delete all its runs. A failure leaves the key."""
    key = "its data key was deleted before" if key_deleted else "the data key is kept"
    try:
        if await temporal.still_running(workflow_id):
            if not closed:
                raise _still_running(relationship_id)
            # Closed in the store, the run may still be finishing (its last notifications).
            if not await temporal.wait_until_ended(workflow_id):
                raise ForgetRefused(
                    f"relationship {relationship_id} is closed, but its workflow {workflow_id} has not ended within "
                    f"{temporal.wait:g} s (notifications still retrying?); {key}: run forget again once it has "
                    "ended, or terminate it (temporal workflow terminate)"
                )
        return await temporal.delete_all(workflow_id)
    except RPCError as error:
        raise ForgetRefused(
            f"cannot delete the workflow runs of {relationship_id} from Temporal ({error.message}); {key}: "
            "run forget again"
        ) from None
    except TimeoutError as error:
        raise ForgetRefused(f"{error}; {key}: run forget again in a minute") from None


async def _scrub_plain_text(connection: asyncpg.Connection, relationship_id: str) -> tuple[int, int]:
    """Count the encrypted values, and overwrite confidential text stored in plain."""
    rows = await connection.fetch(
        "SELECT position, version, event_type, payload FROM events WHERE stream_id = $1 AND event_type = ANY($2::text[])",
        relationship_id,
        list(CONFIDENTIAL_PATHS),
    )
    sealed = scrubbed = 0
    for row in rows:
        sealed += row["payload"].count(f'"{ENCRYPTED}"')
        payload = json.loads(row["payload"])
        before = json.dumps(payload, sort_keys=True)
        seal_payload(payload, CONFIDENTIAL_PATHS[row["event_type"]], relationship_id, row["version"], None)
        if json.dumps(payload, sort_keys=True) != before:
            scrubbed += 1
            await connection.execute("UPDATE events SET payload = $2::jsonb WHERE position = $1", row["position"], json.dumps(payload))
    return sealed, scrubbed
