"""Read-model rows with one row per relationship (the report's `relationships`, the digest's
`digest`): each starts with the relationship's first event and follows its stream version,
so an event it already reflects, or one of a stream whose start it never saw, changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from events.model import AnyEvent, RelationshipStarted
from events.state import Phase, started_fields


class StreamRow(BaseModel):
    """What every such row begins with; a row type adds `started_at`, `version` (set here)
    and what it follows, in the order of its table's columns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    relationship_id: str
    programme_id: str
    mentee_id: str
    mentor_id: str | None = None
    phase: Phase = Phase.MATCHING


RowT = TypeVar("RowT", bound=StreamRow)


def stream_row(
    row_type: type[RowT], row: RowT | None, event: AnyEvent, changes: Callable[[RowT, AnyEvent], dict[str, Any]]
) -> RowT | None:
    """The row after `event`, None when unchanged. `row_type` has the fields started_at and
    version too; `changes` says what any later event changes."""
    if isinstance(event, RelationshipStarted):
        if row is not None:
            return None
        return row_type(**started_fields(event))
    # A stream whose start we never saw, or an event this row already reflects.
    if row is None or event.version <= getattr(row, "version"):
        return None
    return row.model_copy(update={**changes(row, event), "version": event.version})
