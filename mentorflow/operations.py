"""What operators ask of a running system, for the CLI: which relationships match a filter,
what a relationship's Temporal history says it did, and what its event stream holds.

Each function returns plain rows; `mentorflow/cli/relationship_watch.py` prints them as
tables or JSON. Only ids, codes, numbers, dates and activity/timer summaries are read —
never event payloads — so nothing here can show confidential text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from events.model import Health
from events.state import Phase
from mentorflow.client import search_attribute_types
from workflows import search_attributes as sa
from mentorflow.start_options import relationship_id_of

log = logging.getLogger("mentorflow.operations")

class OperationError(Exception):
    """Something the caller can fix; `usage` when it is how the command was called."""

    def __init__(self, message: str, *, usage: bool = False):
        super().__init__(message)
        self.usage = usage


# -- search attributes -----------------------------------------------------------------------


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register whichever of our search attributes the namespace lacks; returns the names added.

    Registering needs operator rights: a worker without them (the usual case on a shared
    cluster) only warns, since every upsert fails until someone registers them.
    """
    try:
        existing = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    except RPCError as error:
        log.warning("could not list the search attributes of namespace %s: %s", namespace, error.message)
        return []
    missing = {name: kind for name, kind in search_attribute_types().items() if name not in existing.custom_attributes}
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    except RPCError as error:
        log.warning(
            "namespace %s lacks search attributes %s and this worker may not add them (%s): relationships "
            "will fail to upsert them until an operator registers them (see docs/operators.md)",
            namespace, ", ".join(sorted(missing)), error.message,
        )  # fmt: skip
        return []
    log.info("registered search attributes %s in namespace %s", ", ".join(sorted(missing)), namespace)
    return sorted(missing)


# -- relationship list -----------------------------------------------------------------------


@dataclass(frozen=True)
class RelationshipRow:
    workflow_id: str
    run_id: str
    status: str
    phase: str | None
    health: str | None
    programme_id: str | None
    mentee_id: str | None
    mentor_id: str | None
    next_due_at: datetime | None
    meetings_held: int | None
    started_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        for key in ("next_due_at", "started_at"):
            row[key] = row[key].isoformat() if row[key] else None
        return row


def _quoted(value: str) -> str:
    if "'" in value or "\\" in value:
        raise OperationError(f"{value!r}: ids contain no quotes or backslashes", usage=True)
    return f"'{value}'"


def visibility_query(
    *,
    programme: str | None = None,
    phase: str | None = None,
    health: str | None = None,
    due_before: datetime | None = None,
    query: str | None = None,
    include_closed: bool = False,
) -> str:
    """The list query for these filters: the same text an operator pastes into the Web UI."""
    clauses = ["WorkflowType = 'Relationship'"]
    # A relationship is its latest run: the runs it continued as new from are not listed.
    clauses.append("ExecutionStatus != 'ContinuedAsNew'" if include_closed else "ExecutionStatus = 'Running'")
    if programme:
        clauses.append(f"{sa.MENTORING_PROGRAMME.name} = {_quoted(programme)}")
    if phase:
        if phase not in {p.value for p in Phase}:
            raise OperationError(f"--phase {phase!r}: one of {', '.join(p.value for p in Phase)}", usage=True)
        clauses.append(f"{sa.MENTORING_PHASE.name} = {_quoted(phase)}")
    if health:
        if health not in {h.value for h in Health}:
            raise OperationError(f"--health {health!r}: one of {', '.join(h.value for h in Health)}", usage=True)
        clauses.append(f"{sa.MENTORING_HEALTH.name} = {_quoted(health)}")
    if due_before is not None:
        clauses.append(f"{sa.NEXT_DUE_AT.name} < '{due_before.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}'")
    if query:
        clauses.append(f"({query})")
    return " AND ".join(clauses)


async def list_relationships(client: Client, query: str, *, limit: int) -> list[RelationshipRow]:
    rows = []
    try:
        async for execution in client.list_workflows(query, limit=limit):
            attributes = execution.typed_search_attributes
            rows.append(
                RelationshipRow(
                    workflow_id=execution.id,
                    run_id=execution.run_id,
                    status=execution.status.name.lower() if execution.status else "unknown",
                    phase=attributes.get(sa.MENTORING_PHASE),
                    health=attributes.get(sa.MENTORING_HEALTH),
                    programme_id=attributes.get(sa.MENTORING_PROGRAMME),
                    mentee_id=attributes.get(sa.MENTEE_ID),
                    mentor_id=attributes.get(sa.MENTOR_ID),
                    next_due_at=attributes.get(sa.NEXT_DUE_AT),
                    meetings_held=attributes.get(sa.MEETINGS_HELD),
                    started_at=execution.start_time,
                )
            )
    except RPCError as error:
        if error.status == RPCStatusCode.INVALID_ARGUMENT:
            raise OperationError(f"the list query was refused: {error.message}", usage=True) from None
        raise
    return rows


# -- relationship history --------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryRow:
    event_id: int
    time: datetime
    event_type: str
    # The Web UI's summary of an activity, timer or the start; None where there is none.
    summary: str | None
    # What the event is about without a summary: an activity type, a signal or update name.
    detail: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"time": self.time.isoformat()}


def _event_type_name(event: HistoryEvent) -> str:
    name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
    return "".join(part.capitalize() for part in name.split("_"))


def _detail(event: HistoryEvent) -> str | None:
    kind = event.WhichOneof("attributes")
    if kind is None:
        return None
    attributes = getattr(event, kind)
    if kind == "workflow_execution_started_event_attributes":
        continued = attributes.continued_execution_run_id
        return str(attributes.workflow_type.name) + (f", continued from run {continued}" if continued else "")
    if kind == "activity_task_scheduled_event_attributes":
        return str(attributes.activity_type.name)
    if kind == "timer_started_event_attributes":
        seconds = attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
        return f"fires in {seconds:g} s"
    if kind == "workflow_execution_signaled_event_attributes":
        return str(attributes.signal_name)
    if kind == "workflow_execution_update_accepted_event_attributes":
        return str(attributes.accepted_request.input.name)
    if kind == "marker_recorded_event_attributes":
        return str(attributes.marker_name)
    if kind == "upsert_workflow_search_attributes_event_attributes":
        return ", ".join(sorted(attributes.search_attributes.indexed_fields))
    if kind == "workflow_execution_continued_as_new_event_attributes":
        return f"new run {attributes.new_execution_run_id}"
    return None


async def relationship_history(client: Client, workflow_id: str, run_id: str | None = None) -> list[HistoryRow]:
    """Every event of one run (the latest by default), with the summaries the Web UI shows."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        history = await handle.fetch_history()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise OperationError(f"{workflow_id}: {error.message}") from None
        raise
    rows = []
    for event in history.events:
        summary: str | None = None
        if event.HasField("user_metadata") and event.user_metadata.HasField("summary"):
            try:
                decoded = await client.data_converter.decode([event.user_metadata.summary], [str])
                summary = str(decoded[0])
            except Exception as error:  # a key this client lacks: say so, keep going
                summary = f"(cannot decode: {type(error).__name__})"
        rows.append(
            HistoryRow(
                event_id=event.event_id,
                time=event.event_time.ToDatetime(tzinfo=UTC),
                event_type=_event_type_name(event),
                summary=summary,
                detail=_detail(event),
            )
        )
    return rows


# -- relationship events (the event store) ---------------------------------------------------


@dataclass(frozen=True)
class StoredEventRow:
    version: int
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    command_id: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"occurred_at": self.occurred_at.isoformat(), "recorded_at": self.recorded_at.isoformat()}


def stream_id_of(workflow_or_relationship_id: str) -> str:
    """`relationship/PROGRAMME/ID` or a bare relationship id → the event stream's id."""
    try:
        return relationship_id_of(workflow_or_relationship_id)
    except ValueError as error:
        raise OperationError(str(error), usage=True) from None


async def stream_events(pool: asyncpg.Pool, stream_id: str) -> Sequence[StoredEventRow]:
    """The stream's events in order: version, type and times; payloads are not read."""
    records = await pool.fetch(
        """SELECT version, event_type, occurred_at, recorded_at, command_id
             FROM events WHERE stream_id = $1 ORDER BY version""",
        stream_id,
    )
    return [
        StoredEventRow(
            version=record["version"],
            event_type=record["event_type"],
            occurred_at=record["occurred_at"],
            recorded_at=record["recorded_at"],
            command_id=record["command_id"],
        )
        for record in records
    ]
