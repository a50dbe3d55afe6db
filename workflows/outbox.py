"""The Relationship workflow's outbox: events on their way to the store, notifications on
their way to people. The one road of a notification (docs/notifications.md):

1. `_apply` (workflows/relationship.py) queues each event's notifications beside it in the
   outbox (`events/notifications.py` decides who is told what).
2. `Outbox._flush` stores the batch, and with it makes the first try of its notifications
   in the same local activity (`append_events_and_notify`; runs begun before
   STORE_AND_NOTIFY_TOGETHER store first, then try).
3. `Deliveries.send` takes every notification not yet sent: those of a batch whose first
   try left some unsent, those of runs that store first, those a run carried over from the
   one before it (continue-as-new), and those of events adopted from the store after a
   conflict. It delivers them in the background: a local first try unless one was made,
   then the `send_notifications` activity, retrying with backoff as long as it takes.
4. A run that continues as new hands what is still retrying (`Deliveries.undelivered`) to
   the next run, which starts it again at step 3.

An update answers once what its command did is stored (`Outbox._until_stored`); after a
conflict, from what the store then holds (`AwaitedAnswer`).

Every try ends in the same activity code (`NotificationActivities.send_notifications`),
whose delivery log keeps anything from going out twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from events.commands import Command
    from events.notifications import Notification, notifications_for
    from events.operator_view import describe_notifications
    from events.refusals import RefusalCode, Rejection, refuse
    from events.relationship_io import CommandResult
    from events.state import AppliedCommand, Phase, RejectedCommand, RelationshipState
    from events.decider import evolve, fold
    from events.store import (
        AppendAndNotifyRequest,
        AppendAndNotifyResult,
        AppendRequest,
        ReadStreamRequest,
        StreamOwner,
    )

from workflows.activity_refs import APPEND_EVENTS, APPEND_EVENTS_AND_NOTIFY, READ_STREAM, SEND_NOTIFICATIONS
from workflows.calls import NOTIFY_FIRST_TRY, call_activity, call_local, send_retrying
from workflows.messages import refusal_error
from workflows.patches import (
    ADOPT_AFTER_CONFLICT,
    ANSWER_FROM_THE_STORE,
    RETRY_AFTER_FAILED_FIRST_TRY,
    STORE_AND_NOTIFY_TOGETHER,
)

if TYPE_CHECKING:
    from workflows.shell import RelationshipShell

    class AnsweringShell(RelationshipShell, Protocol):
        # The updates waiting for their answer (`Outbox._until_stored`).
        _awaiting: list[AwaitedAnswer]

        # `checked`: the command came by update, and was checked then (`CheckedCommand`).
        def _decide_signal(self, model: type[Command], payload: Any, *, checked: bool = False) -> None: ...


def is_conflict(error: Exception) -> bool:
    """Whether a failed append_events was refused as a concurrency conflict.

    temporalio raises a local activity's own failure as the activity's ApplicationError
    itself, not wrapped in an ActivityError as for regular activities (an ActivityError
    comes only for a timeout): so both are looked at."""
    cause = error.cause if isinstance(error, ActivityError) else error
    return isinstance(cause, ApplicationError) and cause.type == "ConcurrencyConflict"


class Outbox:
    """Storing the relationship's events, and resolving a conflict with the store."""

    # Assigned by these methods, first set in the workflow's __init__ (declared for the type checker).
    _state: RelationshipState | None
    _stored_version: int
    _stored_state: RelationshipState | None
    _redo: list[tuple[type[Command], Any]]
    _awaiting: list[AwaitedAnswer]

    async def _flush(self: RelationshipShell) -> None:
        """Store every pending event, then send the notifications they caused."""
        while self._outbox:
            batch, notifications = list(self._outbox), list(self._notifications)
            first, last = batch[0].version, batch[-1].version
            request = AppendRequest(
                stream_id=self.current.relationship_id, expected_version=first - 1, events=batch, owner=self._owner()
            )
            summary = f"Store events {first}–{last}" if last > first else f"Store event {first}"
            together = bool(notifications) and workflow.patched(STORE_AND_NOTIFY_TOGETHER)
            outcome: AppendAndNotifyResult | None = None
            try:
                if together:
                    notified = describe_notifications(notifications, self.current)
                    summary = f"{summary}; {notified}"[:200]
                    together_request = AppendAndNotifyRequest(append=request, notifications=notifications)
                    outcome = await call_activity(APPEND_EVENTS_AND_NOTIFY, together_request, summary=summary)
                else:
                    await call_activity(APPEND_EVENTS, request, summary=summary)
            except (ActivityError, ApplicationError) as error:
                # Before this patch a conflict failed the workflow (see is_conflict).
                if not (is_conflict(error) and workflow.patched(ADOPT_AFTER_CONFLICT)):
                    raise
                await self._adopt_stored_events()
                continue
            self._stored_version = last
            del self._outbox[: len(batch)]
            del self._notifications[: len(notifications)]
            if self._outbox:  # decided while the batch was being stored: not in the store yet
                self._stored_state = fold(batch, self._stored_state)
            else:
                # Everything decided is stored, so the store's state is the workflow's: the
                # same object rather than an equal copy folded again, which every cached run
                # would hold on to (issue #16). States are never changed in place (`_apply`
                # replaces `_state`), so this one stays the store's as later events arrive.
                self._stored_state = self._state
                self._redo.clear()
            if together:
                self._deliveries.send(notifications, notified, tried_with_the_append=outcome)
            elif notifications:
                self._deliveries.send(notifications, describe_notifications(notifications, self.current))
        self._visibility.show(self.current)

    def _owner(self: RelationshipShell) -> StreamOwner:
        """This workflow as the one owner of its relationship's stream (the store checks it)."""
        return StreamOwner(programme_id=self.current.programme_id, workflow_id=workflow.info().workflow_id)

    async def _adopt_stored_events(self: AnsweringShell) -> None:
        """The store holds events this run does not know: a local activity of a workflow
        task that was never completed (a crash, a refused completion) stored them before the
        task's history was written. They happened — their notifications may be out — so the
        store wins: fold them in, then decide again the commands still pending (a command
        already applied there is recognised by its id and skipped), and tell the updates
        waiting for them what that made of their command (`AwaitedAnswer`). A command that
        came by update is decided again as checked (`CheckedCommand`)."""
        stored = await call_activity(
            READ_STREAM,
            ReadStreamRequest(
                stream_id=self.current.relationship_id, after_version=self._stored_version, owner=self._owner()
            ),
            summary="Read events stored by an unfinished task",
        )
        workflow.logger.warning(
            "adopting %d stored events after version %d of %s", len(stored), self._stored_version, workflow.info().workflow_id
        )
        state = self._stored_state
        adopted: list[Notification] = []
        for event in stored:
            before, state = state, evolve(state, event)
            adopted.extend(notifications_for(event, state, before))
        assert state is not None
        self._state = self._stored_state = state
        self._stored_version = state.version
        self._outbox.clear()
        self._notifications.clear()
        redo, self._redo = self._redo, []
        from_the_store = workflow.patched(ANSWER_FROM_THE_STORE)
        for entry in redo:
            rejections = self.current.rejected_commands
            self._decide_signal(*entry, checked=from_the_store and isinstance(entry, CheckedCommand))
            for awaited in self._awaiting if from_the_store else ():
                if awaited.redo is entry:
                    awaited.decided_again(self.current, rejections)
        if from_the_store:
            self._redo = redo  # not stored yet: a second conflict decides them again
        self._catch_up(workflow.now())
        if adopted:  # the delivery log drops what already went out
            self._deliveries.send(adopted, describe_notifications(adopted, self.current))

    async def _until_stored(self: AnsweringShell, awaited: AwaitedAnswer) -> AwaitedAnswer:
        """Keep the update's command pending until what it did is stored: its events, up to
        `awaited.version`, or where deciding it again after a conflict put it."""
        self._redo.append(awaited.redo)
        self._awaiting.append(awaited)
        await workflow.wait_condition(lambda: self._stored_version >= awaited.version)
        self._awaiting.remove(awaited)
        if awaited.refusal is not None:
            # Refused and stored so, the caller is about to be told: a later conflict must
            # not decide it again (it might apply by then), so it leaves the pending commands.
            self._redo[:] = [entry for entry in self._redo if entry is not awaited.redo]
        return awaited


class CheckedCommand(tuple[type[Command], Any]):
    """The `_redo` entry of a command that came by update: checked when it came (the
    validator refuses anyone acting as the system, `_round_holds` confirms a matching round's
    claim). Decided again after a conflict (`_decide_signal(checked=True)`), it must not be
    refused for its actor as a signal naming the round is: the round would be told "refused"
    for a proposal it really made, and a command the store holds as applied would be stored
    as refused too. Whether its update still waits or has answered (its entry stays in
    `_redo` while later events are not stored). Under ANSWER_FROM_THE_STORE only: runs begun
    before it decide it again as a signal."""

    __slots__ = ()


@dataclass(eq=False)  # one per waiting update, found by identity
class AwaitedAnswer:
    """An update waiting for what its command did to be stored. A conflict decides the
    command again on the events the store holds: then the answer is what the store holds, not
    the first decision (runs begun before ANSWER_FROM_THE_STORE answer with the first decision,
    as soon as the store's version passes it).

    A command the lost task had applied is answered as applied by the update that was fresh
    here, as a retry by any other: the run decides the lost task's messages again, so that
    update is (the new attempt of) the one that applied it — one command, one "applied"."""

    command_id: str
    # The command's entry in `_redo`, this very tuple: what a conflict decides again.
    redo: CheckedCommand
    # The store's version at which what the command did is stored.
    version: int
    # False for a retry: its command had been applied already when the update came.
    fresh: bool
    redecided: bool = False
    # Decided again and refused: what the caller is told.
    refusal: Rejection | None = None

    def decided_again(self, after: RelationshipState, rejections: tuple[RejectedCommand, ...]) -> None:
        """Note what deciding the command again on the adopted events did: `after` is the state
        then, `rejections` the refusals before (`_decide_signal` records a refusal, once)."""
        self.redecided = True
        applied = self.command_id in after.processed_command_ids and after.rejected_commands == rejections
        self.refusal = None if applied else self._refusal_in(after)
        record = after.applied_commands.get(self.command_id) if applied else None
        self.version = record.version if record else after.version

    def _refusal_in(self, state: RelationshipState) -> Rejection:
        # Recorded just now, or the same payload's earlier refusal (`already_refused`).
        for refused in reversed(state.rejected_commands):
            if refused.command_id == self.command_id:
                return Rejection(code=refused.code, reason=refused.reason, problems=refused.problems)
        return refuse(RefusalCode.INTERNAL_ERROR, f"command {self.command_id} was refused when decided again")

    def answer(self, stored: RelationshipState, phase: Phase) -> CommandResult:
        """The update's answer once `decided_again`, from the `stored` state; `phase` the
        relationship's now, as a first application answers."""
        if self.refusal is not None:
            raise refusal_error(self.refusal)
        record = stored.applied_commands.get(self.command_id) or AppliedCommand(version=self.version, phase=phase)
        replay = not self.fresh
        return CommandResult(
            command_id=self.command_id,
            applied=not replay,
            replay=replay,
            events=list(record.events),
            version=record.version,
            phase=record.phase if replay else phase,
        )


class Deliveries:
    """The notifications of one run on their way out, each batch in a task of its own:
    not awaited, so a slow or failing channel never holds the relationship up."""

    def __init__(self) -> None:
        self._sending: dict[asyncio.Task[None], list[Notification]] = {}
        # Deliveries whose quick first try failed and that now retry with backoff.
        self._retrying: set[asyncio.Task[Any]] = set()

    def send(
        self, notifications: list[Notification], summary: str, *, tried_with_the_append: AppendAndNotifyResult | None = None
    ) -> None:
        """Deliver `notifications` (described by `summary`) in the background: first a quick
        try, then with backoff until they are out. `tried_with_the_append`: the first try was
        made with the append of their events, so only what it left goes on, to the retries."""
        if not notifications:
            return
        if tried_with_the_append is None:
            delivery = self._deliver(notifications, summary)
        elif tried_with_the_append.notifications_pending:
            delivery = self._retry_delivery(notifications, summary)
        else:
            return  # all sent with the append
        task = asyncio.create_task(delivery)
        self._sending[task] = notifications
        task.add_done_callback(self._delivery_done)

    @property
    def sending(self) -> bool:
        return bool(self._sending)

    async def wait(self) -> None:
        """Until every delivery under way now has gone out."""
        await asyncio.gather(*self._sending)

    def idle(self, *, continuing: bool) -> bool:
        # Continuing, deliveries still retrying go along to the next run.
        return self._sending.keys() <= self._retrying if continuing else not self._sending

    def undelivered(self) -> list[Notification]:
        """What a run hands to the next one when it continues as new."""
        return [n for notifications in self._sending.values() for n in notifications]

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._sending.pop(task, None)
        self._retrying.discard(task)

    async def _deliver(self, notifications: list[Notification], summary: str) -> None:
        try:
            await call_local(
                SEND_NOTIFICATIONS,
                notifications,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NOTIFY_FIRST_TRY,
                summary=summary,
            )
            return
        except ActivityError:  # the first try timed out
            pass
        except ApplicationError:
            # The first try failed (a channel is down). Before this patch that error escaped
            # here and the notifications were never retried (see is_conflict).
            if not workflow.patched(RETRY_AFTER_FAILED_FIRST_TRY):
                raise
        await self._retry_delivery(notifications, summary)

    async def _retry_delivery(self, notifications: list[Notification], summary: str) -> None:
        # The delivery log keeps what already went out from going out again.
        current = asyncio.current_task()
        assert current is not None
        self._retrying.add(current)
        await send_retrying(notifications, summary=f"{summary} (retrying)"[:200])
