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
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pairing.requests import (
        Candidate,
        CandidateRequest,
        RoundProposalClaim,
        SlotRelease,
        SlotRequest,
        SlotReservation,
    )
    from events.commands import (
        DIRECTORY_ACTOR,
        INTERNAL_ACTORS,
        MATCHING_ACTOR,
        MATCHING_ACTORS,
        ROUND_ACTOR,
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
        command_digest,
        payload_digest,
        read_command,
    )
    from events.deadlines import Deadline, next_deadline, next_due_at
    from events.meetings import CADENCE_RULES, LEGACY_CADENCE_RULES, under_cadence_rules
    from events.operator_view import current_details, describe_notifications
    from events.decider import already_refused, catch_up, decide, refuse_from_outside, reject, start_relationship
    from events.refusals import (
        FieldProblem,
        RefusalCode,
        Rejection,
        describe_validation_error,
        field_problems,
        invalid_payload,
        is_refused_plain,
        plain_refusal,
        refuse,
        refused_as_plain,
    )
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
    from events.settings import ProgrammeRequest, ProgrammeSettings
    from events.state import Phase, RelationshipState, evolve, fold
    from events.store import (
        AppendAndNotifyRequest,
        AppendAndNotifyResult,
        AppendRequest,
        ReadStreamRequest,
        StreamOwner,
    )
    from workflows import search_attributes as sa
    from events.relationship_io import CommandResult, RelationshipInput, relationship_workflow_id

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
# workflow.patched() id: a relationship refuses to run under a workflow id that is not
# relationship/<its programme>/<its id> (its stream and its search attributes follow from it).
CHECK_WORKFLOW_ID = "refuse-a-workflow-id-that-does-not-match-the-input"
# workflow.patched() id: the meeting rules of events/meetings.py (cadence_rules 2). A run
# begun before them re-decides its history by the legacy rules, and keeps them to its end.
ANCHORED_CADENCE = "meetings-anchored-to-the-agreement"
# workflow.patched() id: messages from outside that name an internal actor are refused (a
# round's proposal is first checked against the round's records).
VERIFY_INTERNAL_ACTORS = "refuse-internal-actors-from-outside"
# workflow.patched() id: every proposal but the pool's own reserves the mentor's slot.
RESERVE_EVERY_PROPOSAL = "reserve-a-slot-for-every-proposal"
# workflow.patched() id: settings given at start are verified against the programme's
# (before, they were taken as given).
SETTINGS_FROM_THE_PROGRAMME = "settings-come-from-the-programme"
# workflow.patched() id: payloads that arrived unencrypted (MENTORFLOW_REFUSE_PLAIN_PAYLOADS)
# are refused. Recorded when the first such payload reaches a run: a run that accepted plain
# payloads before keeps them on replay.
REFUSE_PLAIN_PAYLOADS = "refuse-plain-payloads"
# How often, at most, a relationship asks the directory whether its people are still here.
PARTICIPANT_CHECK_INTERVAL = timedelta(days=1)


# A start input as sent: a RelationshipInput, or whatever else arrived (refused in `run`).
StartInput = Annotated[RelationshipInput | dict[str, Any], Field(union_mode="left_to_right")]
# Stands in for an input that could not be read, until `run` fails the workflow.
_UNREADABLE_INPUT = RelationshipInput(relationship_id="unreadable", programme_id="unreadable", mentee_id="unreadable")
# The load_programme failures that end a start, and the refusal code each is reported as.
_START_FAILURES = {
    "UnknownProgramme": RefusalCode.NOT_FOUND.value,
    "SettingsNotFromProgramme": RefusalCode.NOT_ALLOWED.value,
    "InvalidProgrammeSettings": RefusalCode.INTERNAL_ERROR.value,
}


class ArgumentCount:
    """Stands in for the payload of a message sent with no argument or with several: every
    message takes exactly one, a JSON object. Validating it fails like a malformed payload
    (a rejection, never a failed workflow task)."""

    def __init__(self, count: int) -> None:
        self.count = count


def _one_payload(payloads: tuple[Any, ...]) -> Any:
    return payloads[0] if len(payloads) == 1 else ArgumentCount(len(payloads))


__all__ = ["CommandResult", "RelationshipInput", "describe_validation_error"]  # names callers import from here


def _read(model: type[Command], payload: Any) -> Command | Rejection:
    if isinstance(payload, ArgumentCount):
        problem = FieldProblem(field="payload", message=f"expected one argument, a JSON object; got {payload.count}")
        return Rejection(code=RefusalCode.INVALID_PAYLOAD, reason=f"invalid payload: {problem.message}", problems=(problem,))
    return refused_as_plain(payload) or read_command(model, payload)


def _digest_of(model: type[Command], payload: Any, command: Command | None) -> str:
    if command is not None:
        return command_digest(command)
    return payload_digest(model.message_name, payload.count if isinstance(payload, ArgumentCount) else payload)


def _refusal_error(rejection: Rejection) -> ApplicationError:
    """How a refusal reaches update callers: its code as the error's type, never retryable."""
    return ApplicationError(rejection.reason, rejection.details(), type=rejection.code.value, non_retryable=True)


def _read_start(input: Any) -> RelationshipInput | Rejection:
    if isinstance(input, RelationshipInput):
        return input
    try:
        return RelationshipInput.model_validate(input)
    except ValidationError as error:
        return invalid_payload(field_problems(error, known=frozenset(RelationshipInput.model_fields)))


def _slot_work_for(
    event: AnyEvent, before: RelationshipState | None, *, reserve_every_proposal: bool = False
) -> list[tuple[str, str | None]]:
    """What an event asks of the mentor pool's capacity (see `_manage_mentor_slots`)."""
    # The pool's own proposal comes with its slot reserved. Every other proposal reserves
    # one (a round's is already reserved: the reservation is idempotent per relationship),
    # so a mentor's load counts it however it was made. Runs that began before that
    # reserved only for hand proposals without a score.
    if isinstance(event, MatchProposed):
        if reserve_every_proposal:
            return [("reserve", event.mentor_id)] if event.proposed_by != MATCHING_ACTOR else []
        if event.proposed_by not in MATCHING_ACTORS and event.score is None:
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
    def __init__(self, input: StartInput) -> None:
        # A start input that does not match the contract ends the workflow at once (see
        # `run`); decoding it as RelationshipInput would fail every workflow task instead.
        # Arrived unencrypted where the workers refuse that: refused in `run` (see _unwrap_plain).
        self._plain_start = is_refused_plain(input)
        read = _read_start(input["payload"] if self._plain_start and isinstance(input, dict) else input)
        self._refusal = read if isinstance(read, Rejection) else None
        self._input = read if isinstance(read, RelationshipInput) else _UNREADABLE_INPUT
        self._state: RelationshipState | None = self._input.state
        # The meeting rules this run decides by, fixed by its first decision (ANCHORED_CADENCE).
        self._cadence_rules: int | None = None
        self._stored_version = self._input.state.version if self._input.state else 0
        # The state as the event store has it: what a conflict is resolved from.
        self._stored_state: RelationshipState | None = self._input.state
        # The commands behind the events not yet stored, to decide again after a conflict.
        self._redo: list[tuple[type[Command], Any]] = []
        self._outbox: list[AnyEvent] = []
        self._notifications: list[Notification] = []
        self._sending: dict[asyncio.Task[None], list[Notification]] = {}
        # Deliveries whose quick first try failed and that now retry with backoff.
        self._retrying: set[asyncio.Task[Any]] = set()
        self._search_attributes: dict[str, Any] = {}
        self._current_details = ""
        self._last_participant_check = self._input.last_participant_check
        self._pool_asked_for = self._input.pool_asked_for_attempt
        # Mentor slots to reserve (a mentor proposed by hand) or give back, once the events
        # that call for it are stored.
        self._slot_work: list[tuple[str, str | None]] = []
        # The timer of the deadline being waited for; kept across commands that leave the
        # deadline unchanged, instead of cancelling and starting a new one each time.
        self._timer: tuple[Deadline, asyncio.Task[None]] | None = None

    @workflow.run
    async def run(self, start: StartInput) -> RelationshipSummary:
        input = self._input
        self._check_start()
        if input.pending_notifications:
            self._send(input.pending_notifications)
        if self._state is None:
            if input.settings is not None and not workflow.patched(SETTINGS_FROM_THE_PROGRAMME):
                settings = input.settings  # runs that began before the check
            else:
                settings = await self._load_programme(ProgrammeRequest(programme_id=input.programme_id, given=input.settings))
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

    def _check_start(self) -> None:
        """End the workflow at once, failed with a refusal code, on a start that cannot work."""
        if self._plain_start and workflow.patched(REFUSE_PLAIN_PAYLOADS):
            raise _refusal_error(plain_refusal())
        if self._refusal is not None:
            raise _refusal_error(self._refusal)
        input, workflow_id = self._input, workflow.info().workflow_id
        carried = ("state", "pending_notifications", "last_participant_check", "pool_asked_for_attempt")
        given = [name for name in carried if getattr(input, name) not in (None, [])]
        if given and workflow.info().continued_run_id is None:
            # What a run hands to the next one: never from a starter (it would choose the state).
            problems = tuple(FieldProblem(field=f, message="is carried only across continue-as-new") for f in given)
            raise _refusal_error(invalid_payload(problems, prefix="invalid start"))
        expected = relationship_workflow_id(input.programme_id, input.relationship_id)
        # Runs that began before the check keep going as they began.
        if workflow_id != expected and workflow.patched(CHECK_WORKFLOW_ID):
            problem = FieldProblem(
                field="workflow_id",
                message=f"should be {expected}: relationship/ then the input's programme_id and relationship_id",
            )
            raise _refusal_error(invalid_payload((problem,), prefix="invalid start"))

    async def _load_programme(self, request: ProgrammeRequest) -> ProgrammeSettings:
        try:
            settings: ProgrammeSettings = await workflow.execute_activity(
                "load_programme",
                request,
                result_type=ProgrammeSettings,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=STORE_RETRY,
                summary="Read programme settings",
            )
        except ActivityError as error:
            # Say why in the workflow's own failure, not two causes down.
            cause = error.cause
            if isinstance(cause, ApplicationError) and cause.type in _START_FAILURES:
                raise ApplicationError(cause.message, type=_START_FAILURES[cause.type], non_retryable=True) from None
            raise
        return settings

    @property
    def current(self) -> RelationshipState:
        assert self._state is not None, "the relationship has not started yet"
        return self._state

    def _deciding(self) -> RelationshipState:
        """The state to decide on: the relationship's, under this run's meeting rules. The
        first call fixes them (handlers may decide before `run` starts); not from a query or
        validator, where `workflow.patched` may not be called."""
        if self._cadence_rules is None:
            self._cadence_rules = CADENCE_RULES if workflow.patched(ANCHORED_CADENCE) else LEGACY_CADENCE_RULES
        return under_cadence_rules(self.current, self._cadence_rules)

    # -- queries -------------------------------------------------------------------------

    @workflow.query(name="state")
    def state(self) -> RelationshipState:
        """The whole state. Before the programme has been read (the first moment after the
        start): version 0, phase matching, and the settings given or the defaults."""
        if self._state is not None:
            return under_cadence_rules(self._state, self._cadence_rules)
        input, started = self._input, workflow.info().start_time
        return RelationshipState(
            relationship_id=input.relationship_id,
            programme_id=input.programme_id,
            mentee_id=input.mentee_id,
            settings=input.settings or ProgrammeSettings(),
            version=0,
            phase=Phase.MATCHING,
            started_at=started,
            phase_entered_at=started,
        )

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

    def _unwrap_plain(self, payload: Any) -> tuple[Any, Rejection | None]:
        """A payload the codec marked as arrived unencrypted: refused in runs that began
        refusing (the patch marker), its original where a run accepted it before — so a
        history replays as it was decided whatever the workers' setting is now."""
        if not is_refused_plain(payload):
            return payload, None
        if workflow.patched(REFUSE_PLAIN_PAYLOADS):
            return payload, refused_as_plain(payload)
        return payload.get("payload"), None

    def _decide_signal(self, model: type[Command], payload: Any) -> None:
        # A signal handler that raises fails the workflow task over and over; so nothing
        # here may raise: every problem becomes a recorded rejection.
        now = workflow.now()
        command: Command | None = None
        payload, plain = self._unwrap_plain(payload)
        try:
            self._catch_up(now)
            read = plain or _read(model, payload)
        except Exception:
            # A payload validator that fails in another way is a bug; it must not fail the task.
            workflow.logger.exception("validating %s failed", model.message_name)
            read = refuse(RefusalCode.INTERNAL_ERROR, f"{model.message_name} could not be validated (internal error)")
        if isinstance(read, Rejection):
            decision: list[AnyEvent] | Rejection = read
            command_id = _command_id_of(payload)
        elif read.actor_id in INTERNAL_ACTORS and workflow.patched(VERIFY_INTERNAL_ACTORS):
            # No signal can be the system: a round proposes by update, and is checked there.
            command, command_id = read, read.command_id
            decision = refuse_from_outside(read) or refuse(
                RefusalCode.NOT_ALLOWED, f"actor {read.actor_id} proposes by update only, where its claim is checked"
            )
        else:
            command, command_id = read, read.command_id
            try:
                decision = decide(self._deciding(), command, now)
            except Exception:
                workflow.logger.exception("decide failed for %s %s", model.message_name, command.command_id)
                decision = refuse(RefusalCode.INTERNAL_ERROR, f"{model.message_name} could not be processed (internal error)")
        if not isinstance(decision, Rejection):
            self._apply(decision)
            return
        digest = _digest_of(model, payload, command)
        if command is None and command_id is not None and command_id in self.current.processed_command_ids:
            return  # a malformed copy of a command already applied: nothing to record
        if already_refused(self.current, command_id, digest):
            return  # the same refused payload again: recorded once
        self._apply([reject(self.current, model.message_name, command_id, decision, now, digest)])

    def _validate_update(self, model: type[Command], payload: Any) -> None:
        try:
            read = _read(model, payload)
        except Exception:
            workflow.logger.exception("validating %s failed", model.message_name)
            read = refuse(RefusalCode.INTERNAL_ERROR, f"{model.message_name} could not be validated (internal error)")
        if isinstance(read, Rejection):
            raise _refusal_error(read)
        if outside := refuse_from_outside(read):
            raise _refusal_error(outside)
        if self._state is None:
            return  # judged by the handler once the relationship has started
        # Validators may not change state: judge the command on a caught-up copy.
        present, _ = catch_up(under_cadence_rules(self._state, self._cadence_rules), workflow.now())
        try:
            decision = decide(present, read, workflow.now())
        except Exception:
            workflow.logger.exception("decide failed for %s %s", model.message_name, read.command_id)
            decision = refuse(RefusalCode.INTERNAL_ERROR, f"{model.message_name} could not be processed (internal error)")
        if isinstance(decision, Rejection):
            raise _refusal_error(decision)

    async def _receive_update(self, model: type[Command], payload: Any) -> CommandResult:
        await self._started()
        payload, plain = self._unwrap_plain(payload)
        if plain is not None:  # the validator refuses these; only a replay could get here
            raise _refusal_error(plain)
        command = read_command(model, payload)
        assert not isinstance(command, Rejection), "the validator refuses invalid payloads"
        if command.actor_id == ROUND_ACTOR and workflow.patched(VERIFY_INTERNAL_ACTORS):
            if not await self._round_holds(command):
                raise _refusal_error(
                    refuse(RefusalCode.NOT_ALLOWED, "no matching round of this programme proposed this mentor")
                )
        self._catch_up(workflow.now())
        decision = decide(self._deciding(), command, workflow.now())
        if isinstance(decision, Rejection):  # only if the state moved since validation
            raise _refusal_error(decision)
        self._apply(decision)
        self._redo.append((model, payload))
        first = None if decision else self.current.applied_commands.get(command.command_id)
        version = self.current.version if first is None else first.version
        await workflow.wait_condition(lambda: self._stored_version >= version)
        if first is not None:
            return CommandResult(
                command_id=command.command_id,
                applied=False,
                replay=True,
                events=list(first.events),
                version=first.version,
                phase=first.phase,
            )
        return CommandResult(
            command_id=command.command_id,
            applied=bool(decision),
            replay=not decision,
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
            every = isinstance(event, MatchProposed) and workflow.patched(RESERVE_EVERY_PROPOSAL)
            self._slot_work.extend(_slot_work_for(event, before, reserve_every_proposal=every))

    def _catch_up(self, now: datetime) -> None:
        self._apply(catch_up(self._deciding(), now)[1])

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

    async def _round_holds(self, command: Command) -> bool:
        """Whether a matching round really settled on this pair (a proposal sent as the round)."""
        assert isinstance(command, ProposeMatch)
        claim = RoundProposalClaim(
            programme_id=self.current.programme_id,
            relationship_id=self.current.relationship_id,
            mentor_id=command.mentor_id,
        )
        confirmed: bool = await workflow.execute_local_activity(
            "confirm_round_proposal",
            claim,
            result_type=bool,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
            summary="Check the matching round's proposal",
        )
        return confirmed

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
        decision = decide(self._deciding(), command, workflow.now())
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
                decision = decide(self._deciding(), withdraw, workflow.now())
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
                decision = decide(self._deciding(), command, workflow.now())
                if not isinstance(decision, Rejection):
                    self._apply(decision)

    async def _flush(self) -> None:
        """Store every pending event, then send the notifications they caused."""
        while self._outbox:
            batch, notifications = list(self._outbox), list(self._notifications)
            first, last = batch[0].version, batch[-1].version
            request = AppendRequest(
                stream_id=self.current.relationship_id, expected_version=first - 1, events=batch, owner=self._owner()
            )
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

    def _owner(self) -> StreamOwner:
        """This workflow as the one owner of its relationship's stream (the store checks it)."""
        return StreamOwner(programme_id=self.current.programme_id, workflow_id=workflow.info().workflow_id)

    async def _adopt_stored_events(self) -> None:
        """The store holds events this run does not know: a local activity of a workflow
        task that was never completed (a crash, a refused completion) stored them before the
        task's history was written. They happened — their notifications may be out — so the
        store wins: fold them in, then decide again the commands still pending (a command
        already applied there is recognised by its id and skipped)."""
        stored: list[AnyEvent] = await workflow.execute_local_activity(
            "read_stream",
            ReadStreamRequest(
                stream_id=self.current.relationship_id, after_version=self._stored_version, owner=self._owner()
            ),
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
