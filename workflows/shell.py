"""What the parts of the Relationship workflow share: its run's state and the steps they
call on each other.

`Relationship` (workflows/relationship.py) is one workflow class built from parts kept in
their own modules: the outbox that stores events and delivers notifications
(workflows/outbox.py) and the mentor pool's slots (workflows/mentor_pool.py). Each part's
methods take `self: RelationshipShell`, so the type checker holds them to this list, and
the workflow class to providing all of it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from events.commands import Command
    from events.model import AnyEvent
    from events.notifications import Notification
    from events.relationship_io import RelationshipInput
    from events.state import RelationshipState
    from events.store import StreamOwner

from workflows.visibility import Visibility

if TYPE_CHECKING:  # no import cycle at run time
    from workflows.outbox import Deliveries


class RelationshipShell(Protocol):
    _input: RelationshipInput
    _state: RelationshipState | None
    # The events decided but not stored yet, and the notifications they cause.
    _outbox: list[AnyEvent]
    _notifications: list[Notification]
    # The store's version and state: what a conflict is resolved from. With the outbox
    # empty, the state is `_state` itself (Outbox._flush).
    _stored_version: int
    _stored_state: RelationshipState | None
    # The commands behind the events not yet stored, to decide again after a conflict.
    _redo: list[tuple[type[Command], Any]]
    _deliveries: Deliveries
    _visibility: Visibility
    # Mentor slots to reserve or give back once the events that call for them are stored.
    _slot_work: list[tuple[str, str | None]]
    _pool_asked_for: int | None

    @property
    def current(self) -> RelationshipState: ...

    def _deciding(self) -> RelationshipState: ...

    def _apply(self, events: list[AnyEvent]) -> None: ...

    def _catch_up(self, now: datetime) -> None: ...

    def _decide_signal(self, model: type[Command], payload: Any) -> None: ...

    async def _flush(self) -> None: ...

    def _owner(self) -> StreamOwner: ...

    async def _adopt_stored_events(self) -> None: ...
