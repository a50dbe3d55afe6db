"""Bad input on live relationships: hypothesis throws arbitrary JSON, ill-typed, missing,
extra, huge and unicode fields, commands out of their phase and commands from strangers at
every signal and update of one live relationship per phase, on the real dev server.

Updates must be refused with a message that names the problem and leave the state exactly
as it was; signals must be recorded as a rejection (`CommandRejected`) and change nothing
else; afterwards no workflow task has failed, every rejection is in the event store and
each relationship still accepts a valid command.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.database import create_pool, migrate, with_database
from activities.event_store import PostgresEventStore
from events.commands import COMMAND_TYPES, DIRECTORY_ACTOR, MATCHING_ACTORS
from events.state import RelationshipState
from events.decider import SPECS, fold
from events.decision import Pause
from tests.support.session import TEST_KEYRING, dev_server
from tests.support.helpers import AGREEMENT, activate, cmd, failed_workflow_tasks, new_worker, start_relationship, state_of
from events.refusals import RefusalCode

REFUSAL_CODE_NAMES = {code.value for code in RefusalCode}

PHASES = ("matching", "agreement", "active", "review", "closing")
MENTEE, MENTOR, COORDINATOR = "mentee-1", "mentor-1", "coord-1"
KNOWN_ACTORS = {MENTEE, MENTOR, COORDINATOR, DIRECTORY_ACTOR, *MATCHING_ACTORS}

# Where each command is allowed, and what a stranger is told: as its rules declare them.
ALLOWED_IN: dict[str, set[str]] = {name: {phase.value for phase in spec.phases} for name, spec in SPECS.items()}
STRANGER_RULES = tuple(sorted({spec.refusal.replace("actor {actor} ", "") for spec in SPECS.values()}))
# Commands whose first obstacle, in each phase they are allowed in, is who sends them: all
# but resume_relationship (nothing is paused here) and resolve_concern (no concern is open
# here, and the concern is looked up first).
ACTOR_CHECKED: dict[str, tuple[str, ...]] = {
    phase: tuple(
        name
        for name, spec in SPECS.items()
        if phase in ALLOWED_IN[name] and spec.pause is not Pause.ONLY_PAUSED and name != "resolve_concern"
    )
    for phase in PHASES
}


def valid_payload(name: str, now: datetime) -> dict[str, Any]:
    """A well-formed command from someone entitled to send it (in the right phase)."""
    fields: dict[str, tuple[str, dict[str, Any]]] = {
        "propose_match": (COORDINATOR, {"mentor_id": "mentor-9", "explanation": "shares two goals"}),
        "accept_match": (MENTEE, {}),
        "decline_match": (MENTEE, {"reason": "not now"}),
        "propose_agreement": (MENTEE, {"terms": AGREEMENT}),
        "sign_agreement": (MENTEE, {"agreement_version": 1}),
        "record_meeting": (MENTEE, {"held_at": (now - timedelta(minutes=5)).isoformat(), "duration_minutes": 30}),
        "cancel_meeting": (MENTEE, {"meeting_number": 1, "reason": "ill"}),
        "reschedule_meeting": (MENTEE, {"meeting_number": 1, "starts_at": (now + timedelta(days=3)).isoformat()}),
        "report_meeting_not_held": (MENTEE, {"meeting_number": 1, "reason": "no show"}),
        "correct_meeting_report": (MENTOR, {"meeting_number": 1, "outcome": "held", "duration_minutes": 45,
                                            "held_at": (now - timedelta(hours=2)).isoformat(), "reason": "we met"}),
        "record_goal_progress": (MENTEE, {"goal_id": "g1", "progress_percent": 40}),
        "propose_goal_revision": (MENTEE, {"goal": {"goal_id": "g9", "title": "Speak at a meetup"}, "rationale": "why"}),
        "acknowledge_goal_revision": (MENTOR, {"revision_id": "rev-1"}),
        "submit_feedback": (MENTEE, {"feedback_round": 1, "score": 4, "comment": "good"}),
        "raise_concern": (MENTEE, {"text": "we keep missing meetings"}),
        "resolve_concern": (COORDINATOR, {"concern_id": "concern-1", "resolution": "talked"}),
        "record_introduction": (MENTOR, {"introduced_to": "the platform lead", "note": "went well"}),
        "share_resource": (MENTOR, {"title": "A book", "url": "https://example.org/book"}),
        "pause_relationship": (MENTEE, {"until": (now + timedelta(days=7)).isoformat(), "reason": "leave"}),
        "resume_relationship": (MENTEE, {}),
        "request_review": (MENTEE, {}),
        "submit_review": (MENTEE, {"outcome": "continue", "comment": "on track"}),
        "nudge_relationship": (COORDINATOR, {}),
        "close_relationship": (MENTEE, {"note": "done"}),
        "participant_left": (COORDINATOR, {"participant_id": MENTOR}),
        "submit_reflection": (MENTEE, {"text": "I learnt a lot"}),
    }
    actor, rest = fields[name]
    return cmd(actor, **rest)


def test_every_command_has_a_valid_payload_here() -> None:
    """The cases below build on `valid_payload`: it must know every command (a new one too)."""
    now = datetime.now(timezone.utc)
    for name, model in COMMAND_TYPES.items():
        model.model_validate(json.loads(json.dumps(valid_payload(name, now))))


# -- what an expectation looks like -----------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One message to send, and the phrases of which the refusal must contain at least one."""

    name: str
    payload: Any
    kind: str
    phrases: tuple[str, ...]
    # All of these must appear too (e.g. the field's name).
    also: tuple[str, ...] = ()

    def explains(self, message: str) -> bool:
        return any(p in message for p in self.phrases) and all(p in message for p in self.also)


def locally_invalid(name: str, payload: Any) -> bool:
    """Whether the command model refuses the payload as it arrives (after a JSON round trip)."""
    try:
        COMMAND_TYPES[name].model_validate(json.loads(json.dumps(payload)))
    except ValidationError:
        return True
    return False


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
any_json = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
command_names = st.sampled_from(sorted(COMMAND_TYPES))


@st.composite
def wrong_field(draw: st.DrawFn, now: datetime) -> Case:
    """One field of a valid command replaced by junk of another type (or nested junk)."""
    name = draw(command_names)
    payload = valid_payload(name, now)
    key = draw(st.sampled_from(sorted(payload)))
    junk = draw(any_json.filter(lambda value: value != payload[key]))
    bad = {**payload, key: junk}
    if not locally_invalid(name, bad):
        # Lax coercion accepted it ("5" for 5, null for an optional field): replace with an object.
        bad = {**payload, key: {"nested": [junk, {"deeper": junk}]}}
    return Case(name, bad, "wrong type", ("invalid payload",), (key,))


@st.composite
def missing_field(draw: st.DrawFn, now: datetime) -> Case:
    name = draw(command_names)
    model = COMMAND_TYPES[name]
    required = sorted(f for f, info in model.model_fields.items() if info.is_required())
    key = draw(st.sampled_from(required))
    payload = valid_payload(name, now)
    del payload[key]
    return Case(name, payload, "missing field", (f"{key}: Field required",))


@st.composite
def extra_field(draw: st.DrawFn, now: datetime) -> Case:
    name = draw(command_names)
    payload = valid_payload(name, now)
    key = draw(st.text(min_size=1, max_size=20).filter(lambda k: k not in COMMAND_TYPES[name].model_fields))
    payload[key] = draw(any_json)
    # An unknown key is sender text: it is named only as "(unknown field)", never echoed.
    return Case(name, payload, "extra field", ("(unknown field): is not a field of this message",))


@st.composite
def huge_field(draw: st.DrawFn, now: datetime) -> Case:
    """A text field longer than any field allows (unicode included): 10,001 to ~12,000 characters."""
    name = draw(command_names)
    payload = valid_payload(name, now)
    key = draw(st.sampled_from(sorted(k for k, v in payload.items() if isinstance(v, str))))
    unit = draw(st.text(min_size=1, max_size=8))
    payload[key] = (unit * (10_001 // len(unit) + 1))[: draw(st.integers(10_001, 12_000))]
    return Case(name, payload, "huge field", ("invalid payload",), (key,))


@st.composite
def junk_payload(draw: st.DrawFn) -> Case:
    """Anything at all: a scalar, a list, or an object with arbitrary keys."""
    name = draw(command_names)
    objects = st.dictionaries(st.text(max_size=12), any_json, min_size=1, max_size=6)
    payload = draw((any_json | objects).filter(lambda junk: locally_invalid(name, junk)))
    return Case(name, payload, "junk", ("invalid payload",))


@st.composite
def out_of_phase(draw: st.DrawFn, phase: str, now: datetime) -> Case:
    if phase == "closing":
        name = draw(command_names.filter(lambda n: "closing" not in ALLOWED_IN[n]))
        return Case(name, valid_payload(name, now), "out of phase", ("the relationship is closing",))
    name = draw(st.sampled_from(sorted(n for n, phases in ALLOWED_IN.items() if phase not in phases)))
    if SPECS[name].pause is Pause.ONLY_PAUSED:
        return Case(name, valid_payload(name, now), "out of phase", ("the relationship is not paused",))
    return Case(name, valid_payload(name, now), "out of phase", ("only allowed in the",), (f"in {phase}",))


strangers = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@-]{0,40}\Z").filter(lambda a: a not in KNOWN_ACTORS)


@st.composite
def from_a_stranger(draw: st.DrawFn, phase: str, now: datetime) -> Case:
    name = draw(st.sampled_from(ACTOR_CHECKED[phase]))
    stranger = draw(strangers)
    payload = {**valid_payload(name, now), "actor_id": stranger}
    return Case(name, payload, "stranger", STRANGER_RULES)


def bad_messages(phase: str) -> st.SearchStrategy[Case]:
    now = datetime.now(timezone.utc)
    return st.one_of(
        wrong_field(now),
        missing_field(now),
        extra_field(now),
        huge_field(now),
        junk_payload(),
        out_of_phase(phase, now),
        from_a_stranger(phase, now),
    )


# -- one live relationship per phase ---------------------------------------------------------


@dataclass
class Live:
    env: WorkflowEnvironment
    pool: asyncpg.Pool
    handles: dict[str, WorkflowHandle[Any, Any]]
    signals_sent: Counter[str] = field(default_factory=Counter)
    fresh: Callable[[], int] = field(default_factory=lambda: itertools.count().__next__)


@pytest.fixture(scope="module")
async def live(temporal_binary: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    database = f"mentorflow_fuzz_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    pool = await create_pool(with_database(postgres_url, database), max_size=20)
    await migrate(pool)
    env = await dev_server(temporal_binary, Path(tmp_path_factory.mktemp("fuzz")) / "temporal.db")
    stack = AsyncExitStack()
    handles: dict[str, WorkflowHandle[Any, Any]] = {}
    try:
        worker = await stack.enter_async_context(new_worker(env.client, pool))
        handles.update({phase: await start_relationship(env.client, worker) for phase in PHASES})
        await handles["matching"].execute_update("propose_match", cmd(COORDINATOR, mentor_id=MENTOR))
        agreement = handles["agreement"]
        await agreement.execute_update("propose_match", cmd(COORDINATOR, mentor_id=MENTOR))
        await agreement.execute_update("accept_match", cmd(MENTEE))
        await agreement.execute_update("accept_match", cmd(MENTOR))
        await agreement.execute_update("propose_agreement", cmd(MENTEE, terms=AGREEMENT))
        for phase in ("active", "review", "closing"):
            await activate(handles[phase])
        await handles["review"].execute_update("request_review", cmd(MENTEE))
        await handles["closing"].execute_update("close_relationship", cmd(MENTEE))
        for phase, handle in handles.items():
            assert (await state_of(handle)).phase.value == phase
        yield Live(env, pool, handles)
    finally:
        # A relationship stuck by a bug (an append retried for ever) must not hang the
        # teardown: end the workflows, and give the worker and the pool a time limit.
        for handle in handles.values():
            with suppress(RPCError):
                await handle.terminate(reason="the fuzz tests are over")
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stack.aclose(), timeout=30)
        await env.shutdown()
        pool.terminate()
        await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        await admin.close()


def unchanged_apart_from_the_rejection(state: RelationshipState) -> dict[str, Any]:
    return state.model_dump(exclude={"version", "processed_command_ids", "rejected_commands"})


async def wait_for_version(handle: WorkflowHandle[Any, Any], above: int) -> RelationshipState:
    for _ in range(500):
        state = await state_of(handle)
        if state.version > above:
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"the signal was not recorded: version still {above}")


async def wait_until_stored(pool: asyncpg.Pool, relationship_id: str, version: int) -> None:
    """The rejection must reach the event store too (an event it refuses would be retried
    for ever, and the relationship would be stuck behind it)."""
    for _ in range(500):
        stored = await pool.fetchval("SELECT max(version) FROM events WHERE stream_id = $1", relationship_id)
        if stored is not None and stored >= version:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"event {version} of {relationship_id} never reached the event store")


FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)


async def refused_and_nothing_changed(handle: WorkflowHandle[Any, Any], case: Case) -> None:
    before = await state_of(handle)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(case.name, case.payload)
    message = str(refused.value.cause)
    assert case.explains(message), f"{case.kind}: {message!r} does not name the problem"
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError) and cause.non_retryable and cause.type in REFUSAL_CODE_NAMES, cause
    assert "REJSENT" not in message, "a field name the sender made up is echoed"
    assert await state_of(handle) == before


async def recorded_as_rejection_only(live: Live, phase: str, case: Case) -> None:
    payload = case.payload
    command_id = payload.get("command_id") if isinstance(payload, dict) else None
    if isinstance(command_id, str) and 1 <= len(command_id) <= 128:
        # Signals are deduplicated by command id: keep the junk, but make each id new.
        suffix = f"-{live.fresh()}"
        payload = {**payload, "command_id": command_id[: 128 - len(suffix)] + suffix}
    handle = live.handles[phase]
    before = await state_of(handle)
    await handle.signal(case.name, payload)
    after = await wait_for_version(handle, before.version)
    live.signals_sent[phase] += 1

    assert after.version == before.version + 1, "one event: the rejection, and nothing else"
    rejection = after.rejected_commands[-1]
    assert rejection.command_name == case.name
    assert case.explains(rejection.reason), f"{case.kind}: {rejection.reason!r} does not name the problem"
    assert rejection.code.value in REFUSAL_CODE_NAMES and "REJSENT" not in rejection.reason
    assert unchanged_apart_from_the_rejection(after) == unchanged_apart_from_the_rejection(before)
    assert after.processed_command_ids - before.processed_command_ids <= {rejection.command_id}
    await wait_until_stored(live.pool, after.relationship_id, after.version)


@pytest.mark.parametrize("phase", PHASES)
@settings(FUZZ, max_examples=30)
@given(data=st.data())
async def test_bad_updates_are_refused_naming_the_problem_and_change_nothing(
    live: Live, phase: str, data: st.DataObject
) -> None:
    await refused_and_nothing_changed(live.handles[phase], data.draw(bad_messages(phase), label="case"))


@pytest.mark.parametrize("phase", PHASES)
@settings(FUZZ, max_examples=12)
@given(data=st.data())
async def test_bad_signals_are_recorded_as_rejections_and_change_nothing_else(
    live: Live, phase: str, data: st.DataObject
) -> None:
    await recorded_as_rejection_only(live, phase, data.draw(bad_messages(phase), label="case"))


def known_nasties(meeting_number: int) -> list[Case]:
    """Inputs that once got a relationship stuck (an event the store refused, retried for
    ever; a deadline past the end of the calendar) or a validator to raise the wrong error."""
    terms = {**AGREEMENT, "availability": [{"party": "mentee", "timezone": "Europe/" + "x" * 300, "windows": [
        {"weekday": 0, "start": "09:00", "end": "10:00"}]}]}  # fmt: skip
    return [
        Case("share_resource", {**cmd(MENTOR, title="t"), "\x00key": 1}, "NUL key", ("(unknown field)",)),
        Case("share_resource", {**cmd(MENTOR, title="t"), "REJSENT my mentor drinks": 1}, "sender's key", ("(unknown field)",)),
        Case("record_introduction", cmd(MENTOR, introduced_to="a\x00b"), "NUL text", ("introduced_to contains a NUL",)),
        Case("request_review", {"command_id": "\x00", "actor_id": MENTEE}, "NUL id", ("command_id",)),
        Case("propose_agreement", cmd(MENTEE, terms=terms), "long time zone", ("unknown time zone",)),
        Case(
            "reschedule_meeting",
            cmd(MENTEE, meeting_number=meeting_number, starts_at="9999-12-31T20:00:00+00:00"),
            "end of the calendar",
            ("more than 366 days ahead",),
        ),
    ]


async def test_known_nasty_inputs_are_refused_and_recorded(live: Live) -> None:
    state = await state_of(live.handles["active"])
    assert state.next_meeting is not None
    for case in known_nasties(state.next_meeting.meeting_number):
        await refused_and_nothing_changed(live.handles["active"], case)
        await recorded_as_rejection_only(live, "active", case)


# A valid command per phase, to show that each relationship still works after the barrage.
STILL_WORKS: dict[str, tuple[str, dict[str, Any]]] = {
    "matching": ("accept_match", cmd(MENTEE)),
    "agreement": ("sign_agreement", cmd(MENTEE, agreement_version=1)),
    "active": ("share_resource", cmd(MENTOR, title="Still here")),
    "review": ("submit_review", cmd(MENTEE, outcome="continue")),
    "closing": ("submit_reflection", cmd(MENTEE, text="Still here")),
}


@pytest.mark.parametrize("phase", PHASES)
async def test_after_the_barrage_nothing_failed_nothing_was_lost_and_valid_commands_apply(
    live: Live, phase: str
) -> None:
    handle = live.handles[phase]
    name, payload = STILL_WORKS[phase]
    # Bad signals of its own, so that the count below checks something when this test runs
    # alone: one malformed signal sent twice under the same command id is recorded once (the
    # very same refused payload is not recorded again, docs/contract.md)...
    junk = {**payload, "command_id": f"junk-{phase}-{live.fresh()}", "no_such_field": True}
    await handle.signal(name, junk)
    await handle.signal(name, junk)
    live.signals_sent[phase] += 1
    result = await asyncio.wait_for(handle.execute_update(name, payload), timeout=60)  # decided after the signals
    assert result["applied"] is True
    # ...and a malformed copy of a command already applied records nothing.
    await handle.signal(name, {**payload, "no_such_field": True})
    replay = await asyncio.wait_for(handle.execute_update(name, payload), timeout=60)
    assert (replay["applied"], replay["replay"]) == (False, True)
    assert await failed_workflow_tasks(handle) == 0

    state = await state_of(handle)
    stored = await PostgresEventStore(live.pool, TEST_KEYRING).read_stream(state.relationship_id)
    assert fold(stored) == state
    rejected = [event.command_id for event in stored if event.type == "CommandRejected"]
    assert rejected.count(junk["command_id"]) == 1, "the same refused signal was recorded twice"
    assert payload["command_id"] not in rejected, "a malformed copy of an applied command was recorded"
    assert len(rejected) == live.signals_sent[phase]
