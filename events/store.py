"""The event store's contract. The PostgreSQL adapter lives in `activities/event_store.py`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from events.model import AnyEvent
from events.notifications import Notification


class ConcurrencyConflict(Exception):
    """Another writer appended to the stream first: the caller's view of it is stale."""

    def __init__(self, stream_id: str, expected_version: int, actual_version: int):
        super().__init__(
            f"stream {stream_id} is at version {actual_version}, not the expected {expected_version}"
        )
        self.stream_id, self.expected_version, self.actual_version = stream_id, expected_version, actual_version


class AppendRequest(BaseModel):
    """What the workflow hands to the append activity: one batch for one stream."""

    model_config = ConfigDict(frozen=True)

    stream_id: str
    expected_version: int
    events: list[AnyEvent]


class AppendAndNotifyRequest(BaseModel):
    """One batch to store and, once it is stored, the notifications it causes: one local
    activity (one marker in history, one round trip through the worker) instead of two."""

    model_config = ConfigDict(frozen=True)

    append: AppendRequest
    notifications: list[Notification]


class AppendAndNotifyResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    notifications_sent: int
    # Something could not be sent at once (a channel down or slow): the workflow hands the
    # notifications to an activity that retries with backoff; the delivery log keeps what
    # already went out from going out again.
    notifications_pending: bool


class ReadStreamRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    stream_id: str
    after_version: int = 0


class StoredEvent(BaseModel):
    """An event as read back from the store, with its global position."""

    model_config = ConfigDict(frozen=True)

    position: int
    event: AnyEvent


class EventStore(Protocol):
    async def append(self, stream_id: str, expected_version: int, events: Sequence[AnyEvent]) -> list[int]:
        """Append atomically after `expected_version`; returns the events' global positions.

        Appending events whose ids are already stored at those versions (a retry of a
        write that succeeded) returns their positions and writes nothing. Any other
        mismatch raises `ConcurrencyConflict`.
        """
        ...

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[AnyEvent]: ...

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Events of every stream in global order. A follower that passes the last position
        it saw never skips an event, even one whose transaction commits late."""
        ...
