"""Shapes of the API's own answers that are not the contract's (the OpenAPI document names
them: mentorflow/api/openapi.py)."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from activities.audit_trail import SentBy


class EventWithSender(BaseModel):
    """A stored event as the event store gives it back (every field of its type, confidential
    text decrypted, `[encrypted]` or `[forgotten]`), and who sent the command behind it."""

    model_config = ConfigDict(extra="allow")

    type: str
    stream_id: str
    version: int
    event_id: str
    occurred_at: AwareDatetime
    command_id: str | None
    sent_by: SentBy


class EventsPage(BaseModel):
    events: list[EventWithSender]
    next_after_version: int | None = Field(description="The next page's `after_version`; null on the last page.")
