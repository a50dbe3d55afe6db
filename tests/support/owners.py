"""The owner a test appends and reads as: the workflow a relationship of `programme_id` runs as."""

from __future__ import annotations

from events.store import StreamOwner
from events.relationship_io import relationship_workflow_id


def owner(stream_id: str, programme_id: str = "prog-1") -> StreamOwner:
    return StreamOwner(programme_id=programme_id, workflow_id=relationship_workflow_id(programme_id, stream_id))
