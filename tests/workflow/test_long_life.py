"""A 24-month weekly relationship continues as new many times and loses nothing on the way."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.event_store import PostgresEventStore
from events.notifications import Notification, notifications_for
from events.settings import ProgrammeSettings
from events.decider import evolve, fold
from events.state import Phase, RelationshipState
from tests.support.session import TEST_KEYRING
from tests.support.helpers import (AGREEMENT, RecordingChannel, activate, close, cmd, failed_workflow_tasks, new_worker, reflect,
                           start_relationship, state_of)
from tests.support.peers import eventually
from tests.support.runs import every_run
from workflows.relationship import Relationship

WEEKLY_TWO_YEARS = {**AGREEMENT, "meeting_frequency": "weekly", "meeting_minutes": 45, "term_months": 24}


async def runs_of(client: Client, workflow_id: str) -> list[int]:
    """History length of every run, newest first; no run had a failed workflow task."""
    lengths = []
    for _, history in await every_run(client, workflow_id):
        lengths.append(len(history.events))
        assert not any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in history.events)
    return lengths


async def test_two_years_of_weekly_meetings_continue_as_new_without_losing_a_message(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    env = time_skipping_env
    settings_limit = 400  # far below Temporal's 10,240-event warning, so the switch happens often
    async with new_worker(env.client, pool) as worker:
        settings = ProgrammeSettings(coordinator_ids=("coord-1",), max_term_months=24)
        handle = await start_relationship(env.client, worker, history_event_limit=settings_limit, settings=settings)
        await activate(handle, terms=WEEKLY_TWO_YEARS)

        latest = env.client.get_workflow_handle_for(Relationship.run, handle.id)
        signals_sent: list[dict[str, Any]] = []
        while True:
            state = await state_of(latest)
            if state.phase is Phase.REVIEW:
                outcome = "close" if state.review.kind == "final" else "continue"  # type: ignore[union-attr]
                await latest.execute_update("submit_review", cmd("mentee-1", outcome=outcome))
                await latest.execute_update("submit_review", cmd("mentor-1", outcome=outcome))
                continue
            if state.phase is Phase.CLOSING:
                break
            meeting = state.next_meeting
            if meeting is None:
                # No meeting fits before the term ends: wait for the final review.
                assert state.term_ends_at is not None and state.activated_at is not None
                await env.sleep(max(state.term_ends_at - await env.get_current_time(), timedelta(hours=1)))
                continue
            wait = meeting.starts_at + timedelta(minutes=50) - await env.get_current_time()
            if wait > timedelta(0):
                await env.sleep(wait)
            # A burst of signals, fire and forget, as a chat bot would send them: some of
            # them land while the workflow is switching to a new run.
            burst = [cmd("mentee-1", held_at=meeting.starts_at.isoformat(), duration_minutes=45)] + [
                cmd("mentor-1", title=f"Reading for week {meeting.meeting_number}") for _ in range(2)
            ]
            await latest.signal("record_meeting", burst[0])
            for payload in burst[1:]:
                await latest.signal("share_resource", payload)
            signals_sent += burst
            # The same meeting again, by the same command id: must count once.
            await latest.signal("record_meeting", burst[0])
            # An update after the signals: it is answered once everything before it is stored.
            barrier = cmd("mentee-1", title=f"Notes template, week {meeting.meeting_number}")
            await latest.execute_update("share_resource", barrier)
            signals_sent.append(barrier)

        # A continued run has no start summary or details (Temporal does not carry them
        # over): the current details the Web UI shows say which relationship it is.
        metadata = await latest.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        assert "**Phase** closing" in metadata.current_details
        assert f"Relationship `{state.relationship_id}`" in metadata.current_details
        assert "Continued as new from run" in metadata.current_details
        await reflect(latest)
        summary = await latest.result()
        final = await state_of(latest)

    meetings = sum(1 for s in signals_sent if "held_at" in s)
    resources = len(signals_sent) - meetings
    assert summary.meetings_held == meetings >= 100
    assert final.resources_shared == resources
    assert final.rejected_commands == ()
    assert {s["command_id"] for s in signals_sent} <= final.processed_command_ids

    lengths = await runs_of(env.client, handle.id)
    assert len(lengths) >= 4, lengths
    # Every run switched soon after passing the limit (a burst of signals may add a few).
    assert max(lengths) < settings_limit + 150, lengths
    stored = await PostgresEventStore(pool, TEST_KEYRING).read_stream(final.relationship_id)
    assert fold(stored) == final


# -- a switch to a new run while a channel is down --------------------------------------------


class FlakyChannel(RecordingChannel):
    """Keeps what it delivered; while `down`, every delivery fails (and is retried)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.failures = 0

    async def send(self, notification: Notification) -> None:
        if self.down:
            self.failures += 1
            raise ConnectionError("the channel is down")
        await super().send(notification)


def channel_wanted(stored: list[Any]) -> list[Notification]:
    """Every notification the stored events call for (the channel sees all of them)."""
    state: RelationshipState | None = None
    wanted: list[Notification] = []
    for event in stored:
        before, state = state, evolve(state, event)
        assert state is not None
        wanted.extend(notifications_for(event, state, before))
    return wanted


def notifications_called_for(stored: list[Any]) -> set[str]:
    return {n.notification_id for n in channel_wanted(stored)}


async def test_deliveries_retrying_when_the_relationship_continues_as_new_arrive_once_after_the_switch(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    """The channel goes down; a pause's notifications fail and retry with backoff; the pause's
    end wakes the workflow with a long history, and it continues as new with those deliveries
    still pending. Once the channel is back, each of them arrives, once, from the new run."""
    env, channel = time_skipping_env, FlakyChannel()
    async with new_worker(env.client, pool, channel) as worker:
        handle = await start_relationship(env.client, worker, history_event_limit=100)
        first_run = (await handle.describe()).run_id
        await activate(handle)
        for week in range(14):  # past the history limit: the next timer switches runs
            await handle.execute_update("share_resource", cmd("mentor-1", title=f"Reading {week}"))
        await eventually(lambda: "relationship_activated" in channel.templates_for("mentee-1"), "the activation")

        channel.down = True
        until = await env.get_current_time() + timedelta(hours=2)
        await handle.execute_update("pause_relationship", cmd("mentee-1", until=until.isoformat()))
        # The quick first try failed; the deliveries now retry (5 s, 10 s, … up to 10 minutes).
        await eventually(lambda: channel.failures >= 3, "the pause's deliveries failing", timeout=60)
        assert "relationship_paused" not in channel.templates_for("mentee-1")

        await env.sleep(until - await env.get_current_time() + timedelta(minutes=1))  # the pause ends
        latest = env.client.get_workflow_handle_for(Relationship.run, handle.id)

        async def switched() -> bool:
            return (await latest.describe()).run_id != first_run

        await _until(switched, "a continue-as-new at the pause's end")
        first = await env.client.get_workflow_handle(handle.id, run_id=first_run).fetch_history()
        types = [event.event_type for event in first.events]
        assert types[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        # The old run handed the retrying deliveries over: it never saw them through.
        scheduled = sum(1 for t in types if t == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
        finished = sum(1 for t in types if t in (EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
                                                 EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED))  # fmt: skip
        assert scheduled > finished, "no delivery was still retrying at the switch"

        channel.down = False
        state = await state_of(latest)
        stored = await PostgresEventStore(pool, TEST_KEYRING).read_stream(state.relationship_id)
        wanted = notifications_called_for(stored)
        assert {"RelationshipPaused", "RelationshipResumed"} <= {e.type for e in stored}

        idle_checks = 0

        async def all_arrived() -> bool:
            nonlocal idle_checks
            if wanted <= {n.notification_id for n in channel.sent}:
                return True
            # Nothing left retrying in the new run, and still missing: dropped at the switch.
            idle_checks = idle_checks + 1 if not (await latest.describe()).raw_description.pending_activities else 0
            missing = sorted(n.template for n in channel_wanted(stored) if n.notification_id not in
                             {s.notification_id for s in channel.sent})  # fmt: skip
            assert idle_checks < 3, f"never delivered, and nothing retries them: {missing}"
            await env.sleep(timedelta(minutes=11))  # past the longest retry interval
            return False

        await _until(all_arrived, "every notification after the channel came back")
        counts = Counter(n.notification_id for n in channel.sent)
        assert {n for n, c in counts.items() if c > 1} == set(), "a notification arrived twice"
        assert set(counts) == wanted
        assert "relationship_paused" in channel.templates_for("mentee-1")
        assert "relationship_resumed" in channel.templates_for("mentee-1")
        assert await failed_workflow_tasks(latest) == 0
        await close(latest)


async def _until(probe: Any, what: str, timeout: float = 120) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await probe():
        assert loop.time() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.1)


async def test_a_run_past_its_limit_continues_as_new_once_idle_not_at_its_next_deadline(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    """Commands alone take a run past its history limit while its next deadline is weeks
    away: a second after the last command it continues as new, so a cold worker replays a
    run of about the limit, not all the commands until that deadline."""
    env = time_skipping_env
    async with new_worker(env.client, pool) as worker:
        handle = await start_relationship(env.client, worker, history_event_limit=100)
        first_run = (await handle.describe()).run_id
        await activate(handle)
        for week in range(14):  # about 150 events: past the limit
            await handle.execute_update("share_resource", cmd("mentor-1", title=f"Reading {week}"))
        before = await state_of(handle)
        started_waiting = await env.get_current_time()
        await env.sleep(timedelta(seconds=5))

        lengths = await runs_of(env.client, handle.id)
        assert len(lengths) == 2, f"expected one continue-as-new, runs of {lengths} events"
        first = await env.client.get_workflow_handle(handle.id, run_id=first_run).fetch_history()
        assert first.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        switched_at = first.events[-1].event_time.ToDatetime(tzinfo=started_waiting.tzinfo)
        assert switched_at - started_waiting < timedelta(seconds=5), "it waited for a deadline"
        assert lengths[-1] < 200, f"the first run grew to {lengths[-1]} events"

        latest = env.client.get_workflow_handle_for(Relationship.run, handle.id)
        after = await state_of(latest)
        assert after == before, "the state changed across the switch"
        await latest.execute_update("share_resource", cmd("mentee-1", title="After the switch"))
        assert (await state_of(latest)).version == before.version + 1
        assert await failed_workflow_tasks(latest) == 0
