"""The `Relationship` workflow: one mentor–mentee relationship, from matching to closure.

A thin durable shell around the pure core in `events/`: it receives commands (each both as
an update, for callers that want an answer, and as a signal, for systems that can only
signal), asks `decide` what happens, folds the events with `evolve`, appends them to the
event store in batches, sends the notifications they cause, and sleeps until the next
command or `next_deadline`.

Its parts in modules of their own: the start (workflows/start.py), the messages as they
arrive (workflows/messages.py), the outbox that stores events and delivers notifications
(workflows/outbox.py), the mentor pool's slots (workflows/mentor_pool.py), what operators
see (workflows/visibility.py), the patch ids (workflows/patches.py), and what the parts
share (workflows/shell.py).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from events.commands import (
        DIRECTORY_ACTOR,
        INTERNAL_ACTORS,
        ROUND_ACTOR,
        AcceptMatch,
        AcknowledgeGoalRevision,
        CancelMeeting,
        CloseRelationship,
        Command,
        CorrectMeetingReport,
        DeclineMatch,
        NudgeRelationship,
        PauseRelationship,
        ProposeAgreement,
        ProposeGoalRevision,
        ProposeMatch,
        RaiseConcern,
        RecordGoalProgress,
        RecordIntroduction,
        RecordMeeting,
        ReportMeetingNotHeld,
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
        read_command,
    )
    from events.deadlines import Deadline, next_deadline
    from events.meetings import CADENCE_RULES, LEGACY_CADENCE_RULES, under_cadence_rules
    from events.decider import already_refused, catch_up, decide, refuse_from_outside, reject, start_relationship
    from events.refusals import (
        RefusalCode,
        Rejection,
        describe_validation_error,
        is_refused_plain,
        refuse,
        refused_as_plain,
    )
    from events.model import AnyEvent, MatchProposed, RelationshipSummary
    from events.operator_view import describe_notifications
    from events.notifications import Notification, notifications_for
    from events.settings import ProgrammeRequest, ProgrammeSettings
    from events.state import Phase, RelationshipState
    from events.decider import evolve
    from events.relationship_io import CommandResult, RelationshipInput

from workflows.activity_refs import CHECK_PARTICIPANTS
from workflows.calls import call_activity
from workflows.mentor_pool import MentorPool, slot_work_for
from workflows.messages import command_id_of, digest_of, message_handlers, read_message, refusal_error
from workflows.outbox import AwaitedAnswer, CheckedCommand, Deliveries, Outbox
from workflows.patches import (
    ANCHORED_CADENCE,
    CONTINUE_WHEN_IDLE,
    REFUSE_PLAIN_PAYLOADS,
    RESERVE_EVERY_PROPOSAL,
    SETTINGS_FROM_THE_PROGRAMME,
    VERIFY_INTERNAL_ACTORS,
)
from workflows.start import UNREADABLE_INPUT, StartInput, check_start, load_programme, read_start
from workflows.visibility import Visibility

# How often, at most, a relationship asks the directory whether its people are still here.
PARTICIPANT_CHECK_INTERVAL = timedelta(days=1)
# The timer whose own workflow task ends a run, or continues it as new, if nothing arrived
# meanwhile (`_quiet_switch`, `_continue_soon`).
SETTLE = timedelta(seconds=1)

__all__ = ["CommandResult", "RelationshipInput", "StartInput", "describe_validation_error"]  # names callers import from here


@workflow.defn(name="Relationship")
class Relationship(Outbox, MentorPool):
    @workflow.init
    def __init__(self, input: StartInput) -> None:
        # A start input that does not match the contract ends the workflow at once (see
        # `run`); decoding it as RelationshipInput would fail every workflow task instead.
        # Arrived unencrypted where the workers refuse that: refused in `run` (see _unwrap_plain).
        self._plain_start = is_refused_plain(input)
        read = read_start(input["payload"] if self._plain_start and isinstance(input, dict) else input)
        self._refusal = read if isinstance(read, Rejection) else None
        self._input = read if isinstance(read, RelationshipInput) else UNREADABLE_INPUT
        self._state: RelationshipState | None = self._input.state
        # The meeting rules this run decides by, fixed by its first decision (ANCHORED_CADENCE).
        self._cadence_rules: int | None = None
        self._stored_version = self._input.state.version if self._input.state else 0
        # The state as the event store has it: what a conflict is resolved from.
        self._stored_state: RelationshipState | None = self._input.state
        # The commands behind the events not yet stored, to decide again after a conflict.
        self._redo: list[tuple[type[Command], Any]] = []
        self._awaiting: list[AwaitedAnswer] = []
        self._outbox: list[AnyEvent] = []
        self._notifications: list[Notification] = []
        self._deliveries = Deliveries()
        self._visibility = Visibility()
        self._last_participant_check = self._input.last_participant_check
        self._pool_asked_for = self._input.pool_asked_for_attempt
        # Mentor slots to reserve (a mentor proposed by hand) or give back, once the events
        # that call for it are stored.
        self._slot_work: list[tuple[str, str | None]] = []
        # The timer of the deadline being waited for; kept across commands that leave the
        # deadline unchanged, instead of cancelling and starting a new one each time.
        self._timer: tuple[Deadline, asyncio.Task[None]] | None = None
        # Once the history passes its limit: a short timer after which the run continues as
        # new if nothing is going on (`_wait_for_command_or_deadline`).
        self._continue_timer: asyncio.Task[None] | None = None

    @workflow.run
    async def run(self, start: StartInput) -> RelationshipSummary:
        input = self._input
        check_start(input, plain=self._plain_start, refusal=self._refusal)
        if carried := input.pending_notifications:  # from the run before (workflows/outbox.py)
            self._deliveries.send(carried, describe_notifications(carried, self.current))
        if self._state is None:
            if input.settings is not None and not workflow.patched(SETTINGS_FROM_THE_PROGRAMME):
                settings = input.settings  # runs that began before the check
            else:
                settings = await load_programme(ProgrammeRequest(programme_id=input.programme_id, given=input.settings))
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
                undelivered = self._deliveries.undelivered()
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

    propose_match_signal, propose_match = message_handlers(ProposeMatch)
    accept_match_signal, accept_match = message_handlers(AcceptMatch)
    decline_match_signal, decline_match = message_handlers(DeclineMatch)
    propose_agreement_signal, propose_agreement = message_handlers(ProposeAgreement)
    sign_agreement_signal, sign_agreement = message_handlers(SignAgreement)
    record_meeting_signal, record_meeting = message_handlers(RecordMeeting)
    cancel_meeting_signal, cancel_meeting = message_handlers(CancelMeeting)
    reschedule_meeting_signal, reschedule_meeting = message_handlers(RescheduleMeeting)
    report_meeting_not_held_signal, report_meeting_not_held = message_handlers(ReportMeetingNotHeld)
    correct_meeting_report_signal, correct_meeting_report = message_handlers(CorrectMeetingReport)
    record_goal_progress_signal, record_goal_progress = message_handlers(RecordGoalProgress)
    propose_goal_revision_signal, propose_goal_revision = message_handlers(ProposeGoalRevision)
    acknowledge_goal_revision_signal, acknowledge_goal_revision = message_handlers(AcknowledgeGoalRevision)
    submit_feedback_signal, submit_feedback = message_handlers(SubmitFeedback)
    raise_concern_signal, raise_concern = message_handlers(RaiseConcern)
    resolve_concern_signal, resolve_concern = message_handlers(ResolveConcern)
    record_introduction_signal, record_introduction = message_handlers(RecordIntroduction)
    share_resource_signal, share_resource = message_handlers(ShareResource)
    pause_relationship_signal, pause_relationship = message_handlers(PauseRelationship)
    resume_relationship_signal, resume_relationship = message_handlers(ResumeRelationship)
    request_review_signal, request_review = message_handlers(RequestReview)
    submit_review_signal, submit_review = message_handlers(SubmitReview)
    nudge_relationship_signal, nudge_relationship = message_handlers(NudgeRelationship)
    close_relationship_signal, close_relationship = message_handlers(CloseRelationship)
    participant_left_signal, participant_left = message_handlers(ReportParticipantLeft)
    submit_reflection_signal, submit_reflection = message_handlers(SubmitReflection)

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

    def _decide_signal(self, model: type[Command], payload: Any, *, checked: bool = False) -> None:
        # A signal handler that raises fails the workflow task over and over; so nothing
        # here may raise: every problem becomes a recorded rejection. `checked`: CheckedCommand.
        now = workflow.now()
        command: Command | None = None
        payload, plain = self._unwrap_plain(payload)
        try:
            self._catch_up(now)
            read = plain or read_message(model, payload)
        except Exception:
            # A payload validator that fails in another way is a bug; it must not fail the task.
            workflow.logger.exception("validating %s failed", model.message_name)
            read = refuse(RefusalCode.INTERNAL_ERROR, f"{model.message_name} could not be validated (internal error)")
        if isinstance(read, Rejection):
            decision: list[AnyEvent] | Rejection = read
            command_id = command_id_of(payload)
        elif read.actor_id in INTERNAL_ACTORS and not checked and workflow.patched(VERIFY_INTERNAL_ACTORS):
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
        digest = digest_of(model, payload, command)
        if command is None and command_id is not None and command_id in self.current.processed_command_ids:
            return  # a malformed copy of a command already applied: nothing to record
        if already_refused(self.current, command_id, digest):
            return  # the same refused payload again: recorded once
        self._apply([reject(self.current, model.message_name, command_id, decision, now, digest)])

    def _validate_update(self, model: type[Command], payload: Any) -> None:
        try:
            read = read_message(model, payload)
        except Exception:
            workflow.logger.exception("validating %s failed", model.message_name)
            read = refuse(RefusalCode.INTERNAL_ERROR, f"{model.message_name} could not be validated (internal error)")
        if isinstance(read, Rejection):
            raise refusal_error(read)
        if outside := refuse_from_outside(read):
            raise refusal_error(outside)
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
            raise refusal_error(decision)

    async def _receive_update(self, model: type[Command], payload: Any) -> CommandResult:
        await self._started()
        payload, plain = self._unwrap_plain(payload)
        if plain is not None:  # the validator refuses these; only a replay could get here
            raise refusal_error(plain)
        command = read_command(model, payload)
        assert not isinstance(command, Rejection), "the validator refuses invalid payloads"
        if command.actor_id == ROUND_ACTOR and workflow.patched(VERIFY_INTERNAL_ACTORS):
            if not await self._round_holds(command):
                raise refusal_error(
                    refuse(RefusalCode.NOT_ALLOWED, "no matching round of this programme proposed this mentor")
                )
        self._catch_up(workflow.now())
        decision = decide(self._deciding(), command, workflow.now())
        if isinstance(decision, Rejection):  # only if the state moved since validation
            raise refusal_error(decision)
        self._apply(decision)
        first = None if decision else self.current.applied_commands.get(command.command_id)
        version = self.current.version if first is None else first.version
        awaited = AwaitedAnswer(command.command_id, CheckedCommand((model, payload)), version, fresh=bool(decision))
        if (await self._until_stored(awaited)).redecided:
            return awaited.answer(self._stored_state or self.current, self.current.phase)
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
            self._slot_work.extend(slot_work_for(event, before, reserve_every_proposal=every))

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
            soon = self._continue_soon()
            await workflow.wait_condition(lambda: bool(self._outbox) or timer.done() or (soon is not None and soon.done()))
            if soon is not None and soon.done():
                self._continue_timer = None
                if not timer.done():
                    return self._idle(continuing=True)
            if not timer.done():
                return False
            self._timer = None
            if self._history_is_long() and self._idle(continuing=True):
                return True
        await self._check_participants()
        self._catch_up(workflow.now())
        return False

    def _idle(self, *, continuing: bool) -> bool:
        return not self._outbox and workflow.all_handlers_finished() and self._deliveries.idle(continuing=continuing)

    def _timer_for(self, deadline: Deadline) -> asyncio.Task[None]:
        if self._timer is not None:
            waiting_for, timer = self._timer
            if waiting_for == deadline and not timer.done():
                return timer
            timer.cancel()
        timer = asyncio.create_task(workflow.sleep(deadline.at - workflow.now(), summary=deadline.summary))
        self._timer = (deadline, timer)
        return timer


    async def _check_participants(self) -> None:
        """Ask the directory, at most daily, whether anyone has left the organisation."""
        now = workflow.now()
        last = self._last_participant_check
        if last is not None and now - last < PARTICIPANT_CHECK_INTERVAL:
            return
        self._last_participant_check = now
        statuses = await call_activity(
            CHECK_PARTICIPANTS, list(self.current.participant_ids()), summary="Check participants are still here"
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


    async def _settle(self) -> None:
        """Finish every handler, store what they decided and deliver every notification."""
        while True:
            await self._flush()
            # Handlers may be waiting for the flush (updates) or add events (signals).
            await workflow.wait_condition(lambda: bool(self._outbox) or workflow.all_handlers_finished())
            if self._outbox:
                continue
            if self._deliveries.sending:
                await self._deliveries.wait()
                continue
            return

    async def _quiet_switch(self) -> bool:
        """Give completing a workflow task of its own, and say whether nothing arrived
        meanwhile (see `_wait_for_command_or_deadline` for why)."""
        await workflow.sleep(SETTLE, summary="Settle before ending the run")
        return self._idle(continuing=False)

    def _continue_soon(self) -> asyncio.Task[None] | None:
        """Past the history limit, a timer of a second: its workflow task continues the run
        as new if nothing arrived meanwhile. A cold worker replays the whole run before it
        can answer, so the run is kept near the limit rather than left to grow until the
        next deadline (docs/deploying.md, "Replay after a restart")."""
        if self._continue_timer is None and self._history_is_long() and workflow.patched(CONTINUE_WHEN_IDLE):
            self._continue_timer = asyncio.create_task(workflow.sleep(SETTLE, summary="Settle before continuing as new"))
        return self._continue_timer

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > self._input.history_event_limit

