"""The event store's contract: how an event is stored and loaded (its payload apart from the
envelope, upcasting older shapes), and what the store promises. The PostgreSQL adapter lives
in `activities/event_store.py`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import Field, TypeAdapter

from events.frozen import Frozen
from events.model import AnyEvent, Event
from events.notifications import Notification


_EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)

# (event type, stored schema version) -> function lifting that stored payload one version up.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def load_event(data: dict[str, Any]) -> AnyEvent:
    """Build an event from its stored form, upcasting older schema versions first."""
    event_type = data["type"]
    version = int(data.get("schema_version", 1))
    while (event_type, version) in UPCASTERS:
        data = UPCASTERS[(event_type, version)](dict(data))
        version += 1
        data["schema_version"] = version
    return _EVENT_ADAPTER.validate_python(data)


# What the store keeps in columns of its own rather than in the payload.
ENVELOPE_FIELDS = frozenset({"stream_id", "version", "event_id", "occurred_at", "command_id", "schema_version", "type"})


def event_payload(event: Event) -> dict[str, Any]:
    """The event's own fields, without the envelope the store keeps in columns."""
    return event.model_dump(mode="json", exclude=set(ENVELOPE_FIELDS))


def event_payload_json(event: Event) -> str:
    """`event_payload` as JSON text, serialized by pydantic's core (about 3x faster)."""
    return event.model_dump_json(exclude=set(ENVELOPE_FIELDS))


class ConcurrencyConflict(Exception):
    """Another writer appended to the stream first: the caller's view of it is stale."""

    def __init__(self, stream_id: str, expected_version: int, actual_version: int):
        super().__init__(
            f"stream {stream_id} is at version {actual_version}, not the expected {expected_version}"
        )
        self.stream_id, self.expected_version, self.actual_version = stream_id, expected_version, actual_version


# The ApplicationError type of an append or read refused because the stream is another
# relationship workflow's (non-retryable): the workflow must fail, never adopt or retry.
STREAM_OWNED_BY_ANOTHER = "StreamOwnedByAnother"


class StreamOwner(Frozen):
    """Who a stream belongs to: the one relationship workflow that may read and append to it.

    Recorded by the stream's first append (migrations/0008_stream_owners.sql) and checked on
    every append and every read made for a workflow. A workflow passes its own
    `workflow.info().workflow_id` and the programme it was started for."""

    programme_id: str = Field(min_length=1)
    workflow_id: str = Field(min_length=1)

    def __str__(self) -> str:
        return f"{self.workflow_id} (programme {self.programme_id})"


class StreamOwnedByAnother(Exception):
    """The stream belongs to another relationship workflow: nothing was written or read.

    `owner` is the recorded (or, for a stream stored before owners were recorded, the
    presumed) owner, for the operator's log only: it is not told to the refused workflow."""

    def __init__(self, stream_id: str, refused: StreamOwner, owner: str):
        super().__init__(f"stream {stream_id} belongs to another relationship workflow: refused to {refused}")
        self.stream_id, self.refused, self.owner = stream_id, refused, owner


class AppendRequest(Frozen):
    """What the workflow hands to the append activity: one batch for one stream."""

    stream_id: str
    expected_version: int
    events: list[AnyEvent]
    # The appending workflow; the store refuses the batch unless the stream is this owner's
    # (or new, and then it becomes this owner's).
    owner: StreamOwner


class AppendAndNotifyRequest(Frozen):
    """One batch to store and, once it is stored, the notifications it causes: one local
    activity (one marker in history, one round trip through the worker) instead of two."""

    append: AppendRequest
    notifications: list[Notification]


class AppendAndNotifyResult(Frozen):
    notifications_sent: int
    # Something could not be sent at once (a channel down or slow): the workflow hands the
    # notifications to an activity that retries with backoff; the delivery log keeps what
    # already went out from going out again.
    notifications_pending: bool


class ReadStreamRequest(Frozen):
    stream_id: str
    after_version: int = 0
    # The reading workflow: refused unless the stream is this owner's (or has no events).
    owner: StreamOwner


class StoredEvent(Frozen):
    """An event as read back from the store, with its global position."""

    position: int
    event: AnyEvent


class EventStore(Protocol):
    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[AnyEvent], *, owner: StreamOwner
    ) -> list[int]:
        """Append atomically after `expected_version`; returns the events' global positions.

        Raises `StreamOwnedByAnother`, having written nothing, unless the stream belongs to
        `owner` (a new stream becomes `owner`'s). Appending events whose ids are already
        stored at those versions (a retry of a write that succeeded) returns their
        positions and writes nothing. Any other mismatch raises `ConcurrencyConflict`.
        """
        ...

    async def read_stream(
        self, stream_id: str, after_version: int = 0, *, owner: StreamOwner | None = None
    ) -> list[AnyEvent]:
        """The stream's events after `after_version`. With `owner` (a read for a workflow),
        `StreamOwnedByAnother` unless the stream is that owner's; without, an operator's read."""
        ...

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Events of every stream in global order. A follower that passes the last position
        it saw never skips an event, even one whose transaction commits late."""
        ...
