"""The `Relationship` workflow: one mentor–mentee relationship, from matching to closure.

A thin durable shell around the pure core in `events/`: it receives commands (each both as
an update, for callers that want an answer, and as a signal, for systems that can only
signal), asks `decide` what happens, folds the events with `evolve`, appends them to the
event store in batches, sends the notifications they cause, and sleeps until the next
command or `next_deadline`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pairing.requests import Candidate, CandidateRequest, SlotRelease, SlotRequest, SlotReservation
    from events.commands import (
        DIRECTORY_ACTOR,
        MATCHING_ACTOR,
        MATCHING_ACTORS,
        AcceptMatch,
        AcknowledgeGoalRevision,
        CancelMeeting,
        CloseRelationship,
        Command,
        DeclineMatch,
        Identifier,
        PauseRelationship,
        ProposeAgreement,
        ProposeGoalRevision,
        ProposeMatch,
        RaiseConcern,
        RecordGoalProgress,
        RecordIntroduction,
        RecordMeeting,
        ReportParticipantLeft,
        RequestReview,
        RescheduleMeeting,
        ResolveConcern,
        ResumeRelationship,
        ShareResource,
        SignAgreement,
        SubmitFeedback,
        SubmitReflection,
        SubmitReview,
    )
    from events.deadlines import Deadline, next_deadline, next_due_at
    from events.operator_view import current_details, describe_notifications
    from events.decider import Rejection, catch_up, decide, reject, start_relationship
    from events.model import (
        AnyEvent,
        ClosureBegun,
        MatchDeclined,
        MatchProposalExpired,
        MatchProposed,
        RelationshipClosed,
        RelationshipSummary,
    )
    from events.notifications import Notification, notifications_for
    from events.people import ParticipantStatus
    from events.settings import ProgrammeSettings
    from events.state import Phase, RelationshipState, evolve, fold
    from events.store import AppendAndNotifyRequest, AppendAndNotifyResult, AppendRequest, ReadStreamRequest
    from workflows import search_attributes as sa

STORE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=10))
# Notifications are first tried as a local activity (one marker in history); if that fails
# they move to a regular activity that retries with backoff for as long as it takes.
NOTIFY_FIRST_TRY = RetryPolicy(maximum_attempts=2)
# workflow.patched() ids of two fixes (see _is_conflict): a concurrency conflict makes the
# workflow adopt the stored events, and a first try that failed goes on to retry.
ADOPT_AFTER_CONFLICT = "adopt-stored-events-after-a-conflict"
RETRY_AFTER_FAILED_FIRST_TRY = "notifications-retry-after-a-failed-first-try"
# workflow.patched() id: a batch and the first try of its notifications in one local activity
# (`append_events_and_notify`) instead of two. Runs that began before it keep two.
STORE_AND_NOTIFY_TOGETHER = "store-and-notify-in-one-local-activity"
# How often, at most, a relationship asks the directory whether its people are still here.
PARTICIPANT_CHECK_INTERVAL = timedelta(days=1)


class RelationshipInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    relationship_id: Identifier
    programme_id: Identifier
    mentee_id: Identifier
    # Normally read from the programme when the relationship starts; given here, it wins.
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
    # Continue as new once history passes this many events (Temporal's own suggestion,
    # at about 10k events, applies too). Lower it to exercise continue-as-new.
    history_event_limit: int = Field(default=8000, ge=100)


class CommandResult(BaseModel):
    """What an update returns once the command's events are stored."""

    model_config = ConfigDict(frozen=True)

    command_id: str
    # False when the command id had already been applied: nothing happened this time.
    applied: bool
    events: list[str]
    version: int
    phase: Phase


class ArgumentCount:
    """Stands in for the payload of a message sent with no argument or with several: every
    message takes exactly one, a JSON object. Validating it fails like a malformed payload
    (a rejection, never a failed workflow task)."""

    def __init__(self, count: int) -> None:
        self.count = count


def _one_payload(payloads: tuple[Any, ...]) -> Any:
    return payloads[0] if len(payloads) == 1 else ArgumentCount(len(payloads))


def describe_validation_error(error: ValidationError) -> str:
    """Name every bad field, without echoing the submitted values (they may be confidential)."""
    problems = []
    for detail in error.errors():
        if isinstance(detail.get("input"), ArgumentCount):
            count = detail["input"].count
            return f"invalid payload: expected one argument, a JSON object; got {count}"
        location = ".".join(_printable(str(part)) for part in detail["loc"]) or "payload"
        # "a valid dictionary or instance of AgreementTerms" names a Python class: callers
        # in other languages send JSON.
        message = "Input should be a JSON object" if detail["type"] == "model_type" else detail["msg"]
        problems.append(f"{location}: {message}")
    return "invalid payload: " + "; ".join(problems)


def _slot_work_for(event: AnyEvent, before: RelationshipState | None) -> list[tuple[str, str | None]]:
    """What an event asks of the mentor pool's capacity (see `_manage_mentor_slots`)."""
    # A proposal scored by the pool (the relationship's own request, or a matching round on
    # behalf of its coordinator) comes with its slot reserved; one made by hand does not.
    if isinstance(event, MatchProposed) and event.proposed_by not in MATCHING_ACTORS and event.score is None:
        return [("reserve", event.mentor_id)]
    if isinstance(event, (MatchDeclined, MatchProposalExpired)):
        return [("release", event.mentor_id)]
    if isinstance(event, ClosureBegun) or (
        isinstance(event, RelationshipClosed) and before is not None and before.phase is not Phase.CLOSING
    ):
        return [("release", None)]
    return []


def _is_conflict(error: Exception) -> bool:
    """Whether a failed append_events was refused as a concurrency conflict.

    temporalio raises a local activity's own failure as the activity's ApplicationError
    itself, not wrapped in an ActivityError as for regular activities (an ActivityError
    comes only for a timeout): so both are looked at."""
    cause = error.cause if isinstance(error, ActivityError) else error
    return isinstance(cause, ApplicationError) and cause.type == "ConcurrencyConflict"


def _printable(name: str) -> str:
    # A field name can come from the sender (an unknown key) and goes into the stored
    # rejection: a NUL or other control character, or a huge key, is escaped and cut.
    return name if name.isprintable() and len(name) <= 100 else repr(name[:100])


_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


def _command_id_of(payload: Any) -> str | None:
    """The command id of a payload that failed validation, if it is a well-formed id."""
    if isinstance(payload, dict):
        try:
            return _IDENTIFIER.validate_python(payload.get("command_id"))
        except ValidationError:
            return None
    return None


SignalHandler = Callable[[Any, Any], Coroutine[Any, Any, None]]
UpdateHandler = workflow.UpdateMethodMultiParam[[Any, Any], Coroutine[Any, Any, CommandResult]]


def _handlers(model: type[Command]) -> tuple[SignalHandler, UpdateHandler]:
    """A signal and an update, both named after the command's message name.

    Payloads arrive untyped and are validated inside, so a malformed one is answered with
    the offending field (update) or recorded as a rejected command (signal) instead of
    being dropped by the data converter. The handlers take any number of arguments: a
    signal sent without one (`temporal workflow signal` without `--input`) would otherwise
    raise a TypeError in the handler and fail every workflow task from then on.
    """
    name = model.message_name

    async def signal(self: Any, *payloads: Any) -> None:
        await self._receive_signal(model, _one_payload(payloads))

    async def update(self: Any, *payloads: Any) -> CommandResult:
        result: CommandResult = await self._receive_update(model, _one_payload(payloads))
        return result

    def validate(self: Any, *payloads: Any) -> None:
        self._validate_update(model, _one_payload(payloads))

    # `self` is Any: the class is not defined yet when Temporal reads these type hints.
    for function, suffix in ((signal, "signal"), (update, "update"), (validate, "validate")):
        function.__name__ = function.__qualname__ = f"{name}_{suffix}"
    update_handler = workflow.update(name=name)(update)
    update_handler.validator(validate)
    return workflow.signal(name=name)(signal), update_handler


@workflow.defn(name="Relationship")
class Relationship:
    @workflow.init
    def __init__(self, input: RelationshipInput) -> None:
        self._input = input
        self._state: RelationshipState | None = input.state
        self._stored_version = input.state.version if input.state else 0
        # The state as the event store has it: what a conflict is resolved from.
        self._stored_state: RelationshipState | None = input.state
        # The commands behind the events not yet stored, to decide again after a conflict.
        self._redo: list[tuple[type[Command], Any]] = []
        self._outbox: list[AnyEvent] = []
        self._notifications: list[Notification] = []
        self._sending: dict[asyncio.Task[None], list[Notification]] = {}
        # Deliveries whose quick first try failed and that now retry with backoff.
        self._retrying: set[asyncio.Task[Any]] = set()
        self._search_attributes: dict[str, Any] = {}
        self._current_details = ""
        self._last_participant_check = input.last_participant_check
        self._pool_asked_for = input.pool_asked_for_attempt
        # Mentor slots to reserve (a mentor proposed by hand) or give back, once the events
        # that call for it are stored.
        self._slot_work: list[tuple[str, str | None]] = []
        # The timer of the deadline being waited for; kept across commands that leave the
        # deadline unchanged, instead of cancelling and starting a new one each time.
        self._timer: tuple[Deadline, asyncio.Task[None]] | None = None

    @workflow.run
    async def run(self, input: RelationshipInput) -> RelationshipSummary:
        if input.pending_notifications:
            self._send(input.pending_notifications)
        if self._state is None:
            settings = input.settings or await workflow.execute_activity(
                "load_programme",
                input.programme_id,
                result_type=ProgrammeSettings,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=STORE_RETRY,
                summary="Read programme settings",
            )
            self._apply(
                start_relationship(input.relationship_id, input.programme_id, input.mentee_id, settings, workflow.now())
            )
        while True:
            await self._flush()
            await self._manage_mentor_slots()
            if self.current.is_closed:
                break
            if await self._ask_pool_for_a_mentor():
                continue
            if await self._wait_for_command_or_deadline():
                undelivered = [n for notifications in self._sending.values() for n in notifications]
                workflow.continue_as_new(
                    input.model_copy(
                        update={
                            "state": self.current,
                            "last_participant_check": self._last_participant_check,
                            "pending_notifications": undelivered,
                            "pool_asked_for_attempt": self._pool_asked_for,
                        }
                    )
                )
        # The deadline's timer is left to lapse with the run rather than cancelled: a
        # cancellation in the closing task only adds history (and trips the test server).
        while True:
            await self._settle()
            if await self._quiet_switch():
                break
        assert self.current.summary is not None
        return self.current.summary

    @property
    def current(self) -> RelationshipState:
        assert self._state is not None, "the relationship has not started yet"
        return self._state

    # -- queries -------------------------------------------------------------------------

    @workflow.query(name="state")
    def state(self) -> RelationshipState | None:
        """The whole state; None only in the moment before the programme has been read."""
        return self._state

    # -- signals and updates: one pair per command, named after it -------------------------

    propose_match_signal, propose_match = _handlers(ProposeMatch)
    accept_match_signal, accept_match = _handlers(AcceptMatch)
    decline_match_signal, decline_match = _handlers(DeclineMatch)
    propose_agreement_signal, propose_agreement = _handlers(ProposeAgreement)
    sign_agreement_signal, sign_agreement = _handlers(SignAgreement)
    record_meeting_signal, record_meeting = _handlers(RecordMeeting)
    cancel_meeting_signal, cancel_meeting = _handlers(CancelMeeting)
    reschedule_meeting_signal, reschedule_meeting = _handlers(RescheduleMeeting)
    record_goal_progress_signal, record_goal_progress = _handlers(RecordGoalProgress)
    propose_goal_revision_signal, propose_goal_revision = _handlers(ProposeGoalRevision)
    acknowledge_goal_revision_signal, acknowledge_goal_revision = _handlers(AcknowledgeGoalRevision)
    submit_feedback_signal, submit_feedback = _handlers(SubmitFeedback)
    raise_concern_signal, raise_concern = _handlers(RaiseConcern)
    resolve_concern_signal, resolve_concern = _handlers(ResolveConcern)
    record_introduction_signal, record_introduction = _handlers(RecordIntroduction)
    share_resource_signal, share_resource = _handlers(ShareResource)
    pause_relationship_signal, pause_relationship = _handlers(PauseRelationship)
    resume_relationship_signal, resume_relationship = _handlers(ResumeRelationship)
    request_review_signal, request_review = _handlers(RequestReview)
    submit_review_signal, submit_review = _handlers(SubmitReview)
    close_relationship_signal, close_relationship = _handlers(CloseRelationship)
    participant_left_signal, participant_left = _handlers(ReportParticipantLeft)
    submit_reflection_signal, submit_reflection = _handlers(SubmitReflection)

    async def _started(self) -> None:
        # Only wait when there is something to wait for: waiting yields, and a signal must
        # be decided before a later message in the same task is validated.
        if self._state is None:
            await workflow.wait_condition(lambda: self._state is not None)

    async def _receive_signal(self, model: type[Command], payload: Any) -> None:
        await self._started()
        self._decide_signal(model, payload)
        self._redo.append((model, payload))

    def _decide_signal(self, model: type[Command], payload: Any) -> None:
        # A signal handler that raises fails the workflow task over and over; so nothing
        # here may raise: every problem becomes a recorded rejection.
        now = workflow.now()
        try:
            self._catch_up(now)
            command = model.model_validate(payload)
        except ValidationError as error:
            command_id = _command_id_of(payload)
            if command_id is not None and command_id in self.current.processed_command_ids:
                return
            self._apply([reject(self.current, model.message_name, command_id, describe_validation_error(error), now)])
            return
        except Exception:
            # A payload validator that fails in another way is a bug; it must not fail the task.
            workflow.logger.exception("validating %s failed", model.message_name)
            command_id = _command_id_of(payload)
            if command_id is None or command_id not in self.current.processed_command_ids:
                reason = f"{model.message_name} could not be validated (internal error)"
                self._apply([reject(self.current, model.message_name, command_id, reason, now)])
            return
        try:
            decision = decide(self.current, command, now)
        except Exception:
            workflow.logger.exception("decide failed for %s %s", model.message_name, command.command_id)
            decision = Rejection(reason=f"{model.message_name} could not be processed (internal error)")
        if isinstance(decision, Rejection):
            self._apply([reject(self.current, model.message_name, command.command_id, decision.reason, now)])
        else:
            self._apply(decision)

    def _validate_update(self, model: type[Command], payload: Any) -> None:
        try:
            command = model.model_validate(payload)
        except ValidationError as error:
            raise ValueError(describe_validation_error(error)) from None
        except Exception:
            workflow.logger.exception("validating %s failed", model.message_name)
            raise ValueError(f"{model.message_name} could not be validated (internal error)") from None
        if self._state is None:
            return  # judged by the handler once the relationship has started
        # Validators may not change state: judge the command on a caught-up copy.
        present, _ = catch_up(self._state, workflow.now())
        try:
            decision = decide(present, command, workflow.now())
        except Exception:
            workflow.logger.exception("decide failed for %s %s", model.message_name, command.command_id)
            raise ValueError(f"{model.message_name} could not be processed (internal error)") from None
        if isinstance(decision, Rejection):
            raise ValueError(decision.reason)

    async def _receive_update(self, model: type[Command], payload: Any) -> CommandResult:
        await self._started()
        command = model.model_validate(payload)
        self._catch_up(workflow.now())
        decision = decide(self.current, command, workflow.now())
        if isinstance(decision, Rejection):  # only if the state moved since validation
            raise ApplicationError(decision.reason, type="CommandRejected", non_retryable=True)
        self._apply(decision)
        self._redo.append((model, payload))
        version = self.current.version
        await workflow.wait_condition(lambda: self._stored_version >= version)
        return CommandResult(
            command_id=command.command_id,
            applied=bool(decision),
            events=[event.type for event in decision],
            version=version,
            phase=self.current.phase,
        )

    # -- the loop --------------------------------------------------------------------------

    def _apply(self, events: list[AnyEvent]) -> None:
        for event in events:
            before = self._state
            self._state = evolve(before, event)
            self._outbox.append(event)
            self._notifications.extend(notifications_for(event, self._state, before))
            self._slot_work.extend(_slot_work_for(event, before))

    def _catch_up(self, now: datetime) -> None:
        self._apply(catch_up(self.current, now)[1])

    async def _wait_for_command_or_deadline(self) -> bool:
        """Wait for a command or the next deadline; True when it is time to continue as new.

        Continuing as new is decided only in a workflow task that a timer started and before
        anything else happens in it: the server refuses the completion if messages arrive
        meanwhile, and a refused task must not have run local activities (appends, sends).
        """
        deadline = next_deadline(self.current)
        assert deadline is not None, "an open relationship always has a next deadline"
        if deadline.at > workflow.now():
            timer = self._timer_for(deadline)
            await workflow.wait_condition(lambda: bool(self._outbox) or timer.done())
            if not timer.done():
                return False
            self._timer = None
            if self._history_is_long() and self._idle(continuing=True):
                return True
        await self._check_participants()
        self._catch_up(workflow.now())
        return False

    def _idle(self, *, continuing: bool) -> bool:
        # Continuing, deliveries still retrying go along to the next run.
        deliveries = self._sending.keys() <= self._retrying if continuing else not self._sending
        return not self._outbox and workflow.all_handlers_finished() and deliveries

    def _timer_for(self, deadline: Deadline) -> asyncio.Task[None]:
        if self._timer is not None:
            waiting_for, timer = self._timer
            if waiting_for == deadline and not timer.done():
                return timer
            timer.cancel()
        timer = asyncio.create_task(workflow.sleep(deadline.at - workflow.now(), summary=deadline.summary))
        self._timer = (deadline, timer)
        return timer

    async def _ask_pool_for_a_mentor(self) -> bool:
        """Unmatched and nobody proposed: ask the mentor pool for its best available
        candidate (its slot comes reserved) once per match attempt. True if proposed."""
        state = self.current
        if state.phase is not Phase.MATCHING or state.candidate is not None or self._pool_asked_for == state.match_attempts:
            return False
        if state.match_attempts == 0 and not self._input.ask_pool_first:
            return False
        self._pool_asked_for = state.match_attempts
        candidate: Candidate | None = await workflow.execute_local_activity(
            "best_candidate",
            CandidateRequest(
                programme_id=state.programme_id,
                relationship_id=state.relationship_id,
                mentee_id=state.mentee_id,
                exclude_mentor_ids=state.declined_mentor_ids,
            ),
            result_type=Candidate | None,  # type: ignore[arg-type]
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=STORE_RETRY,
            summary=f"Ask the mentor pool (attempt {state.match_attempts + 1})",
        )
        if candidate is None:
            return False
        command = ProposeMatch(
            command_id=f"pool-{state.match_attempts + 1}",
            actor_id=MATCHING_ACTOR,
            mentor_id=candidate.mentor_id,
            explanation=candidate.explanation,
            score=candidate.score,
        )
        decision = decide(self.current, command, workflow.now())
        if isinstance(decision, Rejection):  # a proposal arrived meanwhile
            proposed = self.current.candidate
            if proposed is None:
                self._slot_work.append(("release", candidate.mentor_id))
            elif proposed.mentor_id != candidate.mentor_id:
                # The relationship holds one slot: move it back to the mentor proposed.
                self._slot_work.append(("reserve", proposed.mentor_id))
            return False
        self._apply(decision)
        return True

    async def _manage_mentor_slots(self) -> None:
        """Reserve the slot of a mentor proposed by hand; give slots back on decline, expiry
        and closure. A mentor with no free slot is withdrawn, and the search goes on.

        Local activities (one marker each): reservations and releases are idempotent per
        relationship, so one run again by a retried task changes nothing."""
        state = self.current
        while self._slot_work:
            action, mentor_id = self._slot_work.pop(0)
            if action == "release":
                await workflow.execute_local_activity(
                    "release_mentor_slot",
                    SlotRelease(programme_id=state.programme_id, relationship_id=state.relationship_id, mentor_id=mentor_id),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=STORE_RETRY,
                    summary="Give the mentor's slot back",
                )
                continue
            assert mentor_id is not None
            reservation: SlotReservation = await workflow.execute_local_activity(
                "reserve_mentor_slot",
                SlotRequest(
                    programme_id=state.programme_id,
                    relationship_id=state.relationship_id,
                    mentor_id=mentor_id,
                    mentee_id=state.mentee_id,
                ),
                result_type=SlotReservation,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=STORE_RETRY,
                summary="Reserve the proposed mentor's slot",
            )
            candidate = self.current.candidate
            if reservation.outcome == "full" and candidate is not None and candidate.mentor_id == mentor_id:
                withdraw = DeclineMatch(
                    command_id=f"pool-full-{self.current.match_attempts + 1}",
                    actor_id=MATCHING_ACTOR,
                    reason="the mentor has no free slot",
                )
                decision = decide(self.current, withdraw, workflow.now())
                if not isinstance(decision, Rejection):
                    self._apply(decision)
        if self._outbox:
            await self._flush()

    async def _check_participants(self) -> None:
        """Ask the directory, at most daily, whether anyone has left the organisation."""
        now = workflow.now()
        last = self._last_participant_check
        if last is not None and now - last < PARTICIPANT_CHECK_INTERVAL:
            return
        self._last_participant_check = now
        statuses: list[ParticipantStatus] = await workflow.execute_local_activity(
            "check_participants",
            list(self.current.participant_ids()),
            result_type=list[ParticipantStatus],
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
            summary="Check participants are still here",
        )
        for status in statuses:
            if status.known and not status.active:
                command = ReportParticipantLeft(
                    command_id=f"directory-left-{status.participant_id}",
                    actor_id=DIRECTORY_ACTOR,
                    participant_id=status.participant_id,
                )
                decision = decide(self.current, command, workflow.now())
                if not isinstance(decision, Rejection):
                    self._apply(decision)

    async def _flush(self) -> None:
        """Store every pending event, then send the notifications they caused."""
        while self._outbox:
            batch, notifications = list(self._outbox), list(self._notifications)
            first, last = batch[0].version, batch[-1].version
            request = AppendRequest(stream_id=self.current.relationship_id, expected_version=first - 1, events=batch)
            summary = f"Store events {first}–{last}" if last > first else f"Store event {first}"
            together = bool(notifications) and workflow.patched(STORE_AND_NOTIFY_TOGETHER)
            argument: AppendRequest | AppendAndNotifyRequest
            if together:
                notified = describe_notifications(notifications, self.current)
                name, argument = "append_events_and_notify", AppendAndNotifyRequest(append=request, notifications=notifications)
                summary = f"{summary}; {notified}"[:200]
            else:
                name, argument = "append_events", request
            try:
                # A local activity: one marker in history instead of three events and a task.
                outcome = await workflow.execute_local_activity(
                    name,
                    argument,
                    result_type=AppendAndNotifyResult if together else None,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=STORE_RETRY,
                    summary=summary,
                )
            except (ActivityError, ApplicationError) as error:
                # Before this patch a conflict failed the workflow (see _is_conflict).
                if not (_is_conflict(error) and workflow.patched(ADOPT_AFTER_CONFLICT)):
                    raise
                await self._adopt_stored_events()
                continue
            self._stored_version = last
            self._stored_state = fold(batch, self._stored_state)
            del self._outbox[: len(batch)]
            del self._notifications[: len(notifications)]
            if not self._outbox:
                self._redo.clear()
            if not together and notifications:
                self._send(notifications)
            elif together and outcome.notifications_pending:
                self._send(notifications, tried_as=notified)
        self._sync_search_attributes()
        self._show_current_details()

    async def _adopt_stored_events(self) -> None:
        """The store holds events this run does not know: a local activity of a workflow
        task that was never completed (a crash, a refused completion) stored them before the
        task's history was written. They happened — their notifications may be out — so the
        store wins: fold them in, then decide again the commands still pending (a command
        already applied there is recognised by its id and skipped)."""
        stored: list[AnyEvent] = await workflow.execute_local_activity(
            "read_stream",
            ReadStreamRequest(stream_id=self.current.relationship_id, after_version=self._stored_version),
            result_type=list[AnyEvent],
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
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
        for model, payload in redo:
            self._decide_signal(model, payload)
        self._catch_up(workflow.now())
        if adopted:
            self._send(adopted)  # the delivery log drops what already went out

    def _send(self, notifications: list[Notification], *, tried_as: str | None = None) -> None:
        """Deliver in the background. `tried_as`: the quick first try has been made (with the
        append) under this summary, so straight to the activity that retries with backoff."""
        # Not awaited: a slow or failing channel must not hold the relationship up.
        delivery = self._deliver(notifications) if tried_as is None else self._retry_delivery(notifications, tried_as)
        task = asyncio.create_task(delivery)
        self._sending[task] = notifications
        task.add_done_callback(self._delivery_done)

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._sending.pop(task, None)
        self._retrying.discard(task)

    async def _deliver(self, notifications: list[Notification]) -> None:
        summary = describe_notifications(notifications, self.current)
        try:
            await workflow.execute_local_activity(
                "send_notifications",
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
            # here and the notifications were never retried (see _is_conflict).
            if not workflow.patched(RETRY_AFTER_FAILED_FIRST_TRY):
                raise
        await self._retry_delivery(notifications, summary)

    async def _retry_delivery(self, notifications: list[Notification], summary: str) -> None:
        # The delivery log keeps what already went out from going out again.
        current = asyncio.current_task()
        assert current is not None
        self._retrying.add(current)
        await workflow.execute_activity(
            "send_notifications",
            notifications,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=NOTIFY_RETRY,
            summary=f"{summary} (retrying)"[:200],
        )

    async def _settle(self) -> None:
        """Finish every handler, store what they decided and deliver every notification."""
        while True:
            await self._flush()
            # Handlers may be waiting for the flush (updates) or add events (signals).
            await workflow.wait_condition(lambda: bool(self._outbox) or workflow.all_handlers_finished())
            if self._outbox:
                continue
            if self._sending:
                await asyncio.gather(*self._sending)
                continue
            return

    async def _quiet_switch(self) -> bool:
        """Give completing a workflow task of its own, and say whether nothing arrived
        meanwhile (see `_wait_for_command_or_deadline` for why)."""
        await workflow.sleep(timedelta(seconds=1), summary="Settle before ending the run")
        return self._idle(continuing=False)

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > self._input.history_event_limit

    def _show_current_details(self) -> None:
        # Kept in the worker's memory and read by the Web UI through a query: no history
        # event, so it may change on every flush. After continue-as-new it is all a run
        # shows of itself (start summary and details are not carried over).
        details = current_details(self.current, continued_from_run=workflow.info().continued_run_id)
        if details != self._current_details:
            workflow.set_current_details(details)
            self._current_details = details

    def _sync_search_attributes(self) -> None:
        state = self.current
        due = next_due_at(state)
        wanted: dict[str, Any] = {
            sa.MENTORING_PHASE.name: state.phase.value,
            sa.MENTORING_HEALTH.name: state.health.value,
            sa.MENTORING_PROGRAMME.name: state.programme_id,
            sa.MENTEE_ID.name: state.mentee_id,
            sa.MENTOR_ID.name: state.mentor_id or (state.candidate.mentor_id if state.candidate else None),
            sa.NEXT_DUE_AT.name: due,
            sa.MEETINGS_HELD.name: state.meetings_held,
        }
        if due is None:
            # Keep the last value: the SDK cannot read back an unset datetime attribute, and
            # operators filter on ExecutionStatus = 'Running' anyway.
            del wanted[sa.NEXT_DUE_AT.name]
        updates: list[SearchAttributeUpdate[Any]] = []
        for key in sa.ALL_KEYS:
            if key.name not in wanted:
                continue
            value = wanted[key.name]
            if self._search_attributes.get(key.name, "<unset>") != value:
                updates.append(key.value_set(value) if value is not None else key.value_unset())
        if updates:
            workflow.upsert_search_attributes(updates)
            self._search_attributes = wanted
