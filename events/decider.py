"""The entry to the relationship's rules: `decide` (given the state, a command and the time,
which events happen, or why not), `decide_deadline`, and `evolve` / `fold`.

The rules themselves sit in one module per lifecycle stage; this module gathers them
(`STAGES`) into the tables it dispatches on, and refuses to load when a piece is missing (a
command model without its rules, an event without its state change, a deadline nobody
handles). Pure functions only: event ids are derived from the stream, the version and the
cause, so deciding the same thing twice yields the same events — a retried append is
recognised as the same write, and a replayed workflow decides identically.

Every decision ends with the same follow-up (`_follow_up`): a relationship in its cadence
always has its next meeting scheduled while the term has room for one (events/meetings.py),
and its health always matches `assess_health`.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from datetime import datetime

from events import agreement, closure, concerns, goals, health, matching, meetings, pause, review
from events.commands import COMMAND_TYPES, INTERNAL_ACTORS, ROUND_ACTOR, Command, ProposeMatch, command_digest
from events.deadlines import DeadlineKind, next_deadline
from events.decision import ChangeRule, Changes, CommandSpec, DeadlineRule, Emitter, Stage, admit
from events.model import EVENT_TYPES, AnyEvent, CommandRejected, CommandStamp, Event, RelationshipStarted
from events.refusals import RefusalCode, Rejection, refuse
from events.settings import ProgrammeSettings
from events.state import REJECTIONS_KEPT, AppliedCommand, Phase, RejectedCommand, RelationshipState, started_fields

__all__ = [
    "COMMANDS",
    "SPECS",
    "STAGES",
    "Decision",
    "Rejection",
    "already_refused",
    "catch_up",
    "decide",
    "decide_deadline",
    "evolve",
    "fold",
    "refuse_from_outside",
    "reject",
    "start_relationship",
]

# In the order of a relationship's life; commands are listed (contract, docs) in this order.
STAGES: tuple[Stage, ...] = (
    matching.stage,
    agreement.stage,
    meetings.stage,
    goals.stage,
    concerns.stage,
    pause.stage,
    review.stage,
    health.stage,
    closure.stage,
)

COMMANDS: dict[type[Command], CommandSpec] = {spec.command: spec for stage in STAGES for spec in stage.commands}
# The same declarations by message name, in the order of COMMAND_TYPES.
SPECS: dict[str, CommandSpec] = {name: COMMANDS[model] for name, model in COMMAND_TYPES.items() if model in COMMANDS}
_CHANGES: dict[type[Event], ChangeRule] = {event: rule for stage in STAGES for event, rule in stage.changes.items()}
_DEADLINES: Mapping[str, DeadlineRule] = {kind: rule for stage in STAGES for kind, rule in stage.deadlines.items()}


def missing_pieces() -> list[str]:
    """What the stages leave undeclared: empty when every command model has its rules, every
    event its state change and every deadline its handler."""
    missing = [f"command {name} has no rules in any stage" for name, model in COMMAND_TYPES.items() if model not in COMMANDS]
    missing += [f"{spec.name} is declared but not a command model in events/commands.py" for spec in COMMANDS.values()
                if COMMAND_TYPES.get(spec.name) is not spec.command]  # fmt: skip
    evolved = {*_CHANGES, RelationshipStarted, CommandRejected}
    missing += [f"event {name} has no state change in any stage" for name, model in EVENT_TYPES.items() if model not in evolved]
    events = set(EVENT_TYPES.values())
    missing += [f"{model.__name__} has a state change but is not in AnyEvent" for model in _CHANGES if model not in events]
    kinds = typing.get_args(DeadlineKind)
    missing += [f"deadline {kind} has no handler in any stage" for kind in kinds if kind not in _DEADLINES]
    missing += [f"deadline handler for unknown kind {kind}" for kind in _DEADLINES if kind not in kinds]
    return missing


if _missing := missing_pieces():
    raise RuntimeError("the relationship's rules are incomplete: " + "; ".join(_missing))

Decision = list[AnyEvent] | Rejection
# Commands accepted while the relationship is closing (waiting for its reflections).
_WHILE_CLOSING = tuple(spec.command for spec in COMMANDS.values() if Phase.CLOSING in spec.phases)


# -- evolve --------------------------------------------------------------------------------


def evolve(state: RelationshipState | None, event: AnyEvent) -> RelationshipState:
    """Apply one event. The first event of a stream must be `RelationshipStarted`."""
    if state is None:
        if not isinstance(event, RelationshipStarted):
            raise ValueError(f"a stream must begin with RelationshipStarted, not {event.type}")
        return RelationshipState(
            **started_fields(event),
            settings=event.settings,
            phase=Phase.MATCHING,
            phase_entered_at=event.occurred_at,
            processed_command_ids=frozenset({event.command_id} if event.command_id else ()),
        )
    if event.version != state.version + 1:
        raise ValueError(f"event version {event.version} does not follow state version {state.version}")
    changes = _changes(event, state)
    changes["version"] = event.version
    if event.command_id is not None and not isinstance(event, CommandRejected):
        if event.command_id not in state.processed_command_ids:
            changes["processed_command_ids"] = state.processed_command_ids | {event.command_id}
        changes["applied_commands"] = _applied(state, event, changes.get("phase", state.phase))
    if "phase" in changes and changes["phase"] is not state.phase:
        changes["phase_entered_at"] = event.occurred_at
    return state.model_copy(update=changes)


def fold(events: Iterable[AnyEvent], state: RelationshipState | None = None) -> RelationshipState | None:
    for event in events:
        state = evolve(state, event)
    return state


def _changes(event: AnyEvent, state: RelationshipState) -> Changes:
    if isinstance(event, RelationshipStarted):
        raise ValueError("RelationshipStarted may only begin a stream")
    if isinstance(event, CommandRejected):
        return _rejected(event, state)
    rule = _CHANGES.get(type(event))
    if rule is None:
        raise TypeError(f"no evolve rule for {type(event).__name__}")
    return rule(event, state)


def _applied(state: RelationshipState, event: AnyEvent, phase: object) -> dict[str, AppliedCommand]:
    assert event.command_id is not None and isinstance(phase, Phase)
    first = state.applied_commands.get(event.command_id)
    if first is None:
        stamp = event.caused_by
        record = AppliedCommand(
            message=stamp.message if stamp else None,
            digest=stamp.digest if stamp else None,
            events=(event.type,),
            version=event.version,
            phase=phase,
        )
    else:
        record = first.model_copy(update={"events": (*first.events, event.type), "version": event.version, "phase": phase})
    return {**state.applied_commands, event.command_id: record}


def _rejected(event: CommandRejected, state: RelationshipState) -> Changes:
    # The state keeps what the event says, under the same names, and when it was refused.
    kept = {name: getattr(event, name) for name in RejectedCommand.model_fields if name != "rejected_at"}
    rejection = RejectedCommand(**kept, rejected_at=event.occurred_at)
    return {"rejected_commands": (*state.rejected_commands, rejection)[-REJECTIONS_KEPT:]}


def _emitter(state: RelationshipState | None, stream_id: str, cause: str, now: datetime, command_id: str | None,
             stamp: CommandStamp | None = None) -> Emitter:  # fmt: skip
    return Emitter(state, stream_id, cause, now, command_id, evolve, stamp)


# -- decide --------------------------------------------------------------------------------


def start_relationship(
    relationship_id: str, programme_id: str, mentee_id: str, settings: ProgrammeSettings, now: datetime
) -> list[AnyEvent]:
    emit = _emitter(None, relationship_id, "start", now, command_id=None)
    emit(RelationshipStarted, programme_id=programme_id, mentee_id=mentee_id, settings=settings)
    return emit.events


def reject(
    state: RelationshipState,
    command_name: str,
    command_id: str | None,
    rejection: Rejection,
    now: datetime,
    payload_digest: str | None = None,
) -> AnyEvent:
    """The event that records a signalled command which was not allowed."""
    cause = f"rejected:{command_id}" if command_id else f"rejected:{state.version}"
    emit = _emitter(state, state.relationship_id, cause, now, command_id)
    emit(
        CommandRejected,
        command_name=command_name,
        code=rejection.code,
        reason=rejection.reason,
        problems=rejection.problems,
        payload_digest=payload_digest,
    )
    return emit.events[0]


def already_refused(state: RelationshipState, command_id: str | None, payload_digest: str) -> bool:
    """Whether this very payload was refused last time its command id was sent: a resent
    signal is then not recorded again (a corrected one, with other content, is decided)."""
    if command_id is None:
        return False
    for rejected in reversed(state.rejected_commands):
        if rejected.command_id == command_id:
            return rejected.payload_digest == payload_digest
    return False


def refuse_from_outside(command: Command) -> Rejection | None:
    """A message sent from outside (a signal or update) that claims to be the system itself.

    The directory's and the pool's commands are issued by the workflow, never received; a
    matching round's `propose_match` is received and must then be confirmed against the
    round's own records (the workflow does that, it needs I/O)."""
    if command.actor_id not in INTERNAL_ACTORS:
        return None
    if command.actor_id == ROUND_ACTOR and isinstance(command, ProposeMatch):
        return None
    return refuse(
        RefusalCode.NOT_ALLOWED,
        f"actor {command.actor_id} is the system itself: it acts only from the system's own workflows",
    )


def decide(state: RelationshipState, command: Command, now: datetime) -> Decision:
    """The events a command causes, `[]` for a command already applied (a retry), or a rejection.

    A command id names one command: sent again with the same content it is a retry and
    changes nothing; sent with other content (or as another message) it is refused with
    `command_id_reused`. A refused command does not use its id up."""
    digest = command_digest(command)
    if command.command_id in state.processed_command_ids:
        first = state.applied_commands.get(command.command_id)
        if first is not None and first.digest is not None and first.digest != digest:
            return refuse(
                RefusalCode.COMMAND_ID_REUSED,
                f"command id {command.command_id} was already used for another command ({first.message}); "
                "nothing happened: send a new command with a new command id",
            )
        return []
    if state.phase is Phase.CLOSED:
        return refuse(RefusalCode.WRONG_PHASE, f"the relationship is closed ({state.closure_reason})")
    if state.phase is Phase.CLOSING and not isinstance(command, _WHILE_CLOSING):
        names = [model.message_name for model in _WHILE_CLOSING]
        accepted = " and ".join(names) + (" are" if len(names) > 1 else " is")
        return refuse(RefusalCode.WRONG_PHASE, f"the relationship is closing; only {accepted} accepted")
    spec = COMMANDS.get(type(command))
    if spec is None:
        return refuse(RefusalCode.UNKNOWN_MESSAGE, f"unknown command {command.message_name}")
    sender = admit(state, command, spec)
    if isinstance(sender, Rejection):
        return sender
    stamp = CommandStamp(message=command.message_name, digest=digest)
    emit = _emitter(state, state.relationship_id, f"command:{command.command_id}", now, command.command_id, stamp)
    rejection = spec.decide(command, emit, sender)
    if rejection is not None:
        return rejection
    _follow_up(emit)
    return emit.events


def decide_deadline(state: RelationshipState, now: datetime) -> list[AnyEvent]:
    """The events caused by the next deadline if it is due at `now`, else none."""
    deadline = next_deadline(state)
    if deadline is None or deadline.at > now:
        return []
    emit = _emitter(state, state.relationship_id, f"deadline:{deadline.kind}:{deadline.at.isoformat()}", now, None)
    _DEADLINES[deadline.kind](emit)
    _follow_up(emit)
    return emit.events


# Every deadline handler moves the state past its deadline, so catching up ends; the bound
# turns a rule that does not into a loud error instead of a hung workflow task.
MAX_DEADLINES_PER_CATCH_UP = 100


def catch_up(state: RelationshipState, now: datetime) -> tuple[RelationshipState, list[AnyEvent]]:
    """Apply every deadline that is due at `now`, so a command is judged on the present.

    Without this, a command arriving just after a deadline but before its timer fired
    would be decided on the past (accepting a proposal that has already expired).
    """
    caught_up: list[AnyEvent] = []
    for _ in range(MAX_DEADLINES_PER_CATCH_UP):
        due = decide_deadline(state, now)
        if not due:
            return state, caught_up
        for event in due:
            state = evolve(state, event)
        caught_up.extend(due)
    raise RuntimeError(f"deadlines of {state.relationship_id} did not settle after {MAX_DEADLINES_PER_CATCH_UP} steps")


def _follow_up(emit: Emitter) -> None:
    state = emit.current
    if not state.in_cadence or state.is_paused:
        return
    meetings.schedule_next_meeting(emit)
    health.reassess_health(emit)
