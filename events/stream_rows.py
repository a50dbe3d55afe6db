"""Read-model rows with one row per relationship (the report's `relationships`, the digest's
`digest`): each starts with the relationship's first event and follows its stream version,
so an event it already reflects, or one of a stream whose start it never saw, changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from events.model import AnyEvent, RelationshipStarted

RowT = TypeVar("RowT", bound=BaseModel)


def stream_row(
    row_type: type[RowT], row: RowT | None, event: AnyEvent, changes: Callable[[RowT, AnyEvent], dict[str, Any]]
) -> RowT | None:
    """The row after `event`, None when unchanged. `row_type` has the fields relationship_id,
    programme_id, mentee_id, started_at and version; `changes` says what any later event changes."""
    if isinstance(event, RelationshipStarted):
        if row is not None:
            return None
        return row_type(
            relationship_id=event.stream_id,
            programme_id=event.programme_id,
            mentee_id=event.mentee_id,
            started_at=event.occurred_at,
            version=event.version,
        )
    # A stream whose start we never saw, or an event this row already reflects.
    if row is None or event.version <= getattr(row, "version"):
        return None
    return row.model_copy(update={**changes(row, event), "version": event.version})
