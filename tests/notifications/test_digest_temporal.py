"""The coordinators' digest end to end: a real Temporal dev server (schedules need it: the
time-skipping server has none), real PostgreSQL, a real SMTP server (aiosmtpd), and the
worker built from settings the way a deployment builds it.

Relationships are written to the event store as their workflows would write them (the
real core decides every event); the digest reads them through its read model."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client, ScheduleActionExecutionStartWorkflow, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.directory import Directory
from activities.event_store import PostgresEventStore
from events.commands import AcceptMatch, ProposeAgreement, ProposeMatch, RaiseConcern, SignAgreement
from events.digest import TEMPLATE, DigestRunResult
from events.model import Health
from events.people import Participant, Programme
from events.settings import ProgrammeSettings
from mentorflow.config import Settings
from mentorflow.replay import load_histories, replay_histories
from tests.support.daytime import ServerClock, delivered, local_eight
from tests.support.db_gate import until
from tests.support.domain_story import Story, terms
from tests.support.helpers import sleep_until
from tests.support.owners import owner
from tests.support.peers import SmtpServer, eventually
from tests.support.record_histories import HISTORIES, histories_converter
from tests.support.session import TEST_KEYRING
from worker import build_worker
from workflows.digest import SCHEDULE_ID, WORKFLOW_NAME, ensure_digest_schedule

SENDER = "Mentoring programme <mentoring@example.org>"
SECRET = "SECRET-digest-4c1d"
ON, OFF = "spring-2027", "pilot"
COORDINATORS = ("coord-a", "coord-b")
NOW = datetime.now(UTC)
# Runs recorded by the code before the digest's daytime was left to the notification activity.
OLD_RUNS = HISTORIES / "coordinator-digests"


def zone_at(hour: int, now: datetime | None = None) -> str:
    """A time zone where it is about `hour` o'clock at `now` (default: now, when it is asked:
    the suite may reach a test an hour after importing it; a digest waits for its reader's daytime)."""
    offset = (hour - (now or datetime.now(UTC)).astimezone(UTC).hour) % 24
    offset = offset - 24 if offset > 12 else offset
    # Etc/GMT-N is N hours ahead of UTC (the sign is POSIX's).
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


def person(participant_id: str, name: str, timezone: str | None = None) -> Participant:
    return Participant(
        participant_id=participant_id, display_name=name, email=f"{participant_id}@example.org",
        timezone=timezone or zone_at(12),
    )  # fmt: skip


def relationship(stream: str, programme_id: str, started: datetime, coordinator: str) -> Story:
    """Active, meeting monthly, started at `started`."""
    mentee, mentor = f"mentee-{stream}", f"mentor-{stream}"
    story = Story(
        ProgrammeSettings(coordinator_ids=(coordinator,)), started, stream=stream, programme_id=programme_id,
        mentee=mentee, command_ids=f"{stream}-",
    )  # fmt: skip
    story.do(ProposeMatch, coordinator, mentor_id=mentor)
    story.do(AcceptMatch, mentee)
    story.do(AcceptMatch, mentor)
    story.do(ProposeAgreement, mentee, terms=terms(meeting_frequency="monthly"))
    story.do(SignAgreement, mentee, agreement_version=1)
    story.do(SignAgreement, mentor, agreement_version=1)
    return story


async def store(pool: asyncpg.Pool, story: Story) -> None:
    stream = story.history[0].stream_id
    programme_id = story.state.programme_id
    await PostgresEventStore(pool, TEST_KEYRING).append(stream, 0, story.history, owner=owner(stream, programme_id))


@pytest.fixture
async def programmes(pool: asyncpg.Pool) -> dict[str, Story]:
    """Two programmes: `spring-2027` (digest weekly, two coordinators) with one relationship
    quiet for a month and one with an open concern; `pilot` (digest off) with a quiet one."""
    directory = Directory(pool)
    await directory.create_or_update_programme(
        Programme(programme_id=ON, name="Spring 2027", settings=ProgrammeSettings(coordinator_ids=COORDINATORS))
    )
    await directory.create_or_update_programme(
        Programme(programme_id=OFF, name="Pilot", settings=ProgrammeSettings(coordinator_ids=("coord-c",), digest_every_days=None))
    )
    quiet = relationship("quiet", ON, NOW - timedelta(days=35), COORDINATORS[0])
    quiet.advance(to=NOW - timedelta(minutes=5))
    concerned = relationship("concerned", ON, NOW - timedelta(days=6), COORDINATORS[0])
    concerned.do(RaiseConcern, "mentee-concerned", text=f"{SECRET} my mentor cancels every time")
    concerned.advance(to=NOW - timedelta(minutes=5))
    elsewhere = relationship("elsewhere", OFF, NOW - timedelta(days=35), "coord-c")
    elsewhere.advance(to=NOW - timedelta(minutes=5))
    assert quiet.state.health is Health.AT_RISK and elsewhere.state.health is Health.AT_RISK
    assert concerned.state.open_concerns
    people = [person(c, f"Coordinator {c[-1].upper()}") for c in (*COORDINATORS, "coord-c")]
    for story in (quiet, concerned, elsewhere):
        people += [person(story.mentee, f"Mentee {story.history[0].stream_id}"), person(f"mentor-{story.history[0].stream_id}", f"Mentor {story.history[0].stream_id}")]
        await store(pool, story)
    await directory.upsert_participants(people)
    await readable(pool, sum(len(story.history) for story in (quiet, concerned, elsewhere)))
    return {"quiet": quiet, "concerned": concerned, "elsewhere": elsewhere}


async def readable(pool: asyncpg.Pool, events: int) -> None:
    """Wait until readers of the store see all `events`: the store hands out an event once no
    transaction older than its own is still running anywhere on the server (its frontier,
    migrations/0001_event_store.sql), and other tests share this server."""
    store = PostgresEventStore(pool)
    for _ in range(600):
        if len(await store.read_all(0, events + 1)) == events:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the events stayed behind the store's frontier for 60 s")


@pytest.fixture
async def client(dev_env: WorkflowEnvironment) -> AsyncIterator[Client]:
    yield dev_env.client
    # One schedule per namespace: each test leaves none behind.
    try:
        await dev_env.client.get_schedule_handle(SCHEDULE_ID).delete()
    except Exception:  # noqa: BLE001 - a test that never created it
        pass


def delivering_settings(smtp_server: SmtpServer) -> Settings:
    return Settings.from_env(
        {
            "MENTORFLOW_SMTP_HOST": "127.0.0.1",
            "MENTORFLOW_SMTP_PORT": str(smtp_server.port),
            "MENTORFLOW_SMTP_SECURITY": "none",
            "MENTORFLOW_SMTP_FROM": SENDER,
            "MENTORFLOW_SMTP_TIMEOUT": "5",
        }
    )


def digests_to(smtp_server: SmtpServer) -> dict[str, list[EmailMessage]]:
    found: dict[str, list[EmailMessage]] = {}
    for received in smtp_server.inbox.messages:
        if received.message["X-Mentorflow-Template"] == "coordinator_digest":
            [address] = received.rcpt_tos
            found.setdefault(address.split("@")[0], []).append(received.message)
    return found


async def triggered_run(client: Client, runs_before: int) -> DigestRunResult:
    """Trigger the schedule now, and the result of the run it starts."""
    schedule = client.get_schedule_handle(SCHEDULE_ID)
    await schedule.trigger()

    actions: Sequence[Any] = ()
    for _ in range(300):
        actions = (await schedule.describe()).info.recent_actions
        if len(actions) > runs_before:
            break
        await asyncio.sleep(0.1)
    assert len(actions) > runs_before, "the schedule started no run"
    action = actions[-1].action
    assert isinstance(action, ScheduleActionExecutionStartWorkflow)
    handle = client.get_workflow_handle(action.workflow_id, run_id=action.first_execution_run_id, result_type=DigestRunResult)
    result: DigestRunResult = await handle.result()
    return result


async def test_one_digest_per_coordinator_from_the_schedule_never_twice_and_none_when_off(
    client: Client, pool: asyncpg.Pool, smtp_server: SmtpServer, programmes: dict[str, Story]
) -> None:
    task_queue = f"tq-{uuid.uuid4()}"
    # Workers starting together create the schedule once.
    created = await asyncio.gather(*(ensure_digest_schedule(client, task_queue) for _ in range(3)))
    assert sorted(created) == ["created", "existed", "existed"]
    described = await client.get_schedule_handle(SCHEDULE_ID).describe()
    assert described.schedule.action.workflow == WORKFLOW_NAME  # type: ignore[attr-defined]

    async with build_worker(client, pool, task_queue, settings=delivering_settings(smtp_server)):
        result = await triggered_run(client, 0)
        assert result == DigestRunResult(programmes_due=1, digests=2)
        received = await eventually(lambda: len(digests_to(smtp_server)) == 2 and digests_to(smtp_server), "two digests")
        assert sorted(received) == sorted(COORDINATORS)  # nobody of the programme with the digest off
        for coordinator, [message] in received.items():
            assert message["Subject"] == "Mentoring digest for Spring 2027: 3 things to look at"
            assert not message.is_multipart() and message.get_content_type() == "text/plain"
            body = message.get_content().replace("\r\n", "\n")
            assert body.startswith(f"Hello Coordinator {coordinator[-1].upper()},\n\nThis is what needs you in Spring 2027 ({ON})")
            assert "\n\nAt risk:\n- " in body, body
            assert "\n- Mentee quiet and Mentor quiet (relationship quiet): at risk since" in body
            assert "Why: no meeting for 35 days" in body
            assert "\n- Mentee concerned and Mentor concerned (relationship concerned): at risk since" in body
            assert "Why: a concern is open." in body
            assert "Open concerns" in body and "(relationship concerned): 1 open concern, the oldest raised 6 days ago." in body
            assert "elsewhere" not in body and SECRET not in body
            assert f"mentorflow people add --id {coordinator} --mute coordinator_digest" in body
        rows = await pool.fetch("SELECT programme_id, coordinators, items FROM coordinator_digests")
        assert [tuple(row) for row in rows] == [(ON, 2, 6)]  # three items to each of two coordinators

        # The schedule fires again the same day (a restart, a second trigger): nothing is due.
        assert await triggered_run(client, 1) == DigestRunResult(programmes_due=0, digests=0)
        # Even a run that finds the day unrecorded (two runs racing) sends nothing twice: the
        # same programme, day and coordinator make the same notification, sent once.
        await pool.execute("DELETE FROM coordinator_digests")
        assert await triggered_run(client, 2) == DigestRunResult(programmes_due=1, digests=2)
        await asyncio.sleep(1)
    assert {c: len(messages) for c, messages in digests_to(smtp_server).items()} == {c: 1 for c in COORDINATORS}
    assert all(received.rcpt_tos != ["coord-c@example.org"] for received in smtp_server.inbox.messages)


async def test_the_digest_reads_events_no_follower_has_applied_yet(
    client: Client, pool: asyncpg.Pool, smtp_server: SmtpServer, programmes: dict[str, Story]
) -> None:
    # No worker ran a follower here: the digest brings the read model up to date itself.
    assert await pool.fetchval("SELECT count(*) FROM digest_relationships") == 0
    task_queue = f"tq-{uuid.uuid4()}"
    async with build_worker(client, pool, task_queue, settings=delivering_settings(smtp_server)):
        handle = await client.start_workflow(
            WORKFLOW_NAME, id=f"digest-test-{uuid.uuid4()}", task_queue=task_queue, result_type=DigestRunResult
        )
        assert await handle.result() == DigestRunResult(programmes_due=1, digests=2)
    assert await pool.fetchval("SELECT count(*) FROM digest_relationships") == 3


async def test_each_digest_is_held_by_the_notification_activity_until_its_coordinators_daytime(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_server: SmtpServer, programmes: dict[str, Story]
) -> None:
    env = time_skipping_env
    started = await env.get_current_time()
    # Zones from the server's clock as the test runs: noon for coord-a, 01:xx for coord-b
    # (the programme's window, the default 08:00–20:00, opens there more than 6 hours later).
    night = zone_at(1, started)
    await Directory(pool).upsert_participants(
        [person("coord-a", "Coordinator A", zone_at(12, started)), person("coord-b", "Coordinator B", night)]
    )
    opens = local_eight(started, night)
    assert opens - started > timedelta(hours=6)
    clock = ServerClock(env)
    task_queue = f"tq-{uuid.uuid4()}"
    settings = delivering_settings(smtp_server)
    async with build_worker(env.client, pool, task_queue, settings=settings, notification_clock=clock):
        handle = await env.client.start_workflow(
            WORKFLOW_NAME, id=f"digest-test-{uuid.uuid4()}", task_queue=task_queue, result_type=DigestRunResult
        )
        # One send for the whole programme: coord-a's goes, coord-b's is held by the activity.
        await eventually(lambda: "coord-a" in digests_to(smtp_server), "the digest of the coordinator in daytime")
        pending = await until(lambda: held_send(handle), "the send, held for coord-b's daytime", poll=0.1)
        held = await env.client.data_converter.decode_failure(pending.last_failure)
        assert "email to coord-b" in str(held) and "coord-a" not in str(held), held
        assert "coord-b" not in digests_to(smtp_server)
        assert await delivered(pool, TEMPLATE) == [("coord-a", "delivered", 1)]  # a held one is not even claimed
        history = await handle.fetch_history()
        assert not [event for event in history.events if event.HasField("timer_started_event_attributes")]
        # On the patched path: runs begun before it kept their timers (the test below).
        markers = [e.marker_recorded_event_attributes for e in history.events if e.HasField("marker_recorded_event_attributes")]
        assert [marker.marker_name for marker in markers] == ["core_patch"]

        # Time skips to coord-b's 08:00: nothing a minute before, the digest a minute after.
        await sleep_until(env, opens - timedelta(minutes=1))
        assert "coord-b" not in digests_to(smtp_server)
        await sleep_until(env, opens + timedelta(minutes=1))
        await eventually(lambda: "coord-b" in digests_to(smtp_server), "coord-b's digest once their window opens")
        assert await handle.result() == DigestRunResult(programmes_due=1, digests=2)
    # The retry waited for the window, not for its backoff: no attempt in the hours between.
    assert clock.between(started + timedelta(minutes=10), opens) == []
    assert [reading for reading in clock.readings if opens <= reading <= opens + timedelta(minutes=2)]
    assert {c: len(messages) for c, messages in digests_to(smtp_server).items()} == {"coord-a": 1, "coord-b": 1}
    # Its history replays with the code (what `mentorflow replay` checks before a deploy).
    [outcome] = await replay_histories([await handle.fetch_history()], env.client.data_converter)
    assert (outcome.workflow_type, outcome.verdict) == (WORKFLOW_NAME, "ok"), outcome.detail


async def held_send(handle: WorkflowHandle[Any, Any]) -> Any:
    """The pending send, once the activity has held it for someone's daytime (else None)."""
    for pending in (await handle.describe()).raw_description.pending_activities:
        failure = pending.last_failure.application_failure_info
        if pending.activity_type.name == "send_notifications" and failure.type == "NotificationsHeld":
            return pending
    return None


async def test_runs_begun_when_the_digest_waited_on_its_own_timer_still_replay() -> None:
    """Recorded by the code before `digest-held-for-daytime-by-the-notification-activity`: a
    run waiting on its timer for coord-b's daytime (coord-a's wave sent), and one that went on
    to send it. Without the patch, the first timer (which this code no longer starts) fails both."""
    histories = load_histories(OLD_RUNS)
    assert [history.workflow_id for history in histories] == ["sent-in-waves", "waiting-for-daytime"]
    for history in histories:
        assert [event for event in history.events if event.HasField("timer_started_event_attributes")]
    outcomes = await replay_histories(histories, histories_converter())
    assert [(o.workflow_type, o.verdict, o.detail) for o in outcomes] == [(WORKFLOW_NAME, "ok", "")] * 2
