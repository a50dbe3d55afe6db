"""What other code sends to and gets back from the Relationship workflow: its start input,
its update result and its workflow id. Plain models, shared by the workflow, the activities
that start relationships (a matching round), the CLI and other callers — kept apart from the
workflow so that none of them has to import it (samples-python's `shared.py`).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from events.commands import Identifier
from events.notifications import Notification
from events.settings import ProgrammeSettings
from events.state import Phase, RelationshipState

__all__ = ["CommandResult", "RelationshipInput", "relationship_id_of", "relationship_workflow_id"]

# The workflow type, for starting it by name.
RELATIONSHIP_WORKFLOW = "Relationship"


class RelationshipInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    relationship_id: Identifier
    programme_id: Identifier
    mentee_id: Identifier
    # Read from the programme when the relationship starts. Given here, it must be the
    # programme's (checked), unless the worker trusts start settings (tests only).
    settings: ProgrammeSettings | None = None
    # Carried across continue-as-new; absent when a relationship starts.
    state: RelationshipState | None = None
    last_participant_check: datetime | None = None
    # Notifications still undelivered when the previous run continued as new.
    pending_notifications: list[Notification] = []
    # The match attempt for which the mentor pool was last asked for a candidate.
    pool_asked_for_attempt: int | None = None
    # False when the starter brings the first proposal itself (a matching round): the pool
    # is then asked only if that proposal is declined or expires.
    ask_pool_first: bool = True
    # Continue as new once history passes this many events, a second after the run is next
    # idle (Temporal's own suggestion, at about 10k events, applies too). A cold worker
    # replays a relationship's current run before it can answer it, at about 0.3 ms of CPU
    # an event: with 150, a worker restarted under commands to 200 relationships answered
    # them all within 8 s (p99), against 43 s with 1,000 (a year, ~630 events, in one run);
    # a standard relationship-year continues as new three times (docs/deploying.md, "Replay
    # after a restart"). Lower it to exercise continue-as-new.
    history_event_limit: int = Field(default=150, ge=100)


class CommandResult(BaseModel):
    """What an update returns once the command's events are stored."""

    model_config = ConfigDict(frozen=True)

    command_id: str
    # False when the command id had already been applied: nothing happened this time.
    applied: bool
    # True when this answers a retry: `events`, `version` and `phase` then say what the
    # command did when it was first applied (the relationship may have moved on since).
    replay: bool = False
    events: list[str]
    version: int
    phase: Phase



_RELATIONSHIP_PREFIX = "relationship/"


def relationship_workflow_id(programme_id: str, relationship_id: str) -> str:
    """A relationship's workflow id: `relationship/PROGRAMME/ID`, ids only (no names)."""
    return f"{_RELATIONSHIP_PREFIX}{programme_id}/{relationship_id}"


def relationship_id_of(reference: str) -> str:
    """The relationship id from its workflow id `relationship/PROGRAMME/ID`, or `reference`
    itself when it is a bare relationship id; ValueError for a malformed workflow id."""
    if not reference.startswith(_RELATIONSHIP_PREFIX):
        return reference
    parts = reference.split("/")
    if len(parts) != 3 or not all(parts[1:]):
        raise ValueError(f"{reference!r}: expected relationship/PROGRAMME/ID")
    return parts[2]
